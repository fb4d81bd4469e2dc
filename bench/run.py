"""Orchestrates the benchmark scenarios (see BENCHMARKS.md); called by bench/run.sh."""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "target" / "release"
OUT = ROOT / "target" / "bench"
QUICK = os.environ.get("BENCH_QUICK") == "1"
DURATION = os.environ.get("BENCH_DURATION", "5s" if QUICK else "10s")
REPEAT = int(os.environ.get("BENCH_REPEAT", "1" if QUICK else "3"))
CONNECTIONS = 64
THREADS = 2
PG = "postgres://postgres@127.0.0.1:5432"
DATABASE = "credential_ledger_bench"
VHOST = "credential-ledger-bench"
EXCHANGE = "credential-ledger.events"
SERVICE_PORT = 18080
CEILING_PORT = 18081
RELAY_AUTH_PORT = 18082
RELAY_SECRET = "bench-relay-secret-0123456789"
REBUILD_EVENTS = int(os.environ.get("BENCH_REBUILD_EVENTS", "200000" if QUICK else "1000000"))
# `postgres` (PostgreSQL and RabbitMQ) or `sqlite` (the embedded ledger, in-process delivery).
BACKEND = os.environ.get("BENCH_BACKEND", "postgres")
LEDGER_FILE = OUT / "ledger.db"
RSS_CREDENTIALS = 100_000


def run(*args, env=None, check=True) -> str:
    return subprocess.run(args, env=env, check=check, capture_output=True, text=True).stdout


def psql(database: str, sql: str) -> str:
    return run("psql", f"{PG}/{database}", "-qtAc", sql)


