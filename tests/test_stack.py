"""The local stack is real: TLS through nginx, a real PostgreSQL, a real supervisor."""

from __future__ import annotations

import hashlib
import os
import signal

import psycopg
import pytest

from fixtures.stack.postgres import APP_DB
from fixtures.stack.supervisor import wait_gone
from recovery.service_manager import ServiceError
from recovery.waiting import Observation, wait_until

HEALTH_PATH = "/api/v1/health"  # the reference backend's (this file tests that app)

pytestmark = pytest.mark.stack


def test_stack_serves_the_api_over_tls_verified_against_the_sandbox_ca(stack):
    with stack.client() as client:
        health = client.get(HEALTH_PATH)
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "healthy"
        token = stack.login(client)
        auth = {"Authorization": f"Bearer {token}"}
        projects = client.get("/api/v1/projects", headers=auth)
        assert projects.status_code == 200
        assert projects.json()["count"] > 0
        content = "復旧テスト用のファイル\n".encode() * 100
        upload = client.post(
            "/api/v1/upload", headers=auth, files={"file": ("設計書 第1版.txt", content, "text/plain")}
        )
        assert upload.status_code == 201, upload.text
        body = upload.json()
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    with psycopg.connect(stack.pg.conninfo(APP_DB)) as conn:
        row = conn.execute(
            "SELECT sha256, size_bytes, filename, stored_name FROM documents WHERE id = %s", (body["id"],)
        ).fetchone()
    assert row is not None
    assert (row[0], row[1], row[2]) == (body["sha256"], len(content), "設計書 第1版.txt")
    stored = stack.uploads_dir / row[3]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == row[0]
    assert stack.sandbox.contains(stored)
    assert stored.stat().st_mode & 0o111 == 0, "uploads must never be executable"


def test_a_request_without_the_sandbox_ca_is_refused(stack):
    import httpx

    with pytest.raises(httpx.ConnectError), httpx.Client(base_url=stack.https_url) as client:
        client.get(HEALTH_PATH)


def test_stopping_postgresql_turns_health_into_503_at_the_next_request(stack):
    with stack.client() as client:
        assert stack.health(client) == 200
        stack.services.stop("postgresql")
        response = client.get(HEALTH_PATH)
        assert response.status_code == 503
        assert response.json()["database"] != "ok"
        stack.services.start("postgresql")
    stack.wait_healthy(timeout=30)


def test_sigkill_of_the_backend_master_is_followed_by_an_automatic_restart(stack):
    services = stack.services
    old_pid = services.main_pid("mks-backend")
    assert old_pid
    os.kill(old_pid, signal.SIGKILL)
    assert wait_gone(old_pid)

    def restarted() -> Observation:
        status = services.status("mks-backend")
        return Observation(status.is_active and status.pid not in (None, old_pid), str(status))

    wait_until("supervisord to restart mks-backend", restarted, timeout=30, interval=0.1)
    stack.wait_healthy(timeout=30)


def test_two_stacks_run_side_by_side_without_clashing(stack_factory):
    old = stack_factory("old")
    new = stack_factory("new", seed_scale=None)
    assert old.root != new.root
    ports_old = {old.https_port, old.backend_port, old.pg_port}
    ports_new = {new.https_port, new.backend_port, new.pg_port}
    assert len(ports_old | ports_new) == 6
    with old.client() as a, new.client() as b:
        assert stack_health_pair(old, a, new, b) == (200, 200)
        token = new.login(b)
        b.post(
            "/api/v1/upload", headers={"Authorization": f"Bearer {token}"}, files={"file": ("x.txt", b"x")}
        )
        count_old = a.get("/api/v1/projects", headers={"Authorization": f"Bearer {old.login(a)}"}).json()[
            "count"
        ]
        count_new = b.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"}).json()["count"]
    assert count_old > 0 and count_new == 0  # the new server is empty: it was not seeded
    old.services.stop("nginx")
    with new.client() as b:
        assert new.health(b) == 200


def stack_health_pair(s1, c1, s2, c2):
    return s1.health(c1), s2.health(c2)


def test_broken_config_yaml_makes_the_backend_refuse_to_start_naming_file_and_line(stack):
    lines = stack.config_file.read_text().splitlines()
    lines.insert(3, "  port: 5432: 5433")
    stack.config_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ServiceError) as failure:
        stack.services.restart("mks-backend")
    message = str(failure.value)
    assert str(stack.config_file) in message
    assert "configuration error" in message
    assert f"{stack.config_file}:4:" in message, message
    assert not stack.services.is_active("mks-backend")


def test_a_wrong_database_password_makes_the_backend_refuse_to_start_saying_so(stack):
    text = stack.config_file.read_text().replace(stack.secrets.app_password, "not-the-db-secret")
    stack.config_file.write_text(text)
    with pytest.raises(ServiceError) as failure:
        stack.services.restart("mks-backend")
    message = str(failure.value)
    assert "authentication failed" in message and "database.password" in message, message
    assert "not-the-db-secret" not in message
