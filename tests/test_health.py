"""recovery.health against a real (tiny) HTTP server: 200, 503, no answer, the target's path."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from recovery import health
from recovery.target import Target, TargetError
from recovery.waiting import WaitTimeout

HEALTH_PATH = "/api/v1/health"  # a health path of the tests' own fake backend


class Backend(BaseHTTPRequestHandler):
    status = 200
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Backend.seen.append(self.path)
        code = Backend.status if self.path in (HEALTH_PATH, "/healthz") else 404
        body = b'{"status": "healthy"}' if code == 200 else b'{"status": "unhealthy"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[str]:
    Backend.status, Backend.seen = 200, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_200_is_healthy_and_the_path_comes_from_the_target(backend):
    answer = health.backend(Target(backend_url=backend, health_path=HEALTH_PATH))
    assert answer and answer.ok and answer.status == 200
    assert answer.url == backend + HEALTH_PATH and '"healthy"' in answer.detail
    assert health.backend(Target(backend_url=backend, health_path="/healthz")).ok
    assert Backend.seen == [HEALTH_PATH, "/healthz"]


def test_503_is_not_healthy_and_says_so(backend):
    Backend.status = 503
    answer = health.backend(Target(backend_url=backend, health_path=HEALTH_PATH))
    assert not answer and answer.status == 503 and "503" in answer.detail and "unhealthy" in answer.detail


def test_no_answer_is_an_observation_not_an_exception():
    url = f"http://127.0.0.1:{closed_port()}"
    answer = health.probe_url(url, HEALTH_PATH, timeout=1)
    assert not answer and answer.status is None
    assert answer.detail.startswith(f"{url}{HEALTH_PATH}: ConnectError")


def test_probe_uses_the_clients_base_url(backend):
    with httpx.Client(base_url=backend, timeout=2) as client:
        assert health.probe(client, HEALTH_PATH).status == 200
        assert health.probe(client, "/missing").status == 404


def test_wait_healthy_returns_the_answer_or_times_out_with_the_last(backend):
    target = Target(backend_url=backend, health_path=HEALTH_PATH)
    assert health.wait_healthy(target, timeout=2, interval=0.05).status == 200
    Backend.status = 503
    with pytest.raises(WaitTimeout) as caught:
        health.wait_healthy(Target(backend_url=backend, health_path=HEALTH_PATH), timeout=0.3, interval=0.05)
    assert "waiting for health 200 at " + backend in str(caught.value)
    assert caught.value.result.status == 503 and "503" in caught.value.last


def test_a_200_that_lacks_what_a_healthy_answer_says_is_not_healthy(backend):
    good = health.probe_url(backend, HEALTH_PATH, expect={"status": "healthy"})
    assert good.ok and good.unmet is None
    degraded = health.probe_url(backend, HEALTH_PATH, expect={"mode": "normal"})
    assert degraded.status == 200 and not degraded.ok
    assert degraded.unmet == "mode is None, not 'normal'" and "mode is None" in degraded.detail


def test_a_target_without_a_health_path_is_an_error_not_a_probe_of_the_root(backend):
    with pytest.raises(TargetError, match="health_path is not set"):
        health.backend(Target(backend_url=backend))
