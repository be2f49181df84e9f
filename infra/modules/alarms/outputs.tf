output "sns_topic_arn" {
  description = "The alerts topic (subscribe PagerDuty/Opsgenie here)."
  value       = aws_sns_topic.alerts.arn
}
