"""Services and the app's own commands start from a declared environment, never the harness's.

A variable set in the harness's process (as pytest sets PYTEST_CURRENT_TEST, which switches some apps
into a test mode) must reach no service and no profile command: supervisord, PostgreSQL, nginx, the
backend's master and workers, and the schema/seed commands get PATH, LANG, the account's HOME and what
the unit or profile declares.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures.apps.environment import service_variables
from fixtures.apps.profile import REFERENCE_PROFILE, load_profile
from recovery.commands import SYSTEM_PATH, RunAs, declared_environment, run, spawn

CANARY = "MKS_LEAK_CANARY"
PRINT_ENVIRON = "import json, os; print(json.dumps(dict(os.environ)))"


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def descendants(pid: int) -> list[int]:
    """pid and every process below it (by /proc's parent ids)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def test_a_declared_command_sees_only_its_declared_environment(monkeypatch):
    """Unit test (no stack): the wrapper's two modes."""
    monkeypatch.setenv(CANARY, "1")
    inherited = json.loads(run(["python3", "-c", PRINT_ENVIRON], timeout=30).stdout)
    assert inherited[CANARY] == "1", "a tool (pg_dump, tar) keeps the operator's environment"
    declared = json.loads(run(["python3", "-c", PRINT_ENVIRON], timeout=30, env={"APP_MODE": "production"},
                              inherit_env=False).stdout)
    account = RunAs.current()
    assert declared == {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": account.home, "USER": account.name,
                        "LOGNAME": account.name, "APP_MODE": "production"}
    assert declared_environment(None, {"LANG": "ja_JP.UTF-8"})["LANG"] == "ja_JP.UTF-8", "a unit may set it"
    process = spawn(["sleep", "30"], inherit_env=False)
    try:
        assert CANARY not in environ_of(process.pid)
    finally:
        process.kill()
        process.wait()


def test_the_profile_declares_the_services_variables(tmp_path):
    profile = load_profile(REFERENCE_PROFILE)
    env = service_variables(profile, "/srv/venv/bin/python", tmp_path, tmp_path / "config.yml")
    assert env["PATH"].startswith("/srv/venv/bin:"), "the app's interpreter first on PATH, as a venv unit's"
    assert env["MKS_CONFIG"] == str(tmp_path / "config.yml")
    assert not set(env) & set(os.environ) - {"PATH", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"}


@pytest.mark.stack
def test_no_service_and_no_app_command_sees_the_harness_environment(monkeypatch, stack_factory):
    monkeypatch.setenv(CANARY, "1")
    stack = stack_factory("primary", seed_scale=False)
    supervisord = stack.runtime.supervisor.process.pid  # type: ignore[attr-defined]
    # nginx and PostgreSQL's children write their process titles over their environment's memory:
    # what /proc shows of them is no longer their environment; they start from supervisord's, as the
    # postmaster (its title kept) does
    names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
             for pid in descendants(supervisord)}
    readable = {pid: name for pid, name in names.items() if name.startswith("/")}
    assert sum(name.endswith("/postgres") for name in readable.values()) == 1, names
    assert sum("python" in name for name in readable.values()) >= 3, \
        f"supervisord, gunicorn, a worker: {names}"
    for pid, name in readable.items():
        env = environ_of(pid)
        leaked = sorted(key for key in env if key == CANARY or key.startswith("PYTEST_"))
        assert not leaked, f"{name} ({pid}) sees the harness's {leaked}"
        assert env.get("LANG") == "C.UTF-8" and env.get("HOME") == str(stack.root / "run/home"), (name, env)
    printed = json.loads(stack.app_command(["{python}", "-c", PRINT_ENVIRON]))
    assert CANARY not in printed and not any(key.startswith("PYTEST_") for key in printed)
    assert printed["MKS_CONFIG"] == str(stack.config_file) and printed["HOME"] == str(stack.root / "run/home")
