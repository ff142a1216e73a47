"""The runbook gate's oracles know the app only through its app profile (gate/appdata.py).

Without stacks: what the gate takes from the reference's profile is what it knew before, and a wrong state
that needs a relation is skipped, with its reason, for a profile without one. On stacks: kiroku
(fixtures/apps/kiroku, three schemas, a data directory, no upload endpoint) drilled under the gate with
a runbook of its own (the corrected runbook's blocks name the reference's tables and paths): the
oracles pass a right restore and catch a wrong one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fixtures.apps.profile import REFERENCE_PROFILE, load_profile
from gate import appdata
from gate.orchestrator import Gate
from gate.parser import parse_file
from gate.verification import SKIPPED, WRONG_STATES
from recovery.integrity import Fingerprint
from recovery.target import AppTarget, PathsTarget, Target

KIROKU = Path(__file__).resolve().parent.parent / "fixtures" / "apps" / "kiroku" / "profile.yml"
DB = "データ復旧手順 > 1. データベースバックアップからの復旧"

# a database restore written for kiroku (its health path, its schema-qualified tables and relation)
RUNBOOK = Path(__file__).resolve().parent / "data" / "kiroku-runbook.md"
NEWEST = "ls -t /backup/mks/db_*.dump | head -1)\npg_restore --list"


def _target(profile: Path, root: str = "/srv/sandbox") -> Target:
    app = load_profile(profile)
    return Target(root=root, app=app.to_app_target(), paths=PathsTarget(
        uploads_dir=root + app.integrity.files.dir, config_file=root + app.config.path,
        backend_dir=root + "/opt/mks/backend", nginx_site=root + "/etc/nginx/sites-available/mks"))


def test_what_the_gate_takes_from_the_reference_profile_is_what_it_knew():
    target = _target(REFERENCE_PROFILE)
    assert appdata.store_member(target) == "opt/mks/uploads"
    assert appdata.config_members(target) == [
        "etc/mks/config.yml", "etc/nginx/sites-available/mks", "opt/mks/backend/config/production.yml",
        "opt/mks/backend/alembic.ini"]
    assert [s.title(target.app) for s in WRONG_STATES][:2] == ["rows missing", "an orphaned document"]
    kiroku = _target(KIROKU)
    assert appdata.store_member(kiroku) == "opt/kiroku/data"
    assert appdata.config_members(kiroku)[0] == "etc/kiroku/app.env"
    assert WRONG_STATES[1].title(kiroku.app) == "an orphaned project"


def test_a_wrong_state_that_needs_a_relation_is_skipped_with_its_reason():
    app = AppTarget(tables=["public.notes"], relation=None)
    orphan = next(s for s in WRONG_STATES if s.needs_relation)
    assert orphan.skipped(app) == appdata.NO_RELATION and "relation" in appdata.NO_RELATION
    assert orphan.title(app) == "an orphaned row"
    assert all(s.skipped(app) is None for s in WRONG_STATES if not s.needs_relation)
    assert orphan.skipped(_target(KIROKU).app) is None
    assert SKIPPED == "skipped"


def test_a_test_upload_is_growth_only_of_the_relations_child_and_only_with_an_upload_endpoint():
    before = Fingerprint("mks_db", (("users", 3), ("projects", 10), ("documents", 40)), (), 0,
                         ((1, 4), (2, 4)), (), 0, (), (), (), (), ("documents", "projects"))
    after = dataclasses.replace(before, row_counts=(("users", 3), ("projects", 10), ("documents", 41)),
                                children_per_parent=((1, 5), (2, 4)))
    reference = _target(REFERENCE_PROFILE)
    from recovery.integrity import compare

    diffs = compare(before, after)
    assert len(diffs) == 2 and all(appdata.upload_grew(d, before, after, reference) for d in diffs)
    assert not appdata.upload_grew(diffs[0], after, before, reference)  # fewer rows: a loss
    lost_users = dataclasses.replace(after, row_counts=(("users", 2), ("projects", 10), ("documents", 41)))
    users = [d for d in compare(before, lost_users) if d.startswith("users")]
    assert users and not appdata.upload_grew(users[0], before, lost_users, reference)
    no_upload = dataclasses.replace(reference, app=dataclasses.replace(reference.app, upload_path=None))
    assert not any(appdata.upload_grew(d, before, after, no_upload) for d in diffs)


@pytest.mark.runbook
@pytest.mark.stack
@pytest.mark.parametrize("oldest", [False, True], ids=["newest", "oldest-restored"])
def test_the_gates_oracles_judge_a_database_restore_of_kiroku(oldest, tmp_path, stack_factory):
    """A right restore passes every oracle (and the verification can fail against kiroku's wrong states,
    an orphaned project among them); restoring the older dump is caught by `newest backup restored`."""
    text = RUNBOOK.read_text(encoding="utf-8")
    assert NEWEST in text
    if oldest:
        text = text.replace(NEWEST, NEWEST.replace("ls -t ", "ls -tr "))
    runbook = tmp_path / "kiroku-runbook.md"
    runbook.write_text(text, encoding="utf-8")

    def make(name: str, seed_scale: float | None = 0.2):  # the gate's stacks are kiroku's
        return stack_factory(name, seed_scale=seed_scale if seed_scale is not None else False, app=KIROKU)

    gate = Gate(parse_file(str(runbook)), make, variants=False, verify=not oldest)
    [outcome] = gate.run(lambda title: title == DB)
    checks = "\n".join(outcome.health.checks)
    assert outcome.mode.startswith("under fault: drill database-restore"), outcome.mode
    assert gate.app is not None and gate.app.tables == ["auth.users", "public.projects", "audit.access_logs"]
    if oldest:
        assert not outcome.ok
        assert "oracle newest backup restored: FAILED" in checks and "an older backup was restored" in checks
        return
    assert outcome.ok, "\n".join(outcome.health.problems)
    for name in ("newest backup restored", "the backend was stopped during the restore",
                 "every service runs again"):
        assert f"oracle {name}: ok" in checks, checks
    for state in ("rows missing", "an orphaned project"):
        assert f"リストア確認 against {state}: can fail" in checks, checks
    assert "projects rows missing against the backup" in "\n".join(gate.events)


@pytest.mark.runbook
@pytest.mark.stack
def test_without_a_relation_the_pitr_mistake_deletes_the_gates_marks_and_the_orphan_is_skipped(
        tmp_path, stack_factory):
    """kiroku with its profile's relation removed: the database restore and the PITR written for it are
    judged all the same (the mistake deletes the gate's marks); the orphan state says why it is skipped."""
    import yaml

    data = yaml.safe_load(KIROKU.read_text(encoding="utf-8"))
    data["source"] = str(KIROKU.parent / data["source"])
    data["config"]["template"] = str(KIROKU.parent / data["config"]["template"])
    del data["integrity"]["relation"]
    profile = tmp_path / "profile.yml"
    profile.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def make(name: str, seed_scale: float | None = 0.2):
        return stack_factory(name, seed_scale=seed_scale if seed_scale is not None else False, app=profile)

    gate = Gate(parse_file(str(RUNBOOK)), make, variants=False)
    outcomes = {o.title: o for o in gate.run()}
    assert gate.app is not None and gate.app.relation is None
    db, pitr = outcomes[DB], outcomes["完全システム復旧 > 2. ポイントインタイムリカバリ"]
    for outcome in (db, pitr):
        assert outcome.ok, "\n".join(outcome.health.problems)
    checks = "\n".join(db.health.checks + pitr.health.checks)
    for name in ("newest backup restored", "changes after the target are absent", "new timeline"):
        assert f"oracle {name}: ok" in checks, checks
    back = "oracle rows deleted by mistake are back: ok (gate_marks: 1 before the mistake, 0 after it, 1 now)"
    assert back in checks, checks
    assert "リストア確認 against rows missing: can fail" in checks
    assert f"リストア確認 against an orphaned row: skipped ({appdata.NO_RELATION})" in checks
