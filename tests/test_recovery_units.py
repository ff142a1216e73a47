"""The logic of the database recovery that needs no server: names, headers, settings, levels."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest

from recovery.app_http import credentials
from recovery.backups import (
    BackupError,
    _PlainScan,
    candidates,
    choose,
    max_age_for,
    name_time,
    parse_list,
    verify_dump,
)
from recovery.database import parse_config
from recovery.errors import RecoveryError
from recovery.integrity import Fingerprint, compare
from recovery.pitr import (
    contiguous_from,
    parse_backup_label,
    parse_waldump_times,
    recovery_settings,
    segment_name,
    segment_number,
)
from recovery.target import PathsTarget, Target

SEG = 16 * 1024 * 1024

LISTING = """\
;
; Archive created at 2026-11-28 15:40:01 UTC
;     dbname: mks_db
;     TOC Entries: 42
;     Compression: -1
;     Dump Version: 1.14-0
;     Format: CUSTOM
;     Integer: 4 bytes
;     Offset: 8 bytes
;     Dumped from database version: 15.8 (Debian 15.8-1)
;     Dumped by pg_dump version: 15.8 (Debian 15.8-1)
;
;
; Selected TOC Entries:
;
2; 3079 16385 EXTENSION - amcheck
215; 1259 16390 TABLE public users mks_user
3345; 0 16390 TABLE DATA public users mks_user
3346; 0 16400 TABLE DATA public projects mks_user
3347; 0 16410 TABLE DATA public documents mks_user
3213; 2606 16420 FK CONSTRAINT public documents documents_project_id_fkey mks_user
3214; 2606 16421 FK CONSTRAINT public projects projects_owner_id_fkey mks_user
"""


def test_the_dump_header_gives_database_time_tables_and_foreign_keys():
    header = parse_list(LISTING)
    assert header.dbname == "mks_db"
    assert header.created_at == dt.datetime(2026, 11, 28, 15, 40, 1, tzinfo=dt.UTC)
    assert header.format == "CUSTOM" and header.toc_entries == 42
    assert header.server_version.startswith("15.8")
    assert header.tables == ("users", "projects", "documents")
    assert header.foreign_keys == ("documents_project_id_fkey", "projects_owner_id_fkey")
    assert parse_list(LISTING.replace(" UTC\n", " JST\n", 1)).created_at is None  # a zone we do not guess
    with pytest.raises(BackupError, match="no dbname"):
        parse_list("CREATE TABLE users (id int);\n")



def test_the_dump_header_and_a_plain_dump_name_each_foreign_key_with_its_schema():
    """A restore compares foreign keys per schema of the dump, not only in the profile's tables' schemas."""
    audit = "3215; 2606 16430 FK CONSTRAINT audit access_logs access_logs_user_id_fkey mks_user\n"
    header = parse_list(LISTING + audit)
    assert header.schema_foreign_keys == (
        "audit.access_logs_user_id_fkey", "public.documents_project_id_fkey", "public.projects_owner_id_fkey")
    scan = _PlainScan(Path("db.sql"))
    for line in (b"-- PostgreSQL database dump\n", b"ALTER TABLE ONLY audit.access_logs\n",
                 b"    ADD CONSTRAINT access_logs_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id);\n",
                 b"ALTER TABLE ONLY public.documents\n",
                 b"    ADD CONSTRAINT documents_project_id_fkey FOREIGN KEY (project_id) REFERENCES x;\n"):
        scan.line(line)
    assert scan.schema_foreign_keys == ["audit.access_logs_user_id_fkey", "public.documents_project_id_fkey"]

def test_level_max_age_follows_the_runbook_table():
    assert max_age_for("RTO-1") is None
    assert max_age_for("RTO-4") == dt.timedelta(hours=1)
    assert max_age_for("RTO-24") == dt.timedelta(days=1)
    assert max_age_for("RTO-1", dt.timedelta(minutes=5)) == dt.timedelta(minutes=5)
    with pytest.raises(BackupError, match="unknown recovery level"):
        max_age_for("RTO-2")


def sandbox_target(tmp_path: Path) -> Target:
    return dataclasses.replace(Target(), paths=dataclasses.replace(PathsTarget(), backup_dir=str(tmp_path)))


def test_backups_are_ordered_by_the_time_in_their_name_and_damaged_ones_are_passed_over(tmp_path):
    for name, mtime in (("db_20260101_000000.dump", 300), ("db_20261128_120000.dump", 100),
                        ("db_20260601_093000.dump", 200), ("db_nodate.dump", 400)):
        (tmp_path / name).write_bytes(b"not a dump")
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / "pre_restore_20991231_000000.dump").write_bytes(b"PGDMP")  # never chosen by itself
    (tmp_path / "uploads_20991231_000000.tar.gz").write_bytes(b"")
    assert [p.name for p in candidates(tmp_path)] == [
        "db_20261128_120000.dump", "db_20260601_093000.dump", "db_20260101_000000.dump", "db_nodate.dump"]
    assert name_time(tmp_path / "db_20261128_120000.dump") == dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
    assert name_time(tmp_path / "db_nodate.dump") is None

    target = sandbox_target(tmp_path)
    (tmp_path / "db_20261128_120000.dump").write_bytes(b"")
    with pytest.raises(BackupError) as caught:
        choose(target, max_age=None)
    message = str(caught.value)
    assert "no valid database backup" in message
    assert "db_20261128_120000.dump: empty file" in message
    assert message.count("no PGDMP magic") == 3

    with pytest.raises(BackupError, match="no database backup found"):
        choose(sandbox_target(tmp_path / "missing"), max_age=None)


def test_a_dump_that_does_not_match_its_sidecar_is_refused_before_it_is_read(tmp_path):
    dump = tmp_path / "db_20261128_120000.dump"
    dump.write_bytes(b"PGDMP" + b"\x00" * 100)
    (tmp_path / "db_20261128_120000.dump.sha256").write_text("0" * 64 + "  db_20261128_120000.dump\n")
    with pytest.raises(BackupError, match="does not match its sidecar"):
        verify_dump(dump, sandbox_target(tmp_path))


@pytest.mark.parametrize("major", [11])
def test_recovery_settings_before_12_use_recovery_conf(major):
    when = dt.datetime(2024, 1, 9, 1, 0, tzinfo=dt.UTC)
    files = recovery_settings(major, "cp /backup/mks/wal/%f %p", when)
    assert set(files) == {"recovery.conf", "postgresql.auto.conf"}
    assert "restore_command = 'cp /backup/mks/wal/%f %p'" in files["recovery.conf"]
    assert "recovery_target_time = '2024-01-09 01:00:00+00:00'" in files["recovery.conf"]
    assert "recovery_target_action = 'promote'" in files["recovery.conf"]
    assert "archive_mode = 'off'" in files["postgresql.auto.conf"]
    assert "restore_command" not in files["postgresql.auto.conf"]


@pytest.mark.parametrize("major", range(12, 18))
def test_recovery_settings_from_12_use_recovery_signal(major):
    files = recovery_settings(major, "cp /backup/mks/wal/%f %p", "2024-01-09 10:00:00+09")
    assert set(files) == {"recovery.signal", "postgresql.auto.conf"}
    assert files["recovery.signal"] == ""
    auto = files["postgresql.auto.conf"]
    assert "recovery_target_time = '2024-01-09 10:00:00+09'" in auto
    assert "recovery_target_action = 'promote'" in auto and "archive_mode = 'off'" in auto
    assert "archive_mode" not in recovery_settings(major, "x", "t", disable_archiving=False)[
        "postgresql.auto.conf"]
    assert "'it''s'" in recovery_settings(major, "it's", "t")["postgresql.auto.conf"]


def test_wal_segment_names_and_gaps():
    assert segment_number("0000000100000001000000FF", SEG) == (1, 0x1FF)
    assert segment_name(1, 0x200, SEG) == "000000010000000200000000"
    names = ["0000000100000001000000FE", "0000000100000001000000FF", "000000010000000200000000",
             "000000010000000200000002", "00000002000000020000000A", "00000001.history"]
    run, missing = contiguous_from(names, "0000000100000001000000FE", SEG)
    assert run == names[:3] and missing == "000000010000000200000001"
    run, missing = contiguous_from(names[:3], "0000000100000001000000FF", SEG)
    assert run == names[1:3] and missing is None
    assert contiguous_from(names, "000000010000000100000000", SEG) == ([], "000000010000000100000000")


def test_waldump_times_and_backup_label_are_read():
    out = ("rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/01A4E1B8, prev 0/01A4E180,"
           " desc: COMMIT 2026-11-28 15:40:01.123456 UTC\n"
           "rmgr: Transaction len (rec/tot):     34/    34, tx:        736, lsn: 0/01A4E1F8, prev 0/01A4E1B8,"
           " desc: ABORT 2026-11-28 15:40:02 UTC; subxacts: 737\n")
    assert parse_waldump_times(out) == [dt.datetime(2026, 11, 28, 15, 40, 1, 123456, tzinfo=dt.UTC),
                                        dt.datetime(2026, 11, 28, 15, 40, 2, tzinfo=dt.UTC)]
    label = ("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n"
             "BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-28 15:40:00 UTC\n"
             "LABEL: drill\nSTART TIMELINE: 1\n")
    assert parse_backup_label(label) == {
        "start_lsn": "0/2000028", "start_segment": "000000010000000000000002",
        "label": "drill", "timeline": "1"}


def test_config_values_are_the_last_uncommented_assignment():
    text = ("#listen_addresses = 'localhost'\nlisten_addresses = 'localhost'\nport = 5432  # comment\n"
            "max_connections = 100\nport = 5433\n")
    assert parse_config(text) == {"listen_addresses": "localhost", "port": "5433", "max_connections": "100"}


def test_compare_names_each_difference():
    base = Fingerprint("mks_db", (("users", 2), ("documents", 3)), ("a_fkey", "b_fkey"), 0, ((1, 2), (2, 1)),
                       (("users", "x"), ("documents", "y")), 3, (), (), ("users_pkey",), (),
                       ("documents", "projects"))
    assert compare(base, base) == []
    other = dataclasses.replace(base, row_counts=(("users", 2), ("documents", 2)), foreign_keys=("a_fkey",),
                                children_per_parent=((1, 1), (2, 1)), checksums=(("users", "z"),
                                                                                   ("documents", "w")),
                                missing_files=("1/abc",))
    diffs = compare(base, other)
    assert diffs == [
        "documents: 3 rows before, 2 after", "users: same row count but the rows' content differs",
        "foreign keys missing: b_fkey", "documents per project differ: project 1: 2 -> 1",
        "missing files now: 1/abc"]


def test_check_credentials_come_from_a_file_or_the_environment_never_a_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MKS_CHECK_PASSWORD", raising=False)
    monkeypatch.delenv("MKS_CHECK_USER", raising=False)
    secret_file = tmp_path / "check-secret"
    secret_file.write_text("s3cr3t-value\n")
    assert credentials(None, None, secret_file) == ("admin", "s3cr3t-value")
    with pytest.raises(RecoveryError, match="need the login's password"):
        credentials("admin", None)
    with pytest.raises(RecoveryError, match="cannot read a password"):
        credentials("admin", None, tmp_path / "missing")
    monkeypatch.setenv("MKS_CHECK_PASSWORD", "from-env")
    assert credentials("ops", None) == ("ops", "from-env")


def test_a_target_file_with_the_old_run_as_key_still_loads(tmp_path):
    from recovery.target import TargetError, load_target

    old = tmp_path / "old.yml"
    old.write_text("name: prod\nrun_as: mks\n", encoding="utf-8")
    assert load_target(old).service_user == "mks"
    both = tmp_path / "both.yml"
    both.write_text("name: prod\nrun_as: mks\nservice_user: mks\n", encoding="utf-8")
    with pytest.raises(TargetError, match="run_as and service_user both given"):
        load_target(both)
