output "rds_endpoint" {
  description = "Production host:port for production.database_url."
  value       = module.rds.endpoint
}

output "rds_identifier" {
  description = "rds.instance_id for deduplicator.toml."
  value       = module.rds.identifier
}

output "archive_bucket" {
  description = "The archive bucket."
  value       = module.archive.bucket_name
}

output "gatherer_asg" {
  description = "The gatherers' auto-scaling group."
  value       = module.gatherers.autoscaling_group_name
}

output "alerts_topic" {
  description = "SNS topic of the CloudWatch alarms."
  value       = module.alarms.sns_topic_arn
}

output "deduplicator_health_target_group" {
  description = "Target group checking the deduplicator's /health."
  value       = module.deduplicator.health_target_group_arn
}
