output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "One private subnet per availability zone (gatherers, deduplicator, RDS)."
  value       = aws_subnet.private[*].id
}

output "vpc_cidr_block" {
  description = "The VPC's address range."
  value       = aws_vpc.this.cidr_block
}

output "dns_zone_id" {
  description = "The private Route 53 zone's id."
  value       = aws_route53_zone.private.zone_id
}

output "dns_zone_name" {
  description = "The private Route 53 zone's name."
  value       = aws_route53_zone.private.name
}
