"""サービス復旧 and Webサーバー復旧 on a live stack: auto and manual recovery, nginx, certificates."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from fixtures.stack.tls import issue_server_cert
from recovery import health
from recovery.journal import ActionFailed, Step
from recovery.services import (
    ProcessInfo,
    auto_recover,
    backend_port,
    belongs_to_service,
    check_service_config,
    manual_recover,
    port_holders,
    stop_pid,
)
from recovery.waiting import Observation, wait_until
from recovery.webserver import check_certificate, nginx_check, reload_nginx, served_certificate

BACKEND = "mks-backend"


def _names(journal):
    return [s.name for s in journal.steps]


@pytest.mark.stack
def test_auto_recovery_means_health_200_and_says_why_it_gave_up(stack):
    target = stack.target()
    assert _names(auto_recover(target)) == ["check"], "healthy: nothing to do"
    checked = check_service_config(target)
    assert checked.status == "succeeded"
    assert all(secret not in checked.to_json() for secret in stack.secrets.values())

    stack.services.stop(BACKEND)  # a stopped program is not restarted by the supervisor
    assert health.backend(target).status is None
    recovered = auto_recover(target, backoff=0.1, settle=20)
    assert recovered.status == "succeeded" and "attempt-1" in _names(recovered)
    assert health.backend(target).status == 200

    # active but not healthy: the runbook's script would stop at "Service is running"
    stack.services.stop("postgresql")
    try:
        assert stack.services.is_active(BACKEND) and health.backend(target).status == 503
        with pytest.raises(ActionFailed, match="manual intervention") as failure:
            auto_recover(target, max_attempts=2, backoff=0.1, settle=3)
        journal = failure.value.journal
        assert _names(journal) == ["check", "attempt-1", "attempt-2", "give-up"]
        assert all("503" in reason for reason in journal.steps[-1].details["reasons"])
    finally:
        stack.services.start("postgresql")
    assert auto_recover(target, backoff=0.1, settle=20).status == "succeeded"
    assert health.backend(target).status == 200

    original = stack.config_file.read_text()
    stack.sandbox.write_text(stack.config_file, "database: [unclosed\n", mode=0o640)
    try:
        with pytest.raises(ActionFailed, match="not valid YAML") as broken:
            check_service_config(target)
        assert broken.value.journal.failed_step().name == "config"
    finally:
        stack.sandbox.write_text(stack.config_file, original, mode=0o640)


def _squat(port: int) -> subprocess.Popen[str]:
    code = ("import socket, sys, time\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {port})); s.listen(); print('ready', flush=True); time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_a_frozen_leftover_on_a_port_is_found_and_stopped():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    squatter = _squat(port)
    try:
        assert squatter.pid in port_holders(port)
        os.kill(squatter.pid, signal.SIGSTOP)  # SIGTERM alone would wait until it is continued
        assert stop_pid(squatter.pid, grace=5).startswith("stopped by SIGTERM")
        squatter.wait(timeout=5)
        assert squatter.pid not in port_holders(port)
    finally:
        if squatter.poll() is None:
            squatter.kill()
            squatter.wait()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.stack
def test_manual_recovery_kills_only_the_services_own_leftovers(stack):
    target = stack.target()
    port = backend_port(target)

    stack.services.stop(BACKEND)
    squatter = _squat(port)  # a process that is not the backend's holds its port
    try:
        with pytest.raises(ActionFailed, match="not killing it"):
            manual_recover(target, health_timeout=5)
        assert squatter.poll() is None, "a foreign process must never be killed"
    finally:
        squatter.kill()
        squatter.wait()
    assert manual_recover(target).status == "succeeded"

    # who may be killed: the backend's master and workers, nothing else of the host or the stack
    manager = target.service_manager()
    master = stack.services.main_pid(BACKEND)
    holders = port_holders(port)
    assert master in holders and set(_children(master)) & set(holders)
    for pid in holders:
        assert belongs_to_service(manager, BACKEND, pid)[0], pid
    others = [stack.services.main_pid("nginx"), stack.services.main_pid("postgresql"), os.getpid(),
              int(manager.rpc().supervisor.getPID())]
    for pid in others:
        assert not belongs_to_service(manager, BACKEND, pid)[0], pid
    assert not belongs_to_service(manager, "nginx", master)[0]


def _erase_command_line_and_environment(pid: int) -> None:
    """Make a live process show what one in exit shows: no command line, no environment (needs root)."""
    fields = [int(f) for f in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1:]]
    arg_start, arg_end, env_start, env_end = fields[44:48]  # stat fields 48-51
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as memory:
        for start, end in ((arg_start, arg_end), (env_start, env_end)):
            memory.seek(start)
            memory.write(bytes(end - start))


def _holder_of_connection(local_port: int, remote_port: int) -> int | None:
    """The pid with the server side of the TCP connection local_port <- remote_port open."""
    wanted = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)) == (local_port,
                                                                                            remote_port):
            wanted.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


@pytest.mark.stack
@pytest.mark.skipif(os.geteuid() != 0, reason="only root may rewrite another process's memory")
def test_manual_recovery_waits_for_an_exiting_worker_of_the_backend_to_let_go(stack, monkeypatch):
    """The race of issue 17, made deterministic: after a SIGKILL of the master, an orphaned worker is
    still in its exit (no command line, no environment) and holds the port when the recovery looks.

    The worker is kept in its exit by a request it is reading (a sync worker finishes its request
    before it acts on its death signal); the client closes it when the recovery says it waits."""
    target = stack.target()
    port = backend_port(target)
    master = stack.services.main_pid(BACKEND)
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the rest never comes
    local_port = client.getsockname()[1]
    worker = wait_until("a worker to accept the request", lambda: _holder_of_connection(port, local_port),
                        timeout=10, interval=0.05)
    assert worker in _children(master)
    _erase_command_line_and_environment(worker)
    seen = ProcessInfo.read(worker)
    assert seen is not None and seen.cmdline == "" and seen.exiting
    os.kill(master, signal.SIGKILL)  # the worker gets its death signal and keeps reading

    note = Step.note

    def note_and_let_go(step: Step, key: str, value: object) -> None:
        note(step, key, value)
        if key == f"pid_{worker}" and "waiting for it to let go" in str(value):
            client.close()  # the worker's request ends, and with it the worker

    monkeypatch.setattr(Step, "note", note_and_let_go)
    try:
        journal = manual_recover(target)
    finally:
        client.close()
    assert journal.status == "succeeded"
    said = journal.steps[1].details.get(f"pid_{worker}", journal.steps[1].details)
    assert f"which supervisord spawned for program {BACKEND}" in str(said), said
    assert "exiting: let go of the port after" in str(said), said
    with httpx.Client(timeout=5) as http:
        assert http.get(f"{target.backend_url}/api/v1/health").status_code == 200


@pytest.mark.stack
@pytest.mark.skipif(os.geteuid() != 0, reason="only root may rewrite another process's memory")
def test_an_exiting_holder_outside_the_services_tree_is_still_foreign(stack):
    """Without a command line or environment, only the process group can make a holder the service's."""
    target = stack.target()
    port = backend_port(target)
    stack.services.stop(BACKEND)
    squatter = _squat(port)
    try:
        os.kill(squatter.pid, signal.SIGSTOP)
        _erase_command_line_and_environment(squatter.pid)
        assert ProcessInfo.read(squatter.pid).exiting
        assert not belongs_to_service(target.service_manager(), BACKEND, squatter.pid)[0]
        with pytest.raises(ActionFailed, match="not killing it"):
            manual_recover(target, health_timeout=5)
        assert squatter.poll() is None, "a foreign process must never be killed"
    finally:
        squatter.kill()
        squatter.wait()
    assert manual_recover(target).status == "succeeded"


