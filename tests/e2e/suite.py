"""End-to-end suites against the real binary, run by .ci/run after `cargo test`, on the embedded
ledger (a SQLite file, the default) and on PostgreSQL (`E2E_POSTGRES`; `E2E_BACKENDS=sqlite` runs
the first alone):

- openapi: the served document passes openapi-spec-validator;
- spectral: Spectral's `spectral:oas` ruleset (tests/e2e/.spectral.yaml) finds no error in it
  (its warnings are printed, and allowed);
- client: openapi-python-client generates a client from it without a warning, and that client
  calls every operation of the document with documented answers (tests/e2e/generated_client.py),
  on a SQLite service of its own (whatever `E2E_BACKENDS` says) that delivers webhooks to a
  loopback URL;
- metrics: /metrics asked for the Prometheus text format (0.0.4) answers it, and `promtool check
  metrics` accepts it; asked for OpenMetrics, it answers OpenMetrics;
- hadolint: the Dockerfile has no finding at the warning level or above (once, not per backend);
- fuzz: Schemathesis generates requests from /api/v1/openapi.json (every operation, with a valid
  key): no 5xx, every status and body as documented, invalid input refused, valid input accepted;
- console: the web console at /console in headless Chromium (tests/e2e/console.py), on a SQLite
  service of its own (whatever `E2E_BACKENDS` says) that delivers webhooks to a loopback URL: a
  person's sign-in, credentials (create, regenerate with a grace period, revoke, a 422 and a 409
  shown by their fields), histories, webhooks (a failed delivery retried), ledger head and API
  reference; no key in storage, a cookie, a URL or the browser's console; axe-core finds nothing
  serious on any view at 1280 and 390 px; screenshots of each view in target/e2e/console-*.png;
  and the table of a server with 10,000 credentials drawn within a second of the sign-in;
- smtp: on the embedded ledger, a real nginx mail proxy asks the service (`auth_http`) whether
  an SMTP key may log in, and relays to an aiosmtpd sink: a live key's mail arrives; a revoked
  key, a rotation's old key, an API key and a malformed key get 535; nginx with a wrong relay
  secret gets nothing through; the login shows in `last_used_at`;
- logs: the services' logs during all of it (debug level, JSON) contain no key.

docker-compose.yml is checked by .ci/run (`docker-compose config`), not here.

Prints one line per suite and a closing `N passed, M failed`; exits 1 if any failed.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "credential-ledger"
OUT = ROOT / "target" / "e2e"
SERVER = os.environ.get("E2E_POSTGRES", "postgres://postgres@127.0.0.1:5432")
MIN_FUZZ_REQUESTS = 1000
KEY_SHAPE = re.compile(r"vml_[0-9A-Za-z]{38}")

HERE = Path(__file__).resolve().parent
SPECTRAL = ROOT / "target" / "e2e-node" / "node_modules" / ".bin" / "spectral"
PROMETHEUS_TEXT = "text/plain;version=0.0.4"
OPENMETRICS = "application/openmetrics-text"

sys.path.insert(0, str(HERE))
from console import check_console  # noqa: E402
import generated_client  # noqa: E402
import smtp_chain  # noqa: E402

RELAY_SECRET = "e2e-relay-secret-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    def __init__(self, database_url: str, port: int, log_path: Path, extra_env: dict | None = None):
        self.env = dict(
            os.environ,
            DATABASE_URL=database_url,
            LISTEN_ADDR=f"127.0.0.1:{port}",
            LOG_FORMAT="json",
            RUST_LOG="debug,sqlx=info,hyper=info,h2=info,lapin=info,amq_protocol=info",
            # The bus is covered by the Rust suites; this run leaves nothing on the broker.
            NO_RELAY="true",
            NO_WEBHOOKS="true",
            RELAY_NO_WEBHOOK_QUEUE="true",
            AUTH_FAILURES_PER_MINUTE="100000",
        )
        # The bus is not part of this run, and a broker URL would be refused with a SQLite ledger.
        self.env.pop("AMQP_URL", None)
        self.env.update(extra_env or {})
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process = None

    def command(self, *args: str) -> str:
        return subprocess.run([str(BINARY), *args], env=self.env, check=True, capture_output=True, text=True).stdout

    def start(self) -> None:
        log = open(self.log_path, "w")
        self.process = subprocess.Popen([str(BINARY), "serve"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the service did not become ready")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def fuzz(service: Service, key: str, backend: str) -> list[str]:
    report = OUT / f"schemathesis-{backend}"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file", str(Path(__file__).parent / "schemathesis.toml"),
            "run", service.base_url + "/api/v1/openapi.json",
            "--header", f"X-Server-API-Key: {key}",
            "--max-examples", "150",
            "--workers", "2",
            "--seed", os.environ.get("E2E_FUZZ_SEED", "20261130"),
            "--generation-database", "none",
            "--no-color",
            "--report", "junit",
            "--report-dir", str(report),
        ],
        capture_output=True,
        text=True,
    )
    log = OUT / f"schemathesis-{backend}.log"
    log.write_text(result.stdout + result.stderr)
    failures = []
    generated = re.search(r"(\d+) generated", result.stdout)
    count = int(generated.group(1)) if generated else 0
    print(f"  schemathesis on {backend}: {count} generated requests, exit code {result.returncode}")
    if result.returncode != 0:
        summary = result.stdout[-3000:]
        failures.append(f"schemathesis found failures (full log: {log}):\n{summary}")
    if count < MIN_FUZZ_REQUESTS:
        failures.append(f"only {count} requests were generated, fewer than {MIN_FUZZ_REQUESTS}")
    return failures


def served_document(service: Service, path: Path) -> Path:
    """Saves the served OpenAPI document to `path`, for the tools that read a file."""
    with urllib.request.urlopen(service.base_url + "/api/v1/openapi.json", timeout=10) as response:
        path.write_bytes(response.read())
    return path


def contract(document_path: Path) -> list[str]:
    """The served OpenAPI document, as openapi-spec-validator reads it: no error."""
    from openapi_spec_validator import validate
    document = json.loads(document_path.read_text())
    try:
        validate(document)
    except Exception as error:  # the validator's own error types differ between its versions
        return [f"openapi-spec-validator: {error}"[:2000]]
    return []


def spectral(document_path: Path) -> list[str]:
    """The served document under Spectral's own OpenAPI rules: no error (severity 0). Warnings
    are printed, not failed: they are style advice the project may choose not to follow."""
    if not SPECTRAL.exists():
        return [f"{SPECTRAL} is missing: tests/e2e/run.sh installs it"]
    result = subprocess.run(
        [
            str(SPECTRAL), "lint", str(document_path),
            "--ruleset", str(HERE / ".spectral.yaml"),
            "--format", "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    try:
        findings = json.loads(result.stdout)
    except json.JSONDecodeError:
        # Spectral exits 1 for errors found, and 2 when it could not lint at all.
        said = (result.stdout + result.stderr)[-2000:]
        return [f"spectral exited {result.returncode} without a JSON report: {said}"]

    def describe(finding: dict) -> str:
        where = ".".join(str(part) for part in finding.get("path", [])) or "(document)"
        return f"{finding.get('code')} at {where}: {finding.get('message')}"

    errors = [describe(finding) for finding in findings if finding.get("severity") == 0]
    warnings = [describe(finding) for finding in findings if finding.get("severity") == 1]
    print(f"  spectral: {len(errors)} error(s), {len(warnings)} warning(s), exit code {result.returncode}")
    for warning in warnings:
        print(f"    warning: {warning}")
    return [f"spectral: {error}" for error in errors]


def promtool_path() -> str:
    """promtool from tests/e2e/promtool.sh, which unpacks Debian's package on first use."""
    run = subprocess.run(["bash", str(HERE / "promtool.sh")], capture_output=True, text=True)
    found = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
    if run.returncode != 0 or "PROMTOOL" not in found:
        raise RuntimeError(f"promtool.sh failed ({run.returncode}): {run.stderr.strip()}")
    return found["PROMTOOL"]


