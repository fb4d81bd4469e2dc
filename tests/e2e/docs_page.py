"""Browser check of the interactive API page served at GET /docs.

Drives Debian's Chromium through Playwright's sync API:

    python tests/e2e/docs_page.py BASE_URL KEY EXPECTED_UUID SCREENSHOT_PATH

exits 1 (after printing each failure) if any check fails.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIST_PATH = "/api/v1/credentials/list"
CREATE_PATH = "/api/v1/credentials/create"
TIMEOUT_MS = 15_000
# Chromium logs every fetch answered with 4xx/5xx as a console error. The page calls the API on
# purpose (and the first call is meant to be refused), so those lines are not page errors.
RESOURCE_STATUS_ERROR = "Failed to load resource: the server responded with a status of"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def check_docs_page(base_url: str, key: str, expected_uuid: str, screenshot_path: str) -> list[str]:
    """Returns a list of failure descriptions (empty when everything passed)."""
    failures: list[str] = []
    base_url = base_url.rstrip("/")
    origin = _origin(base_url)

    def check(condition: bool, message: str) -> bool:
        if not condition:
            failures.append(message)
        return condition

    def on_console(message) -> None:
        if message.type != "error":
            return
        text = message.text
        location = (message.location or {}).get("url", "") or ""
        if text.startswith(RESOURCE_STATUS_ERROR) and _origin(location) == origin and urlsplit(location).path.startswith("/api/v1/"):
            return
        failures.append(f"console error: {text} (at {location or 'unknown location'})")

    def on_request(request) -> None:
        url = request.url
        if url.startswith(("data:", "blob:", "about:")):
            return  # not network requests
        if _origin(url) != origin:
            failures.append(f"request to another origin: {request.method} {url}")
        if key and key in url:
            failures.append(f"the API key appears in a request URL: {request.method} {url.replace(key, '<key>')}")

    def on_request_failed(request) -> None:
        failures.append(f"request failed: {request.method} {request.url} ({request.failure})")

    def send_and_wait(page) -> tuple[str, str, str]:
        """Clicks #send and waits for the answer; returns (last status, status text, body text)."""
        page.evaluate("() => { delete document.body.dataset.lastStatus; }")
        page.click("#send")
        page.wait_for_selector("body[data-last-status]", state="attached", timeout=TIMEOUT_MS)
        last_status = page.evaluate("() => document.body.dataset.lastStatus")
        status_text = page.inner_text("#response-status").strip()
        body_text = page.inner_text("#response-body")
        return last_status, status_text, body_text

    def expect_response(page, expected_status: int, needles: list[str], label: str) -> str:
        last_status, status_text, body_text = send_and_wait(page)
        check(
            last_status == str(expected_status),
            f"{label}: body[data-last-status] is {last_status!r}, expected {expected_status}",
        )
        check(
            status_text.split(" ", 1)[0] == str(expected_status),
            f"{label}: #response-status is {status_text!r}, expected it to start with {expected_status}",
        )
        check(
            status_text.split(" ", 1)[0] == last_status,
            f"{label}: #response-status {status_text!r} does not start with data-last-status {last_status!r}",
        )
        for needle in needles:
            check(needle in body_text, f"{label}: #response-body does not contain {needle!r}; it is: {body_text[:500]!r}")
        check(
            page.inner_text("#response-time").strip() != "",
            f"{label}: #response-time is empty",
        )
        return body_text

    playwright = browser = page = None
    try:
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", on_console)
        page.on("pageerror", lambda error: failures.append(f"uncaught page error: {error}"))
        page.on("request", on_request)
        page.on("requestfailed", on_request_failed)

        response = page.goto(base_url + "/docs", wait_until="load")
        if not check(response is not None and response.status == 200,
                     f"GET /docs answered {response.status if response else 'nothing'}, expected 200"):
            return failures
        content_type = response.headers.get("content-type", "")
        check(content_type.startswith("text/html"), f"GET /docs has Content-Type {content_type!r}, expected text/html")

        page.wait_for_selector(f'#operation option[value="{LIST_PATH}"]', state="attached", timeout=TIMEOUT_MS)
        check(page.get_attribute("#api-key", "type") == "password", "#api-key is not an <input type=password>")
        auth = page.inner_text("#auth-state").strip()
        check(auth == "Not authenticated", f"#auth-state is {auth!r} before a key is typed, expected 'Not authenticated'")

        page.select_option("#operation", LIST_PATH)
        description = page.inner_text("#operation-description").strip()
        check(description != "", "#operation-description is empty after selecting the list operation")
        page.fill("#request-body", "{}")
        expect_response(page, 401, ["missing_api_key"], "list without a key")

        page.fill("#api-key", key)
        auth = page.inner_text("#auth-state").strip()
        check(auth == "Key set", f"#auth-state is {auth!r} after typing a key, expected 'Key set'")
        expect_response(page, 200, [expected_uuid, '"success"'], "list with the key")

        page.select_option("#operation", CREATE_PATH)
        prefilled = page.input_value("#request-body")
        try:
            example = json.loads(prefilled)
        except ValueError as error:
            failures.append(f"create: the prefilled #request-body is not JSON ({error}): {prefilled!r}")
        else:
            check(isinstance(example, dict) and "name" in example,
                  f"create: the prefilled #request-body has no 'name': {prefilled!r}")
        expect_response(page, 200, ["vml_"], "create with the prefilled body")

        stored = page.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])"
        )
        check(key not in stored, "the API key was written to localStorage, sessionStorage or a cookie")
        check(key not in page.url, "the API key appears in the page URL")
    except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
        failures.append(f"exception: {type(error).__name__}: {error}")
    finally:
        if page is not None:
            try:
                page.screenshot(path=screenshot_path, full_page=True)
            except Exception as error:  # noqa: BLE001
                failures.append(f"screenshot to {screenshot_path} failed: {type(error).__name__}: {error}")
        if browser is not None:
            try:
                browser.close()
            except Exception as error:  # noqa: BLE001
                failures.append(f"closing the browser failed: {error}")
        if playwright is not None:
            try:
                playwright.stop()
            except Exception:  # noqa: BLE001
                pass
    return failures


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(f"usage: {sys.argv[0]} BASE_URL KEY EXPECTED_UUID SCREENSHOT_PATH", file=sys.stderr)
        sys.exit(2)
    found = check_docs_page(*sys.argv[1:5])
    for failure in found:
        print(f"FAIL: {failure}")
    sys.exit(1 if found else 0)
