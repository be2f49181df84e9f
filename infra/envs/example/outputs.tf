output "rds_endpoint" {
  description = "Production host:port (the deduplicator's bootstrap puts it in deduplicator.env)."
  value       = module.rds.endpoint
}

output "rds_identifier" {
  description = "The RDS instance identifier (the environment's name)."
  value       = module.rds.identifier
}

output "archive_bucket" {
  description = "The archive bucket."
  value       = module.archive.bucket_name
}

output "gatherer_asgs" {
  description = "Each gatherer slot's auto-scaling group."
  value       = module.gatherers.autoscaling_group_names
}

output "gatherer_dns_names" {
  description = "Each gatherer slot's private DNS name."
  value       = module.gatherers.dns_names
}

output "kalshi_key_secret_arns" {
  description = "Each gatherer slot's Kalshi key secret: put a key in each (runbooks/key-rotation.md)."
  value       = module.gatherers.kalshi_key_secret_arns
}

output "alerts_topic" {
  description = "SNS topic of the CloudWatch alarms and of Alertmanager (deploy/alertmanager/alertmanager.yml)."
  value       = module.alarms.sns_topic_arn
}

output "deduplicator_health_target_group" {
  description = "Target group checking the deduplicator's /health/live."
  value       = module.deduplicator.health_target_group_arn
}

output "prometheus_security_group_id" {
  description = "Put the Prometheus host in this group."
  value       = module.monitoring.security_group_id
}

output "prometheus_instance_profile" {
  description = "The Prometheus host's instance profile."
  value       = module.monitoring.instance_profile_name
}

output "operator_security_group_id" {
  description = "Operators' hosts carry this group to reach production."
  value       = aws_security_group.operator.id
}

output "athena_database" {
  description = "The Glue database of the archive's tables (docs/archive.md, \"Athena\")."
  value       = module.athena.database
}

output "athena_workgroup" {
  description = "The Athena workgroup analysts query in."
  value       = module.athena.workgroup
}

output "athena_analyst_policy_arn" {
  description = "Attach to an analyst's role or user to query the archive with Athena."
  value       = module.athena.analyst_policy_arn
}
