#!/usr/bin/env bash
# Regenerates .sqlx/, the offline query metadata that lets `cargo build` check every
# sqlx::query! without a database. Run it after changing any SQL in src/, migrations/ or
# projections/, and commit the result.
#
#   scripts/prepare-sqlx.sh           rewrite .sqlx/
#   scripts/prepare-sqlx.sh --check   fail if .sqlx/ is not what the code and schema give
#                                     (what `cargo sqlx prepare --check` does, without sqlx-cli)
#
# SQLX_PREPARE_DB names the scratch database (two checkouts preparing at once need two).
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[[ "${1:-}" == "--check" ]] && check=true
db=${SQLX_PREPARE_DB:-credential_ledger_sqlx_prepare}
admin=${PGADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url="${admin%/*}/$db"
for file in migrations/*.sql projections/*.sql; do
    psql "$url" -q -v ON_ERROR_STOP=1 -f "$file"
done
out=.sqlx
if $check; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
else
    rm -rf .sqlx && mkdir .sqlx
fi
# Touching the sources forces the query macros to run again and write their metadata.
find src tests -name '*.rs' -exec touch {} +
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$(cd "$out" && pwd)" DATABASE_URL="$url" cargo check --all-targets --quiet
psql "$admin" -qc "DROP DATABASE $db"
if $check; then
    if ! diff -r .sqlx "$out" >/dev/null; then
        echo ".sqlx/ is stale: run scripts/prepare-sqlx.sh and commit the result" >&2
        diff -rq .sqlx "$out" >&2 || true
        exit 1
    fi
    echo ".sqlx/ matches the code and the schema ($(ls .sqlx | wc -l) queries)"
else
    echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
fi
