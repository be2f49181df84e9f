variable "name_prefix" {
  description = "Prefix of the template's and the group's names (e.g. kalshi-prod-g1)."
  type        = string
}

variable "ami_id" {
  description = "Debian 12 x86_64 AMI."
  type        = string
}

variable "instance_type" {
  description = "The instance type launched first."
  type        = string
}

variable "fallback_instance_types" {
  description = "Instance types launched, in this order, when the zone has no capacity of instance_type."
  type        = list(string)
  default     = []
}

variable "instance_profile_arn" {
  description = "The hosts' instance profile."
  type        = string
}

variable "security_group_ids" {
  description = "The hosts' security groups."
  type        = list(string)
}

variable "root_volume_size_gb" {
  description = "Root volume size (encrypted gp3)."
  type        = number
}

variable "user_data" {
  description = "The boot script (rendered; encoded here)."
  type        = string
}

variable "size" {
  description = "How many instances the group keeps."
  type        = number
  default     = 1
}

variable "subnet_ids" {
  description = "Where the group may launch (one subnet pins it to one zone)."
  type        = list(string)
}

variable "target_group_arns" {
  description = "Health-check target groups: with any, the group replaces what fails their check (ELB), otherwise only what EC2 finds impaired."
  type        = list(string)
  default     = []
}

variable "health_check_grace_period" {
  description = "Seconds after launch before a failed health check counts (the boot)."
  type        = number
  default     = 300
}

variable "host_tags" {
  description = "The host's own tags (Role, Name, Slot), on its instances and volumes and propagated by the group (Name excepted)."
  type        = map(string)
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
