#!/usr/bin/env bash
# Makes sure an nginx binary and its mail module (ngx_mail_module.so) are available under
# target/nginx, for the SMTP relay chain of tests/e2e/smtp_chain.py, and prints their paths:
#
#   NGINX=/abs/path/target/nginx/root/usr/sbin/nginx
#   MAIL_MODULE=/abs/path/target/nginx/root/usr/lib/nginx/modules/ngx_mail_module.so
#
# Nothing is installed system-wide and no service is started: Debian's `nginx` and
# `libnginx-mod-mail` packages are fetched with `apt-get download` and unpacked with `dpkg -x`.
# Both must have the same Debian version (a dynamic module only loads into the nginx build it was
# made for); the script checks that, and that the binary runs and accepts the module
# (`nginx -t` on a mail-only config). Idempotent: a complete, checked extraction is reused.
# Any failure exits non-zero with a message on stderr naming what went wrong.
set -euo pipefail

die() {
    echo "nginx.sh: error: $*" >&2
    exit 1
}

root_dir="$(cd "$(dirname "$0")/../.." && pwd)"
base="$root_dir/target/nginx"
debs="$base/debs"
tree="$base/root"
nginx="$tree/usr/sbin/nginx"
module="$tree/usr/lib/nginx/modules/ngx_mail_module.so"
stamp="$base/.extracted"

# Checks an extraction: both files there, same package version, and nginx accepts the module.
check() {
    [ -x "$nginx" ] || return 1
    [ -f "$module" ] || return 1
    [ -f "$stamp" ] || return 1
    local check_dir
    check_dir="$(mktemp -d)"
    mkdir -p "$check_dir/logs"
    cat >"$check_dir/check.conf" <<EOF
load_module $module;
error_log $check_dir/logs/error.log;
pid $check_dir/nginx.pid;
events { worker_connections 16; }
mail {
    auth_http 127.0.0.1:1/auth;
    server { listen 127.0.0.1:1; protocol smtp; }
}
EOF
    local out rc=0
    out="$("$nginx" -t -q -p "$check_dir" -e "$check_dir/logs/error.log" -c "$check_dir/check.conf" 2>&1)" || rc=$?
    rm -rf "$check_dir"
    if [ "$rc" -ne 0 ]; then
        echo "nginx.sh: extracted nginx rejects its mail module or config: $out" >&2
        return 1
    fi
    return 0
}

if ! check 2>/dev/null; then
    command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian/Ubuntu machine"
    command -v dpkg >/dev/null || die "dpkg not found"
    rm -rf "$debs" "$tree" "$stamp"
    mkdir -p "$debs" "$tree"
    download() {
        # apt-get download as root warns that _apt cannot write here; harmless.
        (cd "$debs" && apt-get download nginx libnginx-mod-mail) >"$base/download.log" 2>&1
    }
    if ! download; then
        # The package lists may be missing or stale (versions rotate out of the archive).
        apt-get update -qq >"$base/apt-update.log" 2>&1 ||
            die "apt-get update failed, see $base/apt-update.log"
        rm -f "$debs"/*.deb
        download || die "apt-get download nginx libnginx-mod-mail failed, see $base/download.log"
    fi
    nginx_deb="$(ls "$debs"/nginx_*.deb 2>/dev/null | head -n1)"
    mail_deb="$(ls "$debs"/libnginx-mod-mail_*.deb 2>/dev/null | head -n1)"
    [ -n "$nginx_deb" ] || die "no nginx_*.deb in $debs after download"
    [ -n "$mail_deb" ] || die "no libnginx-mod-mail_*.deb in $debs after download"
    nginx_ver="$(dpkg-deb -f "$nginx_deb" Version)"
    mail_ver="$(dpkg-deb -f "$mail_deb" Version)"
    [ "$nginx_ver" = "$mail_ver" ] ||
        die "version mismatch: nginx $nginx_ver vs libnginx-mod-mail $mail_ver (apt-get update may help)"
    dpkg -x "$nginx_deb" "$tree" || die "dpkg -x $nginx_deb failed"
    dpkg -x "$mail_deb" "$tree" || die "dpkg -x $mail_deb failed"
    [ -x "$nginx" ] || die "$nginx not found after extracting $nginx_deb"
    [ -f "$module" ] || die "$module not found after extracting $mail_deb"
    # The binary's shared libraries (libpcre2, libssl3, libcrypt1, zlib) come with the base system.
    missing="$(ldd "$nginx" "$module" 2>&1 | grep 'not found' || true)"
    [ -z "$missing" ] || die "missing shared libraries for nginx: $missing (apt-get install them)"
    echo "$nginx_ver" >"$stamp"
    check || die "the extracted nginx $nginx_ver does not run or does not load its mail module"
fi

echo "NGINX=$nginx"
echo "MAIL_MODULE=$module"
