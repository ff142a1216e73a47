"""The harness's plugins are installed (pytest11 entry points): they load from any folder.

A team keeps its tests (and its runbook, and its app) in its own repository and runs the harness
from there; path options that point outside this checkout must work either way they are written.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

import recovery
from fixtures.stack.plugin import setting
from fixtures.stack.sandbox import default_base_dir
from recovery.commands import run

pytestmark = pytest.mark.stack


HARNESS = Path(recovery.__file__).resolve().parents[1]  # the harness these tests run (installed editable)
KIROKU = HARNESS / "fixtures" / "apps" / "kiroku"


def pytest_in(folder: Path, *args: str, timeout: float = 180) -> tuple[int, str]:
    # the installed harness only (its entry points), and the code of the checkout that runs these tests
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(HARNESS)}
    result = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], timeout=timeout,
                 env=env, cwd=folder, check=False)
    return result.returncode, result.stdout + result.stderr


def test_a_stack_from_a_folder_outside_the_checkout(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    base = setting(pytestconfig, "drill_base_dir") or str(default_base_dir())
    team = tmp_path / "team-repo"
    team.mkdir()
    (team / "test_ours.py").write_text(
        "def test_our_stack_answers(stack):\n"
        "    with stack.client() as client:\n"
        "        assert stack.health(client) == 200\n", encoding="utf-8")
    reports = tmp_path / "evidence"
    reports.mkdir()  # an existing folder outside the checkout, given as `--option PATH`
    code, out = pytest_in(team, "--drill-reports", str(reports), "--drill-base-dir", base,
                          "--drill-scale", "0.1", "test_ours.py")
    assert code == 0, out
    assert "1 passed" in out


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_runbook_path_outside_the_checkout_in_both_forms(tmp_path: Path, form: str) -> None:
    runbook = tmp_path / "elsewhere" / "runbook.md"
    runbook.parent.mkdir()
    runbook.write_text("# 復旧手順\n", encoding="utf-8")
    option = ["--runbook", str(runbook)] if form == "separate" else [f"--runbook={runbook}"]
    code, out = pytest_in(tmp_path, *option, "--collect-only")
    assert "unrecognized arguments" not in out, out
    assert code in (0, 5), out  # 5: nothing to collect in that folder, which is fine here


def test_an_app_repository_drills_its_own_app_with_its_profile(tmp_path: Path,
                                                                pytestconfig: pytest.Config) -> None:
    """The app's repository holds its code and profile; the drills come from the installed harness."""
    base = setting(pytestconfig, "drill_base_dir") or str(default_base_dir())
    team = tmp_path / "kiroku-repo"
    shutil.copytree(KIROKU, team, ignore=shutil.ignore_patterns("__pycache__"))
    (team / "test_ours.py").write_text(
        "def test_our_app_is_the_one_under_drill(stack):\n"
        "    assert stack.settings.app.name == 'kiroku'\n"
        "    with stack.client() as client:\n"
        "        assert stack.health(client) == 200 and stack.login(client)\n", encoding="utf-8")
    reports = tmp_path / "evidence"
    reports.mkdir()
    common = ["--drill-app", "profile.yml", "--drill-reports", str(reports), "--drill-base-dir", base,
              "--drill-scale", "0.1", "--drill-forecast", "off"]
    code, out = pytest_in(team, *common, "test_ours.py")
    assert code == 0, out
    code, out = pytest_in(team, *common, "--pyargs", "scenarios.test_drills", "-m", "weekly", timeout=600)
    assert code == 0, out
    assert "2 passed" in out
    assert len(list((reports / "rec").glob("REC-*.md"))) == 2
