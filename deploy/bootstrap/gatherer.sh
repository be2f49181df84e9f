#!/bin/bash
# Sets up a gatherer host from an unpacked release (this script sits at its top) and starts the
# gatherer. EC2 user-data runs it as root after checking the release's SHA-256; the test suite
# runs it against a throwaway PostgreSQL cluster under --root, which it never leaves.
#
#   bootstrap.sh --slot g2 [options]
#
# Steps, each idempotent (running it twice changes nothing the second time):
#   1. Debian packages: awscli, jq, gnupg, then postgresql, postgresql-client, node_exporter
#      (skip: --no-apt); between them a data volume (--data-volume-id attaches the slot's own,
#      or --data-device) is formatted if blank and mounted at /var/lib/postgresql, so the
#      cluster is created on it (or a kept one adopted), not on the root volume.
#   2. Local PostgreSQL: TimescaleDB preloaded only when its library is installed (otherwise
#      skipped: the gatherer's store.timescaledb = "auto" uses plain partitions); a
#      `local kalshi <db user> peer` line put first in pg_hba.conf (the first matching line wins,
#      so it must come before Debian's defaults); the role and the database.
#   3. The gatherer: binary, systemd unit, deploy/gatherer.production.toml as the config, an
#      environment file with only this host's values (GATHERER__GATHERER_ID), and the Kalshi key
#      of this slot from Secrets Manager (or from --key-id-file/--key-file) as two 0400 files.
#   4. DNS: the slot's private name (e.g. g2.gatherers.kalshi.internal) points at this instance
#      (--dns-zone-id; the deduplicator connects by name).
#   5. The config is checked (`gatherer --check-config`), then the unit enabled and started.
#
# Options (defaults are those of a Debian 12 EC2 host):
#   --slot gN               this host's gatherer_id (required; from the slot's auto-scaling group)
#   --check-args            check the arguments and exit (0: a boot would accept them)
#   --root DIR              prefix for every file written (default /)
#   --no-apt                do not install Debian packages
#   --no-systemd            do not reload, enable or start units (the caller starts the gatherer)
#   --data-device DEV       block device for /var/lib/postgresql (EBS volume), if any
#   --data-volume-id VOL    or the slot's own EBS volume, attached here first (it outlives the
#                           instance: a replacement keeps the slot's database; lib/data-volume.sh)
#   --psql CMD              psql as a PostgreSQL superuser (default: runuser -u postgres -- psql)
#   --pg-conf-dir DIR       where postgresql.conf's conf.d and pg_hba.conf are
#                           (default /etc/postgresql/15/main)
#   --pg-libdir DIR         PostgreSQL's library directory (default: pg_config --pkglibdir)
#   --pg-restart CMD        restarts PostgreSQL (default: systemctl restart postgresql)
#   --pg-socket-dir DIR     the cluster's Unix socket directory (default /var/run/postgresql)
#   --pg-port N             the cluster's port (default 5432)
#   --db-user NAME          role the gatherer connects as, by peer authentication: the OS user it
#                           runs as (default kalshi)
#   --secret-arn ARN        Secrets Manager secret {"key_id": ..., "private_key_pem": ...}
#   --region R              AWS region (for --secret-arn and --dns-zone-id)
#   --key-id-file F, --key-file F
#                           take the Kalshi key from files instead (no AWS)
#   --tls-secret-arn ARN    this slot's mTLS identity {"ca", "cert", "key"} (infra/modules/pki);
#                           refreshed daily by kalshi-tls-refresh.timer
#   --tls-dir DIR           or take it from DIR (ca.crt, <slot>.crt, <slot>.key)
#   --dns-zone-id Z --dns-name NAME
#                           UPSERT NAME (A, TTL 30) to this instance's private address
#   --log-group NAME        ship the gatherer's journal to this CloudWatch Logs group
#                           (lib/cloudwatch-logs.sh)
set -euo pipefail

