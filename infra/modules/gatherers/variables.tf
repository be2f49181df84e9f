variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "region" {
  description = "AWS region (for Secrets Manager and Route 53 calls in the bootstrap)."
  type        = string
}

variable "slots" {
  description = "Gatherer slots, one auto-scaling group of one instance each; slot i goes to private subnet i (modulo their number). The slot is the gatherer_id."
  type        = list(string)
  default     = ["g1", "g2", "g3"]
  validation {
    condition     = length(var.slots) >= 3 && alltrue([for s in var.slots : can(regex("^g[0-9]+$", s))])
    error_message = "At least three slots, named g1, g2, ..."
  }
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "vpc_cidr_block" {
  description = "The VPC's range (the health-check load balancer's egress stays inside it)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets, one per AZ; slot i runs in subnet i."
  type        = list(string)
}

variable "dns_zone_id" {
  description = "The private Route 53 zone where each slot's instance points <slot>.gatherers.<zone> at itself."
  type        = string
}

variable "dns_zone_name" {
  description = "That zone's name (e.g. kalshi.internal)."
  type        = string
}

variable "ami_id" {
  description = "Debian 12 AMI (x86_64)."
  type        = string
}

variable "instance_type" {
  description = "Gatherer instance type (2 vCPU handle ~80k msg/s; see README benchmarks)."
  type        = string
  default     = "m7i.large"
}

variable "root_volume_size_gb" {
  description = "Root volume: the system, the release, the journal."
  type        = number
  default     = 20
}

variable "data_volume_size_gb" {
  description = "The local database's volume (/var/lib/postgresql); size it for store.retention at your message rate."
  type        = number
  default     = 200
}

variable "release_url" {
  description = "HTTPS base URL serving the release tarballs (deploy/release/build.sh)."
  type        = string
}

variable "release_version" {
  description = "The release's version (kalshi-gatherer-<version>-linux-x86_64.tar.gz)."
  type        = string
}

variable "release_sha256" {
  description = "SHA-256 of the gatherer tarball, from the release's SHA256SUMS; user-data refuses any other file."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.release_sha256))
    error_message = "A SHA-256 in lowercase hex."
  }
}

variable "tls_secret_arns" {
  description = "Each slot's mTLS identity secret, by slot (the pki module's secret_arns)."
  type        = map(string)
}

variable "log_retention_days" {
  description = "How long CloudWatch Logs keeps the gatherers' logs."
  type        = number
  default     = 30
}

variable "deduplicator_security_group_id" {
  description = "The only source allowed to reach gRPC (50051)."
  type        = string
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

variable "fallback_instance_types" {
  description = "Instance types launched, in this order, when the zone has no capacity of instance_type (the group's mixed-instances overrides)."
  type        = list(string)
  default     = ["m6i.large"]
}
