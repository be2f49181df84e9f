variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets in three AZs for the DB subnet group."
  type        = list(string)
}

variable "deduplicator_security_group_id" {
  description = "The deduplicator's security group: the only writer."
  type        = string
}

variable "operator_access" {
  description = "Whether operator_security_group_id may connect (a bool, so the plan knows the count before the group exists)."
  type        = bool
  default     = false
}

variable "operator_security_group_id" {
  description = "Security group of operators/readers allowed to connect when operator_access is true."
  type        = string
  default     = ""
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "allocated_storage_gb" {
  description = "Initial storage."
  type        = number
  default     = 500
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling."
  type        = number
  default     = 4000
}

variable "backup_retention_days" {
  description = "Automated backups kept (point-in-time restore window)."
  type        = number
  default     = 14
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
