"""Deadlines under load (BENCHMARKS.md, "Deadlines"); called by `bench/run.sh deadlines`.

- 10,000 credentials whose expiries fall in one second, on each backend, with 1 and 3 instances
  of the service on the ledger: how late each lock was recorded (`recorded_at - deadline`, read
  from the log), how long after the last deadline the last lock came, and how many credentials
  were locked twice (there must be none).
- `list` (10 credentials) and a failed authentication, on an embedded ledger with 100,000 more
  credentials that all have an expiry, against one without expiries, measured alternately in the
  same run (medians of BENCH_REPEAT runs each).
"""

import json
import os
import statistics
import sys

from run import OUT, PG, RELEASE, REPEAT, Process, run, wait_http, wrk

DEADLINES = int(os.environ.get("BENCH_DEADLINES", "10000"))
BASE_PORT = 18090
LEAD_MS = 8000
YEAR_MS = 365 * 24 * 3600 * 1000
DATABASE = "credential_ledger_bench_deadlines"


def fresh_ledger(backend: str) -> str:
    if backend == "sqlite":
        path = OUT / "deadlines.db"
        for suffix in ["", "-wal", "-shm"]:
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return f"sqlite://{path}"
    run("psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    run("psql", f"{PG}/postgres", "-qc", f"CREATE DATABASE {DATABASE}")
    return f"{PG}/{DATABASE}"


def service_env(url: str, port: int) -> dict:
    env = dict(os.environ, DATABASE_URL=url, LISTEN_ADDR=f"127.0.0.1:{port}", NO_RELAY="true",
               AUTH_FAILURES_PER_MINUTE="100000000", RUST_LOG="warn")
    env.pop("AMQP_URL", None)
    return env


def due_in_one_second(backend: str, instances: int) -> dict:
    url = fresh_ledger(backend)
    binary, tool = str(RELEASE / "credential-ledger"), str(RELEASE / "examples" / "bench_tool")
    run(binary, "migrate", env=service_env(url, BASE_PORT))
    seeded = json.loads(run(tool, "seed", url, "Deadlines", str(DEADLINES + 1), str(LEAD_MS), env=service_env(url, BASE_PORT)))
    services = [Process([binary, "serve"], service_env(url, BASE_PORT + n), f"deadlines-{backend}-{n}.log")
                for n in range(instances)]
    try:
        for n in range(instances):
            wait_http(f"http://127.0.0.1:{BASE_PORT + n}/readyz")
        figures = json.loads(run(tool, "deadlines", url, seeded["server_uuid"], str(DEADLINES), "120"))
    finally:
        for service in services:
            service.stop()
    figures.update(backend=backend, instances=instances)
    return figures


def seed_reads_ledger(expiring: bool) -> dict:
    """An embedded ledger with a server of 10 credentials and 100,000 more, with or without
    expiries (a year out, so none falls due during the run)."""
    path = OUT / f"reads-{'expiring' if expiring else 'plain'}.db"
    for suffix in ["", "-wal", "-shm"]:
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    url = f"sqlite://{path}"
    binary, tool = str(RELEASE / "credential-ledger"), str(RELEASE / "examples" / "bench_tool")
    env = service_env(url, BASE_PORT)
    run(binary, "migrate", env=env)
    expiry = [str(YEAR_MS)] if expiring else []
    small = json.loads(run(tool, "seed", url, "Small", "10", *expiry, env=env))
    run(tool, "seed", url, "Bulk", "100000", *expiry, env=env)
    return {"url": url, "key": small["key"]}


def reads_once(ledger: dict, unknown_key: str, label: str) -> dict:
    binary = str(RELEASE / "credential-ledger")
    service = Process([binary, "serve"], service_env(ledger["url"], BASE_PORT), f"deadlines-reads-{label}.log")
    try:
        base = f"http://127.0.0.1:{BASE_PORT}"
        wait_http(base + "/readyz")
        list_url = base + "/api/v1/credentials/list"
        return {
            "list_10": wrk(list_url, "list.lua", {"BENCH_KEY": ledger["key"]}),
            "unknown_key": wrk(list_url, "unknown_key.lua", {"BENCH_UNKNOWN_KEY": unknown_key}),
        }
    finally:
        service.stop()


def reads_with_and_without_expiries() -> dict:
    """Each repetition measures both ledgers, one after the other, so that drift on the machine
    falls on both alike."""
    ledgers = {"without": seed_reads_ledger(False), "with": seed_reads_ledger(True)}
    unknown_key = run(str(RELEASE / "examples" / "bench_tool"), "key").strip()
    runs = {label: [] for label in ledgers}
    for _ in range(REPEAT):
        for label, ledger in ledgers.items():
            runs[label].append(reads_once(ledger, unknown_key, label))
    summary = {}
    for label, measured in runs.items():
        summary[label] = {}
        for scenario in ["list_10", "unknown_key"]:
            summary[label][scenario] = {
                key: {"median": statistics.median(r[scenario][key] for r in measured),
                      "min": min(r[scenario][key] for r in measured),
                      "max": max(r[scenario][key] for r in measured)}
                for key in ["rps", "p99"]
            }
    return summary


def ms(value: float) -> str:
    return f"{value:,.1f} ms"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"deadlines": DEADLINES, "repeat": REPEAT, "due": [], "reads": {}}
    for backend in ["sqlite", "postgres"]:
        for instances in [1, 3]:
            print(f"{DEADLINES:,} deadlines in one second: {backend}, {instances} instance(s)", flush=True)
            results["due"].append(due_in_one_second(backend, instances))
    print("reads beside 100,000 credentials with and without expiries, alternately", flush=True)
    results["reads"] = reads_with_and_without_expiries()
    run("psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    (OUT / "results-deadlines.json").write_text(json.dumps(results, indent=2))

    lines = [
        f"| backend | instances | locks | locked twice | lateness p50 | p99 | max | last lock after last deadline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for due in results["due"]:
        late = due["lateness_ms"]
        lines.append(f"| {due['backend']} | {due['instances']} | {due['locks']:,} | {due['locked_twice']} | {ms(late['p50'])} | "
                     f"{ms(late['p99'])} | {ms(late['max'])} | {ms(due['all_locked_after_last_deadline_ms'])} |")
    lines += ["", "| embedded ledger, 100,000 more credentials | list of 10, requests/s | p99 | failed auth, requests/s | p99 |",
              "|---|---|---|---|---|"]
    for variant, reads in results["reads"].items():
        lines.append(f"| {variant} expiries | {reads['list_10']['rps']['median']:,.0f} "
                     f"({reads['list_10']['rps']['min']:,.0f}–{reads['list_10']['rps']['max']:,.0f}) | "
                     f"{reads['list_10']['p99']['median']:.2f} ms | {reads['unknown_key']['rps']['median']:,.0f} "
                     f"({reads['unknown_key']['rps']['min']:,.0f}–{reads['unknown_key']['rps']['max']:,.0f}) | "
                     f"{reads['unknown_key']['p99']['median']:.2f} ms |")
    with_, without = results["reads"]["with"], results["reads"]["without"]
    lines.append("")
    lines.append(f"ratio with/without expiries: list {with_['list_10']['rps']['median'] / without['list_10']['rps']['median']:.2f}×, "
                 f"failed auth {with_['unknown_key']['rps']['median'] / without['unknown_key']['rps']['median']:.2f}×")
    table = "\n".join(lines) + "\n"
    (OUT / "results-deadlines.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
