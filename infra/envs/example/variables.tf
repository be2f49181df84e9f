variable "name" {
  description = "Environment name, prefix of every resource and the RDS identifier (e.g. kalshi-prod)."
  type        = string
  default     = "kalshi-prod"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "ami_id" {
  description = "Debian 12 AMI (x86_64) for gatherers and the deduplicator."
  type        = string
}

variable "release_url" {
  description = "HTTPS base URL serving the release tarballs (deploy/release/build.sh's output)."
  type        = string
}

variable "release_version" {
  description = "The release's version (the workspace version in Cargo.toml)."
  type        = string
}

variable "gatherer_release_sha256" {
  description = "SHA-256 of kalshi-gatherer-<version>-linux-x86_64.tar.gz, from the release's SHA256SUMS."
  type        = string
}

variable "deduplicator_release_sha256" {
  description = "SHA-256 of kalshi-deduplicator-<version>-linux-x86_64.tar.gz, from the release's SHA256SUMS."
  type        = string
}

variable "alert_emails" {
  description = "E-mail addresses for the alerts topic."
  type        = list(string)
  default     = []
}

variable "archive_first_date" {
  description = "The first day (yyyy-MM-dd) the archive holds in schema version 4: Athena's partition projection starts there."
  type        = string
}

variable "instance_types" {
  description = "The gatherers' and deduplicators' instance types: the first is launched, the others when a zone has no capacity of it. Only zones offering all of them are used."
  type        = list(string)
  default     = ["m7i.large", "m6i.large"]
}

variable "slots" {
  description = "The gatherer slots (g1, g2, ...): one gatherer each, with its certificate, its volume, its group and its place in the deduplicator's configuration. Adding a slot is adding it here."
  type        = list(string)
  default     = ["g1", "g2", "g3"]
}

variable "deadmans_switch_url" {
  description = "Your dead man's switch (healthchecks.io, Cronitor, PagerDuty heartbeat: expects a ping every minute, alerts after 5 missed), which the monitoring host's Watchdog pings; empty: nothing pages when alerting itself breaks."
  type        = string
  default     = ""
}