log_group=""
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
slot="" root="/" apt=1 systemd=1 data_device="" data_volume_id=""
psql_cmd="runuser -u postgres -- psql"
pg_conf_dir="/etc/postgresql/15/main" pg_libdir="" pg_restart="systemctl restart postgresql"
pg_socket_dir="/var/run/postgresql" pg_port=5432 db_user="kalshi"
secret_arn="" region="" key_id_file="" key_file="" dns_zone_id="" dns_name=""
tls_secret_arn="" tls_dir=""

say() { printf 'bootstrap: %s\n' "$*" >&2; }
# shellcheck source=/dev/null
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --slot) slot="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --check-args) check_args=1; shift ;;
        --log-group) log_group="$2"; shift 2 ;;
        --no-apt) apt=0; shift ;;
        --no-systemd) systemd=0; shift ;;
        --data-device) data_device="$2"; shift 2 ;;
        --data-volume-id) data_volume_id="$2"; shift 2 ;;
        --psql) psql_cmd="$2"; shift 2 ;;
        --pg-conf-dir) pg_conf_dir="$2"; shift 2 ;;
        --pg-libdir) pg_libdir="$2"; shift 2 ;;
        --pg-restart) pg_restart="$2"; shift 2 ;;
        --pg-socket-dir) pg_socket_dir="$2"; shift 2 ;;
        --pg-port) pg_port="$2"; shift 2 ;;
        --db-user) db_user="$2"; shift 2 ;;
        --secret-arn) secret_arn="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        --key-id-file) key_id_file="$2"; shift 2 ;;
        --key-file) key_file="$2"; shift 2 ;;
        --tls-secret-arn) tls_secret_arn="$2"; shift 2 ;;
        --tls-dir) tls_dir="$2"; shift 2 ;;
        --dns-zone-id) dns_zone_id="$2"; shift 2 ;;
        --dns-name) dns_name="$2"; shift 2 ;;
        -h | --help) sed -n '2,52p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$slot" =~ ^g[0-9]+$ ]] || die "--slot must be g1, g2, ... (got '$slot')"
[[ "$db_user" =~ ^[a-z_][a-z0-9_]*$ ]] || die "--db-user must be a plain identifier"
if [ -z "$secret_arn" ] && { [ -z "$key_id_file" ] || [ -z "$key_file" ]; }; then
    die "the Kalshi key: --secret-arn, or both --key-id-file and --key-file"
fi
if [ -z "$tls_secret_arn" ] && [ -z "$tls_dir" ]; then
    die "the gRPC API's mTLS identity: --tls-secret-arn or --tls-dir"
fi
if [ "${check_args:-0}" = 1 ]; then
    say "arguments accepted"
    exit 0
fi
root="${root%/}"
etc="$root/etc/kalshi-data"
read -r -a psql <<<"$psql_cmd"
read -r -a restart <<<"$pg_restart"

# 1. Packages and the data volume: the tools first (attaching the volume needs the AWS CLI),
# then the volume, then PostgreSQL, so its cluster is made on (or adopted from) the volume.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if [ "$apt" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt_get update -q
    apt_get install -y -q --no-install-recommends awscli jq curl ca-certificates gnupg openssl
fi
if [ -n "$data_volume_id" ]; then
    data_device="$("$here/lib/data-volume.sh" --volume-id "$data_volume_id" --region "$region")"
