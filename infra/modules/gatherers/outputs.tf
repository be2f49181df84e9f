output "autoscaling_group_names" {
  description = "Each slot's auto-scaling group, by slot (alarms watch their in-service counts)."
  value       = { for slot, g in module.group : slot => g.autoscaling_group_name }
}

output "security_group_id" {
  description = "The gatherers' security group."
  value       = aws_security_group.gatherer.id
}

output "kalshi_key_secret_arns" {
  description = "Each slot's Kalshi key secret, by slot: put the key there before the first apply's instances boot (runbooks/key-rotation.md)."
  value       = { for slot, s in aws_secretsmanager_secret.kalshi_key : slot => s.arn }
}

output "dns_names" {
  description = "Each slot's private DNS name, by slot (deploy/deduplicator.production.toml names them)."
  value       = { for slot, s in local.slots : slot => s.dns_name }
}

output "health_metric_dimensions" {
  description = "The CloudWatch dimensions (TargetGroup, LoadBalancer) of the gatherers' health-check target group: its HealthyHostCount counts live gatherers."
  value = {
    TargetGroup  = module.health.target_group_arn_suffix
    LoadBalancer = module.health.load_balancer_arn_suffix
  }
}
