"""Properties, with hypothesis, on one stack per test:

(a) whatever the data (unicode names, odd file names, empty files, large-ish files) uploaded through
    the app's upload endpoint, a backup and a restore give back the same fingerprint (an app without
    an upload endpoint skips it, saying so);
(b) interleaving writes, backups, faults and recoveries never loses a committed row beyond what the
    recovery's level allows: nothing after a restart, nothing committed before the backup a
    restore used.

Few examples and steps: each one restores a real database.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql

from fixtures.engine import faults
from fixtures.engine.drill import DrillRun
from fixtures.stack.postgres import APP_DB
from recovery import backups, database, uploads
from recovery.integrity import compare, fingerprint
from recovery.services import auto_recover
from recovery.waiting import wait_until
from reports.model import LEVELS, DrillRecord
from scenarios.drills import DB_RESTORE, recreate_if_dropped

pytestmark = pytest.mark.stack

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
file_names = st.one_of(names, st.sampled_from(["../../etc/passwd", " .hidden", "a b\tc.pdf", "名前.txt",
                                               "x" * 200 + ".bin", "CON", "a/b/c.txt", "..."]))
documents = st.lists(st.tuples(file_names, st.sampled_from([0, 1, 1500, 300_000])), min_size=1, max_size=6)


def next_second(last: list[str]) -> None:
    """Backups are named to the second: wait for a new one."""
    wait_until("the next second", lambda: not last or backups.stamp() != last[-1], timeout=5, interval=0.05)
    last.append(backups.stamp())


@settings(max_examples=3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=documents)
def test_backup_and_restore_give_back_the_same_fingerprint(stack, data):
    target = stack.target()
    app = target.app
    if not app.upload_path or app.relation is None:
        pytest.skip(f"{stack.settings.app.name} has no upload endpoint (or no relation to lose rows of)")
    with stack.client() as client:
        auth = {"Authorization": f"Bearer {stack.login(client)}"}
        for n, (filename, size) in enumerate(data):
            content = (f"{n}:{filename}".encode() * (size // 8 + 1))[:size]
            response = client.post(app.upload_path, headers=auth,
                                   files={"file": (filename, content, "application/octet-stream")})
            assert response.status_code in (201, 400), response.text
    before = fingerprint(target)
    assert before.problems() == []
    next_second(STAMPS)
    database.backup_database(target)
    uploads.backup_uploads(target)
    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:  # lose data and files
        for table in (app.relation.child, app.relation.parent):
            schema, _, name = table.rpartition(".")
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, name)))
    faults.WipeUploads().inject(stack)
    database.restore_database(target, level="RTO-24")
    uploads.restore_uploads(target)
    assert compare(before, fingerprint(target)) == []


STAMPS: list[str] = []


class Ledger(RuleBasedStateMachine):
    """Committed rows of a ledger table, and what each recovery may lose of them."""

    stack = None  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.target = self.stack.target()
        self.committed: set[int] = set()
        self.backed_up: set[int] | None = None
        self.next_id = 1
        with self.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS prop_ledger")
            conn.execute("CREATE TABLE prop_ledger (id integer PRIMARY KEY)")
            conn.execute(f"ALTER TABLE prop_ledger OWNER TO {self.target.database.user}")

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.stack.pg.conninfo(APP_DB), autocommit=True)

    def present(self) -> set[int]:
        with self.connect() as conn:
            if conn.execute("SELECT to_regclass('prop_ledger')").fetchone()[0] is None:
                return set()
            return {r[0] for r in conn.execute("SELECT id FROM prop_ledger").fetchall()}

    @rule(rows=st.integers(1, 20))
    def write(self, rows: int) -> None:
        with self.connect() as conn:
            for _ in range(rows):
                conn.execute("INSERT INTO prop_ledger (id) VALUES (%s)", (self.next_id,))
                self.committed.add(self.next_id)
                self.next_id += 1

    @rule()
    def backup(self) -> None:
        next_second(STAMPS)
        database.backup_database(self.target)
        self.backed_up = set(self.committed)

    @rule(fault=st.sampled_from([faults.StopPostgres("crash"), faults.StopPostgres("immediate")]))
    def database_restart(self, fault: faults.Fault) -> None:  # RTO-1: nothing may be lost
        fault.confirm(self.stack, fault.inject(self.stack))
        database.restart_database(self.target)
        auto_recover(self.target)
        assert self.committed <= self.present(), "a restart lost committed rows"

    @precondition(lambda self: self.backed_up is not None)
    @rule()
    def database_lost_and_restored(self) -> None:  # RTO-24: what came after the backup may go
        started = time.time()
        fault = faults.DropDatabase()
        fault.confirm(self.stack, fault.inject(self.stack))
        record = DrillRecord("property", "", [], "RTO-24", "")
        run = DrillRun(DB_RESTORE, self.stack, record, time.monotonic())
        recreate_if_dropped(run)
        database.restore_database(self.target, level="RTO-24")
        present = self.present()
        assert self.backed_up is not None and self.backed_up <= present, "rows from before the backup lost"
        assert time.time() - started < LEVELS["RTO-24"]["rto_seconds"]
        self.committed = present

    @invariant()
    def healthy(self) -> None:
        with self.stack.client() as client:
            assert self.stack.health(client) == 200


def test_interleaved_faults_never_lose_more_than_the_level_allows(stack):
    Ledger.stack = stack
    run_state_machine_as_test(Ledger, settings=settings(
        max_examples=2, stateful_step_count=4, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
