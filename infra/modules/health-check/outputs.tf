output "target_group_arn" {
  description = "Attach the auto-scaling group(s) to it (target_group_arns) with health_check_type = \"ELB\"."
  value       = aws_lb_target_group.live.arn
}

output "security_group_id" {
  description = "The load balancer's group: admit it to port 8080 of the checked instances."
  value       = aws_security_group.lb.id
}

output "target_group_arn_suffix" {
  description = "The target group's ARN suffix: the TargetGroup dimension of its CloudWatch metrics (HealthyHostCount)."
  value       = aws_lb_target_group.live.arn_suffix
}

output "load_balancer_arn_suffix" {
  description = "The load balancer's ARN suffix: the LoadBalancer dimension of its CloudWatch metrics."
  value       = aws_lb.health.arn_suffix
}
