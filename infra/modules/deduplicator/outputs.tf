output "security_group_id" {
  description = "The deduplicator's security group (allowed into gatherers' gRPC and RDS)."
  value       = aws_security_group.deduplicator.id
}

output "health_target_group_arn" {
  description = "The target group whose /health/live check replaces a dead instance."
  value       = module.health.target_group_arn
}
