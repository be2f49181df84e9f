output "security_group_id" {
  description = "The deduplicator's security group (allowed into gatherers' gRPC and RDS)."
  value       = aws_security_group.deduplicator.id
}

output "health_target_group_arn" {
  description = "The target group whose /health/live check replaces a dead instance."
  value       = module.health.target_group_arn
}

output "health_metric_dimensions" {
  description = "The CloudWatch dimensions (TargetGroup, LoadBalancer) of the deduplicators' health-check target group: its HealthyHostCount counts live deduplicators."
  value = {
    TargetGroup  = module.health.target_group_arn_suffix
    LoadBalancer = module.health.load_balancer_arn_suffix
  }
}

output "autoscaling_group_name" {
  description = "The deduplicators' auto-scaling group."
  value       = module.group.autoscaling_group_name
}

output "instances" {
  description = "How many deduplicators the group runs (the active one and its standbys)."
  value       = var.instances
}