fi
if [ -n "$data_device" ]; then
    if ! blkid "$data_device" >/dev/null 2>&1; then
        say "formatting $data_device for the local database"
        mkfs.ext4 -q -L kalshi-pgdata "$data_device"
    fi
    mkdir -p "$root/var/lib/postgresql"
    if ! grep -q 'LABEL=kalshi-pgdata' "$root/etc/fstab"; then
        echo 'LABEL=kalshi-pgdata /var/lib/postgresql ext4 defaults,noatime,nofail 0 2' >>"$root/etc/fstab"
    fi
    mountpoint -q "$root/var/lib/postgresql" || mount "$root/var/lib/postgresql"
    # A volume that kept a previous instance's cluster: its files belong to that host's
    # postgres uid. Create the user with it (when free) before the packages do, so Debian's
    # postinst adopts the cluster as it is ("Configuring already existing cluster").
    if [ -z "$root" ] && [ -f /var/lib/postgresql/15/main/PG_VERSION ] && ! id postgres >/dev/null 2>&1; then
        uid="$(stat -c %u /var/lib/postgresql/15/main)" gid="$(stat -c %g /var/lib/postgresql/15/main)"
        if ! getent passwd "$uid" >/dev/null && ! getent group "$gid" >/dev/null; then
            say "the data volume holds this slot's database: adopting it (postgres uid $uid)"
            groupadd --system --gid "$gid" postgres
            useradd --system --uid "$uid" --gid postgres --home-dir /var/lib/postgresql \
                --shell /bin/bash --comment "PostgreSQL administrator" postgres
        fi
    fi
fi
if [ "$apt" = 1 ]; then
    apt_get install -y -q --no-install-recommends postgresql postgresql-client prometheus-node-exporter
    # TimescaleDB only where a repository provides it (Debian does not; Timescale's does).
    if apt-cache show postgresql-15-timescaledb >/dev/null 2>&1; then
        apt_get install -y -q --no-install-recommends postgresql-15-timescaledb
    fi
fi

# 2. Local PostgreSQL.
# A kept database whose owner's uid was taken on this host: hand its files to this postgres.
if [ -z "$root" ] && [ -d /var/lib/postgresql/15/main ] &&
    [ "$(stat -c %U /var/lib/postgresql/15/main)" != postgres ]; then
    say "the kept database belongs to another uid: giving it to postgres"
    systemctl stop postgresql
    chown -R postgres:postgres /var/lib/postgresql /etc/postgresql
    systemctl start postgresql
fi
if [ -z "$pg_libdir" ]; then
    pg_libdir="$(pg_config --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)"
fi
conf="$pg_conf_dir/conf.d/kalshi-gatherer.conf"
mkdir -p "$pg_conf_dir/conf.d"
if compgen -G "$pg_libdir/timescaledb*.so" >/dev/null; then
    want="# Written by the kalshi-data bootstrap: TimescaleDB is installed.
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off"
    say "TimescaleDB found in $pg_libdir: preloading it"
else
    want="# Written by the kalshi-data bootstrap: TimescaleDB is not installed; the gatherer uses
# plain range partitions (store.timescaledb = \"auto\")."
    say "TimescaleDB not installed: skipped (plain partitions)"
fi
# A restart only when the preload setting changes (it is read at start only); otherwise a
# reload, which never interrupts a running gatherer.
restart_needed=0 reload_needed=0
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    if [ "$(grep -s shared_preload_libraries "$conf" || true)" != "$(grep shared_preload_libraries <<<"$want" || true)" ]; then
        restart_needed=1
    fi
    printf '%s\n' "$want" >"$conf"
fi
hba="$pg_conf_dir/pg_hba.conf"
rule="local   kalshi   $db_user   peer   # kalshi-data gatherer"
if [ "$(grep -v '^[[:space:]]*\(#\|$\)' "$hba" | sed -n 1p)" != "$rule" ]; then
    grep -vF '# kalshi-data gatherer' "$hba" >"$hba.new" || true
    { printf '%s\n' "$rule"; cat "$hba.new"; } >"$hba"
    rm -f "$hba.new"
    reload_needed=1
fi
if [ "$restart_needed" = 1 ]; then
    say "restarting PostgreSQL: ${restart[*]}"
    "${restart[@]}"
elif [ "$reload_needed" = 1 ]; then
    "${psql[@]}" -qAt -v ON_ERROR_STOP=1 -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
fi
for _ in $(seq 60); do
    "${psql[@]}" -qAt -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 1
done
"${psql[@]}" -qAt -v ON_ERROR_STOP=1 -d postgres <<SQL >/dev/null
SELECT 'CREATE ROLE $db_user LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$db_user')\gexec
SELECT 'CREATE DATABASE kalshi OWNER $db_user' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'kalshi')\gexec
SQL

