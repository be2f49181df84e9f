#!/bin/bash
# Sets up the deduplicator host from an unpacked release (this script sits at its top) and
# starts the deduplicator. EC2 user-data runs it as root after checking the release's SHA-256;
# the test suite runs it under --root, which it never leaves.
#
#   bootstrap.sh --rds-endpoint HOST:PORT --rds-instance-id ID --region R [options]
#
# Steps, each idempotent:
#   1. Debian packages: postgresql-client (psql for operators, runbooks/operator-access.md),
#      node_exporter, curl (skip: --no-apt); the RDS CA bundle for verify-full TLS.
#   2. The deduplicator: binary, systemd unit, deploy/deduplicator.production.toml as the
#      config (its [[gatherers]] replaced by --gatherers' slots, by their private DNS names
#      <slot>.gatherers.<zone>), and an environment file with
#      this deployment's values: the production URL (IAM authentication, no password) and the
#      RDS instance and region.
#   3. The config is checked (`deduplicator --check-config`), then the unit enabled and started.
#
# Options:
#   --rds-endpoint HOST:PORT  production (Terraform output rds_endpoint; required)
#   --rds-instance-id ID      the RDS instance identifier (Terraform output rds_identifier; required)
#   --region R                AWS region (required)
#   --zone NAME               the gatherers' private DNS zone (default kalshi.internal)
#   --db-user NAME            production user, granted rds_iam (default deduplicator)
#   --gatherers LIST          the gatherer slots to read, comma-separated (Terraform's slots;
#                             default g1,g2,g3): one [[gatherers]] entry each, <slot>.gatherers.<zone>
#   --check-args              check the arguments and exit (0: a boot would accept them)
#   --root DIR                prefix for every file written (default /)
#   --no-apt                  do not install Debian packages
#   --no-systemd              do not reload, enable or start units
#   --rds-ca-bundle FILE      use this CA bundle instead of downloading Amazon's
#   --log-group NAME          ship the deduplicator's journal to this CloudWatch Logs group
#   --tls-secret-arn ARN      its mTLS identity {"ca", "cert", "key"} (infra/modules/pki),
#                             refreshed daily by kalshi-tls-refresh.timer
#   --tls-dir DIR             or take it from DIR (ca.crt, deduplicator.crt, deduplicator.key)
#   --tls-issue-prefix P      issue and renew every mTLS certificate of the link in the secrets
#                             named P<identity> (Terraform's pki secret_prefix): once now, then
#                             daily (kalshi-tls-renew.timer; lib/renew-tls.sh)
#   --tls-issue-name N        the environment, in the CA's name
#   --tls-issue-identity ID=NAME,NAME...
#                             one per identity (Terraform's pki identities), repeated
#   --lag-metric ENV          publish the active one's lag to CloudWatch every minute
#                             (kalshi-data DedupSyncLagSeconds, Environment=ENV), for the alarm
#                             that needs no Prometheus (lib/publish-lag.sh)
#   --tls-leaf-days N, --tls-renew-within-days N
#                             certificates' validity (365) and when they are renewed (60 days
#                             before their end)
#   --archive-bucket NAME     archive to this S3 bucket (Terraform output archive_bucket);
#                             without it the archive stays off
#   --archive-prefix P        the bucket prefix the instance role may write (default archive/)
set -euo pipefail

log_group=""
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rds_endpoint="" rds_instance_id="" region="" zone="kalshi.internal" db_user="deduplicator"
gatherers="g1,g2,g3"
issue_prefix="" issue_name="" leaf_days=365 renew_within=60
issue_identities=()
lag_metric=""
root="/" apt=1 systemd=1 ca_bundle="" tls_secret_arn="" tls_dir=""
archive_bucket="" archive_prefix="archive/"
ca_url="https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
# shellcheck source=/dev/null
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --rds-endpoint) rds_endpoint="$2"; shift 2 ;;
        --rds-instance-id) rds_instance_id="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        --zone) zone="$2"; shift 2 ;;
        --db-user) db_user="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --gatherers) gatherers="$2"; shift 2 ;;
        --tls-issue-prefix) issue_prefix="$2"; shift 2 ;;
        --tls-issue-name) issue_name="$2"; shift 2 ;;
        --tls-issue-identity) issue_identities+=(--identity "$2"); shift 2 ;;
        --lag-metric) lag_metric="$2"; shift 2 ;;
        --tls-leaf-days) leaf_days="$2"; shift 2 ;;
        --tls-renew-within-days) renew_within="$2"; shift 2 ;;
        --check-args) check_args=1; shift ;;
        --log-group) log_group="$2"; shift 2 ;;
        --no-apt) apt=0; shift ;;
        --no-systemd) systemd=0; shift ;;
        --rds-ca-bundle) ca_bundle="$2"; shift 2 ;;
        --tls-secret-arn) tls_secret_arn="$2"; shift 2 ;;
        --tls-dir) tls_dir="$2"; shift 2 ;;
        --archive-bucket) archive_bucket="$2"; shift 2 ;;
        --archive-prefix) archive_prefix="$2"; shift 2 ;;
        -h | --help) sed -n '2,49p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$rds_endpoint" =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || die "--rds-endpoint must be host:port (got '$rds_endpoint')"
