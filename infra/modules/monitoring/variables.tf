variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "vpc_cidr_block" {
  description = "The VPC's range (scrapes stay inside it)."
  type        = string
}

variable "alerts_topic_arn" {
  description = "The SNS topic Alertmanager publishes to (the alarms module's)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
