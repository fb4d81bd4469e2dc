"""A Python client generated from the served document by openapi-python-client, used as a user
would use it: every operation under `paths` is called once at least, and each must answer one of
its documented 2xx statuses with a body the generated models parse.

The operations come from the document, not from a list here: one without a step below is reported
as not called, so a new operation cannot go untested. The document's `webhooks` section is left
out: it describes the requests the service sends, which no client calls (and the generator skips).

Called by tests/e2e/suite.py with a service of its own (see `client` there): it needs webhook
delivery to run and to accept a loopback URL, so that a delivery fails for real and can be retried.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import socket
import subprocess
import sys
import time
import typing
import uuid
from datetime import datetime, timezone
from pathlib import Path

from openapi_python_client.strings import snake_case  # the generator's own naming of modules

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "openapi-python-client.yaml"
PACKAGE = "credential_ledger_client"  # package_name_override in CONFIG
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# A delivery to a port nothing listens on fails at once; with WEBHOOK_RETRY_SCHEDULE's one short
# delay it is `failed` after two attempts, well within this.
FAILED_DELIVERY_TIMEOUT = 20


def generate(document_path: Path, output: Path) -> tuple[int, str]:
    """Runs the generator; returns its exit code and everything it printed (its warnings name the
    parts of the document it could not turn into code)."""
    bin_dir = Path(sys.executable).parent
    # Its post hooks (ruff check, ruff format) are looked up on PATH: the venv's ruff.
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"), "generate",
            "--path", str(document_path),
            "--output-path", str(output),
            "--config", str(CONFIG),
            "--overwrite",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


def generator_warnings(output: str) -> str:
    """The warnings section of the generator's output, as printed ("" if none): each names a part
    of the document it could not turn into code, as a header line and a detail paragraph. It ends
    at the generator's invitation to open an issue."""
    marker = "Warning(s) encountered while generating"
    if marker not in output:
        return ""
    section = output[output.index(marker):]
    return section.split("If you believe this was a mistake", 1)[0].strip()


def operations(document: dict) -> dict[str, tuple[str, str, dict]]:
    """operationId -> (method, path, operation) for every operation under `paths`."""
    found = {}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                found[operation["operationId"]] = (method, path, operation)
    return found


def endpoint_modules(package) -> dict[str, object]:
    """The generated endpoint modules by name (the snake_case operationId), whatever their tag."""
    api = importlib.import_module(f"{package.__name__}.api")
    modules = {}
    for info in pkgutil.walk_packages(api.__path__, api.__name__ + "."):
        if not info.ispkg:
            modules[info.name.rsplit(".", 1)[1]] = importlib.import_module(info.name)
    return modules


def body_model(module) -> type | None:
    """The model class the module's `sync_detailed` takes as `body` (optional bodies are typed
    `Model | Unset`), or None if the operation takes no body."""
    hints = typing.get_type_hints(module.sync_detailed)
    if "body" not in hints:
        return None
    candidates = [hints["body"], *typing.get_args(hints["body"])]
    return next(candidate for candidate in candidates if hasattr(candidate, "from_dict"))


