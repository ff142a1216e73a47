"""A failed post check says what was expected and what came back, with secrets masked.

The app under check is a small HTTP server on loopback written here that answers like a backend
which is not the reference one (its login nests the token, its listing has no count): a real server
and real requests, so that the CLI's output is the one an operator reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from recovery.app_http import describe, json_field, mask_secrets
from recovery.integrity import post_checks
from recovery.target import AppTarget, Target
from tests.test_recovery_cli import PROJECT, bare_target_file

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
LOGIN_SECRET = "a-check-secret-4711"


class ForeignApp(BaseHTTPRequestHandler):
    """Health 200; login 200 with the token under data.access_token; projects 500 as an HTML page."""

    def do_GET(self) -> None:
        if self.path.endswith("/health"):
            self._answer(200, "application/json", json.dumps({"status": "healthy"}))
        else:
            self._answer(500, "text/html", "<html><body><h1>Internal Server Error</h1>" + "x" * 400)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        body = {"success": True, "data": {"access_token": TOKEN, "user": "admin"}}
        self._answer(200, "application/json", json.dumps(body))

    def _answer(self, status: int, kind: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def reference_contract(target: Target, url: str) -> Target:
    """The target pointed at the server, expecting the reference backend's contract of it."""
    app = AppTarget(login_path="/api/v1/auth/login", token_path="token", listing_path="/api/v1/projects")
    return replace(target, backend_url=url, health_path="/api/v1/health", app=app)


@pytest.fixture
def foreign_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ForeignApp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_login_without_the_token_field_says_what_was_expected_and_what_came(tmp_path, foreign_app):
    _, target = bare_target_file(tmp_path / "root")
    result = post_checks(reference_contract(target, foreign_app), "admin", LOGIN_SECRET)
    assert [(c.name, c.ok) for c in result.checks] == [("health", True), ("login", False)]
    login = result.checks[1]
    assert login.detail.startswith("expected HTTP 200 from /api/v1/auth/login with a token at 'token'; seen ")
    assert "no field 'token' (has: data, success)" in login.detail
    assert "HTTP 200 (application/json)" in login.detail and '"access_token": "***"' in login.detail
    assert TOKEN not in login.detail and LOGIN_SECRET not in login.detail


def test_the_cli_prints_expected_and_seen_and_no_secret(tmp_path, foreign_app):
    target_file, target = bare_target_file(tmp_path / "root")
    target_file.write_text(reference_contract(target, foreign_app).to_yaml())
    secret_file = tmp_path / "check-secret"
    secret_file.write_text(LOGIN_SECRET + "\n")
    secret_file.chmod(0o600)
    run = subprocess.run([sys.executable, "-m", "recovery", "--target", str(target_file), "post-checks",
                          "--password-file", str(secret_file)], cwd=PROJECT, capture_output=True,
                         text=True, timeout=60)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "expected HTTP 200 from /api/v1/auth/login with a token at 'token'" in out
    assert "no field 'token' (has: data, success)" in out
    assert TOKEN not in out and LOGIN_SECRET not in out
    for journal in (tmp_path / "root").rglob("*.json"):
        assert TOKEN not in journal.read_text() and LOGIN_SECRET not in journal.read_text()


def test_describe_shows_status_type_and_the_first_bytes_masked():
    page = httpx.Response(500, headers={"content-type": "text/html; charset=utf-8"},
                          content=b"<h1>Internal Server Error</h1>" + b"x" * 400)
    seen = describe(page)
    assert seen.startswith("HTTP 500 (text/html), body '<h1>Internal Server Error</h1>xxx")
    assert seen.endswith("...") and len(seen) < 260
    assert describe(httpx.Response(204)) == "HTTP 204 (no content type), empty body"
    answer = httpx.Response(200, json={"token": TOKEN, "password": LOGIN_SECRET, "name": "admin"})
    shown = describe(answer, [LOGIN_SECRET])
    assert TOKEN not in shown and LOGIN_SECRET not in shown and '"name":"admin"' in shown
    assert mask_secrets(f"Bearer {TOKEN}") == "Bearer ***"


def test_json_field_follows_a_dotted_path_and_says_why_it_is_missing():
    answer = httpx.Response(200, json={"data": {"access_token": "t"}, "success": True})
    assert json_field(answer, "data.access_token") == ("t", "")
    assert json_field(answer, "token") == (None, "no field 'token' (has: data, success)")
    assert json_field(answer, "data.token")[1] == "no field 'data.token' (has: access_token)"
    assert json_field(httpx.Response(200, text="<html>"), "token") == (None, "the body is not JSON")
