variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "vpc_cidr_block" {
  description = "The VPC's range (egress to gatherers and RDS stays inside it)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the instance and its health-check load balancer."
  type        = list(string)
}

variable "ami_id" {
  description = "Debian 12 AMI."
  type        = string
}

variable "instance_type" {
  description = "Deduplicator instance type."
  type        = string
  default     = "m7i.large"
}

variable "release_url" {
  description = "HTTPS base URL serving the deduplicator binary and kalshi-deduplicator.service."
  type        = string
}

variable "deduplicator_toml" {
  description = "The deduplicator.toml content (see deploy/deduplicator.production.toml); no secrets with IAM auth."
  type        = string
}

variable "rds_resource_id" {
  description = "The RDS instance's resource id (db-XXXX), for rds-db:connect."
  type        = string
}

variable "db_user" {
  description = "The database user the deduplicator connects as (granted rds_iam)."
  type        = string
  default     = "deduplicator"
}

variable "archive_bucket_arn" {
  description = "The archive bucket."
  type        = string
}

variable "archive_prefix" {
  description = "The only prefix of the bucket the deduplicator may write."
  type        = string
  default     = "archive/"
}

variable "prometheus_security_group_id" {
  description = "The only source allowed to scrape metrics (9464)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
