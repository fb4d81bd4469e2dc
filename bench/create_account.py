"""Where a create's CPU goes (issue 18): `create` on 64 connections for each variant, with the CPU
time of the service's, PostgreSQL's and RabbitMQ's processes read from
/proc before and after, divided by the creates answered (`wrk`, on the same cores, is left
out); beside PostgreSQL's naive ceiling
(`bench/pgbench_write.sql`) measured in the same run. Called by `bench/run.sh create`.

Variants:
- as shipped: the relay inside the service, every index;
- no relay: the service with `--no-relay` (nothing published: the broker's share, and the
  relay's in the service);
- fewer indexes: as shipped, on a ledger without the indexes a create does not need to be
  correct (`events_by_server`, `credentials_by_server`, the unique `events.event_id`), to price
  PostgreSQL's index work.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from run import DATABASE as BENCH_DATABASE
from run import (CONNECTIONS, OUT, RELEASE, ROOT, SERVICE_PORT, THREADS, Process,
                 fresh_ledger, pgbench_ceiling, psql, run, service_env, wait_http, wrk_figures)

DATABASE = "credential_ledger_bench_create"
VHOST = "credential-ledger-bench-create"
DURATION = os.environ.get("BENCH_DURATION", "10s")
TICKS = os.sysconf("SC_CLK_TCK")


def pids(name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    # utime and stime, the 14th and 15th fields (the 12th and 13th after the name).
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_by_process(service_pid: int) -> dict:
    return {
        "service": cpu_seconds(service_pid),
        "PostgreSQL": sum(cpu_seconds(pid) for pid in pids("postgres")),
        "RabbitMQ": sum(cpu_seconds(pid) for pid in pids("beam.smp")),
    }


def measure(variant: str, binary: str, tool: str, env: dict) -> dict:
    fresh_ledger(DATABASE, VHOST, binary, env)
    if variant == "fewer indexes":
        psql(DATABASE, "DROP INDEX events_by_server; DROP INDEX credentials_by_server; "
                       "ALTER TABLE events DROP CONSTRAINT events_event_id_key;")
    writes = json.loads(run(tool, "seed", env["DATABASE_URL"], "Writes", "1", env=env))
    service = Process([binary, "serve"] + (["--no-relay"] if variant == "no relay" else []), env, "service-create.log")
    try:
        base = f"http://127.0.0.1:{SERVICE_PORT}"
        wait_http(base + "/readyz")
        loader = subprocess.Popen(
            ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{DURATION}", "--latency", "-s",
             str(ROOT / "bench" / "create.lua"), base + "/api/v1/credentials/create"],
            env=dict(os.environ, BENCH_KEY=writes["key"]), stdout=subprocess.PIPE, text=True)
        before = cpu_by_process(service.process.pid)
        output = loader.communicate()[0]
        after = cpu_by_process(service.process.pid)
        figures = wrk_figures(output)
    finally:
        service.stop()
    seconds = float(DURATION.rstrip("s"))
    creates = figures["rps"] * seconds
    per_create = {name: (after[name] - before[name]) / creates * 1e6 for name in before}
    return {"creates_per_s": figures["rps"], "p99_ms": figures.get("p99"), "cpu_us_per_create": per_create}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    env = service_env(DATABASE, VHOST)
    binary = str(RELEASE / "credential-ledger")
    tool = str(RELEASE / "examples" / "bench_tool")
    # The ceiling's tables live in the suite's database.
    if not psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{BENCH_DATABASE}'").strip():
        psql("postgres", f"CREATE DATABASE {BENCH_DATABASE}")
    results = {"PostgreSQL ceiling": pgbench_ceiling()}
    ceiling = results["PostgreSQL ceiling"]["rps"]
    print(f"PostgreSQL naive ceiling: {ceiling:,.0f} transactions/s", flush=True)
    for variant in ("as shipped", "no relay", "fewer indexes"):
        result = measure(variant, binary, tool, env)
        results[variant] = result
        cpu = result["cpu_us_per_create"]
        account = ", ".join(f"{name} {value:.0f} µs" for name, value in cpu.items())
        print(f"{variant}: {result['creates_per_s']:,.0f} creates/s ({result['creates_per_s'] / ceiling:.2f}× the "
              f"PostgreSQL ceiling), p99 {result['p99_ms']} ms; CPU per create: {account}, "
              f"together {sum(cpu.values()):.0f} µs", flush=True)
    (OUT / "create.json").write_text(json.dumps(results, indent=2))
    psql("postgres", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
