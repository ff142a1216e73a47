"""The seeder: deterministic, realistic (Japanese names, hidden and empty files, empty projects), linear."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from fixtures.apps.reference.seeding import SeedPlan
from fixtures.stack.postgres import APP_DB

DIGEST_SQL = {
    "users": "SELECT md5(string_agg(concat_ws('|', id, username, display_name, role), ',' ORDER BY id))"
    " FROM users",
    "projects": "SELECT md5(string_agg(concat_ws('|', id, name, description, owner_id), ',' ORDER BY id))"
    " FROM projects",
    "documents": "SELECT md5(string_agg(concat_ws('|', id, project_id, filename, stored_name, sha256,"
    " size_bytes), ',' ORDER BY id)) FROM documents",
}


def test_the_plan_grows_linearly_with_the_scale():
    small, large = SeedPlan.for_scale(2), SeedPlan.for_scale(20)
    assert large.documents == 10 * small.documents
    assert large.projects == 10 * small.projects
    with pytest.raises(ValueError):
        SeedPlan.for_scale(0)


def test_scale_500_plans_at_least_a_gigabyte():
    plan = SeedPlan.for_scale(500)
    upload_bytes = plan.documents * plan.mean_file_bytes * 39 / 40  # one in forty files is empty
    database_bytes = plan.documents * 200 + plan.projects * plan.description_bytes
    # the estimate leaves out indexes and row overhead; scale 500 measured 1.08 GB in all
    assert upload_bytes + database_bytes >= 0.9e9


def _digest(stack) -> dict[str, str]:
    with psycopg.connect(stack.pg.conninfo(APP_DB)) as conn:
        digest = {table: conn.execute(sql).fetchone()[0] for table, sql in DIGEST_SQL.items()}
        rows = conn.execute("SELECT stored_name, sha256 FROM documents ORDER BY id").fetchall()
    files = hashlib.sha256()
    for stored_name, sha in rows:
        assert hashlib.sha256((stack.uploads_dir / stored_name).read_bytes()).hexdigest() == sha, stored_name
        files.update(f"{stored_name}:{sha}\n".encode())
    digest["files"] = files.hexdigest()
    return digest


@pytest.mark.stack
def test_the_same_scale_gives_the_same_data_on_two_stacks(stack_factory):
    first = stack_factory("first", seed_scale=0.3)
    second = stack_factory("second", seed_scale=0.3)
    assert _digest(first) == _digest(second)
    with psycopg.connect(first.pg.conninfo(APP_DB)) as conn:
        japanese_sql = "SELECT count(*) FROM documents WHERE filename ~ '[ぁ-んァ-ン一-龥]'"
        japanese = conn.execute(japanese_sql).fetchone()[0]
        empty_projects = conn.execute(
            "SELECT count(*) FROM projects p"
            " WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.project_id = p.id)"
        ).fetchone()[0]
        empty_files = conn.execute("SELECT count(*) FROM documents WHERE size_bytes = 0").fetchone()[0]
    hidden = [p for p in first.uploads_dir.rglob(".*") if p.is_file()]
    assert japanese > 0 and empty_projects > 0 and empty_files > 0 and hidden
