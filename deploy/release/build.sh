#!/bin/bash
# Builds the release: one tarball per service and a SHA256SUMS over them.
#
#   deploy/release/build.sh [--out DIR] [--bin-dir DIR]
#
#   --out DIR      where to put the tarballs and SHA256SUMS (default target/release-dist)
#   --bin-dir DIR  package binaries already built there instead of building them
#                  (default: `cargo build --release --locked` with KALSHI_GIT_SHA set)
#
# kalshi-<service>-<version>-linux-<arch>.tar.gz holds, under kalshi-<service>-<version>/:
#   bin/<service>                     the binary
#   systemd/kalshi-<service>.service  its unit (deploy/systemd)
#   etc/<service>.production.toml     the configuration the bootstrap installs
#   etc/<service>.reference.toml      every key with its default
#   bootstrap.sh                      sets up the host (deploy/bootstrap/<service>.sh)
#   lib/                              the bootstrap's helpers: cloudwatch-logs.sh (its journal to
#                                     CloudWatch Logs), fetch-tls.sh (its mTLS identity),
#                                     common.sh (steps both bootstraps share: the mTLS identity and its refresh timer, logs, units),
#                                     data-volume.sh (a gatherer slot's own EBS volume, attached)
#   monitoring.sh, etc/{prometheus,alertmanager,grafana}/
#                                     (deduplicator's only) the monitoring host's bootstrap and
#                                     the rules, routes and dashboards it installs
#   BUILD                             version, git commit, target
#
# The tarballs are reproducible from the same binaries (sorted names, fixed times and owners,
# gzip without a timestamp), so a rebuild of the same commit has the same checksums. Publish
# the files at the release_url Terraform is given, and put each tarball's SHA-256 from
# SHA256SUMS in the matching *_release_sha256 variable: user-data refuses anything else.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$repo/target/release-dist"
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --bin-dir) bin_dir="$2"; shift 2 ;;
        -h | --help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | sed -n 1p)"
[ -n "$version" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
sha="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -z "$bin_dir" ]; then
    if [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]; then
        sha="$sha-dirty"
    fi
    (cd "$repo" && KALSHI_GIT_SHA="$sha" cargo build --release --locked -p gatherer -p deduplicator --bins)
    bin_dir="${CARGO_TARGET_DIR:-$repo/target}/release"
fi
arch="$(uname -m)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
tarballs=()
for svc in gatherer deduplicator; do
    name="kalshi-$svc-$version"
    d="$stage/$name"
    install -d "$d/bin" "$d/systemd" "$d/etc"
    install -m 0755 "$bin_dir/$svc" "$d/bin/$svc"
    install -m 0644 "$repo/deploy/systemd/kalshi-$svc.service" "$d/systemd/"
    install -m 0644 "$repo/deploy/$svc.production.toml" "$repo/deploy/$svc.reference.toml" "$d/etc/"
    install -m 0755 "$repo/deploy/bootstrap/$svc.sh" "$d/bootstrap.sh"
    install -d "$d/lib"
    install -m 0755 "$repo/deploy/bootstrap/lib/"*.sh "$d/lib/"
    if [ "$svc" = deduplicator ]; then
        # The monitoring host runs from this tarball too (infra/modules/monitoring).
        install -m 0755 "$repo/deploy/bootstrap/monitoring.sh" "$d/monitoring.sh"
        install -d "$d/etc/prometheus" "$d/etc/alertmanager" "$d/etc/grafana"
        install -m 0644 "$repo/deploy/prometheus/prometheus.yml" "$repo/deploy/prometheus/alerts.yml" "$d/etc/prometheus/"
        install -m 0644 "$repo/deploy/alertmanager/alertmanager.yml" "$d/etc/alertmanager/"
        install -m 0644 "$repo/deploy/grafana/"*.json "$d/etc/grafana/"
    fi
    printf 'version=%s\ngit_sha=%s\ntarget=linux-%s\n' "$version" "$sha" "$arch" >"$d/BUILD"
    tarball="$name-linux-$arch.tar.gz"
    tar -C "$stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "$name" |
        gzip -n >"$out/$tarball"
    tarballs+=("$tarball")
done
(cd "$out" && sha256sum "${tarballs[@]}" >SHA256SUMS)
echo "release $version ($sha) in $out:"
sed 's/^/  /' "$out/SHA256SUMS"