[[ "$rds_instance_id" =~ ^[a-z][a-z0-9-]*$ ]] || die "--rds-instance-id must be an RDS identifier (got '$rds_instance_id')"
[[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]$ ]] || die "--region must be an AWS region (got '$region')"
[[ "$zone" =~ ^[a-z0-9.-]+$ ]] || die "--zone must be a DNS name"
[[ "$db_user" =~ ^[a-z_][a-z0-9_]*$ ]] || die "--db-user must be a plain identifier"
[[ "$gatherers" =~ ^g[0-9]+(,g[0-9]+)*$ ]] || die "--gatherers must be slots like g1,g2,g3 (got '$gatherers')"
if [ -n "$lag_metric" ]; then
    [[ "$lag_metric" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--lag-metric must be the environment's name"
fi
if [ -n "$issue_prefix" ]; then
    [[ "$issue_prefix" =~ ^[A-Za-z0-9/_.-]+/$ ]] || die "--tls-issue-prefix must be a secret name prefix ending in /"
    [[ "$issue_name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--tls-issue-name must be the environment's name"
    [ "${#issue_identities[@]}" -gt 0 ] || die "--tls-issue-prefix needs --tls-issue-identity"
    [[ "$leaf_days" =~ ^[0-9]+$ && "$renew_within" =~ ^[0-9]+$ && "$renew_within" -lt "$leaf_days" ]] ||
        die "--tls-renew-within-days must be below --tls-leaf-days"
fi
if [ -n "$archive_bucket" ]; then
    [[ "$archive_bucket" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "--archive-bucket must be an S3 bucket name"
    [[ "$archive_prefix" =~ ^([A-Za-z0-9._=-]+/)*$ ]] || die "--archive-prefix must be empty or end in /"
fi
if [ -z "$tls_secret_arn" ] && [ -z "$tls_dir" ]; then
    die "the gRPC link's mTLS identity: --tls-secret-arn or --tls-dir"
fi
if [ "${check_args:-0}" = 1 ]; then
    say "arguments accepted"
    exit 0
fi
root="${root%/}"
etc="$root/etc/kalshi-data"

# 1. Packages and the CA bundle.
if [ "$apt" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends postgresql-client prometheus-node-exporter gnupg awscli jq openssl \
        curl ca-certificates
fi
install -d -m 0755 "$etc"
if [ -n "$ca_bundle" ]; then
    install -m 0644 "$ca_bundle" "$etc/rds-global-bundle.pem"
else
    curl -fsSL "$ca_url" -o "$etc/rds-global-bundle.pem.new"
    grep -q 'BEGIN CERTIFICATE' "$etc/rds-global-bundle.pem.new" || die "$ca_url is not a PEM bundle"
    mv "$etc/rds-global-bundle.pem.new" "$etc/rds-global-bundle.pem"
fi

# 2. The deduplicator.
install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
install -m 0755 "$here/bin/deduplicator" "$root/usr/local/bin/deduplicator"
install -m 0644 "$here/systemd/kalshi-deduplicator.service" "$root/etc/systemd/system/"
if [ -z "$root" ] && ! id kalshi >/dev/null 2>&1; then
    useradd --system --home /var/lib/kalshi --shell /usr/sbin/nologin kalshi
fi
group="kalshi"
if [ "$(id -u)" != 0 ] || ! getent group kalshi >/dev/null; then
    group="$(id -gn)"
fi
# The shipped [[gatherers]] tables give way to one per slot of --gatherers, where the first was.
awk -v slots="$gatherers" -v zone="$zone" '
    /^\[\[gatherers\]\]$/ {
        skipping = 1
        if (!done) {
            n = split(slots, s, ",")
            for (i = 1; i <= n; i++)
                printf "[[gatherers]]\nid = \"%s\"\nendpoint = \"https://%s.gatherers.%s:50051\"\n\n", s[i], s[i], zone
            done = 1
        }
        next
    }
    skipping && /^(id|endpoint) = / { next }
    skipping && /^$/ { skipping = 0; next }
    { skipping = 0; print }
' "$here/etc/deduplicator.production.toml" >"$etc/deduplicator.toml.new"
chgrp "$group" "$etc/deduplicator.toml.new"
chmod 0640 "$etc/deduplicator.toml.new"
mv "$etc/deduplicator.toml.new" "$etc/deduplicator.toml"
umask 077
# Quoted: systemd's EnvironmentFile strips the quotes, and the shell below needs them (&).
cat >"$etc/deduplicator.env" <<ENV
DEDUPLICATOR__PRODUCTION__DATABASE_URL="postgres://$db_user@$rds_endpoint/kalshi?sslmode=verify-full&sslrootcert=/etc/kalshi-data/rds-global-bundle.pem"
DEDUPLICATOR__RDS__INSTANCE_ID="$rds_instance_id"
DEDUPLICATOR__RDS__REGION="$region"
ENV
if [ -n "$archive_bucket" ]; then
    cat >>"$etc/deduplicator.env" <<ENV
DEDUPLICATOR__ARCHIVE__ENABLED="true"
DEDUPLICATOR__ARCHIVE__BUCKET="$archive_bucket"
DEDUPLICATOR__ARCHIVE__PREFIX="$archive_prefix"
DEDUPLICATOR__ARCHIVE__REGION="$region"
ENV
fi
umask 022

# The link's certificates, issued (the first boot) and renewed here, before this host fetches
# its own: once now, then daily. A failure now is not fatal (the other deduplicator, or the
# next run, issues them; fetching below waits for this host's own).
if [ -n "$issue_prefix" ]; then
    renew=("$here/lib/renew-tls.sh" --region "$region" --prefix "$issue_prefix" --name "$issue_name"
        --leaf-days "$leaf_days" --renew-within-days "$renew_within" "${issue_identities[@]}")
    if [ "$systemd" = 1 ]; then
        "${renew[@]}" || say "warning: issuing the mTLS certificates failed (kalshi-tls-renew.timer retries)"
    fi
    install -d -m 0755 "$root/etc/systemd/system"
    cat >"$root/etc/systemd/system/kalshi-tls-renew.service" <<UNIT
[Unit]
Description=Issue and renew the kalshi-data gRPC link's mTLS certificates (Secrets Manager)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=${renew[*]}
UNIT
    timer_unit "$root" kalshi-tls-renew "Daily renewal of the kalshi-data gRPC link's mTLS certificates" \
        OnCalendar=daily RandomizedDelaySec=1h Persistent=true
fi

# The lag, to CloudWatch every minute (the active deduplicator only).
if [ -n "$lag_metric" ]; then
    install -d -m 0755 "$root/etc/systemd/system"
    cat >"$root/etc/systemd/system/kalshi-lag-publish.service" <<UNIT
[Unit]
Description=Publish the active kalshi-data deduplicator's lag to CloudWatch

[Service]
Type=oneshot
ExecStart=$here/lib/publish-lag.sh --region $region --name $lag_metric
UNIT
    timer_unit "$root" kalshi-lag-publish "Every minute: the kalshi-data deduplicator's lag to CloudWatch" \
        OnBootSec=1min OnUnitActiveSec=1min AccuracySec=5s
fi

# The mTLS identity, refreshed daily (re-read without a restart when it changes).
install_tls deduplicator deduplicator kalshi "$root" "$region" "$tls_secret_arn" "$tls_dir"

# 3. Check and start (under --root, against the copies there).
check_cfg="$etc/deduplicator.toml"
if [ -n "$root" ]; then
    sed -e "s|/etc/kalshi-data/|$etc/|g" "$etc/deduplicator.toml" >"$etc/deduplicator.check.toml"
    check_cfg="$etc/deduplicator.check.toml"
fi
(
    set -a
    # shellcheck source=/dev/null
    . "$etc/deduplicator.env"
    set +a
    if [ -n "$root" ]; then
        DEDUPLICATOR__PRODUCTION__DATABASE_URL="${DEDUPLICATOR__PRODUCTION__DATABASE_URL//\/etc\/kalshi-data\//$etc/}"
    fi
    "$root/usr/local/bin/deduplicator" --config "$check_cfg" --check-config
)
rm -f "$etc/deduplicator.check.toml"
timer=0
[ -z "$tls_secret_arn" ] || timer=1
finish deduplicator "$root" "$log_group" "$systemd" "$timer"
if [ -n "$issue_prefix" ] && [ "$systemd" = 1 ]; then
    systemctl enable --now kalshi-tls-renew.timer
fi
if [ -n "$lag_metric" ] && [ "$systemd" = 1 ]; then
    systemctl enable --now kalshi-lag-publish.timer
fi
