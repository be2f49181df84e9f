output "endpoint" {
  description = "host:port of production (the Multi-AZ endpoint that moves on failover)."
  value       = aws_db_instance.this.endpoint
}

output "identifier" {
  description = "The instance identifier (rds.instance_id in deduplicator.toml)."
  value       = aws_db_instance.this.identifier
}

output "resource_id" {
  description = "The resource id, for rds-db:connect."
  value       = aws_db_instance.this.resource_id
}
