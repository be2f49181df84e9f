# The private PKI of the gRPC link between the deduplicator and the gatherers (mTLS): a CA and
# a certificate per gatherer slot (valid for <slot> and <slot>.gatherers.<zone>) and for the
# deduplicator (valid for "deduplicator", the name on the gatherers' allow-list).
#
# Terraform makes the secrets, empty, and never a key: the deduplicators issue and renew every
# certificate themselves (deploy/bootstrap/lib/renew-tls.sh, at boot and daily by
# kalshi-tls-renew.timer), so no private key is ever in the Terraform state. Secrets:
#   kalshi-data/<env>/tls/ca-signing   {"cert", "key"}: the CA, made at the first run; only the
#                                      deduplicators' role reads it
#   kalshi-data/<env>/tls/<identity>   {"ca", "cert", "key"}: its own instance role reads it; the
#                                      deduplicators' role writes it
# Each host installs its identity under /etc/kalshi-data/tls (lib/fetch-tls.sh, which waits at
# boot for a first certificate) and fetches it again daily (kalshi-tls-refresh.timer); the
# services re-read changed files at the next handshake, without a restart.

locals {
  identities = merge(
    { for slot in var.slots : slot => [slot, "${slot}.gatherers.${var.dns_zone_name}"] },
    { deduplicator = ["deduplicator"] },
  )
  prefix = "kalshi-data/${var.name}/tls/"
}

resource "aws_secretsmanager_secret" "tls" {
  for_each                = local.identities
  name                    = "${local.prefix}${each.key}"
  description             = "mTLS identity of ${each.key}: {\"ca\", \"cert\", \"key\"} (PEM), issued and renewed by the deduplicators (renew-tls.sh)"
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret" "ca_signing" {
  name                    = "${local.prefix}ca-signing"
  description             = "The gRPC link's CA {\"cert\", \"key\"} (PEM), made and used by the deduplicators' renew-tls.sh"
  recovery_window_in_days = 30
  tags                    = var.tags
}
