"""Where a revoke's way to the bus spends its time under a full create load (issue 18), for
the relay inside the service and as a process of its own; called by `bench/run.sh lag`.

For each placement: a fresh database and vhost, `wrk` creating on 64 connections, and
`bench_tool lag` revoking 100 credentials one after another and timing each to the bus. The
service's (and the relay process's) `/metrics` are read before and after, and the quantiles of
what moved in between are printed: `relay_stage_seconds` by stage and
`runtime_wake_delay_seconds` (how late a timer's task is polled: the wait for a worker thread).
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

from run import (CONNECTIONS, EXCHANGE, OUT, RELEASE, ROOT, SERVICE_PORT, THREADS, Process, fresh_ledger, psql, run,
                 service_env, wait_http)

DATABASE = "credential_ledger_bench_lag"
VHOST = "credential-ledger-bench-lag"
RELAY_OPS_PORT = 18083
REVOKES = os.environ.get("BENCH_LAG_REVOKES", "100")


def histograms(url: str) -> dict:
    """Every histogram's cumulative buckets, by series (name and labels)."""
    text = urllib.request.urlopen(url).read().decode()
    series = {}
    for match in re.finditer(r'^credential_ledger_(\w+)_bucket\{([^}]*)\}\s+(\S+)', text, re.M):
        name, labels, count = match.groups()
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        bound = pairs.pop("le")
        key = name + ("{" + ",".join(f'{label}="{value}"' for label, value in sorted(pairs.items())) + "}" if pairs else "")
        series.setdefault(key, []).append((float(bound), float(count)))
    return series


def quantiles(before: dict, after: dict, key: str) -> dict:
    """p50 and p99 (as the upper bound of the bucket they fall in) of what was observed between
    the two readings."""
    now = after.get(key, [])
    then = dict(before.get(key, []))
    moved = [(bound, count - then.get(bound, 0.0)) for bound, count in now]
    total = moved[-1][1] if moved else 0
    if not total:
        return {"count": 0}
    figure = lambda q: next((bound for bound, count in moved if count >= q * total), float("inf"))
    return {"count": int(total), "p50_ms": figure(0.5) * 1e3, "p99_ms": figure(0.99) * 1e3}


def measure(own_relay: bool, binary: str, tool: str, env: dict) -> dict:
    fresh_ledger(DATABASE, VHOST, binary, env)
    small = json.loads(run(tool, "seed", env["DATABASE_URL"], "Small", "10", env=env))
    writes = json.loads(run(tool, "seed", env["DATABASE_URL"], "Writes", "1", env=env))
    processes = [Process([binary, "serve"] + (["--no-relay"] if own_relay else []), env, "service-lag.log")]
    sources = [f"http://127.0.0.1:{SERVICE_PORT}/metrics"]
    if own_relay:
        processes.append(Process([binary, "relay"], dict(env, OPS_ADDR=f"127.0.0.1:{RELAY_OPS_PORT}"), "relay-lag.log"))
        sources.append(f"http://127.0.0.1:{RELAY_OPS_PORT}/metrics")
    try:
        base = f"http://127.0.0.1:{SERVICE_PORT}"
        wait_http(base + "/readyz")
        if own_relay:
            wait_http(f"http://127.0.0.1:{RELAY_OPS_PORT}/readyz")
        loader = subprocess.Popen(
            ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", "-d60s", "-s", str(ROOT / "bench" / "create.lua"),
             base + "/api/v1/credentials/create"],
            env=dict(os.environ, BENCH_KEY=writes["key"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)
            before = [histograms(url) for url in sources]
            lag = json.loads(run(tool, "lag", base, small["key"], env["AMQP_URL"], EXCHANGE, REVOKES, env=env))
            after = [histograms(url) for url in sources]
        finally:
            loader.terminate()
            loader.wait()
    finally:
        for process in processes:
            process.stop()
    names = ["service", "relay process"]
    figures = {"lag": lag}
    for name, then, now in zip(names, before, after):
        figures[name] = {
            key: quantiles(then, now, key)
            for key in sorted(now)
            if key.startswith(("relay_stage_seconds", "runtime_wake_delay_seconds", "relay_delay_seconds"))
        }
    return figures


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    env = service_env(DATABASE, VHOST, WEBHOOK_ALLOW_PRIVATE="true")
    binary = str(RELEASE / "credential-ledger")
    tool = str(RELEASE / "examples" / "bench_tool")
    results = {}
    for own_relay in (False, True):
        placement = "relay as its own process" if own_relay else "relay inside the service"
        print(f"revoke → bus under a full create load, {placement}", flush=True)
        results[placement] = measure(own_relay, binary, tool, env)
        lag = results[placement]["lag"]
        print(f"  bus after the acknowledgement: p50 {lag['bus_after_ack_p50_ms']:.2f} ms, "
              f"p99 {lag['bus_after_ack_p99_ms']:.2f} ms (from sending: p99 {lag['bus_p99_ms']:.2f} ms)")
        for process in ("service", "relay process"):
            for key, figure in results[placement].get(process, {}).items():
                if figure.get("count"):
                    print(f"  {process}: {key}: p50 ≤ {figure['p50_ms']:.2f} ms, p99 ≤ {figure['p99_ms']:.2f} ms "
                          f"({figure['count']} observations)")
    (OUT / "lag.json").write_text(json.dumps(results, indent=2))
    psql("postgres", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
