"""A backup proven restorable is stamped (signed), the stamp is checked, and monitoring gets metrics per
backup set in which an absent value is absent, never fine. Files only: no stack."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recovery.journal import Journal
from recovery.stamps import stamp, stamp_journal, stamp_path
from reports import signing
from reports.__main__ import main as reports_main
from reports.backup_stamps import check, metrics_text
from reports.history import History, Result

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def key(tmp_path):
    private, public = signing.keygen(tmp_path / "keys" / "run.key")
    return signing.load_private(private), public


def dump(folder: Path, name: str, content: bytes = b"PGDMP fake dump") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def test_a_stamped_backup_is_verified_and_a_tampered_or_absent_stamp_refused(tmp_path, key, capsys):
    signer, public = key
    backup = dump(tmp_path / "backup", "db_20261207_100000.dump")
    assert reports_main(["verify-backup", str(backup)]) == 1
    assert "NOT VERIFIED (no db_20261207_100000.dump.verified.json)" in capsys.readouterr().err

    path = stamp(backup, run="RUN-1", checks=["select_backup", "pg_restore", "verify_side"], key=signer.key,
                 action="database_restore", now=NOW)
    assert path == stamp_path(backup) and path.name == "db_20261207_100000.dump.verified.json"
    document = json.loads(path.read_text())
    assert document["stamp"]["run"] == "RUN-1" and document["stamp"]["harness_version"]
    assert document["signature"]["fingerprint"] == signer.fingerprint
    assert reports_main(["verify-backup", str(backup), "--public-key", str(public)]) == 0
    out = capsys.readouterr().out
    assert "VERIFIED restorable at 2026-12-07T12:00:00+00:00 by run RUN-1" in out and "pinned key" in out
    assert reports_main(["verify-backup", str(path)]) == 0  # the stamp named instead of the backup

    document["stamp"]["checks"].append("amcheck")  # a claim added after signing
    path.write_text(json.dumps(document))
    assert reports_main(["verify-backup", str(backup)]) == 1
    assert "TAMPERED" in capsys.readouterr().err

    stamp(backup, run="RUN-2", checks=["pg_restore"], key=signer.key)
    _, other_public = signing.keygen(tmp_path / "keys" / "other.key")
    assert reports_main(["verify-backup", str(backup), "--public-key", str(other_public)]) == 1
    assert "(wrong key)" in capsys.readouterr().err
    with open(backup, "ab") as changed:
        changed.write(b"x")
    assert check(backup).state == "invalid" and "CHANGED since it was verified" in check(backup).detail
    path.write_text("{not json")
    assert check(backup).state == "invalid" and "unreadable stamp" in check(backup).detail


def test_only_a_succeeded_restore_stamps_its_backup_and_without_a_key_the_stamp_says_so(tmp_path):
    backup = dump(tmp_path / "backup", "db_20261207_100000.dump")
    journal = Journal("database_restore", "restore", "t")
    with journal.step("select_backup", "最新バックアップ確認") as step:
        step.note("backup", str(backup))
    journal.status = "failed"
    assert stamp_journal(journal) is None and not stamp_path(backup).exists()
    journal.status = "succeeded"
    path = stamp_journal(journal)
    assert path is not None and check(backup).ok
    assert "a key made for this stamp alone" in check(backup).detail
    assert json.loads(path.read_text())["stamp"]["checks"] == ["select_backup"]
    assert stamp_journal(Journal("database_backup", "backup", "t", status="succeeded")) is None


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_give_the_age_of_the_newest_and_of_the_newest_verified_backup_and_absent_as_absent(
        tmp_path, key):
    signer, _ = key
    folder = tmp_path / "backup"
    old = dump(folder, "db_20261206_120000.dump")
    new = dump(folder, "db_20261207_110000.dump", b"PGDMP newer")
    uploads = dump(folder, "uploads_20261207_110000.tar.gz", b"\x1f\x8b")
    os.utime(uploads, (NOW.timestamp() - 600, NOW.timestamp() - 600))

    without = samples(metrics_text(folder, None, now=NOW))
    assert without[("mks_backup_newest_age_seconds", (("set", "database"),))] == 3600
    assert without[("mks_backup_newest_age_seconds", (("set", "uploads"),))] == 600
    assert ("mks_backup_newest_verified_age_seconds", (("set", "database"),)) not in without
    assert without[("mks_backup_known", (("set", "database"), ("value", "verified")))] == 0
    assert without[("mks_backup_known", (("set", "database"), ("value", "drill")))] == 0
    assert ("mks_backup_last_drill_result", (("set", "database"),)) not in without

    stamp(old, run="RUN-1", checks=["verify_side"], key=signer.key, now=NOW)
    stamp(new, run="RUN-2", checks=["verify_side"], key=signer.key, now=NOW)
    new.write_bytes(b"PGDMP newer, changed after its stamp")  # its stamp no longer counts
    history = tmp_path / "history.sqlite"
    failed = Result("RUN-1", "REC-2026-001", "scenarios::db", "database-restore", "", "monthly", None,
                    "failed",
                    None, None, None, "", "2026-12-07T11:30:00+00:00")
    History(history).add_results([failed], 1)
    found = samples(metrics_text(folder, history, now=NOW))
    assert found[("mks_backup_newest_verified_age_seconds", (("set", "database"),))] == 24 * 3600
    assert found[("mks_backup_known", (("set", "database"), ("value", "verified")))] == 1
    assert found[("mks_backup_last_verified_timestamp_seconds", (("set", "database"),))] == NOW.timestamp()
    assert found[("mks_backup_last_drill_result", (("set", "database"),))] == 0
    assert found[("mks_backup_known", (("set", "uploads"), ("value", "verified")))] == 0
    assert found[("mks_backup_known", (("set", "uploads"), ("value", "drill")))] == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = samples(metrics_text(empty, None, now=NOW))
    assert nothing[("mks_backup_known", (("set", "database"), ("value", "newest")))] == 0
    assert not [k for k in nothing if k[0] == "mks_backup_newest_age_seconds"]
