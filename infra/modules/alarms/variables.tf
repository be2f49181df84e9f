variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "gatherer_asg_names" {
  description = "Each gatherer slot's auto-scaling group, by slot."
  type        = map(string)
}

variable "rds_identifier" {
  description = "The production RDS instance identifier."
  type        = string
}

variable "alert_emails" {
  description = "E-mail addresses subscribed to the alerts topic."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "gatherer_health_dimensions" {
  description = "CloudWatch dimensions (TargetGroup, LoadBalancer) of the gatherers' health-check target group (module gatherers' health_metric_dimensions)."
  type        = map(string)
}

variable "deduplicator_health_dimensions" {
  description = "CloudWatch dimensions (TargetGroup, LoadBalancer) of the deduplicators' health-check target group (module deduplicator's health_metric_dimensions)."
  type        = map(string)
}

variable "deduplicator_instances" {
  description = "How many deduplicators the group runs (the active and its standby)."
  type        = number
  default     = 2
}

variable "deduplicator_asg_name" {
  description = "The deduplicators' auto-scaling group (module deduplicator's autoscaling_group_name)."
  type        = string
}
