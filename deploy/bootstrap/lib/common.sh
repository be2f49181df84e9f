# shellcheck shell=bash
# Sourced by both bootstraps: the steps they share.

common_lib="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# install_tls SERVICE IDENTITY OWNER ROOT REGION SECRET_ARN TLS_DIR: the mTLS identity into
# ROOT/etc/kalshi-data/tls, from SECRET_ARN (then also a daily kalshi-tls-refresh.timer that
# fetches it again: a renewed certificate is re-read by the service without a restart) or
# from TLS_DIR.
install_tls() {
    local service="$1" identity="$2" owner="$3" root="$4" region="$5" secret_arn="$6" dir="$7"
    local source=(--from-dir "$dir")
    if [ -n "$secret_arn" ]; then
        source=(--secret-arn "$secret_arn" --region "$region")
    fi
    # At a first boot the deduplicators may not have issued it yet: wait up to 20 minutes.
    "$common_lib/fetch-tls.sh" --service "$service" --identity "$identity" "${source[@]}" \
        --root "${root:-/}" --owner "$owner" --wait 1200
    [ -n "$secret_arn" ] || return 0
    install -d -m 0755 "$root/etc/systemd/system"
    cat >"$root/etc/systemd/system/kalshi-tls-refresh.service" <<UNIT
[Unit]
Description=Refresh this host's kalshi-data mTLS certificate from Secrets Manager
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=$common_lib/fetch-tls.sh --service $service --identity $identity --secret-arn $secret_arn --region $region
UNIT
    timer_unit "$root" kalshi-tls-refresh "Daily refresh of this host's kalshi-data mTLS certificate" \
        OnCalendar=daily RandomizedDelaySec=1h Persistent=true
}

# timer_unit ROOT NAME DESCRIPTION SETTING...: ROOT/etc/systemd/system/NAME.timer, its [Timer]
# section the SETTINGs (OnCalendar=daily, ...), wanted by timers.target.
timer_unit() {
    local root="$1" name="$2" description="$3"
    shift 3
    install -d -m 0755 "$root/etc/systemd/system"
    {
        printf '[Unit]\nDescription=%s\n\n[Timer]\n' "$description"
        printf '%s\n' "$@"
        printf '\n[Install]\nWantedBy=timers.target\n'
    } >"$root/etc/systemd/system/$name.timer"
}

# time_sync ROOT: the clock from the Amazon Time Sync Service (169.254.169.123, link-local: no
# security group rule or NAT in the way; Debian's default pool servers are not reachable from
# the private subnets). AWS request signing, IAM database tokens and the certificates' validity
# all depend on it. Both chrony and systemd-timesyncd are told; whichever runs is restarted.
time_sync() {
    local root="$1"
    install -d -m 0755 "$root/etc/chrony/sources.d" "$root/etc/systemd/timesyncd.conf.d"
    printf '%s\n' "# Amazon Time Sync Service (kalshi-data bootstrap)" \
        "server 169.254.169.123 prefer iburst minpoll 4 maxpoll 4" \
        >"$root/etc/chrony/sources.d/aws-time-sync.sources"
    printf '%s\n' "# Amazon Time Sync Service (kalshi-data bootstrap)" "[Time]" "NTP=169.254.169.123" \
        >"$root/etc/systemd/timesyncd.conf.d/aws-time-sync.conf"
}

# install_ssm_agent: the way onto the host (runbooks/operator-access.md). Debian's images do not
# ship Amazon's SSM agent and Debian does not package it: it comes from the Snap Store, whose
# downloads snapd verifies against the store's signed assertions (published by Amazon's
# verified account), and snapd keeps it updated. A failure is reported and never fails the
# boot: the service runs either way.
install_ssm_agent() {
    if systemctl is-active --quiet snap.amazon-ssm-agent.amazon-ssm-agent.service ||
        systemctl is-active --quiet amazon-ssm-agent.service; then
        return 0
    fi
    if apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends snapd &&
        snap wait system seed.loaded &&
        snap install amazon-ssm-agent --classic &&
        systemctl enable --now snap.amazon-ssm-agent.amazon-ssm-agent.service; then
        printf 'bootstrap: the SSM agent runs (Session Manager reaches this host)\n' >&2
    else
        printf 'bootstrap: WARNING: the SSM agent did not install: no Session Manager on this host\n' >&2
    fi
}

# finish SERVICE ROOT LOG_GROUP SYSTEMD(1|0) REFRESH_TIMER(1|0): the clock's source, logs to
# CloudWatch (with a log group), then, under systemd, the SSM agent, node_exporter, the certificate refresh timer and the
# service itself, (re)started.
finish() {
    local service="$1" root="$2" log_group="$3" systemd="$4" timer="$5"
    local unit="kalshi-$service"
    time_sync "$root"
    if [ -n "$log_group" ]; then
        local cw=(--log-group "$log_group" --unit "$unit" --root "${root:-/}")
        [ "$systemd" = 1 ] || cw+=(--no-install)
        "$common_lib/cloudwatch-logs.sh" "${cw[@]}"
    fi
    if [ "$systemd" != 1 ]; then
        printf 'bootstrap: %s installed (not started: --no-systemd)\n' "$service" >&2
        return 0
    fi
    install_ssm_agent
    systemctl daemon-reload
    systemctl try-restart chrony.service systemd-timesyncd.service || true
    systemctl enable --now prometheus-node-exporter
    if [ "$timer" = 1 ]; then
        systemctl enable --now kalshi-tls-refresh.timer
    fi
    systemctl enable "$unit"
    systemctl restart "$unit"
    printf 'bootstrap: %s installed and started\n' "$service" >&2
}
