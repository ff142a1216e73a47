"""The harness leaves nothing running and writes nothing outside its sandbox roots and reports folder.

Each test runs a child pytest session against a private base dir and reports folder, then looks
at the machine from outside: the processes that remain, the files that changed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fixtures.stack.sandbox import processes_in
from recovery.waiting import Observation, WaitTimeout, wait_until
from tests.syscall_trace import STRACE_ARGS, outside, writes_in

pytestmark = pytest.mark.stack

PROJECT = Path(__file__).resolve().parents[1]
CHILD = PROJECT / "tests/child_sessions/drill_child_basic.py"


def _child(
    base: Path, reports: Path, test: str, trace: Path | None = None, **env: str
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        f"{CHILD}::{test}",
        "--drill-base-dir",
        str(base),
        "--drill-reports",
        str(reports),
        "--drill-scale",
        "0.3",
    ]
    if trace is not None:
        argv = ["strace", *STRACE_ARGS, "-o", str(trace), *argv]
    # pytest's own capture files go to TMPDIR: give the child run a private one beside its reports
    tmp = reports.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    child_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(tmp), **env}
    return subprocess.Popen(
        argv, cwd=PROJECT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.fixture
def private_dirs():
    # under /tmp itself, not pytest's 0700 tmp dir: the service account must reach the sandboxes
    top = Path(tempfile.mkdtemp(prefix="mks-drill-isolation-"))
    top.chmod(0o711)
    base, reports = top / "sandboxes", top / "reports"
    reports.mkdir()
    yield top, base, reports
    for pid in processes_in(base) if base.exists() else []:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_a_session_leaves_no_process_and_writes_only_inside_its_roots(private_dirs):
    top, base, reports = private_dirs
    trace = top / "strace.log"
    child = _child(base, reports, "test_a_stack_is_used", trace=trace)
    output = child.communicate(timeout=600)[0].decode(errors="replace")
    assert child.returncode == 0, output
    assert processes_in(base) == [], "processes outlived the session"
    assert sorted(p.name for p in base.iterdir()) == ["ports", "templates"], "a sandbox root was left behind"
    writes = writes_in(trace.read_text(errors="replace"), str(PROJECT))
    assert len(writes) > 100, "the trace saw too little to be trusted"
    assert any(w.path.startswith(f"{base}/") and "pg_wal" in w.path for w in writes), (
        "server writes not traced"
    )
    stray = outside(writes, [str(top)])
    assert stray == [], "written outside the sandbox and reports folder:\n" + "\n".join(
        f"{w.pid} {w.call} {w.path}" for w in stray[:30]
    )


def _child_with_running_stack(base: Path, reports: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A child session that has brought a stack up and now waits; returns it and the stack's root."""
    child = _child(base, reports, "test_waits_to_be_interrupted", MKS_CHILD_WAIT="1")
    ready = reports / "child-ready"

    def up() -> bool:
        assert child.poll() is None, child.stdout.read().decode(errors="replace")
        return ready.exists()

    wait_until("the child stack to come up", up, timeout=180, interval=0.2)
    return child, Path(ready.read_text())


def test_a_terminated_run_still_tears_its_stack_down(private_dirs):
    _top, base, reports = private_dirs
    child, root = _child_with_running_stack(base, reports)
    assert processes_in(root), "the stack should be running now"
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=120)
    assert processes_in(base) == []
    assert not root.exists()


def _watchdogs(root: Path) -> list[int]:
    return [pid for pid in processes_in(root)
            if b"fixtures.stack.watchdog" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_killed_run_is_cleaned_up_at_the_next_start(private_dirs):
    _top, base, reports = private_dirs
    child, root = _child_with_running_stack(base, reports)
    watchdogs = _watchdogs(root)
    assert len(watchdogs) == 1, processes_in(root)
    for pid in [*watchdogs, child.pid]:  # the whole harness is gone, its watchdog too (a killed cgroup)
        os.kill(pid, signal.SIGKILL)
    child.communicate(timeout=60)
    assert processes_in(root), "with its watchdog killed too, the servers stay (nothing can run then)"
    follow_up = _child(base, reports, "test_settings_only")
    output = follow_up.communicate(timeout=300)[0].decode(errors="replace")
    assert follow_up.returncode == 0, output
    assert processes_in(base) == []
    assert not root.exists()


def test_the_servers_of_a_run_killed_mid_drill_stop_by_themselves(private_dirs):
    """SIGKILL of the harness during a drill's recovery; nothing starts after it; nothing is left at 10 s."""
    _top, base, reports = private_dirs
    ready = reports / "child-ready"
    child = _child(base, reports, "test_a_drill_waits_to_be_killed", MKS_CHILD_READY=str(ready))
    def reached_recovery() -> Observation:
        assert child.poll() is None, child.stdout.read().decode(errors="replace")
        return Observation(ready.exists(), "the child drill has not reached its recovery")

    wait_until("the child drill to reach its recovery", reached_recovery, timeout=180, interval=0.2)
    root = Path(ready.read_text())
    running = processes_in(root)
    assert len(running) > 5, running  # supervisord, postgres and its workers, gunicorn, nginx, the watchdog
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    killed = time.monotonic()
    def all_stopped() -> Observation:
        left = processes_in(base)
        return Observation(not left, f"still running: {left}")

    try:
        wait_until("the sandbox's processes to stop", all_stopped, timeout=10, interval=0.1)
    except WaitTimeout as exc:
        pytest.fail(f"10 s after the harness was killed: {exc.last}")
    seconds = time.monotonic() - killed
    print(f"{len(running)} processes in the sandbox; none left {seconds:.1f}s after SIGKILL")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can start a session as another, normal user")
def test_a_normal_user_runs_a_stack_without_root(private_dirs):
    """The laptop case: no root anywhere, PostgreSQL runs as the user who runs pytest."""
    top, base, reports = private_dirs
    user = pwd.getpwnam("nobody")
    for path in (top, reports):
        os.chown(path, user.pw_uid, user.pw_gid)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"{CHILD}::test_a_stack_is_used",
            "--drill-base-dir", str(base), "--drill-reports", str(reports), "--drill-scale", "0.3"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(top), "TMPDIR": str(top),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    child = subprocess.run(argv, cwd=PROJECT, env=env, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                           capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == 0, child.stdout + child.stderr
    assert processes_in(base) == []