# 3. The gatherer.
install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
install -m 0755 "$here/bin/gatherer" "$root/usr/local/bin/gatherer"
install -m 0644 "$here/systemd/kalshi-gatherer.service" "$root/etc/systemd/system/kalshi-gatherer.service"
if [ -z "$root" ] && ! id kalshi >/dev/null 2>&1; then
    useradd --system --home /var/lib/kalshi --shell /usr/sbin/nologin kalshi
fi
# Files the service reads belong to the user it runs as (the database role, by peer
# authentication); as non-root (a developer's test run) they stay the caller's.
owner="$db_user"
if [ "$(id -u)" != 0 ] || ! id "$owner" >/dev/null 2>&1; then
    owner="$(id -un)"
fi
group="$(id -gn "$owner")"
install -d -m 0750 "$etc"
chgrp "$group" "$etc"
url="postgres://$db_user@localhost:$pg_port/kalshi?host=$pg_socket_dir"
sed -e "s|^database_url = .*|database_url = \"$url\"|" \
    -e "s|^private_key_file = .*|private_key_file = \"/etc/kalshi-data/kalshi-key.pem\"|" \
    -e "s|^key_id_file = .*|key_id_file = \"/etc/kalshi-data/kalshi-key-id\"|" \
    "$here/etc/gatherer.production.toml" >"$etc/gatherer.toml.new"
chmod 0640 "$etc/gatherer.toml.new"
chgrp "$group" "$etc/gatherer.toml.new"
mv "$etc/gatherer.toml.new" "$etc/gatherer.toml"
umask 077
printf 'GATHERER__GATHERER_ID=%s\n' "$slot" >"$etc/gatherer.env"
if [ -n "$secret_arn" ]; then
    secret="$(aws secretsmanager get-secret-value --region "$region" --secret-id "$secret_arn" \
        --query SecretString --output text)"
    jq -er .key_id <<<"$secret" >"$etc/kalshi-key-id.new"
    jq -er .private_key_pem <<<"$secret" >"$etc/kalshi-key.pem.new"
    unset secret
else
    cp "$key_id_file" "$etc/kalshi-key-id.new"
    cp "$key_file" "$etc/kalshi-key.pem.new"
fi
for f in kalshi-key-id kalshi-key.pem; do
    chown "$owner" "$etc/$f.new"
    chmod 0400 "$etc/$f.new"
    mv "$etc/$f.new" "$etc/$f"
done
umask 022

# The mTLS identity, and its daily refresh (a renewed certificate reaches the gatherer
# without a restart: it re-reads changed files at the next handshake).
install_tls gatherer "$slot" "$owner" "$root" "$region" "$tls_secret_arn" "$tls_dir"

# 4. DNS.
if [ -n "$dns_zone_id" ]; then
    token="$(curl -fsS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60')"
    ip="$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/local-ipv4)"
    say "pointing $dns_name at $ip"
    aws route53 change-resource-record-sets --region "$region" --hosted-zone-id "$dns_zone_id" \
        --change-batch "{\"Changes\":[{\"Action\":\"UPSERT\",\"ResourceRecordSet\":{\"Name\":\"$dns_name\",\"Type\":\"A\",\"TTL\":30,\"ResourceRecords\":[{\"Value\":\"$ip\"}]}}]}" >/dev/null
fi

# 5. Check and start. Paths inside the config are the host's (/etc/kalshi-data/...): under
# --root, check against the copies there.
check_cfg="$etc/gatherer.toml"
if [ -n "$root" ]; then
    sed -e "s|/etc/kalshi-data/|$etc/|g" "$etc/gatherer.toml" >"$etc/gatherer.check.toml"
    check_cfg="$etc/gatherer.check.toml"
fi
GATHERER__GATHERER_ID="$slot" "$root/usr/local/bin/gatherer" --config "$check_cfg" --check-config
rm -f "$etc/gatherer.check.toml"
timer=0
[ -z "$tls_secret_arn" ] || timer=1
finish gatherer "$root" "$log_group" "$systemd" "$timer"
