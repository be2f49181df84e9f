# The private PKI of the gRPC link between the deduplicator and the gatherers (mTLS): a CA and
# a certificate per gatherer slot (valid for <slot> and <slot>.gatherers.<zone>) and for the
# deduplicator (valid for "deduplicator", the name on the gatherers' allow-list). Each identity
# is a Secrets Manager secret {"ca", "cert", "key"} that only its own instance role may read;
# the bootstraps install it under /etc/kalshi-data/tls, and a daily timer on every host
# (kalshi-tls-refresh.timer) fetches it again, so a certificate Terraform renews (within
# early_renewal_days of its end) reaches the hosts without a restart: the services re-read
# changed files at the next handshake.
#
# The private keys are in the Terraform state: keep the state encrypted and access to it as
# narrow as to the secrets (the S3 backend of envs/example encrypts it).

terraform {
  required_providers {
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}

locals {
  identities = merge(
    { for slot in var.slots : slot => [slot, "${slot}.gatherers.${var.dns_zone_name}"] },
    { deduplicator = ["deduplicator"] },
  )
}

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = var.ca_validity_days * 24
  early_renewal_hours   = var.early_renewal_days * 24
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]
  subject {
    common_name  = "kalshi-data ${var.name} gRPC CA"
    organization = "kalshi-data"
  }
}

resource "tls_private_key" "leaf" {
  for_each    = local.identities
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "leaf" {
  for_each        = local.identities
  private_key_pem = tls_private_key.leaf[each.key].private_key_pem
  dns_names       = each.value
  subject {
    common_name  = each.value[0]
    organization = "kalshi-data"
  }
}

resource "tls_locally_signed_cert" "leaf" {
  for_each              = local.identities
  cert_request_pem      = tls_cert_request.leaf[each.key].cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = var.leaf_validity_days * 24
  early_renewal_hours   = var.early_renewal_days * 24
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
}

resource "aws_secretsmanager_secret" "tls" {
  for_each                = local.identities
  name                    = "kalshi-data/${var.name}/tls/${each.key}"
  description             = "mTLS identity of ${each.key}: {\"ca\", \"cert\", \"key\"} (PEM)"
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "tls" {
  for_each  = local.identities
  secret_id = aws_secretsmanager_secret.tls[each.key].id
  secret_string = jsonencode({
    ca   = tls_self_signed_cert.ca.cert_pem
    cert = tls_locally_signed_cert.leaf[each.key].cert_pem
    key  = tls_private_key.leaf[each.key].private_key_pem_pkcs8
  })
}
