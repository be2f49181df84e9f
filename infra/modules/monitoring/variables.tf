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

variable "region" {
  description = "The region: EC2 discovery and the alerts topic's."
  type        = string
}

variable "private_subnet_ids" {
  description = "Where the monitoring host may run (one at a time)."
  type        = list(string)
}

variable "ami_id" {
  description = "Debian 12 x86_64 AMI (as the services')."
  type        = string
}

variable "instance_type" {
  description = "The monitoring host's instance type (Prometheus of a few hosts, Alertmanager, Grafana)."
  type        = string
  default     = "t3.medium"
}

variable "root_volume_size_gb" {
  description = "Root volume (encrypted gp3): the system and Prometheus's 15 days of metrics."
  type        = number
  default     = 40
}

variable "release_url" {
  description = "Where the release tarballs are (the monitoring host runs from the deduplicator's)."
  type        = string
}

variable "release_version" {
  description = "The release version."
  type        = string
}

variable "release_sha256" {
  description = "SHA-256 of the deduplicator's release tarball (from SHA256SUMS): anything else is refused."
  type        = string
}

variable "deadmans_switch_url" {
  description = "The dead man's switch (https:// URL) the Watchdog pings every minute; empty: the Watchdog goes nowhere and nothing pages when alerting itself breaks."
  type        = string
  default     = ""
  validation {
    condition     = var.deadmans_switch_url == "" || can(regex("^https://[^\\s'\"]+$", var.deadmans_switch_url))
    error_message = "deadmans_switch_url must be an https:// URL (or empty)."
  }
}

variable "grafana_version" {
  description = "Grafana's version, installed from Grafana's apt repository (its signing key is checked by fingerprint)."
  type        = string
  default     = "12.0.0"
}
