"""The SMTP relay chain for end-to-end tests: Python smtplib client -> real nginx mail proxy
(ngx_mail_module, asking an `auth_http` server who may log in and where to relay) -> an aiosmtpd
sink that records what arrives. Everything listens on 127.0.0.1, on free ports.

    sink = start_sink()
    proxy = start_nginx("http://127.0.0.1:8081/auth/smtp", relay_secret, sink.port)
    code, text = login_and_send(proxy.port, "user", "smtp-key")   # 235 or 535 ...
    sink.messages  # [{"mail_from": ..., "rcpt_tos": [...], "content": b"...", ...}]
    proxy.error_log(); proxy.stop(); sink.stop()

nginx and its mail module come from tests/e2e/nginx.sh (Debian's packages, unpacked under
target/nginx); set E2E_NGINX and E2E_NGINX_MAIL_MODULE to use others. aiosmtpd comes from
tests/e2e/requirements.txt (the target/e2e-venv of tests/e2e/run.sh).

What nginx does with the auth server's answers (seen with nginx 1.22.1): it reads the `Auth-*`
headers only, whatever the HTTP status; `Auth-Wait` keeps the client's connection open for a retry
after that many seconds, without it the connection is closed; an answer without `Auth-Status` (a
403 for a wrong secret, a 500, a server that is down) reaches the client as `451 4.3.2`.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

NGINX_SH = Path(__file__).resolve().parent / "nginx.sh"

# A result code for failures that carry no SMTP code (connection refused, closed, timed out).
NO_SMTP_CODE = -1

_nginx_paths: tuple[str, str] | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if not alive():
                raise RuntimeError(f"process exited before 127.0.0.1:{port} accepted connections")
            if time.monotonic() > deadline:
                raise TimeoutError(f"127.0.0.1:{port} accepted no connection within {timeout}s")
            time.sleep(0.05)


def nginx_paths() -> tuple[str, str]:
    """(nginx binary, ngx_mail_module.so): from E2E_NGINX / E2E_NGINX_MAIL_MODULE, else from
    tests/e2e/nginx.sh (which downloads and unpacks them on first use)."""
    global _nginx_paths
    if _nginx_paths is None:
        binary = os.environ.get("E2E_NGINX")
        module = os.environ.get("E2E_NGINX_MAIL_MODULE")
        if not (binary and module):
            run = subprocess.run(["bash", str(NGINX_SH)], capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"{NGINX_SH} failed ({run.returncode}): {run.stderr.strip()}")
            found = dict(
                line.split("=", 1) for line in run.stdout.splitlines() if "=" in line
            )
            binary, module = found.get("NGINX"), found.get("MAIL_MODULE")
            if not (binary and module):
                raise RuntimeError(f"{NGINX_SH} printed no NGINX=/MAIL_MODULE=: {run.stdout!r}")
        _nginx_paths = (binary, module)
    return _nginx_paths


# ----------------------------------------------------------------------------------------------
# The sink: an aiosmtpd server that keeps every message it is given.


class Sink:
    def __init__(self, controller, port: int, messages: list):
        self._controller = controller
        self.port = port
        self.messages = messages  # dicts: mail_from, rcpt_tos, content (bytes), peer, helo, esmtp

    def wait_for(self, predicate, timeout: float = 10.0):
        """The first recorded message for which predicate(message) is true, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if predicate(message):
                    return message
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_sink() -> Sink:
    from aiosmtpd.controller import Controller

    messages: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            messages.append(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": list(envelope.rcpt_tos),
                    "content": envelope.original_content or envelope.content,
                    "peer": session.peer,
                    "helo": session.host_name,
                    "esmtp": session.extended_smtp,  # EHLO (True) or HELO
                }
            )
            return "250 2.0.0 Message accepted"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return Sink(controller, port, messages)


# ----------------------------------------------------------------------------------------------
# nginx's mail proxy.

NGINX_CONF = """\
load_module {module};
worker_processes 1;
error_log {prefix}/logs/error.log info;
pid {prefix}/nginx.pid;
events {{ worker_connections 64; }}
mail {{
    server_name {server_name};
    auth_http {auth_url};
{auth_header}    auth_http_timeout {auth_timeout};
    proxy_pass_error_message on;
    smtp_auth login plain;
    smtp_capabilities "SIZE 10485760" 8BITMIME;
    xclient off;
    timeout 30s;
    server {{
        listen 127.0.0.1:{port};
        protocol smtp;
    }}
}}
"""


# Every nginx started and not yet stopped: stopped at exit, so that a test that fails half-way
# leaves none behind. If this process is killed instead, PR_SET_PDEATHSIG ends nginx's master.
_running: set = set()


def _stop_all() -> None:
    for proxy in list(_running):
        proxy.stop()


