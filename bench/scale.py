"""The scale benchmark (issue 18; see BENCHMARKS.md, "Scale"): called by `bench/run.sh scale`.

One ledger grows through the sizes in BENCH_SCALE_SIZES (default 100,000, 1,000,000 and
10,000,000 credentials). At each size the service starts on it, and the run measures:
- start-up: from starting the process to `/readyz` answering 200, loading the view (no snapshot
  file), then again from the replica's snapshot that the first process wrote when it stopped;
- RSS at rest (VmRSS two seconds after ready), and bytes per credential, after both starts;
- `list` of a server of 10 credentials and a failed authentication (a key never issued), with
  wrk, beside the strict HTTP ceiling (a pre-serialised answer) in the same minute;
- the biggest server (up to 1,000,000 credentials) listing itself on one
  connection without pause while the small server lists on 8: the small server's p99, and the
  service's RSS peak over its rest.

Seeding goes through the store's append path (`bench_tool seed`), in servers of up to 1,000,000.
BENCH_BACKEND=sqlite runs it on the embedded ledger; otherwise PostgreSQL (in-process delivery in
both: the replica is what is measured).
"""

import json
import os
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (CEILING_PORT, OUT, PG, RELEASE, Process, psql, run, wait_http, wrk)  # noqa: E402

BACKEND = os.environ.get("BENCH_BACKEND", "postgres")
SIZES = [int(size) for size in os.environ.get("BENCH_SCALE_SIZES", "100000,1000000,10000000").split(",")]
DATABASE = "credential_ledger_scale"
LEDGER_FILE = OUT / "scale.db"
SERVICE_PORT = 18090
BULK_SERVER = 1_000_000
DURATION = os.environ.get("BENCH_DURATION", "10s")
SNAPSHOT = OUT / f"scale-{BACKEND}.replica"


def database_url() -> str:
    return f"sqlite://{LEDGER_FILE}" if BACKEND == "sqlite" else f"{PG}/{DATABASE}"


def fresh_ledger(env: dict) -> None:
    if BACKEND == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{LEDGER_FILE}{suffix}").unlink(missing_ok=True)
    else:
        run("psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    run(str(RELEASE / "credential-ledger"), "migrate", env=env)


def rss_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))


def replica_bytes(log: Path) -> int | None:
    found = re.findall(r"the credential view is loaded into the replica.*?bytes=(\d+)", log.read_text())
    return int(found[-1]) if found else None


def big_lists(url: str, key: str, stop: threading.Event, figures: dict) -> None:
    """Lists the big server again and again on one connection, reading each answer as it streams."""
    body = b"{}"
    while not stop.is_set():
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "X-Server-API-Key": key, "Content-Type": "application/json"})
        began = time.monotonic()
        received = 0
        with urllib.request.urlopen(request, timeout=120) as answer:
            while chunk := answer.read(1 << 16):
                received += len(chunk)
        figures["answers"] = figures.get("answers", 0) + 1
        figures["bytes"] = received
        figures["seconds"] = time.monotonic() - began


def start(env: dict, log: str) -> tuple[Process, float]:
    began = time.monotonic()
    service = Process([str(RELEASE / "credential-ledger"), "serve"], env, log)
    wait_http(f"http://127.0.0.1:{SERVICE_PORT}/readyz", timeout=900)
    return service, time.monotonic() - began