@pytest.mark.stack
def test_nginx_reload_is_tested_first_drops_no_request_and_renews_the_served_certificate(stack):
    target = stack.target()
    assert nginx_check(target).status == "succeeded"

    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        with stack.client(timeout=5) as client:
            while not stop.is_set():
                # a new connection each time: the reload must not refuse any
                answer = health.probe(client, stack.target().health_path, headers={"Connection": "close"})
                if answer.status is None:
                    failures.append(answer.detail)
                    continue
                answered[0] += 1
                if answer.status != 200:
                    failures.append(f"{answer.status}")

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    def answered_more(than: int) -> Observation:  # a busy host answers fewer requests per second
        return Observation(answered[0] >= than + 8, f"{answered[0] - than} answered since")

    try:
        wait_until("requests to be answered before the reload", lambda: answered_more(0), timeout=60)
        for _ in range(2):
            before = answered[0]
            assert reload_nginx(target).status == "succeeded"
            wait_until("requests to be answered after the reload",
                       lambda since=before: answered_more(since), timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == [] and answered[0] > 20

    site = stack.nginx.site_config
    original = site.read_text()
    master = stack.services.main_pid("nginx")
    stack.sandbox.write_text(site, original + "\nthis is not a directive;\n")
    try:
        with pytest.raises(ActionFailed, match="nginx -t failed") as refused:
            reload_nginx(target)
        assert [s.status for s in refused.value.journal.steps] == ["failed"], "no reload was attempted"
        assert stack.services.main_pid("nginx") == master
        stack.wait_healthy(timeout=5)
    finally:
        stack.sandbox.write_text(site, original)

    assert _names(check_certificate(target)) == ["served"], "90 days left: nothing to renew"
    issue_server_cert(stack.sandbox, valid_for=dt.timedelta(days=5))
    reload_nginx(target)
    _wait_served(target, lambda cert: cert.days_left < 6)
    before = served_certificate(target)
    renewed = check_certificate(target, min_days=30)
    assert _names(renewed) == ["served", "renew", "nginx-t", "reload", "verify"]
    after = served_certificate(target)
    assert after.sha256 != before.sha256 and after.days_left > 30
    assert json.loads(renewed.to_json())["status"] == "succeeded"


def _wait_served(target, condition, timeout: float = 10.0) -> None:
    """Until 10 connections in a row see it: after a reload, old workers answer for a moment."""
    streak = 0

    def settled() -> bool:
        nonlocal streak
        streak = streak + 1 if condition(served_certificate(target)) else 0
        return streak >= 10

    wait_until("nginx to settle on the certificate", settled, timeout=timeout, interval=0)
