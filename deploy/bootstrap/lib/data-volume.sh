#!/bin/bash
# Attaches a gatherer slot's own data volume (one EBS volume per slot, made by Terraform in the
# slot's zone, infra/modules/gatherers) to this instance and prints its block device. The volume
# outlives the instances: a replacement comes back with the slot's database, and with it the
# records the deduplicator had not merged yet and the gatherer's instance id.
#
#   data-volume.sh --volume-id vol-0abc... --region R [--instance-id i-...] [--timeout SECS]
#                  [--by-id-dir DIR] [--device /dev/sdf] [--poll SECS]
#
# A volume still attached to the instance being replaced is waited for (the auto-scaling group
# terminates the old instance first; its volumes come free when it is gone), never forced off:
# a forced detach from a live gatherer would corrupt its database. Exits 1 when the volume is
# not free within --timeout (default 600 s), naming whom it is attached to.
set -euo pipefail

volume_id="" region="" instance_id="" timeout=600 by_id_dir="/dev/disk/by-id" device="/dev/sdf" poll=5
say() { printf 'data-volume: %s\n' "$*" >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --volume-id) volume_id="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        --instance-id) instance_id="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --by-id-dir) by_id_dir="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --poll) poll="$2"; shift 2 ;;
        -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "unknown option $1"; exit 2 ;;
    esac
done
[[ "$volume_id" =~ ^vol-[0-9a-f]+$ ]] || { say "bad --volume-id '$volume_id'"; exit 2; }
[[ "$timeout" =~ ^[0-9]+$ ]] || { say "bad --timeout '$timeout'"; exit 2; }
if [ -z "$instance_id" ]; then
    token="$(curl -fsS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60')"
    instance_id="$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id)"
fi
ec2() { aws ec2 --region "$region" "$@"; }

deadline=$((SECONDS + timeout))
while :; do
    if ! read -r state attached_to < <(ec2 describe-volumes --volume-ids "$volume_id" \
        --query 'Volumes[0].[State, Attachments[0].InstanceId]' --output text); then
        state="unknown (describe-volumes failed)" attached_to=""
    fi
    if [ "$state" = "in-use" ] && [ "$attached_to" = "$instance_id" ]; then
        break
    fi
    if [ "$state" = "available" ]; then
        say "attaching $volume_id to $instance_id as $device"
        if ec2 attach-volume --volume-id "$volume_id" --instance-id "$instance_id" --device "$device" >/dev/null; then
            continue
        fi
        say "attaching failed: trying again"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        say "error: $volume_id is still $state (attached to ${attached_to:-nothing}) after ${timeout} s"
        exit 1
    fi
    say "$volume_id is $state (attached to ${attached_to:-nothing}): waiting for it to come free"
    sleep "$poll"
done
# On Nitro instances the volume is an NVMe device whose serial is the volume id without its dash.
link="$by_id_dir/nvme-Amazon_Elastic_Block_Store_${volume_id/-/}"
while [ ! -e "$link" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        say "error: $volume_id is attached but $link never appeared"
        exit 1
    fi
    sleep 1
done
readlink -f "$link"