def scrape(service: Service, accept: str) -> tuple[str, bytes]:
    request = urllib.request.Request(service.base_url + "/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("Content-Type", ""), response.read()


def metrics(service: Service, backend: str) -> list[str]:
    """/metrics as each kind of scraper asks for it: a Prometheus that wants the 0.0.4 text format
    gets it, in a form promtool accepts; one that asks for OpenMetrics gets OpenMetrics."""
    failures = []
    content_type, text = scrape(service, PROMETHEUS_TEXT)
    if not content_type.startswith("text/plain"):
        failures.append(f"Accept: {PROMETHEUS_TEXT} answered Content-Type {content_type!r}")
    try:
        promtool = promtool_path()
    except RuntimeError as error:  # no promtool: this check fails, the others still run
        return failures + [str(error)]
    # Checked whatever the Content-Type said: what promtool makes of the body is worth reading.
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    said = (result.stdout + result.stderr).decode(errors="replace").strip()
    print(f"  metrics on {backend}: {content_type!r}, {len(text)} bytes, promtool exit code {result.returncode}")
    for line in said.splitlines():
        print(f"    promtool: {line}")
    # promtool exits 1 when it cannot parse the exposition and 3 for lint problems (names, units,
    # help texts): both are its verdict that Prometheus users would get a worse scrape.
    if result.returncode != 0:
        failures.append(f"promtool check metrics exited {result.returncode}: {said[:2000]}")
    content_type, _ = scrape(service, OPENMETRICS)
    if not content_type.startswith(OPENMETRICS):
        failures.append(f"Accept: {OPENMETRICS} answered Content-Type {content_type!r}")
    return failures


def hadolint() -> list[str]:
    """The Dockerfile under hadolint: nothing at the warning level or above (its `info` findings
    are printed, and allowed)."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "hadolint"),
            "--no-color",
            "--failure-threshold", "warning",
            str(ROOT / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
    )
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    print(f"  hadolint: {len(findings)} finding(s), exit code {result.returncode}")
    for finding in findings:
        print(f"    {finding}")
    return [f"hadolint exited {result.returncode}: {finding}" for finding in findings] if result.returncode else []


def call(service: Service, path: str, key: str, body: dict) -> dict:
    request = urllib.request.Request(
        service.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Server-API-Key": key},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]


def smtp(service: Service, key: str, relay_port: int, sink: smtp_chain.Sink) -> list[str]:
    """The chain client -> nginx -> the ledger's check -> the sink, as the README shows it."""
    failures = []

    def expect(what: str, got: tuple[int, str], code: int) -> None:
        if got[0] != code:
            failures.append(f"{what}: expected {code}, got {got}")

    auth_url = f"http://127.0.0.1:{relay_port}/auth/smtp"
    proxy = smtp_chain.start_nginx(auth_url, RELAY_SECRET, sink.port)
    try:
        live = call(service, "/api/v1/credentials/create", key, {"name": "SMTP Relay", "type": "SMTP"})
        expect("a live SMTP key", smtp_chain.login_and_send(proxy.port, "anyone", live["key"], marker="live"), 235)
        if not any(b"live" in message["content"] for message in sink.messages):
            failures.append("the live key's message did not arrive at the sink")
        listed = call(service, "/api/v1/credentials/list", key, {})
        if not next(row for row in listed if row["uuid"] == live["uuid"])["last_used_at"]:
            time.sleep(1.5)  # usage is flushed once a second
            listed = call(service, "/api/v1/credentials/list", key, {})
            if not next(row for row in listed if row["uuid"] == live["uuid"])["last_used_at"]:
                failures.append("last_used_at did not move after a login")
        rotated = call(service, "/api/v1/credentials/create", key, {"name": "Rotated", "type": "SMTP"})
        new = call(service, "/api/v1/credentials/regenerate", key, {"uuid": rotated["uuid"]})
        expect("a rotation's old key", smtp_chain.login_and_send(proxy.port, "anyone", rotated["key"]), 535)
        expect("a rotation's new key", smtp_chain.login_and_send(proxy.port, "anyone", new["key"]), 235)
        api = call(service, "/api/v1/credentials/create", key, {"name": "API", "type": "API"})
        expect("an API key", smtp_chain.login_and_send(proxy.port, "anyone", api["key"]), 535)
        expect("a malformed key", smtp_chain.login_and_send(proxy.port, "anyone", "vml_nope"), 535)
        call(service, "/api/v1/credentials/revoke", key, {"uuid": live["uuid"]})
        expect("a revoked key", smtp_chain.login_and_send(proxy.port, "anyone", live["key"]), 535)
    finally:
        proxy.stop()
    stranger = smtp_chain.start_nginx(auth_url, "not-the-relay-secret", sink.port)
    try:
        code, text = smtp_chain.login_and_send(stranger.port, "anyone", new["key"])
        if code == 235:
            failures.append(f"nginx with a wrong relay secret got a login through: {code} {text}")
    finally:
        stranger.stop()
    print(f"  smtp: {len(sink.messages)} message(s) relayed, {len(failures)} failure(s)")
    return failures


def provision(service: Service) -> dict:
    """Migrates the service's database and creates its server; returns `server create`'s answer,
    whose API key the checks call with."""
    service.command("migrate")
    return json.loads(service.command("server", "create", "--name", "E2E"))


def remove_sqlite(ledger: Path) -> None:
    for suffix in ["", "-wal", "-shm"]:
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)


