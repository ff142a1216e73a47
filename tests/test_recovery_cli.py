"""`python -m recovery --target FILE ACTION [--dry-run] [--json]`: plans, verdicts and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recovery.__main__ import ACTIONS, main
from recovery.archives import create_archive, listing
from recovery.target import PathsTarget, Target

PROJECT = Path(__file__).resolve().parents[1]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recovery", *map(str, args)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=180)


def bare_target_file(root: Path) -> tuple[Path, Target]:
    paths = PathsTarget(**{name: str(root) + value for name, value in vars(PathsTarget()).items()})
    for folder in (paths.uploads_dir, paths.backup_dir, paths.scratch_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    target = Target(name="bare", paths=paths)
    path = root / "target.yml"
    path.write_text(target.to_yaml())
    return path, target


def test_usage_and_target_errors_exit_2(tmp_path, capsys):
    assert main(["--target", str(tmp_path / "missing.yml"), "uploads-backup"]) == 2
    assert "target file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yml"
    bad.write_text("paths:\n  uploads_dirr: /x\n")
    assert main(["--target", str(bad), "uploads-backup"]) == 2
    assert "unknown key paths.uploads_dirr" in capsys.readouterr().err
    assert main(["--target", str(bad), "no-such-action"]) == 2
    assert main(["uploads-backup"]) == 2
    target_file, _ = bare_target_file(tmp_path / "root")
    assert main(["--target", str(target_file), "pitr"]) == 2, "--target-time is required"
    assert main(["--target", str(target_file), "pitr", "--target-time", "2024-01-09 10:00:00"]) == 2
    assert "no time zone" in capsys.readouterr().err


def test_dry_run_prints_every_plan_and_touches_nothing(tmp_path):
    target_file, target = bare_target_file(tmp_path / "root")
    uploads = Path(target.paths.uploads_dir)
    (uploads / ".hidden").write_text("keep me")
    before = listing(tmp_path / "root")
    result = cli("--target", target_file, "uploads-restore", "--dry-run")
    assert result.returncode == 0, result.stderr
    for step in ("select", "safety-copy", "stage", "swap", "check"):
        assert "[planned] " in result.stdout and f". {step} — " in result.stdout
    assert "RESULT: uploads-restore 計画のみ" in result.stdout
    for action in ACTIONS:
        extra = ["--target-time", "2024-01-09 10:00:00+09"] if action.cli == "pitr" else []
        extra += ["--password-file", str(target_file)] if action.cli == "post-checks" else []
        extra += ["--keep", "1"] if action.cli == "safety-copies-remove" else []
        extra += ["--output", str(tmp_path / "catalog.json")] if action.cli == "catalog-snapshot" else []
        code = main(["--target", str(target_file), "--dry-run", action.cli, *extra])
        assert code == 0, action.cli
    assert listing(tmp_path / "root") == before


def test_a_bad_backup_fails_with_exit_1_and_leaves_the_folder_alone(tmp_path):
    target_file, target = bare_target_file(tmp_path / "root")
    uploads = Path(target.paths.uploads_dir)
    (uploads / "a.pdf").write_bytes(b"%PDF live")
    source = tmp_path / "src/uploads"
    source.mkdir(parents=True)
    (source / "b.pdf").write_bytes(b"%PDF old" * 1000)
    archive = Path(target.paths.backup_dir) / "uploads_20240101_000000.tar.gz"
    create_archive(source, archive, root="uploads")
    archive.write_bytes(archive.read_bytes()[:-100])
    before = listing(uploads)
    result = cli("--target", target_file, "--json", "uploads-restore")
    assert result.returncode == 1
    journal = json.loads(result.stdout)
    assert journal["status"] == "failed" and journal["steps"][0]["name"] == "select"
    assert "truncated or corrupt" in result.stderr or "not a readable" in result.stderr
    assert listing(uploads) == before
    empty_file, _ = bare_target_file(tmp_path / "empty")
    none = cli("--target", empty_file, "uploads-restore")
    assert none.returncode == 1 and "no backup" in none.stdout + none.stderr


@pytest.mark.stack
def test_cli_against_a_sandbox_target(stack):
    target_file = stack.sandbox.write_text("etc/mks-drill/target.yml", stack.target().to_yaml())
    outputs = []

    backup = cli("--target", target_file, "uploads-backup")
    outputs.append(backup)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert "[     ok] 1. archive" in backup.stdout and "RESULT: uploads-backup 成功" in backup.stdout

    checked = cli("--target", target_file, "service-check-config", "--json")
    outputs.append(checked)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [s["name"] for s in json.loads(checked.stdout)["steps"]] == ["unit", "config", "port"]

    master = stack.services.main_pid("mks-backend")
    planned = cli("--target", target_file, "--dry-run", "service-manual-recover")
    outputs.append(planned)
    assert planned.returncode == 0 and "stale-process" in planned.stdout
    assert stack.services.main_pid("mks-backend") == master, "a dry run touches nothing"

    for action in ("uploads-restore", "config-backup", "nginx-reload", "service-auto-recover"):
        result = cli("--target", target_file, action)
        outputs.append(result)
        assert result.returncode == 0, f"{action}: {result.stdout}{result.stderr}"
    stack.wait_healthy(timeout=10)
    for result in outputs:
        assert all(secret not in result.stdout + result.stderr for secret in stack.secrets.values())
