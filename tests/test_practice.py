"""The practice sandbox, as an operator uses it: real processes, the CLI from a new process each time.

up with a fault -> check says not recovered (and why) -> the runbook's commands typed into the
practice shell -> check says recovered, with a training REC report -> down leaves nothing running.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from fixtures.practice import state as st
from fixtures.stack.plugin import setting
from fixtures.stack.readiness import wait_until
from fixtures.stack.sandbox import default_base_dir, processes_in
from recovery.commands import run
from recovery.waiting import Observation

pytestmark = pytest.mark.stack
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def base(pytestconfig: pytest.Config) -> Path:
    configured = setting(pytestconfig, "drill_base_dir")
    return Path(configured).resolve() if configured else default_base_dir()


def mks_drill(*args: str, stdin: str = "", timeout: float = 300) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    result = run([sys.executable, "-m", "fixtures.practice.cli", "sandbox", *args], timeout=timeout,
                 env=env, input_text=stdin, check=False, cwd=PROJECT)
    return result.returncode, result.stdout + result.stderr


def test_a_training_session_from_fault_to_recovered_and_down(base: Path, tmp_path: Path) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    where = ["--name", name, "--base-dir", str(base)]
    code, out = mks_drill("up", *where, "--fault", "database-immediate-stop", "--scale", "0.2")
    assert code == 0, out
    assert "mks-drill sandbox shell" in out and "target.yml" in out
    state = st.load(base, name)
    root = Path(state.root)
    try:
        reports = tmp_path / "reports"
        code, out = mks_drill("check", *where, "--operator", "山田", "--reports", str(reports))
        assert code == 1, out
        assert "not recovered" in out and "NG  service postgresql: expected active, found inactive" in out

        commands = ("systemctl status postgresql\n"
                    "sudo systemctl restart postgresql\n"
                    "pg_isready -q -t 30\n"  # an operator's habit; the restart returns once it accepts
                    "LATEST=$(ls -t /backup/mks/db_*.dump 2>/dev/null | head -1)\n"
                    'psql -U mks_user -d mks_db -c "SELECT COUNT(*) FROM projects;"\n'
                    "curl -f http://localhost:5100/api/v1/health\n")
        code, out = mks_drill("shell", *where, stdin=commands)
        assert code == 0, out
        assert '"status"' in out and "healthy" in out  # curl reached the sandbox backend on the mapped port

        code, out = mks_drill("check", *where, "--operator", "山田", "--reports", str(reports))
        assert code == 0, out
        assert "recovered: every check passed" in out
        records = sorted((reports / "records").glob("practice-*check-2*.json"))
        assert records, list((reports / "records").iterdir())
        record = json.loads(records[0].read_text(encoding="utf-8"))
        assert record["verdict"] == "passed" and record["environment"]["実施者"] == "山田"
        typed = [step["title"] for step in record["steps"]]
        assert "sudo systemctl restart postgresql" in typed
        assert any(c["name"] == "canary" and c["passed"] for c in record["checks"])
        assert list((reports / "rec").glob("REC-*.md")), "a REC report of the training"
    finally:
        code, out = mks_drill("down", *where)
    assert code == 0, out
    assert not root.exists()
    assert not processes_in(root)
    assert not st.state_path(base, name).exists()
    code, out = mks_drill("list", "--base-dir", str(base))
    assert name not in out


def test_a_practice_sandbox_stops_by_itself_after_its_lifetime(base: Path) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    where = ["--name", name, "--base-dir", str(base)]
    code, out = mks_drill("up", *where, "--hours", "0.002", "--scale", "0.1")  # 7.2 s
    assert code == 0, out
    root = Path(st.load(base, name).root)
    wait_until("the practice sandbox to stop by itself",
               lambda: Observation(not st.state_path(base, name).exists() and not root.exists(),
                                   "still there"),
               timeout=60, interval=0.2)
    assert not root.exists()


def test_bad_input_is_a_usage_error_that_starts_nothing(base: Path) -> None:
    code, out = mks_drill("up", "--name", "x-unknown", "--base-dir", str(base), "--fault", "no-such-drill")
    assert code == 2 and "unknown fault 'no-such-drill'; known: " in out and "database-restore" in out
    assert not st.state_path(base, "x-unknown").exists()
    code, out = mks_drill("check", "--name", "never-made", "--base-dir", str(base))
    assert code == 2 and "no practice sandbox named 'never-made'" in out
    code, out = mks_drill("up", "--name", "../escape", "--base-dir", str(base))
    assert code == 2 and "use letters, digits" in out


def test_a_start_given_up_on_leaves_no_keeper_and_no_sandbox(base: Path) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    code, out = mks_drill("up", "--name", name, "--base-dir", str(base), "--timeout", "0.5")
    assert (code == 1 and "not ready" not in out) or "timed out" in out, out
    assert not st.state_path(base, name).exists(), "the keeper tore its sandbox down and removed its state"
    assert not list(base.glob(f"practice-{name}-*")), "no sandbox root left"