def leaked_keys(service: Service) -> list[str]:
    logged = service.log_path.read_text() if service.log_path.exists() else ""
    if not logged:
        return ["the service wrote no logs to check"]
    leaked = KEY_SHAPE.findall(logged)
    return [f"{len(leaked)} key(s) in the service's logs"] if leaked else []


def on_delivering_service(name: str, results: dict, check) -> None:
    """Runs `check(service, key)` on a SQLite service of its own that, unlike the fuzzed ones,
    delivers webhooks (in process) and accepts loopback URLs, so that there is a real failed
    delivery to retry: the endpoints the checks add are loopback ports nothing listens on, and
    no request leaves the machine. One short wait makes a delivery `failed` after its second
    attempt, a moment after the lock. Its own database also keeps the other suites' records out
    of its lists. Its logs are checked for keys as `<name> logs`."""
    ledger = OUT / f"credential_ledger_e2e_{name}_{uuid.uuid4().hex[:12]}.db"
    service = Service(
        f"sqlite://{ledger}",
        free_port(),
        OUT / f"service-{name}.log",
        {"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_RETRY_SCHEDULE": "100ms"},
    )
    service.env.pop("NO_WEBHOOKS")
    try:
        key = provision(service)["credential"]["key"]
        service.start()
        results[name] = check(service, key)
    except Exception as error:  # a broken harness is a failure, reported like one
        results.setdefault(f"{name} harness", []).append(repr(error))
    finally:
        service.stop()
        remove_sqlite(ledger)
    results[f"{name} logs"] = leaked_keys(service)


