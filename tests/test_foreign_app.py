"""What an app nobody here wrote needs of the harness, without a stack (unit tests; fakes say so):
the post-checks plan, the gate's skipped checks, the broken-config fault on any config format."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.engine.faults import _unparsable, config_kind, parse_problem
from gate.drilled import check_line
from recovery.integrity import run_post_checks
from recovery.target import AppTarget, Target
from reports.model import CheckResult


def planned(app: AppTarget) -> list[str]:
    return [step.name for step in run_post_checks(Target(name="t", app=app), dry_run=True).steps]


def test_the_post_checks_dry_run_lists_no_upload_steps_for_an_app_without_an_upload_endpoint():
    assert planned(AppTarget(upload_path=None)) == ["health", "login", "projects"]
    assert planned(AppTarget(upload_path="/up", download_path="/d/{id}")) == [
        "health", "login", "projects", "upload", "download"]


def test_the_gate_shows_a_check_that_does_not_apply_as_skipped():
    skipped = CheckResult("upload", False, "the app has no upload endpoint", skipped=True)
    assert check_line(skipped) == "upload: skipped (the app has no upload endpoint)"
    assert check_line(CheckResult("login", False, "HTTP 500")) == "login: FAILED (HTTP 500)"
    assert check_line(CheckResult("login", True, "HTTP 200")) == "login: ok (HTTP 200)"


CONFIGS = {
    "settings.yml": "database:\n  host: 127.0.0.1\n",
    "settings.py": "DEBUG = False\nALLOWED_HOSTS = ['*']\n",
    "settings.json": '{"debug": false}\n',
    "app.ini": "[db]\nhost = 127.0.0.1\n",
    "pyproject.toml": "[tool.app]\ndebug = false\n",
    ".env": "DB_HOST=127.0.0.1\nexport SECRET_KEY='x'\n",
    "app.env": "DB_HOST=127.0.0.1\n\n# a comment\n",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_broken_config_fault_breaks_a_config_in_its_own_format(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_text(CONFIGS[name])
    kind = config_kind(path)
    assert kind == {".yml": "yaml", ".py": "python", ".json": "json", ".ini": "ini", ".toml": "toml"}.get(
        path.suffix, "env")
    assert parse_problem(kind, path) is None, "the file as it was parses"
    path.write_text(_unparsable(kind, CONFIGS[name]))
    assert parse_problem(kind, path), "the fault's file does not"
