variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "region" {
  description = "AWS region (for Secrets Manager calls in user-data)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Three private subnets, one per AZ; the group spreads over them."
  type        = list(string)
}

variable "ami_id" {
  description = "Debian 12 AMI."
  type        = string
}

variable "instance_type" {
  description = "Gatherer instance type (2 vCPU handle ~80k msg/s; see README benchmarks)."
  type        = string
  default     = "m7i.large"
}

variable "volume_size_gb" {
  description = "Root volume, holding the local database (retention 7 days by default)."
  type        = number
  default     = 200
}

variable "release_url" {
  description = "HTTPS base URL serving the gatherer binary and kalshi-gatherer.service."
  type        = string
}

variable "kalshi_key_id" {
  description = "The Kalshi API key id (not secret)."
  type        = string
}

variable "kalshi_key_secret_arn" {
  description = "Secrets Manager ARN of the Kalshi private key (PEM)."
  type        = string
}

variable "deduplicator_security_group_id" {
  description = "The only source allowed to reach gRPC (50051)."
  type        = string
}

variable "prometheus_security_group_id" {
  description = "The only source allowed to scrape metrics (9464) and health (8080)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
