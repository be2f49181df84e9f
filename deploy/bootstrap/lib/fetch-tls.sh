#!/bin/bash
# Installs this host's mTLS identity (the CA, its certificate and key) under
# /etc/kalshi-data/tls as the files the service's configuration names:
#   ca.crt, <service>.crt, <service>.key (the key 0400, owned by the service's user)
# from its Secrets Manager secret {"ca", "cert", "key"} (infra/modules/pki), or from a
# directory holding ca.crt, <identity>.crt and <identity>.key (tests, manual set-ups).
#
#   fetch-tls.sh --service gatherer --identity g2 (--secret-arn ARN --region R | --from-dir DIR)
#                [--root DIR] [--owner USER] [--wait SECS]
#
# --wait: a secret with no value yet (a first boot, before the deduplicators issued the
# certificates: lib/renew-tls.sh) is asked again every 10 s for up to SECS.
#
# Files are replaced atomically and only when their content changed, so running it again (the
# bootstraps install a daily timer that does, kalshi-tls-refresh.timer) costs nothing until
# the deduplicators renew a certificate (lib/renew-tls.sh); the service then re-reads the changed files at its next
# handshake, without a restart.
set -euo pipefail

service="" identity="" secret_arn="" region="" from_dir="" root="/" owner="kalshi" wait=0
while [ $# -gt 0 ]; do
    case "$1" in
        --service) service="$2"; shift 2 ;;
        --identity) identity="$2"; shift 2 ;;
        --secret-arn) secret_arn="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        --from-dir) from_dir="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --owner) owner="$2"; shift 2 ;;
        --wait) wait="$2"; shift 2 ;;
        -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fetch-tls.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ "$service" =~ ^(gatherer|deduplicator)$ ]] || { echo "fetch-tls.sh: --service gatherer or deduplicator" >&2; exit 2; }
[[ "$identity" =~ ^[a-z0-9-]+$ ]] || { echo "fetch-tls.sh: bad --identity '$identity'" >&2; exit 2; }
if [ -z "$secret_arn" ] && [ -z "$from_dir" ]; then
    echo "fetch-tls.sh: --secret-arn (with --region) or --from-dir" >&2
    exit 2
fi
root="${root%/}"
dir="$root/etc/kalshi-data/tls"
id "$owner" >/dev/null 2>&1 || owner="$(id -un)"
install -d -m 0755 "$dir"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[[ "$wait" =~ ^[0-9]+$ ]] || { echo "fetch-tls.sh: bad --wait '$wait'" >&2; exit 2; }
if [ -n "$secret_arn" ]; then
    deadline=$((SECONDS + wait))
    until secret="$(aws secretsmanager get-secret-value --region "$region" --secret-id "$secret_arn" \
        --query SecretString --output text 2>"$work/err")"; do
        if ! grep -q ResourceNotFoundException "$work/err" || [ "$SECONDS" -ge "$deadline" ]; then
            echo "fetch-tls.sh: cannot read $secret_arn: $(cat "$work/err")" >&2
            exit 1
        fi
        echo "fetch-tls.sh: $secret_arn has no certificate yet (the deduplicators issue it): waiting" >&2
        sleep 10
    done
    jq -er .ca <<<"$secret" >"$work/ca.crt"
    jq -er .cert <<<"$secret" >"$work/$service.crt"
    jq -er .key <<<"$secret" >"$work/$service.key"
    unset secret
else
    cp "$from_dir/ca.crt" "$work/ca.crt"
    cp "$from_dir/$identity.crt" "$work/$service.crt"
    cp "$from_dir/$identity.key" "$work/$service.key"
fi
for f in ca.crt "$service.crt" "$service.key"; do
    grep -q -- '-----BEGIN ' "$work/$f" || { echo "fetch-tls.sh: $f is not PEM" >&2; exit 1; }
done
changed=0
# The CA first (a rotation adds the new CA before certificates issued by it), then the key
# and certificate.
for f in ca.crt "$service.key" "$service.crt"; do
    if [ -f "$dir/$f" ] && cmp -s "$work/$f" "$dir/$f"; then
        continue
    fi
    mode=0444
    [ "$f" = "$service.key" ] && mode=0400
    install -m "$mode" "$work/$f" "$dir/.$f.new"
    chown "$owner" "$dir/.$f.new"
    mv -f "$dir/.$f.new" "$dir/$f"
    changed=1
done
if [ "$changed" = 1 ]; then
    echo "fetch-tls.sh: $service's TLS files updated in $dir" >&2
fi
