variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "role" {
  description = "What is checked (gatherers, deduplicator), named in its resources."
  type        = string
}

variable "short_prefix" {
  description = "The load balancer's and target group's name prefix (at most 6 characters)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "vpc_cidr_block" {
  description = "The VPC's range (the checks stay inside it)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the load balancer."
  type        = list(string)
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
