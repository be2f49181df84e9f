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
  description = "HTTPS base URL serving the release tarballs (deploy/release/build.sh)."
  type        = string
}

variable "release_version" {
  description = "The release's version (kalshi-deduplicator-<version>-linux-x86_64.tar.gz)."
  type        = string
}

variable "release_sha256" {
  description = "SHA-256 of the deduplicator tarball, from the release's SHA256SUMS; user-data refuses any other file."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.release_sha256))
    error_message = "A SHA-256 in lowercase hex."
  }
}

variable "rds_endpoint" {
  description = "Production's host:port (the rds module's endpoint output)."
  type        = string
}

variable "rds_identifier" {
  description = "Production's instance identifier, for RDS events during write outages."
  type        = string
}

variable "dns_zone_name" {
  description = "The private zone where the gatherers' names are (<slot>.gatherers.<zone>)."
  type        = string
}

variable "tls_secret_arn" {
  description = "The deduplicator's mTLS identity secret (the pki module's secret_arns[\"deduplicator\"])."
  type        = string
}

variable "log_retention_days" {
  description = "How long CloudWatch Logs keeps the deduplicator's logs."
  type        = number
  default     = 30
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

variable "archive_bucket_name" {
  description = "The archive bucket's name (the deduplicator archives to it)."
  type        = string
}

variable "archive_prefix" {
  description = "The only prefix of the bucket the deduplicator may write."
  type        = string
  default     = "archive/"
}

variable "prometheus_security_group_id" {
  description = "The only source allowed to scrape metrics (9464), node_exporter (9100) and health (8080)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "instances" {
  description = "Deduplicators: one holds the lease and writes, the others are warm standbys (2: one per zone)"
  type        = number
  default     = 2
  validation {
    condition     = var.instances >= 1 && var.instances <= 3
    error_message = "instances: 1 (no standby) to 3"
  }
}

variable "fallback_instance_types" {
  description = "Instance types launched, in this order, when the zone has no capacity of instance_type (the group's mixed-instances overrides)."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "root_volume_size_gb" {
  description = "Root volume (encrypted gp3): the system, the release, the journal, and the archive's local spool of Parquet files waiting for upload."
  type        = number
  default     = 40
}

variable "gatherer_slots" {
  description = "The gatherer slots it reads (the environment's slots): each <slot>.gatherers.<zone>:50051, written into its configuration at boot."
  type        = list(string)
}

variable "tls_issue" {
  description = "The link's certificates, which the deduplicators issue and renew (module pki's outputs): the secrets' name prefix, every identity's DNS names, every secret the deduplicators write (the identities' and the CA's)."
  type = object({
    prefix      = string
    identities  = map(list(string))
    secret_arns = list(string)
  })
}

variable "tls_leaf_days" {
  description = "How long each certificate of the link is valid."
  type        = number
  default     = 365
}

variable "tls_renew_within_days" {
  description = "A certificate is renewed this many days before its end (the alert TlsCertificateExpiresSoon fires at 30)."
  type        = number
  default     = 60
}

variable "rds_resource_id" {
  description = "Production's resource id (module rds's resource_id): rds-db:connect is granted on this instance only."
  type        = string
}
