#!/usr/bin/env bash
# Regenerates .sqlx/, the offline query metadata that lets `cargo build` check every
# sqlx::query! without a database. Run it after changing any SQL in src/, migrations/ or
# projections/, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
db=credential_ledger_sqlx_prepare
admin=${PGADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url="${admin%/*}/$db"
for file in migrations/*.sql projections/*.sql; do
    psql "$url" -q -v ON_ERROR_STOP=1 -f "$file"
done
rm -rf .sqlx && mkdir .sqlx
# Touching the sources forces the query macros to run again and write their metadata.
find src tests -name '*.rs' -exec touch {} +
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" DATABASE_URL="$url" cargo check --all-targets --quiet
psql "$admin" -qc "DROP DATABASE $db"
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
