"""A third app that nobody here wrote (fixtures/apps/wagtail): a Wagtail site as `wagtail start` made
it, Wagtail 6.3.1 from PyPI, run from its profile alone: a form login with a CSRF cookie, a plain page
as health, the schema by `manage.py migrate`, the superuser by `manage.py createsuperuser`."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery import health
from recovery.integrity import fingerprint, post_checks

pytestmark = pytest.mark.stack

WAGTAIL = Path(__file__).resolve().parent.parent / "fixtures" / "apps" / "wagtail" / "profile.yml"


@pytest.fixture
def wagtail(stack_factory):
    return stack_factory("wagtail", app=WAGTAIL)


def test_the_third_app_runs_from_its_profile_and_its_checks_skip_what_does_not_apply(wagtail):
    target = wagtail.target()
    assert health.public(target).ok, "the home page through nginx"
    with wagtail.client() as client:
        assert wagtail.login(client), "the admin form accepted, a session cookie set"
    found = fingerprint(target)
    counts = dict(found.row_counts)
    assert counts["wagtailcore_page"] >= 2 and counts["auth_user"] == 1, counts
    assert counts["wagtaildocs_document"] == counts["files"] > 0, "one file in the media folder per document"
    assert found.problems() == []
    result = post_checks(target, "admin", wagtail.secrets.admin_password)
    assert result.ok, result.checks
    assert [name for name, _ in result.skipped] == ["upload"]
