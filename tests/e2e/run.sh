#!/usr/bin/env bash
# Installs what the end-to-end suites need (a Python venv with Schemathesis, Playwright,
# openapi-spec-validator, openapi-python-client and hadolint; Debian's Chromium; Spectral and axe-core from npm
# under target/e2e-node; nginx and promtool unpacked from Debian's packages under target/), builds
# the binary, and runs tests/e2e/suite.py.
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

# Spectral and axe-core (for the console's accessibility check), at the versions of the checked-in
# lockfile. Reinstalled when the lockfile changes.
# --ignore-scripts: no install script is needed, and one (@scarf/scarf's) would report the
# install over the network.
node_dir=target/e2e-node
if [ ! -d "$node_dir/node_modules" ] || ! cmp -s tests/e2e/package-lock.json "$node_dir/package-lock.json"; then
    mkdir -p "$node_dir"
    cp tests/e2e/package.json tests/e2e/package-lock.json "$node_dir/"
    (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

# nginx with its mail module, for the SMTP chain (Debian's packages, unpacked under target/nginx).
bash tests/e2e/nginx.sh
# promtool, to check /metrics (Debian's prometheus package, unpacked under target/promtool).
bash tests/e2e/promtool.sh
cargo build --locked --quiet --bin credential-ledger
"$venv/bin/python" tests/e2e/suite.py
