#!/usr/bin/env bash
# Makes sure Prometheus' `promtool` is available under target/promtool, for the /metrics check of
# tests/e2e/suite.py (`promtool check metrics`), and prints its path:
#
#   PROMTOOL=/abs/path/target/promtool/root/usr/bin/promtool
#
# Nothing is installed system-wide and no service is started: Debian's `prometheus` package (which
# ships promtool beside the server) is fetched with `apt-get download` and unpacked with `dpkg -x`,
# as tests/e2e/nginx.sh does for nginx. Idempotent: a complete, checked extraction is reused.
# Any failure exits non-zero with a message on stderr naming what went wrong.
set -euo pipefail

die() {
    echo "promtool.sh: error: $*" >&2
    exit 1
}

root_dir="$(cd "$(dirname "$0")/../.." && pwd)"
base="$root_dir/target/promtool"
debs="$base/debs"
tree="$base/root"
promtool="$tree/usr/bin/promtool"
stamp="$base/.extracted"

# Checks an extraction: the binary there, and it runs.
check() {
    [ -x "$promtool" ] || return 1
    [ -f "$stamp" ] || return 1
    "$promtool" --version >/dev/null 2>&1
}

if ! check; then
    command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian/Ubuntu machine"
    command -v dpkg >/dev/null || die "dpkg not found"
    rm -rf "$debs" "$tree" "$stamp"
    mkdir -p "$debs" "$tree"
    download() {
        # apt-get download as root warns that _apt cannot write here; harmless.
        (cd "$debs" && apt-get download prometheus) >"$base/download.log" 2>&1
    }
    if ! download; then
        # The package lists may be missing or stale (versions rotate out of the archive).
        apt-get update -qq >"$base/apt-update.log" 2>&1 ||
            die "apt-get update failed, see $base/apt-update.log"
        rm -f "$debs"/*.deb
        download || die "apt-get download prometheus failed, see $base/download.log"
    fi
    deb="$(ls "$debs"/prometheus_*.deb 2>/dev/null | head -n1)"
    [ -n "$deb" ] || die "no prometheus_*.deb in $debs after download"
    dpkg -x "$deb" "$tree" || die "dpkg -x $deb failed"
    [ -x "$promtool" ] || die "$promtool not found after extracting $deb"
    # The package's other dependencies serve its web UI; promtool itself needs only libc.
    "$promtool" --version >/dev/null 2>&1 || die "the extracted $promtool does not run"
    dpkg-deb -f "$deb" Version >"$stamp"
    # The server binary and the .deb are not needed again: ~70 MB less under target/.
    rm -rf "$debs" "$tree/usr/bin/prometheus"
fi

echo "PROMTOOL=$promtool"
