output "secret_arns" {
  description = "Each identity's TLS secret (slots and \"deduplicator\"), by identity."
  value       = { for id, s in aws_secretsmanager_secret.tls : id => s.arn }
}

output "ca_cert_pem" {
  description = "The CA certificate (public), for clients other than the deduplicator, e.g. grpcurl."
  value       = tls_self_signed_cert.ca.cert_pem
}