def client(results: dict) -> None:
    """The generated client calls every operation of the served document."""

    def check(service: Service, key: str) -> list[str]:
        document = served_document(service, OUT / "openapi-client.json")
        return generated_client.check(service.base_url, key, document, OUT / "client")

    on_delivering_service("client", results, check)


def console(results: dict) -> None:
    """The console's browser checks, with the binary's own assets (whatever
    CONSOLE_ASSETS_FROM_DISK says in this shell); it seeds 10,000 credentials."""
    on_delivering_service(
        "console", results, lambda service, key: check_console(service.base_url, key, OUT, assets_from_disk=False)
    )


def run_on(backend: str, results: dict) -> None:
    """One service on `backend`: the fuzz run, /metrics, then on the embedded ledger (the default
    backend: these do not depend on it) the document's linters and the SMTP chain,
    and the logs of all of it checked for keys."""
    name = f"credential_ledger_e2e_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        ledger = OUT / f"{name}.db"
        database_url = f"sqlite://{ledger}"
    else:
        database_url = f"{SERVER}/{name}"
    relay_port = free_port()
    sink = smtp_chain.start_sink() if backend == "sqlite" else None
    relay_env = (
        {
            "RELAY_AUTH_ADDR": f"127.0.0.1:{relay_port}",
            "RELAY_AUTH_SECRET": RELAY_SECRET,
            "SMTP_UPSTREAM": f"127.0.0.1:{sink.port}",
        }
        if sink
        else {}
    )
    service = Service(database_url, free_port(), OUT / f"service-{backend}.log", relay_env)
    try:
        provisioned = provision(service)
        key = provisioned["credential"]["key"]
        service.start()
        results[f"{backend} fuzz"] = fuzz(service, key, backend)
        # After the fuzz run, so that its requests fill the metrics' labels.
        results[f"{backend} metrics"] = metrics(service, backend)
        if sink:
            document = served_document(service, OUT / "openapi.json")
            results["openapi"] = contract(document)
            results["spectral"] = spectral(document)
            results["smtp"] = smtp(service, key, relay_port, sink)
    except Exception as error:  # a broken harness is a failure, reported like one
        results.setdefault(f"{backend} harness", []).append(repr(error))
    finally:
        service.stop()
        if sink:
            sink.stop()
        if backend == "sqlite":
            remove_sqlite(ledger)
        else:
            subprocess.run(
                ["psql", f"{SERVER}/postgres", "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                capture_output=True,
            )
    results[f"{backend} logs"] = leaked_keys(service)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"hadolint": hadolint()}
    for backend in os.environ.get("E2E_BACKENDS", "sqlite,postgresql").split(","):
        run_on(backend, results)
    client(results)
    console(results)

    passed = failed = 0
    for name, failures in results.items():
        if failures:
            failed += 1
            print(f"e2e {name}: FAILED")
            for failure in failures:
                print(f"  - {failure}")
        else:
            passed += 1
            print(f"e2e {name}: ok")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