atexit.register(_stop_all)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (nginx's fast shutdown) when the thread that started
    it exits. Linux only; elsewhere a no-op."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _quote(value: str) -> str:
    """A string as one nginx config token."""
    if any(c in value for c in "\r\n"):
        raise ValueError(f"no line breaks in an nginx config value: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Nginx:
    def __init__(self, process, prefix: Path, port: int, upstream_port: int):
        self._process = process
        self.prefix = prefix
        self.conf = prefix / "nginx.conf"
        self.port = port
        self.upstream_port = upstream_port  # informational: nginx relays where auth_http says
        self._log_path = prefix / "logs" / "error.log"
        self._log_after_stop: str | None = None

    def error_log(self) -> str:
        if self._log_after_stop is not None:
            return self._log_after_stop
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        self._process = None
        self._log_after_stop = self.error_log()
        shutil.rmtree(self.prefix, ignore_errors=True)
        _running.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_nginx(
    auth_url: str,
    relay_secret: str | None,
    upstream_port: int,
    server_name: str = "relay.e2e.test",
    auth_timeout: str = "5s",
) -> Nginx:
    """Starts nginx's SMTP proxy on a free 127.0.0.1 port, asking auth_url (auth_http) with the
    header `X-Relay-Secret: <relay_secret>` (None: no such header). The upstream SMTP server is
    whatever the auth server names in Auth-Server/Auth-Port; upstream_port is kept for the caller.
    """
    binary, module = nginx_paths()
    prefix = Path(tempfile.mkdtemp(prefix="e2e-nginx-mail-"))
    (prefix / "logs").mkdir()
    port = free_port()
    auth_header = (
        f"    auth_http_header X-Relay-Secret {_quote(relay_secret)};\n" if relay_secret else ""
    )
    (prefix / "nginx.conf").write_text(
        NGINX_CONF.format(
            module=module,
            prefix=prefix,
            server_name=server_name,
            auth_url=_quote(auth_url),
            auth_timeout=auth_timeout,
            auth_header=auth_header,
            port=port,
        )
    )
    command = [
        binary,
        "-p", str(prefix),
        "-e", str(prefix / "logs" / "error.log"),  # also for messages before the config is read
        "-c", str(prefix / "nginx.conf"),
        "-g", "daemon off;",
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    proxy = Nginx(process, prefix, port, upstream_port)
    _running.add(proxy)
    try:
        wait_for_port(port, timeout=10, alive=lambda: process.poll() is None)
    except Exception as error:
        log = proxy.error_log()
        proxy.stop()
        raise RuntimeError(f"nginx did not start: {error}\n--- error log ---\n{log}") from None
    return proxy


# ----------------------------------------------------------------------------------------------
# The client.


def _message(sender: str, to: str, marker: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"e2e relay check {marker}"
    message["Message-ID"] = f"<{marker}@e2e.test>"
    message.set_content(f"Sent through the nginx relay by the e2e suite.\nmarker: {marker}\n")
    return message


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def _authenticate(client: smtplib.SMTP, method: str, username: str, password: str):
    """AUTH PLAIN (initial response) or AUTH LOGIN (user and password each in answer to a 334),
    written out rather than smtplib's login() so that the method is fixed and non-ASCII (UTF-8)
    credentials can be sent. Returns smtplib's (code, bytes) of the final answer."""
    method = method.upper()
    if method == "PLAIN":
        return client.docmd("AUTH", "PLAIN " + _b64(f"\0{username}\0{password}"))
    if method == "LOGIN":
        code, text = client.docmd("AUTH", "LOGIN")
        if code != 334:
            return code, text
        code, text = client.docmd(_b64(username))
        if code != 334:
            return code, text
        return client.docmd(_b64(password))
    raise ValueError(f"unsupported AUTH method {method!r}")


def login_and_send(
    port: int,
    username: str,
    password: str,
    to: str = "sink@example.test",
    *,
    method: str = "PLAIN",
    sender: str = "e2e@example.test",
    marker: str | None = None,
    timeout: float = 15.0,
) -> tuple[int, str]:
    """EHLO, AUTH <method> with username/password, then, if accepted, sends a small message
    (its body and Message-ID carry `marker`, random if not given). Returns (code, text) of the
    AUTH answer (235 accepted, 535 refused, 451/454 nginx's internal errors), or of whatever
    failed after it; (NO_SMTP_CODE, description) when there was no SMTP answer at all (refused
    or closed connection, timeout). Never raises for an SMTP refusal or a network error."""
    marker = marker or uuid.uuid4().hex
    client = smtplib.SMTP(timeout=timeout)
    try:
        try:
            code, text = client.connect("127.0.0.1", port)
            if code != 220:
                return code, text.decode(errors="replace")
            code, text = client.ehlo("client.e2e.test")
            if code != 250:
                return code, text.decode(errors="replace")
            code, text = _authenticate(client, method, username, password)
            auth_result = (code, text.decode(errors="replace"))
            if code != 235:
                return auth_result
            refused = client.send_message(_message(sender, to, marker), sender, [to])
            if refused:
                rcpt_code, rcpt_text = refused[to]
                return rcpt_code, rcpt_text.decode(errors="replace")
            try:
                client.quit()
            except smtplib.SMTPException:
                pass
            return auth_result
        except smtplib.SMTPRecipientsRefused as error:
            rcpt_code, rcpt_text = next(iter(error.recipients.values()))
            return rcpt_code, rcpt_text.decode(errors="replace")
        except smtplib.SMTPResponseException as error:
            text = error.smtp_error
            return error.smtp_code, text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        except (smtplib.SMTPException, OSError) as error:
            return NO_SMTP_CODE, f"{type(error).__name__}: {error}"
    finally:
        try:
            client.close()
        except Exception:
            pass
