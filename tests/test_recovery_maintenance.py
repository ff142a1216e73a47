"""The backup and housekeeping actions on the command line: db-backup, pitr-base-backup,
allow-archiving, safety-copies and safety-copies-remove."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from recovery import backups
from recovery.__main__ import main
from recovery.archives import sha256_file
from recovery.target import DatabaseTarget, PathsTarget, Target
from tests.test_recovery_cli import cli


def target_file(root: Path) -> tuple[Path, Target]:
    paths = PathsTarget(**{name: str(root) + value for name, value in vars(PathsTarget()).items()})
    data_dir = root / "var/lib/postgresql/15/main"
    for folder in (paths.backup_dir, paths.scratch_dir, data_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    # nothing listens on port 9: the database actions fail there
    target = Target(name="housekeeping", paths=paths, database=DatabaseTarget(port=9, data_dir=str(data_dir)))
    path = root / "target.yml"
    path.write_text(target.to_yaml())
    return path, target


def hours_ago(hours: float, utc: bool) -> str:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    return (when if utc else when.astimezone()).strftime("%Y%m%d_%H%M%S")


def make_copies(target: Target) -> dict[str, Path]:
    """Two of each kind (made 100 h and 10 h ago), and files that are not safety copies."""
    backup_dir, scratch = Path(target.paths.backup_dir), Path(target.paths.scratch_dir)
    data = Path(target.database.data_dir)
    made = {}
    for age in (100, 10):
        utc, local = hours_ago(age, True), hours_ago(age, False)
        dump = backup_dir / f"pre_restore_{utc}.dump"
        dump.write_bytes(b"PGDMP" * 100)
        backups.sidecar(dump).write_text(f"{sha256_file(dump)}  {dump.name}\n")
        backups.manifest_path(dump).write_text("{}")
        made[f"dump-{age}"] = dump
        made[f"uploads-{age}"] = backup_dir / f"uploads_pre_restore_{local}.tar.gz"
        made[f"config-{age}"] = backup_dir / f"config_pre_restore_{local}.tar.gz"
        for key in (f"uploads-{age}", f"config-{age}"):
            made[key].write_bytes(b"\x1f\x8b" * 10)
        made[f"git-{age}"] = scratch / f"config_pre_restore_{local}"
        made[f"pitr-{age}"] = data.with_name(f"{data.name}.pre_pitr_{utc}")
        for folder in (made[f"git-{age}"], made[f"pitr-{age}"]):
            (folder / "sub").mkdir(parents=True)
            (folder / "sub/file").write_text("kept state")
    made["scheduled"] = backup_dir / f"db_{hours_ago(200, True)}.dump"  # a backup, never a safety copy
    made["scheduled"].write_bytes(b"PGDMP")
    made["other"] = backup_dir / "pre_restore_by_hand.dump"
    made["other"].write_bytes(b"mine")
    return made


def journal_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def remove(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    return journal_of(["--target", str(path), "--json", "safety-copies-remove", *args], capsys)


def test_safety_copies_are_listed_with_their_kind_and_age(tmp_path, capsys):
    path, target = target_file(tmp_path / "root")
    made = make_copies(target)
    code, journal = journal_of(["--target", str(path), "--json", "safety-copies"], capsys)
    assert code == 0 and journal["status"] == "succeeded"
    listed = {c["path"]: c for c in journal["steps"][0]["details"]["copies"]}
    safety = {k: v for k, v in made.items() if k not in ("scheduled", "other")}
    assert set(listed) == {str(p) for p in safety.values()}
    assert sorted({c["kind"] for c in listed.values()}) == [
        "config-archive", "config-files", "database-dump", "pitr-data-dir", "uploads-archive"]
    for key, copy in safety.items():
        age = listed[str(copy)]["age_hours"]
        assert abs(age - int(key.split("-")[1])) < 0.1, (key, age)
    dump = listed[str(made["dump-100"])]
    assert dump["companions"] == [str(backups.sidecar(made["dump-100"])),
                                  str(backups.manifest_path(made["dump-100"]))]


def test_removal_by_age_and_by_count_keeps_the_rest_and_never_a_backup(tmp_path, capsys):
    path, target = target_file(tmp_path / "root")
    made = make_copies(target)
    code, plan = journal_of(["--target", str(path), "--json", "--dry-run", "safety-copies-remove",
                             "--older-than", "48"], capsys)
    assert code == 0 and plan["status"] == "planned"
    old = sorted(str(p) for k, p in made.items() if k.endswith("-100"))
    assert sorted(plan["steps"][0]["details"]["remove"]) == old
    assert all(p.exists() for p in made.values()), "a dry run removes nothing"

    code, journal = remove(path, capsys, "--older-than", "48")
    assert code == 0 and journal["steps"][1]["details"]["removed"] == [
        c["path"] for c in journal["steps"][0]["details"]["remove"]]
    for key, copy in made.items():
        assert copy.exists() == (not key.endswith("-100")), key
    assert not backups.sidecar(made["dump-100"]).exists()
    assert not backups.manifest_path(made["dump-100"]).exists()
    assert backups.sidecar(made["dump-10"]).exists()

    code, journal = remove(path, capsys, "--keep", "1")
    assert code == 0 and journal["steps"][0]["details"]["remove"] == [], "the newest of each kind stays"
    code, journal = remove(path, capsys, "--keep", "0")
    assert code == 0
    assert [k for k, p in made.items() if p.exists()] == ["scheduled", "other"]


def test_a_removal_that_cannot_be_done_safely_removes_nothing(tmp_path, capsys):
    path, target = target_file(tmp_path / "root")
    made = make_copies(target)
    (made["pitr-100"] / "postmaster.pid").write_text("4242\n")
    code, journal = remove(path, capsys, "--keep", "0")
    assert code == 1 and journal["status"] == "failed"
    assert journal["steps"][0]["status"] == "failed" and "postmaster.pid" in journal["steps"][0]["error"]
    assert all(p.exists() for p in made.values()), "checked before the first removal"
    made["pitr-100"].joinpath("postmaster.pid").unlink()
    link = made["dump-10"].with_name(f"pre_restore_{hours_ago(5, True)}.dump")
    os.symlink(made["scheduled"], link)
    code, journal = remove(path, capsys, "--keep", "0")
    assert code == 1 and "symbolic link" in journal["steps"][0]["error"]
    assert all(p.exists() for p in made.values())
    code, journal = remove(path, capsys)
    assert code == 1 and "--older-than HOURS, --keep N" in journal["steps"][0]["error"]


def test_a_database_backup_against_no_server_fails_with_exit_1(tmp_path, capsys):
    path, _ = target_file(tmp_path / "root")
    code, journal = journal_of(["--target", str(path), "--json", "db-backup"], capsys)
    assert code == 1 and journal["action"] == "database_backup" and journal["steps"][0]["status"] == "failed"
    for action in ("db-backup", "pitr-base-backup", "allow-archiving"):
        code, plan = journal_of(["--target", str(path), "--json", "--dry-run", action], capsys)
        assert code == 0 and {s["status"] for s in plan["steps"]} == {"planned"}, action


@pytest.mark.stack
def test_db_backup_and_base_backup_from_the_command_line(stack):
    target_file_path = stack.sandbox.write_text("etc/mks-drill/target.yml", stack.target().to_yaml())
    postmaster = stack.services.main_pid("postgresql")
    planned = cli("--target", target_file_path, "--dry-run", "allow-archiving")
    assert planned.returncode == 0 and "[planned] 2. restart" in planned.stdout
    assert stack.services.main_pid("postgresql") == postmaster, "a dry run restarts nothing"

    backup = cli("--target", target_file_path, "--json", "db-backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    details = json.loads(backup.stdout)["steps"][0]["details"]
    dump = Path(details["path"])
    assert dump.name.startswith("db_") and dump.read_bytes()[:5] == b"PGDMP", "custom format"
    assert backups.sidecar(dump).read_text().split()[0] == details["sha256"] == sha256_file(dump)
    counts = json.loads(backups.manifest_path(dump).read_text())["row_counts"]
    assert counts == details["row_counts"] and counts["users"] > 0

    base = cli("--target", target_file_path, "--json", "pitr-base-backup", "--label", "from-the-cli")
    assert base.returncode == 0, base.stdout + base.stderr
    info = json.loads(base.stdout)["steps"][0]["details"]["base_backup"]
    assert info["label"] == "from-the-cli" and (Path(info["path"]) / "base.tar.gz").is_file()
    for result in (planned, backup, base):
        assert all(secret not in result.stdout + result.stderr for secret in stack.secrets.values())
