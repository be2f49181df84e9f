variable "name" {
  description = "Environment name (part of every secret's name)."
  type        = string
}

variable "slots" {
  description = "The gatherer slots (g1, g2, ...), one certificate each."
  type        = list(string)
}

variable "dns_zone_name" {
  description = "The private zone: a gatherer's certificate is valid for <slot>.gatherers.<zone>, the name the deduplicator connects to."
  type        = string
}

variable "ca_validity_days" {
  description = "How long the CA is valid (renewing it is a CA rotation: runbooks/certificate-rotation.md)."
  type        = number
  default     = 1825
}

variable "leaf_validity_days" {
  description = "How long each service certificate is valid."
  type        = number
  default     = 365
}

variable "early_renewal_days" {
  description = "A certificate is reissued by the first terraform apply within this many days of its end."
  type        = number
  default     = 60
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