def measure(size: int, env: dict, small: dict, big: dict, unknown_key: str) -> dict:
    log = f"scale-service-{size}.log"
    SNAPSHOT.unlink(missing_ok=True)
    service, startup = start(env, log)
    try:
        time.sleep(2)
        pid = service.process.pid
        rest = rss_kib(pid, "VmRSS")
        figures = {"credentials": size, "startup_s": startup, "rss_rest_mib": rest / 1024,
                   "bytes_per_credential": rest * 1024 / size, "replica_heap_bytes": replica_bytes(OUT / log)}
        list_url = f"http://127.0.0.1:{SERVICE_PORT}/api/v1/credentials/list"
        ceiling_url = f"http://127.0.0.1:{CEILING_PORT}/api/v1/credentials/list"
        figures["strict_ceiling"] = wrk(ceiling_url, "list.lua", {"BENCH_KEY": "x"})
        figures["list_10"] = wrk(list_url, "list.lua", {"BENCH_KEY": small["key"]})
        figures["unknown_key"] = wrk(list_url, "unknown_key.lua", {"BENCH_UNKNOWN_KEY": unknown_key})
        figures["neighbour_alone"] = wrk(list_url, "list.lua", {"BENCH_KEY": small["key"]}, connections=8, threads=1)
        stop, flood = threading.Event(), {}
        lister = threading.Thread(target=big_lists, args=(list_url, big["key"], stop, flood))
        hwm_before = rss_kib(pid, "VmHWM")
        lister.start()
        time.sleep(1)
        figures["neighbour_beside_big_list"] = wrk(list_url, "list.lua", {"BENCH_KEY": small["key"]}, connections=8, threads=1)
        stop.set()
        lister.join()
        figures["big_list"] = flood
        figures["rss_peak_mib"] = rss_kib(pid, "VmHWM") / 1024
        figures["rss_peak_before_big_list_mib"] = hwm_before / 1024
    finally:
        # Stopping writes the replica's snapshot.
        service.stop()
    figures["snapshot_mib"] = SNAPSHOT.stat().st_size / 2**20 if SNAPSHOT.exists() else None
    service, figures["startup_from_snapshot_s"] = start(env, f"scale-service-{size}-snapshot.log")
    try:
        time.sleep(2)
        figures["rss_rest_from_snapshot_mib"] = rss_kib(service.process.pid, "VmRSS") / 1024
    finally:
        service.stop()
    return figures


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DATABASE_URL=database_url(), LISTEN_ADDR=f"127.0.0.1:{SERVICE_PORT}",
               WEBHOOK_ALLOW_PRIVATE="true", AUTH_FAILURES_PER_MINUTE="100000000",
               # The replica's size is logged at info; every request is too, which the figures must not pay for.
               RUST_LOG="warn,credential_ledger::app::replica=info", REPLICA_SNAPSHOT=str(SNAPSHOT))
    env.pop("AMQP_URL", None)
    tool = str(RELEASE / "examples" / "bench_tool")
    fresh_ledger(env)
    small = json.loads(run(tool, "seed", env["DATABASE_URL"], "Small", "10", env=env))
    unknown_key = run(tool, "key").strip()
    ceiling = Process([str(RELEASE / "examples" / "http_ceiling"), f"127.0.0.1:{CEILING_PORT}"], env, "ceiling.log")
    results = {"backend": BACKEND, "duration": DURATION, "sizes": []}
    seeded, bulk_servers, big, big_count = 10, 0, None, 0
    try:
        wait_http(f"http://127.0.0.1:{CEILING_PORT}/")
        for size in SIZES:
            began = time.monotonic()
            while seeded < size:
                count = min(BULK_SERVER, size - seeded)
                bulk_servers += 1
                print(f"seeding {count:,} credentials into bulk server {bulk_servers}", flush=True)
                server = json.loads(run(tool, "seed", env["DATABASE_URL"], f"Bulk {bulk_servers}", str(count), env=env))
                if count > big_count:
                    big, big_count = server, count
                seeded += count
            seeding = time.monotonic() - began
            if BACKEND != "sqlite":
                # Seeding leaves autovacuum and a checkpoint to do, which would share the measurements' two cores.
                psql(DATABASE, "VACUUM ANALYZE")
                psql(DATABASE, "CHECKPOINT")
            print(f"measuring at {size:,} credentials", flush=True)
            figures = measure(size, env, small, big, unknown_key)
            figures["seeding_s"] = seeding
            figures["big_server_credentials"] = big_count
            results["sizes"].append(figures)
            (OUT / f"scale-{BACKEND}.json").write_text(json.dumps(results, indent=2))
            print(json.dumps(figures), flush=True)
    finally:
        ceiling.stop()
    print(report(results))
    return 0


def report(results: dict) -> str:
    lines = [
        f"backend: {results['backend']}, wrk -t2 -c64 -d{results['duration']} (the neighbour: -t1 -c8)",
        "",
        "| credentials | start-up: view / snapshot | RSS at rest: view / snapshot | bytes per credential | strict ceiling | list of 10 (p99) | ratio | unknown key (p99) | ratio | neighbour p99 alone / beside a big list | big list | big list's rise of peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        ceiling = size["strict_ceiling"]["rps"]
        big = size["big_list"]
        lines.append(
            f"| {size['credentials']:,} | {size['startup_s']:.1f} s / {size['startup_from_snapshot_s']:.1f} s | "
            f"{size['rss_rest_mib']:.0f} / {size['rss_rest_from_snapshot_mib']:.0f} MiB | "
            f"{size['bytes_per_credential']:.0f} | {ceiling:,.0f}/s | {size['list_10']['rps']:,.0f}/s ({size['list_10']['p99']:.2f} ms) | "
            f"{size['list_10']['rps'] / ceiling:.2f}× | {size['unknown_key']['rps']:,.0f}/s ({size['unknown_key']['p99']:.2f} ms) | "
            f"{size['unknown_key']['rps'] / ceiling:.2f}× | {size['neighbour_alone']['p99']:.2f} / {size['neighbour_beside_big_list']['p99']:.2f} ms | "
            f"{big.get('answers', 0)} × {big.get('bytes', 0) / 1e6:.0f} MB, {big.get('seconds', 0):.2f} s each | "
            f"{size['rss_peak_mib'] - size['rss_peak_before_big_list_mib']:.1f} MiB |")
    sizes = results["sizes"]
    if len(sizes) >= 2:
        first, last = sizes[-2], sizes[-1]
        slope = (last["rss_rest_mib"] - first["rss_rest_mib"]) * 1024 * 1024 / (last["credentials"] - first["credentials"])
        lines.append("")
        lines.append(f"slope of RSS at rest from {first['credentials']:,} to {last['credentials']:,} credentials: {slope:.0f} bytes per credential")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
