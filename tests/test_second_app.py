"""A second app, unlike the runbook's description (fixtures/apps/kiroku): the harness runs it from its
profile alone. Env-file config, a `backend/` entry point, three schemas, a JSON users file with bcrypt
hashes, a nested token, a `{"success": true, "data": [...]}` listing, no upload endpoint, a data
directory, and a health endpoint that stays 200 in a degraded mode while its database is down.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.engine import faults
from recovery import health
from recovery.integrity import fingerprint, post_checks

pytestmark = pytest.mark.stack

KIROKU = Path(__file__).resolve().parent.parent / "fixtures" / "apps" / "kiroku" / "profile.yml"


@pytest.fixture
def kiroku(stack_factory):
    return stack_factory("kiroku", app=KIROKU)


def test_the_second_app_runs_from_its_profile_and_its_checks_skip_what_does_not_apply(kiroku):
    target = kiroku.target()
    assert health.public(target).ok, "health through nginx, with mode normal and database postgresql"
    with kiroku.client() as client:
        assert kiroku.login(client)  # found at data.access_token
    found = fingerprint(target)
    counts = dict(found.row_counts)
    assert counts["auth.users"] > 0 and counts["projects"] > 0 and counts["audit.access_logs"] == 0
    assert counts["files"] == counts["projects"] + 1, "one JSON document per project, and the users file"
    assert found.problems() == []
    result = post_checks(target, "admin", kiroku.secrets.admin_password)
    assert result.ok, result.checks
    assert [name for name, _ in result.skipped] == ["upload"]
    assert "no upload endpoint" in result.skipped[0][1]


def test_a_database_outage_is_confirmed_directly_and_the_blind_health_is_a_finding(kiroku):
    fault = faults.StopPostgres("immediate")
    details = fault.inject(kiroku)
    evidence = fault.confirm(kiroku, details)
    assert "refuses connections" in evidence
    answer = faults.backend_answer(kiroku)
    assert answer.status == 200 and not answer.ok and "fallback" in (answer.unmet or "")
    assert details["findings"] and faults.HEALTH_MISSES_OUTAGE in details["findings"][0]
    with kiroku.client() as client:
        assert kiroku.health(client) == 503, "by its profile, a degraded 200 is not healthy"
    checks = post_checks(kiroku.target(), "admin", kiroku.secrets.admin_password)
    assert not checks.ok and [c.name for c in checks.failures()] == ["health", "projects"]
    assert "fallback" in checks.checks[0].detail
    kiroku.services.start("postgresql")
    kiroku.wait_healthy(timeout=60)
