#!/bin/bash
# Sets up the monitoring host from an unpacked deduplicator release (this script sits at its
# top, beside the deduplicator's bootstrap.sh): Prometheus with the rules, Alertmanager to the
# alerts topic and the dead man's switch, Grafana with the dashboards. EC2 user-data
# (infra/modules/monitoring) runs it as root with Terraform's values; the test suite runs it
# under --root and checks what it writes with promtool and amtool.
#
#   monitoring.sh --region R --alerts-topic-arn ARN [options]
#
# Steps, each idempotent:
#   1. Debian packages: prometheus, prometheus-alertmanager, node_exporter (Debian-signed), and
#      Grafana from Grafana's apt repository, whose signing key must have the fingerprint below,
#      at the pinned --grafana-version (skip all: --no-apt). Grafana failing to install is
#      reported and leaves alerting up: it is only the dashboards.
#   2. Prometheus: deploy/prometheus/prometheus.yml with EC2 discovery in --region, the rules
#      (alerts.yml); checked with promtool.
#   3. Alertmanager: deploy/alertmanager/alertmanager.yml publishing to --alerts-topic-arn (signed
#      with the instance role) and the Watchdog to --deadmans-switch-url (without one, the
#      Watchdog goes nowhere and a warning says so); checked with amtool.
#   4. Grafana: the Prometheus data source and the dashboards of deploy/grafana, provisioned.
#   5. Units enabled and (re)started; the clock; the SSM agent.
#
# Options:
#   --region R                  AWS region of the instances and the topic (required)
#   --alerts-topic-arn ARN      the SNS topic (Terraform's alerts_topic; required)
#   --deadmans-switch-url URL   where the Watchdog goes every minute (https://...)
#   --grafana-version V         Grafana's version from its apt repository (default below)
#   --check-args                check the arguments and exit (0: a boot would accept them)
#   --root DIR                  prefix for every file written (default /)
#   --no-apt                    do not install packages
#   --no-systemd                do not reload, enable or start units
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
region="" topic="" deadmans="" root="/" apt=1 systemd=1
grafana_version="12.0.0"
grafana_key_url="https://apt.grafana.com/gpg.key"
grafana_key_fingerprint="B53AE77BADB630A683046005963FA27710458545"

say() { printf 'monitoring: %s\n' "$*" >&2; }
# shellcheck source=/dev/null
. "$here/lib/common.sh"
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="$2"; shift 2 ;;
        --alerts-topic-arn) topic="$2"; shift 2 ;;
        --deadmans-switch-url) deadmans="$2"; shift 2 ;;
        --grafana-version) grafana_version="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --check-args) check_args=1; shift ;;
        --no-apt) apt=0; shift ;;
        --no-systemd) systemd=0; shift ;;
        -h | --help) sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]$ ]] || die "--region must be an AWS region (got '$region')"