def check(base_url: str, key: str, document_path: Path, output: Path) -> list[str]:
    failures: list[str] = []
    document = json.loads(document_path.read_text())
    documented = operations(document)
    if not documented:
        return ["the served document has no operation under `paths`"]

    code, printed = generate(document_path, output)
    warnings = generator_warnings(printed)
    print(f"  openapi-python-client: exit code {code}, {'warnings (below)' if warnings else 'no warning'}")
    if warnings:
        print("    " + warnings.replace("\n", "\n    "))
        # Each is a part of the document the generator could not represent (an endpoint or a
        # model left out): a gap a user of the client would hit, so it fails like an error.
        failures.append(f"openapi-python-client: {warnings}")
    if code != 0:
        return failures + [f"openapi-python-client generate exited {code}:\n{printed[-3000:]}"]

    sys.path.insert(0, str(output))
    package = importlib.import_module(PACKAGE)
    errors = importlib.import_module(f"{PACKAGE}.errors")
    modules = endpoint_modules(package)
    # prefix="" sends the bare key in X-Server-API-Key; raise_on_unexpected_status turns an
    # undocumented status into an exception; trust_env=False keeps every request on this machine
    # whatever proxy the environment names.
    client = package.AuthenticatedClient(
        base_url=base_url,
        token=key,
        prefix="",
        auth_header_name="X-Server-API-Key",
        raise_on_unexpected_status=True,
        timeout=10.0,
        httpx_args={"trust_env": False},
    )
    called: set[str] = set()

    def invoke(operation_id: str, body: dict | None = None, allowed: set[int] | None = None, label: str = ""):
        """Calls the operation through its generated module; returns the answer's `data` (None
        after a failure, which is recorded). `body=None` sends no body at all. `allowed`: the
        statuses accepted, by default the operation's documented 2xx (any status the document
        does not list fails anyway, through raise_on_unexpected_status)."""
        what = f"{operation_id}{f' ({label})' if label else ''}"
        called.add(operation_id)
        if operation_id not in documented:
            failures.append(f"{what}: not in the served document")
            return None
        responses = documented[operation_id][2].get("responses", {})
        expected = allowed or {int(status) for status in responses if status.isdigit() and status.startswith("2")}
        module = modules.get(snake_case(operation_id))
        if module is None:
            failures.append(f"{what}: the generator made no function for it")
            return None
        kwargs = {"client": client}
        if body is not None:
            model = body_model(module)
            if model is None:
                failures.append(f"{what}: the generated function takes no body")
                return None
            kwargs["body"] = model.from_dict(body)
        try:
            response = module.sync_detailed(**kwargs)
        except errors.UnexpectedStatus as error:
            failures.append(f"{what}: undocumented status {error.status_code}: {error.content[:300]!r}")
            return None
        except Exception as error:  # the generated code's own failure (serializing, parsing)
            failures.append(f"{what}: {type(error).__name__}: {error}"[:500])
            return None
        status = int(response.status_code)
        if status not in expected:
            failures.append(f"{what}: status {status}, expected {sorted(expected)}: {response.content[:300]!r}")
            return None
        if response.parsed is None:
            failures.append(f"{what}: the generated client parsed no model from {response.content[:300]!r}")
            return None
        return json.loads(response.content).get("data") if response.content else None

    with client:
        for probe in ["livez", "healthz", "readyz"]:
            invoke(probe)

        # Subscribed before any lock, so that the rotation and the revocation below are delivered.
        # Nothing listens on the port: each attempt fails, on the loopback interface.
        endpoint = invoke(
            "createWebhookEndpoint",
            {"url": f"http://127.0.0.1:{unused_port()}/hook", "description": "e2e generated client"},
        )
        credential = invoke("createCredential", {"name": "E2E generated client", "type": "API"})

        # As a user would call them first: no body at all; then with one.
        now = datetime.now(timezone.utc).isoformat()
        for label, body in [("no body", None), ("with a body", {"as_of": now})]:
            listed = invoke("listCredentials", body, label=label)
            if credential and listed is not None and credential["uuid"] not in {row["uuid"] for row in listed}:
                failures.append(f"listCredentials ({label}): the new credential is not listed")
        for label, body in [("no body", None), ("with a body", {})]:
            listed = invoke("listWebhookEndpoints", body, label=label)
            if endpoint and listed is not None and endpoint["uuid"] not in {row["uuid"] for row in listed}:
                failures.append(f"listWebhookEndpoints ({label}): the new endpoint is not listed")
        for label, body in [("no body", None), ("with a body", {"after_position": 0, "limit": 10})]:
            invoke("listEvents", body, label=label)
        for label, body in [("no body", None), ("with a body", {})]:
            head = invoke("chainHead", body, label=label)
            if head is not None and len(head.get("hash", "")) != 64:
                failures.append(f"chainHead ({label}): no 64-digit hash in {head}")

        if credential:
            invoke("regenerateCredential", {"uuid": credential["uuid"], "grace_period": 0})
            invoke("revokeCredential", {"uuid": credential["uuid"]})
            invoke("credentialHistory", {"uuid": credential["uuid"]})

        invoke("listWebhookDeliveries", None, label="no body")
        delivery_id = None
        if endpoint:
            deadline = time.monotonic() + FAILED_DELIVERY_TIMEOUT
            while delivery_id is None and time.monotonic() < deadline:
                attempts = invoke(
                    "listWebhookDeliveries", {"uuid": endpoint["uuid"], "status": "failed"}, label="failed ones"
                )
                if attempts is None:
                    break
                if attempts:
                    delivery_id = attempts[0]["delivery_id"]
                else:
                    time.sleep(0.5)
            if delivery_id is None:
                failures.append(f"no delivery to the endpoint failed within {FAILED_DELIVERY_TIMEOUT}s")
        if delivery_id is not None:
            retried = invoke("retryWebhookDelivery", {"id": delivery_id})
            if retried is not None and retried.get("status") != "retrying":
                failures.append(f"retryWebhookDelivery: answered {retried}, expected status retrying")
        else:
            # Still called, so that the operation is covered: a delivery that does not exist.
            invoke("retryWebhookDelivery", {"id": 2**53}, allowed={404}, label="no such delivery")
        if endpoint:
            invoke("deleteWebhookEndpoint", {"uuid": endpoint["uuid"]})
        else:
            invoke("deleteWebhookEndpoint", {"uuid": str(uuid.uuid4())}, allowed={404}, label="no such endpoint")

    missed = sorted(set(documented) - called)
    if missed:
        failures.append(f"operations of the document not called: {', '.join(missed)}")
    print(f"  generated client: {len(called & set(documented))} of {len(documented)} operations called, "
          f"{len(failures)} failure(s)")
    return failures


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
