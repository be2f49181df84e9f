output "autoscaling_group_name" {
  description = "The gatherers' auto-scaling group (alarms watch its in-service count)."
  value       = aws_autoscaling_group.gatherer.name
}

output "security_group_id" {
  description = "The gatherers' security group."
  value       = aws_security_group.gatherer.id
}
