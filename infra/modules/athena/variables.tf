variable "name" {
  description = "Prefix of the Glue database, the workgroup and the policy."
  type        = string
}

variable "archive_bucket_name" {
  description = "The archive bucket (module archive's bucket_name)."
  type        = string
}

variable "archive_bucket_arn" {
  description = "The archive bucket's ARN (module archive's bucket_arn)."
  type        = string
}

variable "archive_prefix" {
  description = "The deduplicator's archive.prefix: the archive's key prefix, ending in '/'."
  type        = string
  default     = "archive/"
}

variable "first_date" {
  description = "The first date partition projection considers (yyyy-MM-dd): the day the archive began. Earlier dates are never scanned."
  type        = string
}

variable "bytes_scanned_cutoff_per_query" {
  description = "Athena cancels a query of the workgroup that would scan more than this many bytes (the cost guard; 1 TB by default)."
  type        = number
  default     = 1099511627776
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
