variable "name" {
  description = "Prefix of the bucket name."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
