variable "name" {
  description = "Environment name, prefix of every resource (e.g. kalshi-prod)."
  type        = string
  default     = "kalshi-prod"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "ami_id" {
  description = "Debian 12 AMI for gatherers and the deduplicator."
  type        = string
}

variable "release_url" {
  description = "HTTPS base URL serving the release binaries and systemd units."
  type        = string
}

variable "kalshi_key_id" {
  description = "Kalshi API key id."
  type        = string
}

variable "kalshi_key_secret_arn" {
  description = "Secrets Manager ARN holding the Kalshi private key PEM."
  type        = string
}

variable "deduplicator_toml" {
  description = "deduplicator.toml content (start from deploy/deduplicator.production.toml, with the RDS endpoint from the rds_endpoint output)."
  type        = string
}

variable "alert_emails" {
  description = "E-mail addresses for the alerts topic."
  type        = list(string)
  default     = []
}
