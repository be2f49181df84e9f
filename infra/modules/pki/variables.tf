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

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
