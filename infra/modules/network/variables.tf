variable "name" {
  description = "Prefix of every resource name (e.g. kalshi-prod)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's address range; subnets are /24s carved from it."
  type        = string
  default     = "10.0.0.0/16"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "dns_zone_name" {
  description = "The private DNS zone for service discovery (gatherers are <slot>.gatherers.<zone>)."
  type        = string
  default     = "kalshi.internal"
}

variable "instance_types" {
  description = "Every instance type the services may launch (primary and fallback types): only zones that offer all of them are used."
  type        = list(string)
  default     = ["m7i.large", "m6i.large"]
}
