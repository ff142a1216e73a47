"""Drills only a host shows (--drill-provider=host): systemd starts every unit in its order.

- a reboot: every unit stopped and started again by systemd (the host's container restarted);
- the same with PostgreSQL accepting connections only seconds after its unit started: the app
  comes up before its database;
- the database down while the app restarts;
- a full disk on the backup volume (a size-limited tmpfs at /backup) while backups are made.

An app whose health answers 200 while its database refuses connections, or stays in a degraded mode
after the database is back, is a finding in the REC report's 改善点 with the body it answered. The
profile's health expectation keeps the post checks strict: the runbook's auto-recovery.sh restarts
such an app, and the drill passes only when the app is healthy by its profile.
On another provider every test here skips with the reason, before any stack is made.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.engine.drill import Drill
from fixtures.engine.faults import HEALTH_MISSES_OUTAGE
from fixtures.stack.host_faults import (
    DEGRADED_AFTER_DB,
    PROVIDER_NEEDED,
    DatabaseDownAppRestart,
    RebootHost,
    recover_after_boot,
    recover_database_then_app,
)
from fixtures.stack.plugin import setting
from recovery import database
from recovery.journal import ActionFailed
from scenarios.drills import param

KIROKU = Path(__file__).resolve().parents[1] / "fixtures/apps/kiroku/profile.yml"
BOOT = "サービス復旧手順 > 起動確認 (ホスト再起動)"
DB_LATE_SECONDS = 6.0

REBOOT = Drill("host-reboot", "ホスト再起動: 全サービスの停止と起動 (systemd)", "RTO-1", "quarterly",
               BOOT, RebootHost(), recover_after_boot)
REBOOT_DB_LATE = Drill("host-reboot-db-late", "ホスト再起動: PostgreSQL の接続受付が遅れアプリが先に起動",
                       "RTO-1", "quarterly", BOOT, RebootHost(slow_postgres=DB_LATE_SECONDS),
                       recover_after_boot)
DB_DOWN_APP_RESTART = Drill("database-down-app-restart", "データベース停止中のアプリ再起動", "RTO-1",
                            "quarterly", "サービス復旧手順 > 2. データベース復旧 > 再起動手順",
                            DatabaseDownAppRestart(), recover_database_then_app)
HOST_ONLY = [REBOOT, REBOOT_DB_LATE, DB_DOWN_APP_RESTART]


@pytest.fixture(autouse=True)
def _host_only(pytestconfig):
    provider = setting(pytestconfig, "drill_provider") or "local"
    if provider != "host":  # decided before any stack is made: a skip with the reason, never a pass
        pytest.skip(f"{PROVIDER_NEEDED}; this run's provider is {provider}")


def health_findings(findings: list[str]) -> list[str]:
    return [f for f in findings if HEALTH_MISSES_OUTAGE in f or DEGRADED_AFTER_DB in f]


@pytest.mark.parametrize("drill", [param(d) for d in HOST_ONLY])
def test_host_drill(drill, stack, drill_runner):
    record = drill_runner(drill, stack)
    assert record.verdict == "passed"
    if stack.settings.app.name == "mks-reference":  # its health asks the database at every request
        assert health_findings(record.findings) == [], record.findings


@pytest.mark.quarterly
@pytest.mark.stack
@pytest.mark.parametrize("drill", [REBOOT_DB_LATE, DB_DOWN_APP_RESTART], ids=lambda d: d.name)
def test_kiroku_degraded_health_is_a_finding(drill, stack_factory, drill_runner):
    """kiroku caches its fallback mode from its first health check: 200 with mode fallback, kept
    after the database answers; a finding with its body, then auto-recovery.sh's restart heals it."""
    kiroku = stack_factory("kiroku", app=KIROKU)
    code, unit = kiroku.services.run("systemctl", "cat", "mks-backend.service")
    # kiroku's own unit (its profile's host.unit), with the drill's environment as a drop-in
    assert code == 0 and "kiroku records API" in unit, unit
    assert "EnvironmentFile=/etc/default/mks-backend" in unit, unit
    record = drill_runner(drill, kiroku)
    assert record.verdict == "passed"
    found = health_findings(record.findings)
    assert found and any('"mode":"fallback"' in f.replace(" ", "") for f in found), record.findings
    restarts = [s for s in record.steps
                if s["action"] == "service-auto-recover" and s["name"].startswith("attempt")]
    assert restarts, "the degraded app must have been restarted by auto-recovery.sh"


@pytest.mark.quarterly
@pytest.mark.stack
def test_backup_on_a_full_backup_volume(container_provider, stack_settings, drill_scale):
    """/backup is an 8 MB tmpfs, filled: the database backup fails naming the full disk, leaves no
    partial dump that looks like a backup, and succeeds once space is freed."""
    from fixtures.apps.seeding import seed_stack
    from fixtures.stack.host import HostOptions

    if os.geteuid() != 0:
        pytest.skip("a size-limited backup volume is a tmpfs mount: needs root")
    stack = container_provider.stack("fullbackup", stack_settings, HostOptions(backup_size="8m"))
    try:
        stack.up()
        seed_stack(stack, drill_scale)
        target = stack.target()
        backup_dir = Path(target.paths.backup_dir)
        filler = backup_dir.parent / "filler"
        free = os.statvfs(backup_dir).f_bavail * os.statvfs(backup_dir).f_frsize
        with open(filler, "wb") as out:
            out.write(b"\0" * (free - 32 * 1024))
        before = sorted(p.name for p in backup_dir.rglob("*") if p.is_file())
        with pytest.raises(ActionFailed) as failed:
            database.backup_database(target)
        message = str(failed.value)
        assert "No space left on device" in message or "ENOSPC" in message or "space" in message, message
        after = sorted(p.name for p in backup_dir.rglob("*") if p.is_file())
        assert after == before, f"a failed backup left files behind: {set(after) - set(before)}"
        filler.unlink()
        journal = database.backup_database(target)
        assert journal.steps and all(s.status == "ok" for s in journal.steps), journal.to_dict()
    finally:
        stack.down()
