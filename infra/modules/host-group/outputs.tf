output "autoscaling_group_name" {
  description = "The group's name."
  value       = aws_autoscaling_group.this.name
}
