#!/bin/bash
# Issues and renews the gRPC link's mTLS certificates in Secrets Manager, without a person and
# without Terraform: private keys are made here, go to their secrets only, and never reach the
# Terraform state. Run daily on the deduplicator hosts by kalshi-tls-renew.timer; every host's
# kalshi-tls-refresh.timer then fetches its own identity, and the services re-read changed files
# at the next handshake.
#
#   renew-tls.sh --region R --prefix kalshi-data/<env>/tls/ --name <env>
#                --identity g1=g1,g1.gatherers.kalshi.internal [--identity ...]
#                [--leaf-days 365] [--renew-within-days 60] [--ca-days 3650]
#
# Secrets (infra/modules/pki makes them empty; only the deduplicators' role may write them):
#   <prefix>ca-signing   {"cert", "key"}: the CA, made here on the first run
#   <prefix><identity>   {"ca", "cert", "key"}: one per identity, read by its own host only
# An identity is (re)issued when its secret is empty, its certificate ends within
# --renew-within-days, or it does not chain to the current CA. Two hosts running at once agree:
# every write carries a token derived from what it replaces (Secrets Manager refuses a second,
# different write under the same token), and the loser reads the winner's.
# The CA itself is not renewed here (it lasts --ca-days, ten years by default); its end is
# alerted on 30 days ahead (TlsCertificateExpiresSoon, cert="ca") and rotated by
# runbooks/certificate-rotation.md. Exits 1 if any identity could not be renewed.
set -euo pipefail

region="" prefix="" name="" leaf_days=365 within_days=60 ca_days=3650
identities=()
say() { printf 'renew-tls: %s\n' "$*" >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="$2"; shift 2 ;;
        --prefix) prefix="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --identity) identities+=("$2"); shift 2 ;;
        --leaf-days) leaf_days="$2"; shift 2 ;;
        --renew-within-days) within_days="$2"; shift 2 ;;
        --ca-days) ca_days="$2"; shift 2 ;;
        -h | --help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "unknown option $1"; exit 2 ;;
    esac
done
[[ "$prefix" =~ ^[A-Za-z0-9/_.-]+/$ ]] || { say "bad --prefix '$prefix' (it ends in /)"; exit 2; }
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { say "bad --name '$name'"; exit 2; }
for n in "$leaf_days" "$within_days" "$ca_days"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { say "days must be whole numbers (got '$n')"; exit 2; }
done
[ "$within_days" -lt "$leaf_days" ] || { say "--renew-within-days must be below --leaf-days"; exit 2; }
[ "${#identities[@]}" -gt 0 ] || { say "no --identity"; exit 2; }
for i in "${identities[@]}"; do
    [[ "$i" =~ ^[a-z0-9-]+=[a-z0-9.-]+(,[a-z0-9.-]+)*$ ]] || { say "bad --identity '$i' (id=name,name...)"; exit 2; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077
sm() { aws secretsmanager --region "$region" "$@"; }

# get ID FILE: the secret's current value into FILE. 0: read; 1: it has no value yet; 2: error.
get() {
    local err
    if sm get-secret-value --secret-id "$1" --query SecretString --output text >"$2" 2>"$work/err"; then
        return 0
    fi
    err="$(cat "$work/err")"
    if grep -q ResourceNotFoundException <<<"$err"; then
        return 1
    fi
    say "cannot read $1: $err"
    return 2
}

# put ID FILE TOKEN: writes FILE as the secret's new value under TOKEN (idempotent per token).
put() {
    sm put-secret-value --secret-id "$1" --secret-string "file://$2" --client-request-token "$3" >/dev/null 2>"$work/err"
}

token() { printf '%s' "$*" | sha256sum | cut -c1-64; }

# The CA: read, or made once (every host racing here writes under one token; one CA wins).
ca_id="${prefix}ca-signing"
status=0
get "$ca_id" "$work/ca.json" || status=$?
if [ "$status" = 2 ]; then
    exit 1
fi
if [ "$status" = 1 ]; then
    say "no CA yet: making one (valid $ca_days days)"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$work/ca.key" -days "$ca_days" -sha256 \
        -subj "/O=kalshi-data/CN=kalshi-data $name gRPC CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$work/ca.crt" 2>/dev/null
    jq -n --rawfile cert "$work/ca.crt" --rawfile key "$work/ca.key" '{cert: $cert, key: $key}' >"$work/ca.new.json"
    if ! put "$ca_id" "$work/ca.new.json" "$(token initial-ca "$ca_id")"; then
        say "another host made the CA first: using it"
    fi
    get "$ca_id" "$work/ca.json" || exit 1
fi
jq -ej .cert "$work/ca.json" >"$work/ca.crt"
jq -ej .key "$work/ca.json" >"$work/ca.key"
openssl x509 -in "$work/ca.crt" -noout 2>/dev/null || { say "$ca_id does not hold a certificate"; exit 1; }

failed=0
for spec in "${identities[@]}"; do
    id="${spec%%=*}" names="${spec#*=}"
    secret="${prefix}$id"
    current="none"
    status=0
    get "$secret" "$work/$id.json" || status=$?
    if [ "$status" = 2 ]; then
        failed=1
        continue
    fi
    if [ "$status" = 0 ] && jq -ej .cert "$work/$id.json" >"$work/$id.crt" 2>/dev/null &&
        jq -ej .ca "$work/$id.json" >"$work/$id.ca" 2>/dev/null; then
        current="$(openssl x509 -in "$work/$id.crt" -noout -fingerprint -sha256 2>/dev/null || echo unreadable)"
        if openssl x509 -in "$work/$id.crt" -noout -checkend $((within_days * 86400)) >/dev/null 2>&1 &&
            openssl verify -CAfile "$work/ca.crt" "$work/$id.crt" >/dev/null 2>&1 &&
            cmp -s "$work/$id.ca" "$work/ca.crt"; then
            continue
        fi
    fi
    say "issuing $id ($names, valid $leaf_days days; was: $current)"
    san="DNS:${names//,/,DNS:}"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$id.key" 2>/dev/null
    openssl req -new -key "$work/$id.key" -subj "/O=kalshi-data/CN=${names%%,*}" -out "$work/$id.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=$san" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" >"$work/$id.ext"
    if ! openssl x509 -req -in "$work/$id.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$leaf_days" -sha256 \
        -extfile "$work/$id.ext" -out "$work/$id.crt" 2>"$work/err"; then
        say "cannot sign $id: $(cat "$work/err")"
        failed=1
        continue
    fi
    jq -n --rawfile ca "$work/ca.crt" --rawfile cert "$work/$id.crt" --rawfile key "$work/$id.key" \
        '{ca: $ca, cert: $cert, key: $key}' >"$work/$id.new.json"
    if put "$secret" "$work/$id.new.json" "$(token "$secret" "$current")"; then
        say "$id renewed: ends $(openssl x509 -in "$work/$id.crt" -noout -enddate | cut -d= -f2)"
    elif grep -q ResourceExistsException "$work/err"; then
        say "$id was renewed by another host at the same time: keeping theirs"
    else
        say "cannot write $secret: $(cat "$work/err")"
        failed=1
    fi
done
exit "$failed"
