#!/bin/bash
# Publishes the active deduplicator's lag to CloudWatch, so an alarm that needs no Prometheus
# (infra/modules/alarms: deduplicator-not-merging) fires when nothing is merged: the lag grows,
# or nobody publishes it (no active deduplicator, or its host is gone). Run every minute by
# kalshi-lag-publish.timer on the deduplicator hosts; only the active one (/health/active 200)
# publishes: metric DedupSyncLagSeconds (the largest dedup_sync_lag_seconds over the
# gatherers), namespace kalshi-data, dimension Environment.
#
#   publish-lag.sh --region R --name <env> [--health URL] [--metrics URL]
set -euo pipefail

region="" name="" health="http://127.0.0.1:8080/health/active" metrics="http://127.0.0.1:9464/metrics"
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --health) health="$2"; shift 2 ;;
        --metrics) metrics="$2"; shift 2 ;;
        -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "publish-lag.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]$ ]] || { echo "publish-lag.sh: bad --region '$region'" >&2; exit 2; }
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "publish-lag.sh: bad --name '$name'" >&2; exit 2; }

code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$health" || true)"
if [ "$code" != 200 ]; then
    exit 0 # the standby (or a deduplicator not holding the lease): the active one publishes
fi
page="$(curl -sf --max-time 5 "$metrics")"
lag="$(awk '/^dedup_sync_lag_seconds[{ ]/ { v = $NF + 0; if (v > m) m = v } END { printf "%.3f\n", m + 0 }' <<<"$page")"
aws cloudwatch put-metric-data --region "$region" --namespace kalshi-data \
    --metric-name DedupSyncLagSeconds --dimensions "Environment=$name" --unit Seconds --value "$lag"
