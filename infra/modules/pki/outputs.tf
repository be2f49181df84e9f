output "secret_arns" {
  description = "Each identity's TLS secret (slots and \"deduplicator\"), by identity."
  value       = { for id, s in aws_secretsmanager_secret.tls : id => s.arn }
}

output "ca_signing_secret_arn" {
  description = "The CA's secret (certificate and key), which only the deduplicators' role may read."
  value       = aws_secretsmanager_secret.ca_signing.arn
}

output "secret_prefix" {
  description = "The prefix of every TLS secret's name (kalshi-data/<env>/tls/): renew-tls.sh's --prefix."
  value       = local.prefix
}

output "identities" {
  description = "Each identity and the DNS names its certificate is valid for (renew-tls.sh's --identity id=name,name)."
  value       = local.identities
}
