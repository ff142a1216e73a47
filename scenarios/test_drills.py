"""The drills, on the runbook's schedule (復旧テスト). Each carries the marker of every schedule
that includes it: a quarter holds its months and weeks, so `-m quarterly` runs them all.

- 毎週 自動復旧テスト (weekly): the backend crashes (master, workers); the service manager and the
  runbook's auto-recovery.sh bring it back with nothing lost.
- 毎月 コンポーネント復旧テスト (monthly): one component at a time: the backend by hand, the
  database (restart after an immediate stop and after a crash, restore after its loss), Nginx's
  configuration and certificate, the uploads, the database and uploads from plain backups made without
  the harness (pg_dump | gzip, tar -czf), the configuration files (from git, from a tarball).
- 毎四半期 完全復旧テスト (quarterly): the whole system back from backups, a migration to a new
  server after the old one is lost, a point-in-time recovery from rows deleted by mistake.
"""

from __future__ import annotations

import pytest

from fixtures.stack.container_faults import PROVIDER_NEEDED
from fixtures.stack.plugin import setting
from scenarios.drills import (
    BACKEND_MANUAL,
    BACKEND_MASTER,
    BACKEND_WORKERS,
    CERTIFICATE,
    CONFIG_GIT,
    CONFIG_TARBALL,
    CONTAINER_ONLY,
    DB_CRASH,
    DB_IMMEDIATE,
    DB_RESTORE,
    FULL_RECOVERY,
    NGINX_CONFIG,
    PITR,
    PLAIN_BACKUPS,
    UPLOADS,
    migration,
    param,
)

WEEKLY = [BACKEND_MASTER, BACKEND_WORKERS]
MONTHLY = [BACKEND_MANUAL, DB_IMMEDIATE, DB_CRASH, DB_RESTORE, NGINX_CONFIG, CERTIFICATE, UPLOADS,
           PLAIN_BACKUPS, CONFIG_GIT, CONFIG_TARBALL]
QUARTERLY = [FULL_RECOVERY, PITR]  # and the migration below, which needs a second stack
# and on containers only: PostgreSQL's container killed (monthly), its data volume lost (quarterly)


@pytest.mark.parametrize("drill", [param(d) for d in WEEKLY])
def test_weekly_drill(drill, stack, drill_runner):
    record = drill_runner(drill, stack)
    assert record.verdict == "passed"
    assert record.data_loss_rows == 0


@pytest.mark.parametrize("drill", [param(d) for d in MONTHLY])
def test_monthly_drill(drill, stack, drill_runner):
    record = drill_runner(drill, stack)
    assert record.verdict == "passed"
    if drill is NGINX_CONFIG:  # the refused reload left the old configuration serving: no downtime
        assert record.probe.failed_requests == 0, record.probe


@pytest.mark.parametrize("drill", [param(d) for d in QUARTERLY])
def test_quarterly_drill(drill, stack, drill_runner):
    record = drill_runner(drill, stack)
    assert record.verdict == "passed"


@pytest.mark.quarterly
@pytest.mark.stack
def test_migration_to_a_new_server(stack_factory, drill_runner):
    old = stack_factory("old")
    new = stack_factory("new", seed_scale=None)  # the prepared server: code deployed, empty database
    record = drill_runner(migration(new), old)
    assert record.verdict == "passed"
    assert record.environment["stack"] == "old" and not old.sandbox  # the old server is gone


@pytest.mark.parametrize("drill", [param(d) for d in CONTAINER_ONLY])
def test_container_drill(drill, request, pytestconfig, drill_runner):
    provider = setting(pytestconfig, "drill_provider") or "local"
    if provider != "docker":  # decided before any stack is made: a skip with the reason, never a pass
        pytest.skip(f"{drill.name}: {PROVIDER_NEEDED}; this run's provider is {provider}")
    record = drill_runner(drill, request.getfixturevalue("stack"))
    assert record.verdict == "passed"