def fresh_ledger(database: str, vhost: str, binary: str, env: dict) -> None:
    """An empty, migrated database and an empty RabbitMQ vhost of these names."""
    run("psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    run("rabbitmqctl", "-q", "delete_vhost", vhost, check=False)
    run("rabbitmqctl", "-q", "add_vhost", vhost)
    run("rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    run(binary, "migrate", env=env)


def service_env(database: str, vhost: str, **settings: str) -> dict:
    """The service's environment on that database and vhost, on the suite's port, quiet."""
    return dict(
        os.environ,
        DATABASE_URL=f"{PG}/{database}",
        LISTEN_ADDR=f"127.0.0.1:{SERVICE_PORT}",
        AMQP_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        AMQP_EXCHANGE=EXCHANGE,
        RUST_LOG="warn",
        **settings,
    )


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, method="GET")
            with urllib.request.urlopen(request, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def wrk(url: str, script: str, env: dict, connections: int = CONNECTIONS, threads: int = THREADS) -> dict:
    """One wrk run: requests/s and latency percentiles in ms."""
    output = run(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{DURATION}", "--latency", "-s", str(ROOT / "bench" / script), url,
        env=dict(os.environ, **env),
    )
    return wrk_figures(output)


def wrk_figures(output: str) -> dict:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    percentiles = {}
    for label, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        percentiles[label] = float(value) * scale
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rate, "p50": percentiles.get("50"), "p99": percentiles.get("99"),
            "errors": int(non_2xx.group(1)) if non_2xx else 0}


def repeated(measure) -> dict:
    runs = [measure() for _ in range(REPEAT)]
    def summary(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None
    return {key: summary(key) for key in runs[0]}


class Process:
    def __init__(self, args, env, log):
        self.log = open(OUT / log, "w")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=self.log)

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def metric_sum(name: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{SERVICE_PORT}/metrics").read().decode()
    total = re.search(rf"^credential_ledger_{name}_sum\s+([\d.e+-]+)", text, re.M)
    count = re.search(rf"^credential_ledger_{name}_count\s+(\d+)", text, re.M)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def lag_under_load(tool, base, small, writes, amqp, env) -> dict:
    """Revokes one after another while wrk creates at full speed on 64 connections."""
    loader = subprocess.Popen(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", "-d60s", "-s", str(ROOT / "bench" / "create.lua"), base + "/api/v1/credentials/create"],
        env=dict(os.environ, BENCH_KEY=writes["key"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        return json.loads(run(tool, "lag", base, small["key"], amqp, EXCHANGE, "100", env=env))
    finally:
        loader.terminate()
        loader.wait()


def fmt(summary, digits=0, unit="") -> str:
    if not summary:
        return "n/a"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(summary['median'])}{unit} ({f.format(summary['min'])}–{f.format(summary['max'])})"


def pgbench_ceiling() -> dict:
    """PostgreSQL's naive write (bench/pgbench_write.sql) on 64 connections, in its own database."""
    psql(DATABASE, "CREATE TABLE IF NOT EXISTS bench_events (position bigserial PRIMARY KEY, stream_id uuid NOT NULL, "
         "event_type text NOT NULL, payload jsonb NOT NULL, recorded_at timestamptz NOT NULL); "
         "CREATE TABLE IF NOT EXISTS bench_view (uuid uuid PRIMARY KEY, name text NOT NULL, hold boolean NOT NULL)")
    seconds = int(DURATION.rstrip("s"))
    output = run("pgbench", "-n", "-c", str(CONNECTIONS), "-j", str(THREADS), "-T", str(seconds), "-f",
                 str(ROOT / "bench" / "pgbench_write.sql"), f"{PG}/{DATABASE}")
    latency = re.search(r"latency average = ([\d.]+) ms", output)
    return {"rps": float(re.search(r"tps = ([\d.]+)", output).group(1)),
            "p50": float(latency.group(1)) if latency else None}


def smtp_checks(base: str, api_key: str) -> dict:
    """Scenario 10: `GET /auth/smtp` with a live SMTP key, and the ceiling's fixed answer to it."""
    request = urllib.request.Request(
        base + "/api/v1/credentials/create",
        data=json.dumps({"name": "Bench SMTP", "type": "SMTP"}).encode(),
        headers={"Content-Type": "application/json", "X-Server-API-Key": api_key},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        smtp_key = json.load(response)["data"]["key"]
    env = {"BENCH_RELAY_SECRET": RELAY_SECRET, "BENCH_SMTP_KEY": smtp_key}
    return {
        "smtp_ceiling": repeated(lambda: wrk(f"http://127.0.0.1:{CEILING_PORT}/auth/smtp", "auth_smtp.lua", env)),
        "smtp_check": repeated(lambda: wrk(f"http://127.0.0.1:{RELAY_AUTH_PORT}/auth/smtp", "auth_smtp.lua", env)),
    }


def sqlite_ceiling() -> dict:
    """SQLite's naive write (examples/sqlite_ceiling.rs): one transaction per command, WAL, synchronous=FULL."""
    seconds = DURATION.rstrip("s")
    return json.loads(run(str(RELEASE / "examples" / "sqlite_ceiling"), str(OUT / "ceiling.db"), seconds, str(CONNECTIONS)))


def main_sqlite() -> int:
    """The embedded ledger: the same scenarios where they apply, against the same-run ceilings."""
    results = {"duration": DURATION, "repeat": REPEAT, "connections": CONNECTIONS, "backend": "sqlite"}
    for suffix in ["", "-wal", "-shm"]:
        Path(f"{LEDGER_FILE}{suffix}").unlink(missing_ok=True)
    run("psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    run("psql", f"{PG}/postgres", "-qc", f"CREATE DATABASE {DATABASE}")
    url = f"sqlite://{LEDGER_FILE}"
    env = dict(
        os.environ,
        DATABASE_URL=url,
        LISTEN_ADDR=f"127.0.0.1:{SERVICE_PORT}",
        WEBHOOK_ALLOW_PRIVATE="true",
        AUTH_FAILURES_PER_MINUTE="100000000",
        RELAY_AUTH_ADDR=f"127.0.0.1:{RELAY_AUTH_PORT}",
        RELAY_AUTH_SECRET=RELAY_SECRET,
        SMTP_UPSTREAM="127.0.0.1:2525",
        RUST_LOG="warn",
    )
    env.pop("AMQP_URL", None)
    binary = str(RELEASE / "credential-ledger")
    tool = str(RELEASE / "examples" / "bench_tool")
    run(binary, "migrate", env=env)

    print("seeding: 10 credentials, 10,000 credentials, and 100,000 more for the memory figure", flush=True)
    small = json.loads(run(tool, "seed", url, "Small", "10", env=env))
    large = json.loads(run(tool, "seed", url, "Large", "10000", env=env))
    json.loads(run(tool, "seed", url, "Bulk", str(RSS_CREDENTIALS), env=env))
    writes = json.loads(run(tool, "seed", url, "Writes", "1", env=env))
    unknown_key = run(tool, "key").strip()

    service = Process([binary, "serve"], env, "service-sqlite.log")
    ceiling = Process([str(RELEASE / "examples" / "http_ceiling"), f"127.0.0.1:{CEILING_PORT}"], env, "ceiling.log")
    try:
        wait_http(f"http://127.0.0.1:{SERVICE_PORT}/readyz")
        wait_http(f"http://127.0.0.1:{CEILING_PORT}/")
        base = f"http://127.0.0.1:{SERVICE_PORT}"
        list_url = base + "/api/v1/credentials/list"
        print("HTTP ceiling", flush=True)
        results["http_ceiling"] = repeated(lambda: wrk(f"http://127.0.0.1:{CEILING_PORT}/api/v1/credentials/list", "list.lua", {"BENCH_KEY": "x"}))
        results["soft_ceiling"] = repeated(lambda: wrk(f"http://127.0.0.1:{CEILING_PORT}/soft/api/v1/credentials/list", "list.lua", {"BENCH_KEY": "x"}))
        print("1. list, 10 credentials", flush=True)
        results["list_10"] = repeated(lambda: wrk(list_url, "list.lua", {"BENCH_KEY": small["key"]}))
        print("2. list, 10,000 credentials", flush=True)
        results["list_10000"] = repeated(lambda: wrk(list_url, "list.lua", {"BENCH_KEY": large["key"]}))
        print("3. failed authentication", flush=True)
        results["unknown_key"] = repeated(lambda: wrk(list_url, "unknown_key.lua", {"BENCH_UNKNOWN_KEY": unknown_key}))
        print("10. SMTP login check (auth_http), against the ceiling's fixed answer", flush=True)
        results.update(smtp_checks(base, writes["key"]))
        results["peak_rss_reads_mib"] = service.peak_rss_mib()
        print("PostgreSQL ceiling (pgbench) and SQLite ceiling (naive write)", flush=True)
        results["pg_ceiling"] = repeated(pgbench_ceiling)
        results["sqlite_ceiling"] = repeated(sqlite_ceiling)
        print("4. create", flush=True)
        batch_before = metric_sum("write_batch_size")
        results["create"] = repeated(lambda: wrk(base + "/api/v1/credentials/create", "create.lua", {"BENCH_KEY": writes["key"]}))
        batch_after = metric_sum("write_batch_size")
        batches = batch_after[1] - batch_before[1]
        results["mean_batch"] = (batch_after[0] - batch_before[0]) / batches if batches else None
        results["peak_rss_mib"] = service.peak_rss_mib()
        print("6. revoke → webhook, idle (in-process delivery)", flush=True)
        results["lag_idle"] = json.loads(run(tool, "lag", base, small["key"], "-", "-", "200", env=env))
    finally:
        service.stop()
        ceiling.stop()

    print(f"7. projection rebuild of {REBUILD_EVENTS:,} events", flush=True)
    present = json.loads(run(binary, "projections", "rebuild", env=env))["events"]
    if present < REBUILD_EVENTS:
        run(tool, "seed", url, "Rebuild", str(REBUILD_EVENTS - present), env=env)
    rebuilds = [json.loads(run(binary, "projections", "rebuild", env=env)) for _ in range(REPEAT)]
    rates = [r["events"] / r["seconds"] for r in rebuilds]
    results["rebuild"] = {"events": rebuilds[0]["events"],
                          "rate": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}}
    run("psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

    (OUT / "results-sqlite.json").write_text(json.dumps(results, indent=2))
    table = report_sqlite(results)
    (OUT / "results-sqlite.md").write_text(table)
    print(table)
    return 0


def report_sqlite(r: dict) -> str:
    http = r["http_ceiling"]["rps"]["median"]
    pg = r["pg_ceiling"]["rps"]["median"]
    lite = r["sqlite_ceiling"]["rps"]["median"]
    rows = [
        ("HTTP ceiling, strict (pre-serialised list)", fmt(r["http_ceiling"]["rps"]), fmt(r["http_ceiling"]["p50"], 2, " ms"), fmt(r["http_ceiling"]["p99"], 2, " ms"), "1.00×"),
        ("HTTP ceiling, soft (list built as JSON per request)", fmt(r["soft_ceiling"]["rps"]), fmt(r["soft_ceiling"]["p50"], 2, " ms"), fmt(r["soft_ceiling"]["p99"], 2, " ms"), f"{r['soft_ceiling']['rps']['median'] / http:.2f}× HTTP"),
        ("PostgreSQL ceiling (pgbench, naive write)", fmt(r["pg_ceiling"]["rps"]) + " tps", fmt(r["pg_ceiling"]["p50"], 2, " ms") + " (mean)", "", "1.00×"),
        ("SQLite ceiling (naive write, WAL, synchronous=FULL)", fmt(r["sqlite_ceiling"]["rps"]) + " tps", fmt(r["sqlite_ceiling"]["p50"], 2, " ms") + " (mean)", "", f"{lite / pg:.2f}× PostgreSQL"),
        ("1. list, 10 credentials", fmt(r["list_10"]["rps"]), fmt(r["list_10"]["p50"], 2, " ms"), fmt(r["list_10"]["p99"], 2, " ms"), f"{r['list_10']['rps']['median'] / http:.2f}× HTTP"),
        ("2. list, 10,000 credentials", fmt(r["list_10000"]["rps"]), fmt(r["list_10000"]["p50"], 2, " ms"), fmt(r["list_10000"]["p99"], 2, " ms"), f"{r['list_10000']['rps']['median'] / http:.3f}× HTTP"),
        ("3. failed authentication (unknown key)", fmt(r["unknown_key"]["rps"]), fmt(r["unknown_key"]["p50"], 2, " ms"), fmt(r["unknown_key"]["p99"], 2, " ms"), f"{r['unknown_key']['rps']['median'] / http:.2f}× HTTP"),
        ("auth_http ceiling (fixed answer, axum)", fmt(r["smtp_ceiling"]["rps"]), fmt(r["smtp_ceiling"]["p50"], 2, " ms"), fmt(r["smtp_ceiling"]["p99"], 2, " ms"), "1.00×"),
        ("10. SMTP login check (auth_http, live key)", fmt(r["smtp_check"]["rps"]), fmt(r["smtp_check"]["p50"], 2, " ms"), fmt(r["smtp_check"]["p99"], 2, " ms"), f"{r['smtp_check']['rps']['median'] / r['smtp_ceiling']['rps']['median']:.2f}× its ceiling"),
        ("4. create", fmt(r["create"]["rps"]), fmt(r["create"]["p50"], 2, " ms"), fmt(r["create"]["p99"], 2, " ms"), f"{r['create']['rps']['median'] / pg:.2f}× PostgreSQL, {r['create']['rps']['median'] / lite:.2f}× SQLite"),
    ]
    lag = r["lag_idle"]
    lines = [
        f"Embedded ledger (BENCH_BACKEND=sqlite). wrk -t{THREADS} -c{r['connections']} -d{r['duration']}, {r['repeat']} run(s) each: median (min–max)",
        "",
        "| scenario | requests/s | p50 | p99 | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += [
        "",
        f"- 4. mean group-commit batch during `create`: {r['mean_batch']:.1f} commands per transaction" if r.get("mean_batch") else "",
        f"- 6. revoke → webhook, idle, in-process delivery, from sending the revoke: p50 {lag['webhook_p50_ms']:.2f} ms, "
        f"p99 {lag['webhook_p99_ms']:.2f} ms; from its acknowledgement: p50 {lag['webhook_after_ack_p50_ms']:.2f} ms, "
        f"p99 {lag['webhook_after_ack_p99_ms']:.2f} ms ({lag['count']} revokes)",
        f"- 7. projection rebuild of {r['rebuild']['events']:,} events: {fmt(r['rebuild']['rate'])} events/s",
        f"- 8. peak RSS of the service through scenarios 1–3: {r['peak_rss_reads_mib']:.1f} MiB; through 1–4: {r['peak_rss_mib']:.1f} MiB",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    if BACKEND == "sqlite":
        return main_sqlite()
    results = {"duration": DURATION, "repeat": REPEAT, "connections": CONNECTIONS}
    run("psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    run("rabbitmqctl", "-q", "delete_vhost", VHOST, check=False)
    run("rabbitmqctl", "-q", "add_vhost", VHOST)
    run("rabbitmqctl", "-q", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    amqp = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
    env = dict(
        os.environ,
        DATABASE_URL=f"{PG}/{DATABASE}",
        LISTEN_ADDR=f"127.0.0.1:{SERVICE_PORT}",
        AMQP_URL=amqp,
        AMQP_EXCHANGE=EXCHANGE,
        WEBHOOK_ALLOW_PRIVATE="true",
        AUTH_FAILURES_PER_MINUTE="100000000",
        RELAY_AUTH_ADDR=f"127.0.0.1:{RELAY_AUTH_PORT}",
        RELAY_AUTH_SECRET=RELAY_SECRET,
        SMTP_UPSTREAM="127.0.0.1:2525",
        RUST_LOG="warn",
    )
    binary = str(RELEASE / "credential-ledger")
    tool = str(RELEASE / "examples" / "bench_tool")
    run(binary, "migrate", env=env)

    print("seeding: 10 credentials, 10,000 credentials, and 100,000 more for the memory figure", flush=True)
    small = json.loads(run(tool, "seed", env["DATABASE_URL"], "Small", "10", env=env))
    large = json.loads(run(tool, "seed", env["DATABASE_URL"], "Large", "10000", env=env))
    bulk = json.loads(run(tool, "seed", env["DATABASE_URL"], "Bulk", str(RSS_CREDENTIALS), env=env))
    # Writes go to servers of their own, so that the list scenarios keep their sizes.
    writes = json.loads(run(tool, "seed", env["DATABASE_URL"], "Writes", "1", env=env))
    mixed_writes = json.loads(run(tool, "seed", env["DATABASE_URL"], "Mixed writes", "1", env=env))
    # Well-formed, with a valid checksum, never issued: every request costs a lookup.
    unknown_key = run(tool, "key").strip()

    service = Process([binary, "serve"], env, "service.log")
    ceiling = Process([str(RELEASE / "examples" / "http_ceiling"), f"127.0.0.1:{CEILING_PORT}"], env, "ceiling.log")
    try:
        wait_http(f"http://127.0.0.1:{SERVICE_PORT}/readyz")
        wait_http(f"http://127.0.0.1:{CEILING_PORT}/")
        base = f"http://127.0.0.1:{SERVICE_PORT}"

        print("HTTP ceiling", flush=True)
        results["http_ceiling"] = repeated(lambda: wrk(f"http://127.0.0.1:{CEILING_PORT}/api/v1/credentials/list", "list.lua", {"BENCH_KEY": "x"}))
        results["soft_ceiling"] = repeated(lambda: wrk(f"http://127.0.0.1:{CEILING_PORT}/soft/api/v1/credentials/list", "list.lua", {"BENCH_KEY": "x"}))
        print("1. list, 10 credentials", flush=True)
        results["list_10"] = repeated(lambda: wrk(base + "/api/v1/credentials/list", "list.lua", {"BENCH_KEY": small["key"]}))
        print("2. list, 10,000 credentials", flush=True)
        results["list_10000"] = repeated(lambda: wrk(base + "/api/v1/credentials/list", "list.lua", {"BENCH_KEY": large["key"]}))
        print("3. failed authentication", flush=True)
        results["unknown_key"] = repeated(lambda: wrk(base + "/api/v1/credentials/list", "unknown_key.lua", {"BENCH_UNKNOWN_KEY": unknown_key}))
        print("10. SMTP login check (auth_http), against the ceiling's fixed answer", flush=True)
        results.update(smtp_checks(base, writes["key"]))
        # Scenarios 4 and 5 add hundreds of thousands of credentials: the peak is also taken here.
        results["peak_rss_reads_mib"] = service.peak_rss_mib()
        results["credentials_reads"] = int(psql(DATABASE, "SELECT count(*) FROM credentials"))

        print(f"9. one tenant floods lists of its {RSS_CREDENTIALS:,} credentials; another lists its 10", flush=True)
        list_url = base + "/api/v1/credentials/list"
        neighbour = lambda: wrk(list_url, "list.lua", {"BENCH_KEY": small["key"]}, connections=8, threads=1)
        results["neighbour_alone"] = repeated(neighbour)
        def flooded():
            flood = subprocess.Popen(
                ["wrk", "-t1", "-c32", f"-d{DURATION}", "--latency", "-s", str(ROOT / "bench" / "list.lua"), list_url],
                env=dict(os.environ, BENCH_KEY=bulk["key"]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                time.sleep(0.5)
                figures = neighbour()
            finally:
                flood_figures = wrk_figures(flood.communicate()[0])
            figures["flood_rps"] = flood_figures["rps"]
            figures["flood_refused"] = flood_figures["errors"]
            return figures
        results["neighbour_flooded"] = repeated(flooded)
        results["peak_rss_flood_mib"] = service.peak_rss_mib()

        print("PostgreSQL ceiling (pgbench)", flush=True)
        results["pg_ceiling"] = repeated(pgbench_ceiling)

        print("4. create", flush=True)
        batch_before = metric_sum("write_batch_size")
        results["create"] = repeated(lambda: wrk(base + "/api/v1/credentials/create", "create.lua", {"BENCH_KEY": writes["key"]}))
        batch_after = metric_sum("write_batch_size")
        commands = batch_after[0] - batch_before[0]
        batches = batch_after[1] - batch_before[1]
        results["mean_batch"] = commands / batches if batches else None

        print("5. mixed 90/9/1", flush=True)
        results["mixed"] = repeated(lambda: wrk(base + "/api/v1/credentials/list", "mixed.lua",
                                                {"BENCH_KEY": small["key"], "BENCH_WRITE_KEY": mixed_writes["key"]}))
        results["peak_rss_mib"] = service.peak_rss_mib()
        results["credentials_end"] = int(psql(DATABASE, "SELECT count(*) FROM credentials"))

        print("6. revoke → bus and → webhook, idle", flush=True)
        results["lag_idle"] = json.loads(run(tool, "lag", base, small["key"], amqp, EXCHANGE, "200", env=env))
        print("6. the same under a full write load", flush=True)
        results["lag_loaded"] = lag_under_load(tool, base, small, writes, amqp, env)
    finally:
        service.stop()
        ceiling.stop()

    print("6. the same, with the relay as a process of its own", flush=True)
    service = Process([binary, "serve", "--no-relay"], env, "service.log")
    relay = Process([binary, "relay"], env, "relay.log")
    try:
        wait_http(f"http://127.0.0.1:{SERVICE_PORT}/readyz")
        results["lag_loaded_own_relay"] = lag_under_load(tool, base, small, writes, amqp, env)
    finally:
        service.stop()
        relay.stop()

    print(f"7. projection rebuild of {REBUILD_EVENTS:,} events", flush=True)
    present = int(psql(DATABASE, "SELECT position FROM chain_head"))
    if present < REBUILD_EVENTS:
        run(tool, "seed", env["DATABASE_URL"], "Rebuild", str(REBUILD_EVENTS - present), env=env)
    rebuilds = [json.loads(run(binary, "projections", "rebuild", env=env)) for _ in range(REPEAT)]
    rates = [r["events"] / r["seconds"] for r in rebuilds]
    results["rebuild"] = {"events": rebuilds[0]["events"],
                          "rate": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}}

    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    table = report(results)
    (OUT / "results.md").write_text(table)
    print(table)
    run("rabbitmqctl", "-q", "delete_vhost", VHOST, check=False)
    return 0


def lag_line(when: str, lag: dict) -> str:
    return (f"- 6. {when}, from sending the revoke: bus p50 {lag['bus_p50_ms']:.2f} ms, p99 {lag['bus_p99_ms']:.2f} ms; "
            f"webhook p50 {lag['webhook_p50_ms']:.2f} ms, p99 {lag['webhook_p99_ms']:.2f} ms. From its acknowledgement: "
            f"bus p50 {lag['bus_after_ack_p50_ms']:.2f} ms, p99 {lag['bus_after_ack_p99_ms']:.2f} ms; "
            f"webhook p50 {lag['webhook_after_ack_p50_ms']:.2f} ms, p99 {lag['webhook_after_ack_p99_ms']:.2f} ms "
            f"({lag['count']} revokes)")


def report(r: dict) -> str:
    http = r["http_ceiling"]["rps"]["median"]
    pg = r["pg_ceiling"]["rps"]["median"]
    rows = [
        ("HTTP ceiling, strict (pre-serialised list)", fmt(r["http_ceiling"]["rps"]), fmt(r["http_ceiling"]["p50"], 2, " ms"), fmt(r["http_ceiling"]["p99"], 2, " ms"), "1.00×"),
        ("HTTP ceiling, soft (list built as JSON per request)", fmt(r["soft_ceiling"]["rps"]), fmt(r["soft_ceiling"]["p50"], 2, " ms"), fmt(r["soft_ceiling"]["p99"], 2, " ms"), f"{r['soft_ceiling']['rps']['median'] / http:.2f}× HTTP"),
        ("PostgreSQL ceiling (pgbench, naive write)", fmt(r["pg_ceiling"]["rps"]) + " tps", fmt(r["pg_ceiling"]["p50"], 2, " ms") + " (mean)", "", "1.00×"),
        ("1. list, 10 credentials", fmt(r["list_10"]["rps"]), fmt(r["list_10"]["p50"], 2, " ms"), fmt(r["list_10"]["p99"], 2, " ms"), f"{r['list_10']['rps']['median'] / http:.2f}× HTTP"),
        ("2. list, 10,000 credentials", fmt(r["list_10000"]["rps"]), fmt(r["list_10000"]["p50"], 2, " ms"), fmt(r["list_10000"]["p99"], 2, " ms"), f"{r['list_10000']['rps']['median'] / http:.3f}× HTTP"),
        ("3. failed authentication (unknown key)", fmt(r["unknown_key"]["rps"]), fmt(r["unknown_key"]["p50"], 2, " ms"), fmt(r["unknown_key"]["p99"], 2, " ms"), f"{r['unknown_key']['rps']['median'] / http:.2f}× HTTP"),
        ("auth_http ceiling (fixed answer, axum)", fmt(r["smtp_ceiling"]["rps"]), fmt(r["smtp_ceiling"]["p50"], 2, " ms"), fmt(r["smtp_ceiling"]["p99"], 2, " ms"), "1.00×"),
        ("10. SMTP login check (auth_http, live key)", fmt(r["smtp_check"]["rps"]), fmt(r["smtp_check"]["p50"], 2, " ms"), fmt(r["smtp_check"]["p99"], 2, " ms"), f"{r['smtp_check']['rps']['median'] / r['smtp_ceiling']['rps']['median']:.2f}× its ceiling"),
        ("4. create", fmt(r["create"]["rps"]), fmt(r["create"]["p50"], 2, " ms"), fmt(r["create"]["p99"], 2, " ms"), f"{r['create']['rps']['median'] / pg:.2f}× PostgreSQL"),
        ("5. mixed 90% list / 9% create / 1% revoke", fmt(r["mixed"]["rps"]), fmt(r["mixed"]["p50"], 2, " ms"), fmt(r["mixed"]["p99"], 2, " ms"), f"{r['mixed']['rps']['median'] / http:.2f}× HTTP"),
    ]
    lines = [
        f"wrk -t{THREADS} -c{r['connections']} -d{r['duration']}, {r['repeat']} run(s) each: median (min–max)",
        "",
        "| scenario | requests/s | p50 | p99 | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += [
        "",
        f"- 4. mean group-commit batch during `create`: {r['mean_batch']:.1f} commands per transaction" if r.get("mean_batch") else "",
        lag_line("idle", r["lag_idle"]),
        lag_line("under a full create load", r["lag_loaded"]),
        lag_line("under a full create load, relay in a process of its own", r["lag_loaded_own_relay"]),
        f"- 7. projection rebuild of {r['rebuild']['events']:,} events: {fmt(r['rebuild']['rate'])} events/s",
        f"- 9. a neighbour's `list` (10 credentials, 8 connections): alone {fmt(r['neighbour_alone']['rps'])}/s, p99 "
        f"{fmt(r['neighbour_alone']['p99'], 2, ' ms')}; while another tenant floods lists of {RSS_CREDENTIALS:,} credentials on 32 connections: "
        f"{fmt(r['neighbour_flooded']['rps'])}/s, p99 {fmt(r['neighbour_flooded']['p99'], 2, ' ms')} "
        f"({r['neighbour_flooded']['p99']['median'] / r['neighbour_alone']['p99']['median']:.2f}× its p99 alone); the flood got "
        f"{fmt(r['neighbour_flooded']['flood_rps'], 1)} answers/s, with {fmt(r['neighbour_flooded']['flood_refused'])} refused (429 `server_busy`) per run; "
        f"peak RSS after it {r['peak_rss_flood_mib']:.1f} MiB",
        f"- 8. peak RSS of the service through scenarios 1–3, {r['credentials_reads']:,} credentials: {r['peak_rss_reads_mib']:.1f} MiB; "
        f"through scenarios 1–5, which end with {r['credentials_end']:,} credentials: {r['peak_rss_mib']:.1f} MiB",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
