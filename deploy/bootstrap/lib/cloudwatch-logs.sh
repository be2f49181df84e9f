#!/bin/bash
# Ships a unit's journal to CloudWatch Logs, so its logs outlive the instance (journald's do
# not). Run by the bootstraps when given --log-group; EC2 only (it installs Amazon's agent).
#
#   cloudwatch-logs.sh --log-group NAME --unit kalshi-gatherer [--root DIR] [--no-install]
#
# journald -> /var/log/kalshi-data/<unit>.log (kalshi-journal-export@<unit>.service:
# `journalctl -f` resuming from a cursor file, so a restart neither loses nor repeats lines;
# logrotate keeps the file small) -> the CloudWatch agent -> log group NAME, one stream per
# instance. The log group, its retention and the role's logs:PutLogEvents come from Terraform.
# --no-install writes the files only (the test suite checks them under --root).
set -euo pipefail

log_group="" unit="" root="/" install_agent=1
# The agent, pinned: one version, its SHA-256, and a detached signature by Amazon's CloudWatch
# agent key, whose fingerprint AWS publishes ("Verifying the signature of the CloudWatch agent
# package"). A newer agent is a change to these three lines, reviewed like any other.
agent_version="1.300072.0b1766"
agent_deb_url="https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/$agent_version/amazon-cloudwatch-agent.deb"
agent_deb_sha256="05baeadca96c4bb8e43906ed09cf0bebd0f321ff6d41987bdc46ce681de0978d"
agent_key_url="https://amazoncloudwatch-agent.s3.amazonaws.com/assets/amazon-cloudwatch-agent.gpg"
agent_key_fingerprint="937616F3450B7D806CBD9725D58167303B789C72"
while [ $# -gt 0 ]; do
    case "$1" in
        --log-group) log_group="$2"; shift 2 ;;
        --unit) unit="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --no-install) install_agent=0; shift ;;
        -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "cloudwatch-logs.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ "$log_group" =~ ^[A-Za-z0-9_/.#-]+$ ]] || { echo "cloudwatch-logs.sh: bad --log-group '$log_group'" >&2; exit 2; }
[[ "$unit" =~ ^kalshi-[a-z]+$ ]] || { echo "cloudwatch-logs.sh: bad --unit '$unit'" >&2; exit 2; }
root="${root%/}"

install -d -m 0755 "$root/var/log/kalshi-data" "$root/var/lib/kalshi-journal-export" \
    "$root/etc/systemd/system" "$root/etc/logrotate.d" "$root/opt/aws/amazon-cloudwatch-agent/etc"
cat >"$root/etc/systemd/system/kalshi-journal-export@.service" <<'UNIT'
[Unit]
Description=Copy the journal of %i to /var/log/kalshi-data/%i.log for the CloudWatch agent
After=systemd-journald.service

[Service]
ExecStart=/bin/sh -c 'exec journalctl --follow --output=short-iso-precise --unit=%i --cursor-file=/var/lib/kalshi-journal-export/%i.cursor >>/var/log/kalshi-data/%i.log'
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
cat >"$root/etc/logrotate.d/kalshi-data" <<'ROTATE'
/var/log/kalshi-data/*.log {
    daily
    rotate 3
    maxsize 200M
    missingok
    notifempty
    compress
    delaycompress
    copytruncate
}
ROTATE
cat >"$root/opt/aws/amazon-cloudwatch-agent/etc/kalshi-data.json" <<JSON
{
  "agent": { "run_as_user": "root" },
  "logs": {
    "logs_collected": {
      "files": {
        "collect_list": [
          {
            "file_path": "/var/log/kalshi-data/$unit.log",
            "log_group_name": "$log_group",
            "log_stream_name": "{instance_id}/$unit",
            "timestamp_format": "%Y-%m-%dT%H:%M:%S"
          },
          {
            "file_path": "/var/log/cloud-init-output.log",
            "log_group_name": "$log_group",
            "log_stream_name": "{instance_id}/cloud-init"
          }
        ]
      }
    }
  }
}
JSON
# Downloads, checks and installs the pinned agent. Any failure is reported and returned: log
# shipping must never fail the boot (the service runs, and its journal is on the host).
install_agent() {
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    if ! { curl -fsSL --retry 5 "$agent_deb_url" -o "$work/agent.deb" &&
        curl -fsSL --retry 5 "$agent_deb_url.sig" -o "$work/agent.deb.sig" &&
        curl -fsSL --retry 5 "$agent_key_url" -o "$work/agent.gpg"; }; then
        echo "cloudwatch-logs.sh: cannot download the agent" >&2
        return 1
    fi
    echo "$agent_deb_sha256  $work/agent.deb" | sha256sum --check --strict --quiet - || {
        echo "cloudwatch-logs.sh: the agent's SHA-256 is not the pinned one: not installed" >&2
        return 1
    }
    export GNUPGHOME="$work/gnupg"
    install -d -m 0700 "$GNUPGHOME"
    if ! { gpg --batch --quiet --import "$work/agent.gpg" 2>/dev/null &&
        gpg --batch --with-colons --fingerprint | grep -q "^fpr:*$agent_key_fingerprint:" &&
        gpg --batch --quiet --verify "$work/agent.deb.sig" "$work/agent.deb" 2>/dev/null; }; then
        echo "cloudwatch-logs.sh: the agent's signature is not by key $agent_key_fingerprint: not installed" >&2
        return 1
    fi
    dpkg -i -E "$work/agent.deb" >/dev/null
}

if [ "$install_agent" = 1 ]; then
    systemctl daemon-reload
    systemctl enable --now "kalshi-journal-export@$unit.service" || true
    if install_agent &&
        /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
            -c file:/opt/aws/amazon-cloudwatch-agent/etc/kalshi-data.json; then
        echo "cloudwatch-logs.sh: shipping $unit's journal and cloud-init's log to $log_group" >&2
    else
        echo "cloudwatch-logs.sh: WARNING: logs are not shipped to CloudWatch (they stay in the journal); the boot goes on" >&2
    fi
fi
