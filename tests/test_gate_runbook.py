"""The runbook gate on both runbooks, each on real sandbox stacks (a main stack, a new server, a PITR one).

The original (tests/data/runbook-original.md, byte-identical to the seed), run as written, FAILS with its
real defects; the runbook under review (`--runbook PATH`, default the corrected one in docs/) passes every
section. `pytest -m runbook --runbook PATH` is the gate in CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gate import run_gate
from gate.runner import FAILED, PASSED

pytestmark = [pytest.mark.runbook, pytest.mark.stack]

ORIGINAL = Path(__file__).parent / "data/runbook-original.md"
PITR = "完全システム復旧 > 2. ポイントインタイムリカバリ > PITR実行"

# (what the defect list must say, why it is a defect of the runbook)
EXPECTED_DEFECTS = (
    ('FATAL:  using recovery command file "recovery.conf" is not supported', "PITR leaves PostgreSQL down"),
    ("names PostgreSQL 13", "version 13 paths on a version 15 server"),
    ("placeholder <PID>", "kill -9 <PID> cannot be run as written"),
    ("データベースバックアップからの復旧: afterwards the system is not healthy", "mks-backend left stopped"),
    ("config_$(date +%Y%m%d).tar.gz", "config backup name without the time: no such file"),
    ("latest.dump", "latest.dump / uploads_latest.tar.gz are never produced"),
    ("No database backup found", "full-recovery.sh looks for latest.dump"),
    ("a literal password", "the login test uses the password 'password'"),
    ("Failed to open/read local data", "the upload test needs a test.pdf nobody made"),
    ("scripts/test-recovery.sh", "the recovery test runs a script that does not exist"),
    ("apt update` cannot run in a sandbox and is not marked", "host changes are not marked"),
    ("fence is never closed", "the REC template's fence runs to the end of the file"),
    # found by running the procedures as the recovery of their drills (under the fault, with their oracles)
    ("oracle no stale file left (hidden files included): left from before: 1 (.stale-hidden)",
     "rm -rf /opt/mks/uploads/* leaves hidden files: a restore keeps what the backup does not have"),
    ("oracle nothing made executable: made executable:", "chmod -R 755 makes every uploaded file executable"),
    ("`pg_dump -U mks_user -d mks_db > /tmp/mks_pre_restore.dump` failed",
     "the safety copy fails when the database is lost (the fault the procedure exists for)"),
    ("oracle every service runs again: mks-backend is inactive",
     "the database restore leaves the backend down"),
    ("oracle point in time: mks_db cannot be read", "the PITR brings nothing back: the server stays down"),
    ("committed canary rows lost; RTO-1 must lose nothing",
     "the PITR loses rows committed before the target"),
    ("variant truncated newest dump: dropped the live database before the backup was known to restore",
     "pg_restore --clean onto the live database with a dump that stops halfway"),
    ("variant truncated newest uploads archive: removed the uploads before the archive was read",
     "rm -rf before tar -xzf of an archive that stops halfway"),
    # found by the escaping-archive variant, the backend's process, and the checks that cannot fail
    ("variant newest uploads archive with members escaping the folder: wrote outside /opt/mks/uploads",
     "tar -xzf ... -C / trusts the archive's paths: an absolute member lands in /etc/mks, a link out stays"),
    ("oracle the backend was stopped during the restore: the backend ran through the whole procedure",
     "the uploads restore (and the PITR) replace the data under a running backend"),
    ("リストア確認 against rows missing: only prints numbers for a person",
     "リストア確認 prints counts and exits 0 with rows missing against the backup"),
    ("リストア確認 against an orphaned document: only prints numbers for a person",
     "リストア確認 prints counts and a table definition and exits 0 with an orphaned document"),
    ("ファイル確認 against files missing: only prints numbers for a person",
     "ファイル確認 prints a count and sizes and exits 0 with files missing"),
    ("ファイル確認 against a file changed: only prints numbers for a person",
     "ファイル確認 exits 0 with a file whose content is not the backup's"),
    ("ファイル確認 against a stale extra file: only prints numbers for a person",
     "ファイル確認 exits 0 with a file the backup does not have"),
    ("データ整合性確認 against an orphaned document: only prints numbers for a person",
     "データ整合性確認 prints counts per table and project and exits 0 with an orphaned document"),
    ("パフォーマンス確認 against slow responses: this check cannot fail",
     "パフォーマンス確認 times one request with `time curl` and no threshold: it exits 0 with every answer "
     "5 s late (its psql fails with the database stopped, so it catches that, not this)"),
    # found by running the scripts under their faults and the test procedure without production (scripted.py)
    ("variant backend running, its database down: reported success (exit 0, `Service is running`) while the "
     "system is not healthy", "auto-recovery.sh says 'Service is running' while the backend answers 503: it "
     "asks only whether the unit is active"),
    ("reads the production instance: line 475 `curl -f http://localhost:5100/api/v1/health`",
     "the test procedure's 結果確認 asks production's health, not its copy's"),
    ("variant a WAL segment the target needs is missing: PostgreSQL does not serve mks_db after the "
     "procedure", "the PITR under a missing WAL segment leaves PostgreSQL down (the cluster before it is not "
     "started again)"),
)
STOPPED = "the backend was stopped during the restore"
TRUTH = "exit status tells the truth"
AUTO_SCRIPT = "復旧自動化スクリプト > 自動復旧スクリプト"
FULL_SCRIPT = "復旧自動化スクリプト > 完全復旧スクリプト"
TEST_PROCEDURE = "復旧テスト > テスト手順"
WITHOUT_PRODUCTION = "the test works on its copy, not production"
DRILLED = {  # procedure -> the oracles it must pass, each by name
    "データ復旧手順 > 1. データベースバックアップからの復旧": (
        "newest backup restored", STOPPED, "every service runs again"),
    "データ復旧手順 > 2. アップロードファイル復旧": (
        "newest uploads backup restored", "same files as the backup", "same content as the backup",
        "no stale file left (hidden files included)", "nothing made executable",
        "the uploads as they were are kept", STOPPED, "every service runs again"),
    "完全システム復旧 > 2. ポイントインタイムリカバリ": (
        "rows deleted by mistake are back", "changes after the target are absent", "new timeline",
        "accepts writes", "recovery settings removed", "the data directory before the recovery is kept",
        STOPPED, "every service runs again"),
    AUTO_SCRIPT: (TRUTH, "every service runs again"),
    FULL_SCRIPT: (TRUTH, "newest backup restored", "newest uploads backup restored",
                  "same files as the backup", "same content as the backup",
                  "no stale file left (hidden files included)", STOPPED, "every service runs again"),
}
VARIANTS = {  # procedure -> its bad-backup variants, each must end safe
    "データ復旧手順 > 1. データベースバックアップからの復旧": (
        "truncated newest dump", "live database damaged, newest dump valid"),
    "データ復旧手順 > 2. アップロードファイル復旧": (
        "truncated newest uploads archive", "newest uploads archive with members escaping the folder"),
    "完全システム復旧 > 2. ポイントインタイムリカバリ": ("a WAL segment the target needs is missing",),
    AUTO_SCRIPT: ("healthy system", "backend running, its database down",
                  "backend cannot start (its YAML broken)"),
    FULL_SCRIPT: ("database damaged, stale uploads, PostgreSQL stopped", "truncated newest dump",
                  "truncated newest uploads archive",
                  "newest uploads archive with members escaping the folder"),
}
MIGRATION = "完全システム復旧 > 1. 新規サーバーへの移行復旧"
MIGRATION_VARIANTS = ("truncated newest dump", "truncated newest uploads archive",
                      "newest uploads archive with members escaping the folder")
VERIFICATIONS = ("リストア確認", "ファイル確認", "接続確認", "機能テスト", "パフォーマンス確認",
                 "データ整合性確認")


# CI's bounded sample of the original: its two data restores, each run as the recovery of its drill and
# under the bad backups; the whole original (6 min on two cores) is in the exhaustive set
SAMPLE = ("データ復旧手順 > 1. データベースバックアップからの復旧",
          "データ復旧手順 > 2. アップロードファイル復旧")
SAMPLE_DEFECTS = (
    "データベースバックアップからの復旧: afterwards the system is not healthy",
    "oracle no stale file left (hidden files included): left from before: 1 (.stale-hidden)",
    "oracle nothing made executable: made executable:",
    "`pg_dump -U mks_user -d mks_db > /tmp/mks_pre_restore.dump` failed",
    "oracle every service runs again: mks-backend is inactive",
    "variant truncated newest dump: dropped the live database before the backup was known to restore",
    "variant truncated newest uploads archive: removed the uploads before the archive was read",
    "variant newest uploads archive with members escaping the folder: wrote outside /opt/mks/uploads",
    "oracle the backend was stopped during the restore: the backend ran through the whole procedure",
    "リストア確認 against rows missing: only prints numbers for a person",
    "ファイル確認 against files missing: only prints numbers for a person",
)


def test_a_sample_of_the_original_runbook_fails_with_its_defects(stack_factory, reports_dir):
    assert set(SAMPLE_DEFECTS) <= {needle for needle, _ in EXPECTED_DEFECTS}
    result = run_gate(str(ORIGINAL), stack_factory, reports_dir, only=SAMPLE.__contains__)
    assert result.verdict.startswith("FAILED (partial: ")
    assert {p.title for p in result.procedures if p.blocks} <= set(SAMPLE)
    text = "\n".join(result.defects)
    missing = [needle for needle in SAMPLE_DEFECTS if needle not in text]
    assert not missing, f"defects not reported: {missing}\n--- reported ---\n{text}"


@pytest.mark.exhaustive
def test_original_runbook_fails_with_its_defects(stack_factory, reports_dir):
    result = run_gate(str(ORIGINAL), stack_factory, reports_dir)
    assert result.verdict == "FAILED"
    text = "\n".join(result.defects)
    missing = [why for needle, why in EXPECTED_DEFECTS if needle not in text]
    assert not missing, f"defects not reported: {missing}\n--- reported ---\n{text}"
    assert result.section_status(PITR) == FAILED
    procedures = {p.title: p for p in result.procedures}
    for title in ("データ復旧手順 > 2. アップロードファイル復旧", PITR.rsplit(" > ", 1)[0]):
        problems = procedures[title].health.problems
        assert any(p.startswith(f"oracle {STOPPED}: the backend ran") for p in problems), title
    pitr = next(p for p in result.procedures if "ポイントインタイム" in p.title)
    assert not pitr.health.ok and any("postgresql is" in p for p in pitr.health.problems)
    # the backend that cannot start flaps (supervisord, as systemd, restarts it): the original's script
    # sees a unit between two restarts ("Auto recovery failed", exit 0) or during one ("Service is
    # running", exit 0); either way it exits 0 on a backend that does not answer
    auto = "\n".join(procedures[AUTO_SCRIPT].health.problems)
    said = (r"(printed failure and exited 0 \(`Auto recovery failed"
            r"|reported success \(exit 0, `Service is running`\))")
    assert re.search(r"variant backend cannot start \(its YAML broken\): " + said, auto), auto
    full = "\n".join(procedures[FULL_SCRIPT].health.problems)  # its drill: nothing brought back
    assert "oracle newest backup restored: mks_db cannot be read" in full, full
    assert "oracle same files as the backup: 0 of" in full, full
    # what the original gets right is still reported as passing
    assert result.section_status("サービス復旧手順 > 2. データベース復旧 > 接続確認") == PASSED
    assert result.section_status("データ復旧手順 > 3. 設定ファイル復旧 > Gitからの復旧") == PASSED


def test_runbook_passes_the_gate(runbook_path, stack_factory, reports_dir, runbook_only):
    """The runbook under review passes every section, healthy with its data intact after each procedure
    (with --runbook-changed-since REF: every procedure that changed since REF or uses what one makes)."""
    result = run_gate(str(runbook_path), stack_factory, reports_dir, only=runbook_only)
    assert result.passed, "the runbook gate FAILED:\n" + "\n".join(result.defects)
    if runbook_only is not None:  # a partial run: what follows names every procedure
        return
    procedures = {p.title: p for p in result.procedures}
    assert all(p.health.ok for p in procedures.values())
    for title, oracles in DRILLED.items():  # run under their drills' faults, every oracle passed
        assert procedures[title].mode.startswith("under fault: drill "), procedures[title].mode
        for name in oracles:
            checks = procedures[title].health.checks
            assert any(c.startswith(f"oracle {name}: ok") for c in checks), (title, name)
        for name in VARIANTS[title]:
            assert any(c.startswith(f"variant {name}: safe") for c in checks), (title, name)
    checks = [c for p in procedures.values() for c in p.health.checks if c.startswith("verification ")]
    for name in VERIFICATIONS:  # each verification section gives a verdict against its wrong state
        assert any(f"> {name} against " in c and ": can fail (" in c for c in checks) \
            or any(f". {name} against " in c and ": can fail (" in c for c in checks), (name, checks)
    pitr = next(p for p in procedures.values() if "ポイントインタイム" in p.title)
    timeline = next(c for c in pitr.health.checks if c.startswith("oracle new timeline: ok"))
    assert "timeline 1)" not in timeline
    missing_wal = next(c for c in pitr.health.checks if c.startswith("variant a WAL segment"))
    assert "the data as before the procedure" in missing_wal, missing_wal  # the old cluster serves again
    for name in MIGRATION_VARIANTS:  # the new server is not put into service on a bad backup
        assert any(c.startswith(f"variant {name}: safe") for c in procedures[MIGRATION].health.checks), name
    test_checks = procedures[TEST_PROCEDURE].health.checks
    assert any(c.startswith(f"oracle {WITHOUT_PRODUCTION}: ok") for c in test_checks), test_checks
    healthy = [p for p in procedures.values() if p.title not in DRILLED]
    assert healthy and all(p.mode.startswith("healthy system") for p in healthy)
