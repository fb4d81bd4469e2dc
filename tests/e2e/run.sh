#!/usr/bin/env bash
# Installs what the end-to-end suites need (a Python venv with Schemathesis and Playwright, and
# Debian's Chromium), builds the binary, and runs tests/e2e/suite.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
venv=target/e2e-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/e2e/requirements.txt

# nginx with its mail module, for the SMTP chain (Debian's packages, unpacked under target/nginx).
bash tests/e2e/nginx.sh
cargo build --locked --quiet --bin credential-ledger
"$venv/bin/python" tests/e2e/suite.py
