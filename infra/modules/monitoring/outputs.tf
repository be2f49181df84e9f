output "security_group_id" {
  description = "Put the Prometheus host in this group: the services admit it for scrapes."
  value       = aws_security_group.prometheus.id
}

output "instance_profile_name" {
  description = "The Prometheus host's instance profile (EC2 discovery, sns:Publish)."
  value       = aws_iam_instance_profile.prometheus.name
}

output "autoscaling_group_name" {
  description = "The monitoring host's group of one."
  value       = module.group.autoscaling_group_name
}
