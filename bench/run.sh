#!/usr/bin/env bash
# The benchmark suite: builds in release mode, starts the service on a fresh database and its
# own RabbitMQ vhost, seeds data, runs every scenario against ceilings measured in the same run,
# and prints a table (also written to target/bench/results.md). See BENCHMARKS.md.
#   bench/run.sh                 # full run (about 15 minutes)
#   BENCH_QUICK=1 bench/run.sh   # shorter runs, one repetition
#   BENCH_BACKEND=sqlite bench/run.sh  # the embedded ledger (no RabbitMQ; pgbench still gives the PostgreSQL ceiling)
#   bench/run.sh deadlines       # deadline locks and reads beside expiring credentials (bench/deadlines.py)
#   bench/run.sh scale           # start-up, memory and reads at 100k, 1M and 10M credentials (bench/scale.py)
#   bench/run.sh create          # CPU per create by process: as shipped, without the relay, with fewer indexes (bench/create_account.py)
#   bench/run.sh lag             # revoke → bus under a full create load, by stage, for both relay placements (bench/lag.py)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v pgbench >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-contrib >/dev/null; }
cargo build --release --locked --quiet --bin credential-ledger --example http_ceiling --example bench_tool --example sqlite_ceiling
if [[ "${1:-}" == "deadlines" ]]; then
    exec python3 bench/deadlines.py
fi
if [[ "${1:-}" == "scale" ]]; then
    exec python3 bench/scale.py
fi
if [[ "${1:-}" == "create" ]]; then
    exec python3 bench/create_account.py
fi
if [[ "${1:-}" == "lag" ]]; then
    exec python3 bench/lag.py
fi
exec python3 bench/run.py "$@"
