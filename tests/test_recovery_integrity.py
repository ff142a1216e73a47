"""復旧後の確認: the fingerprint sees what changed, and the functional/performance checks can fail."""

from __future__ import annotations

import json

import psycopg
import pytest

from fixtures.stack.local import ADMIN_USER
from fixtures.stack.postgres import APP_DB
from recovery.integrity import Fingerprint, compare, fingerprint, performance, post_checks

pytestmark = pytest.mark.stack


def test_fingerprint_detects_a_deleted_row_a_changed_file_and_a_missing_file(stack):
    target = stack.target()
    before = fingerprint(target)
    assert before == fingerprint(target), "a fingerprint of unchanged data must be stable"
    assert before.problems() == []
    assert before.count("documents") > 0 and before.count("projects") > 0
    assert "documents_project_id_fkey" in before.foreign_keys
    assert before.files_checked == before.count("documents")
    assert {"documents_pkey", "ix_documents_project_id"} <= set(before.indexes_checked)
    assert Fingerprint.from_dict(json.loads(before.to_json())) == before

    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        victim = conn.execute("SELECT max(id) FROM documents WHERE size_bytes > 0").fetchone()
        conn.execute("DELETE FROM documents WHERE id = %s", victim)
        changed, missing = conn.execute(
            "SELECT stored_name FROM documents WHERE size_bytes > 10 ORDER BY id LIMIT 2").fetchall()
    changed_path = stack.uploads_dir / changed[0]
    data = bytearray(changed_path.read_bytes())
    data[0] ^= 0xFF  # same size, different content
    changed_path.write_bytes(bytes(data))
    (stack.uploads_dir / missing[0]).unlink()

    after = fingerprint(target)
    assert after != before
    assert after.missing_files == (missing[0],)
    assert [m.split(":")[0] for m in after.mismatched_files] == [changed[0]]
    diffs = compare(before, after)
    text = "\n".join(diffs)
    assert "documents: " in text and "rows before" in text
    assert "missing files now" in text and missing[0] in text
    assert "mismatched files now" in text and changed[0] in text
    assert "documents per project differ" in text
    assert len(after.problems()) == 2

    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        conn.execute("UPDATE users SET display_name = display_name || 'x'"
                     " WHERE id = (SELECT min(id) FROM users)")
    assert "users: same row count but the rows' content differs" in compare(after, fingerprint(target))


def test_post_checks_and_performance_pass_on_a_healthy_stack_and_fail_when_broken(stack):
    target = stack.target()
    good = post_checks(target, ADMIN_USER, stack.secrets.admin_password)
    assert good.ok, good.failures()
    assert [c.name for c in good.checks] == ["health", "login", "projects", "upload", "download"]
    tls = post_checks(target, ADMIN_USER, stack.secrets.admin_password, upload=False, url=target.public_url)
    assert tls.ok, tls.failures()

    wrong = post_checks(target, ADMIN_USER, "not-the-admin-secret")
    assert not wrong.ok and wrong.failures()[0].name == "login"

    perf = performance(target, ADMIN_USER, stack.secrets.admin_password, requests=20, max_seconds=10)
    assert perf.ok and [t.name for t in perf.timings] == ["health", "projects"]
    assert all(t.requests == 20 and 0 < t.p50_ms <= t.p95_ms <= t.max_ms for t in perf.timings)
    too_strict = performance(target, ADMIN_USER, stack.secrets.admin_password, requests=5,
                             p95_limits_ms={"projects": 0.001})
    assert not too_strict.ok

    stack.services.stop("postgresql")
    try:
        down = post_checks(target, ADMIN_USER, stack.secrets.admin_password)
        assert not down.ok
        assert down.checks[0].name == "health" and not down.checks[0].ok
    finally:
        stack.services.start("postgresql")
