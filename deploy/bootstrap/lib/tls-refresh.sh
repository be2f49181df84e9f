# shellcheck shell=bash
# Sourced by the bootstraps: install_tls_refresh ROOT COMMAND writes kalshi-tls-refresh.service
# (runs COMMAND, lib/fetch-tls.sh with this host's identity) and its daily timer under ROOT.
install_tls_refresh() {
    local root="$1" command="$2"
    install -d -m 0755 "$root/etc/systemd/system"
    cat >"$root/etc/systemd/system/kalshi-tls-refresh.service" <<UNIT
[Unit]
Description=Refresh this host's kalshi-data mTLS certificate from Secrets Manager
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=$command
UNIT
    cat >"$root/etc/systemd/system/kalshi-tls-refresh.timer" <<'UNIT'
[Unit]
Description=Daily refresh of this host's kalshi-data mTLS certificate

[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
UNIT
}