[[ "$topic" =~ ^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$ ]] || die "--alerts-topic-arn must be an SNS topic ARN (got '$topic')"
if [ -n "$deadmans" ]; then
    [[ "$deadmans" =~ ^https://[^[:space:]\'\"]+$ ]] || die "--deadmans-switch-url must be an https:// URL"
fi
[[ "$grafana_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--grafana-version must be x.y.z"
if [ "${check_args:-0}" = 1 ]; then
    say "arguments accepted"
    exit 0
fi
root="${root%/}"

# 1. Packages.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if [ "$apt" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt_get update -q
    apt_get install -y -q --no-install-recommends prometheus prometheus-alertmanager \
        prometheus-node-exporter gnupg curl ca-certificates
    key="$(mktemp)"
    if curl -fsSL --retry 5 "$grafana_key_url" -o "$key" &&
        gpg --batch --show-keys --with-colons "$key" | grep -q "^fpr:*$grafana_key_fingerprint:"; then
        install -d -m 0755 /etc/apt/keyrings
        install -m 0644 "$key" /etc/apt/keyrings/grafana.asc
        echo "deb [signed-by=/etc/apt/keyrings/grafana.asc] https://apt.grafana.com stable main" \
            >/etc/apt/sources.list.d/grafana.list
        if ! { apt_get update -q && apt_get install -y -q --no-install-recommends "grafana=$grafana_version"; }; then
            say "WARNING: Grafana $grafana_version did not install: no dashboards (alerting is up)"
        fi
    else
        say "WARNING: Grafana's signing key is not $grafana_key_fingerprint: Grafana not installed (alerting is up)"
    fi
    rm -f "$key"
fi

# 2. Prometheus: discovery in this region, the rules.
prom="$root/etc/prometheus"
install -d -m 0755 "$prom/kalshi-data"
sed -e "s|^\(\s*- region:\) .*|\1 $region|" "$here/etc/prometheus/prometheus.yml" >"$prom/prometheus.yml.new"
install -m 0644 "$here/etc/prometheus/alerts.yml" "$prom/kalshi-data/alerts.yml"
check="$prom/prometheus.yml.new"
if [ -n "$root" ]; then
    sed -e "s|/etc/prometheus/|$prom/|g" "$prom/prometheus.yml.new" >"$prom/prometheus.check.yml"
    check="$prom/prometheus.check.yml"
fi
promtool check config "$check" >/dev/null || die "the rendered prometheus.yml does not check"
rm -f "$prom/prometheus.check.yml"
mv "$prom/prometheus.yml.new" "$prom/prometheus.yml"

# 3. Alertmanager: the topic, the region, the dead man's switch.
am="$prom/alertmanager.yml"
sed -e "s|topic_arn: .*|topic_arn: $topic|" -e "s|^\(\s*region:\) .*|\1 $region|" \
    "$here/etc/alertmanager/alertmanager.yml" >"$am.new"
if [ -n "$deadmans" ]; then
    sed -i -e "s|- url: https://hc-ping.com/.*|- url: $deadmans|" "$am.new"
else
    say "WARNING: no --deadmans-switch-url: the Watchdog goes nowhere, and nothing pages if alerting itself breaks (runbooks/alerting.md)"
    sed -i -e "/alertname=\"Watchdog\"/,/repeat_interval/ s|receiver: deadmans-switch|receiver: blackhole|" "$am.new"
fi
amtool check-config "$am.new" >/dev/null || die "the rendered alertmanager.yml does not check"
mv "$am.new" "$am"

# 4. Grafana: the data source and the dashboards.
gp="$root/etc/grafana/provisioning"
dash="$root/var/lib/grafana/dashboards/kalshi-data"
install -d -m 0755 "$gp/datasources" "$gp/dashboards" "$dash"
cat >"$gp/datasources/kalshi-data.yaml" <<'YAML'
# Written by the kalshi-data monitoring bootstrap.
apiVersion: 1
datasources:
  - name: Prometheus
    type: prometheus
    uid: prometheus
    url: http://127.0.0.1:9090
    access: proxy
    isDefault: true
YAML
cat >"$gp/dashboards/kalshi-data.yaml" <<'YAML'
# Written by the kalshi-data monitoring bootstrap: deploy/grafana's dashboards, read-only.
apiVersion: 1
providers:
  - name: kalshi-data
    folder: kalshi-data
    type: file
    allowUiUpdates: false
    options:
      path: /var/lib/grafana/dashboards/kalshi-data
YAML
install -m 0644 "$here"/etc/grafana/*.json "$dash/"

# 5. Start.
time_sync "$root"
if [ "$systemd" != 1 ]; then
    say "monitoring installed (not started: --no-systemd)"
    exit 0
fi
install_ssm_agent
systemctl daemon-reload
systemctl try-restart chrony.service systemd-timesyncd.service || true
systemctl enable --now prometheus-node-exporter
systemctl enable prometheus prometheus-alertmanager
systemctl restart prometheus prometheus-alertmanager
if systemctl list-unit-files grafana-server.service >/dev/null 2>&1; then
    chown -R grafana:grafana "$dash" 2>/dev/null || true
    systemctl enable grafana-server
    systemctl restart grafana-server
fi
say "monitoring installed and started"
