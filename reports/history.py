"""Every drill result of every run, in one SQLite file (`<reports>/history.sqlite` by default).

Writers are the processes that render RECs (pytest-xdist workers, the controller, two sessions on
one reports folder): each write is one short `BEGIN IMMEDIATE` transaction in WAL mode with a busy
timeout, so writers queue instead of failing, and a (run, REC) pair is written once. The schema
version is SQLite's `user_version`; a file of another version, or not ours, is refused with the
reason and left as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.numbering import ReportError
from reports.schedules import PERIODS, SCHEDULES

SCHEMA_VERSION = 1
DEFAULT_NAME = "history.sqlite"
REGRESSION_FACTOR = 1.5
REGRESSION_WINDOW = 5  # the last five passing runs
REGRESSION_MIN_RUNS = 3  # a median of fewer is noise
BUSY_SECONDS = 60.0

SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    harness_revision TEXT NOT NULL DEFAULT '',
    runbook_revision TEXT NOT NULL DEFAULT '',
    runbook_sha256 TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    app_profile TEXT NOT NULL DEFAULT '',
    scale TEXT NOT NULL DEFAULT '',
    markexpr TEXT NOT NULL DEFAULT '',
    claimed TEXT NOT NULL DEFAULT '[]',
    partial INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE results (
    run_id TEXT NOT NULL,
    rec_id TEXT NOT NULL,
    drill_id TEXT NOT NULL,
    scenario TEXT NOT NULL DEFAULT '',
    section TEXT NOT NULL DEFAULT '',
    schedule TEXT NOT NULL DEFAULT '',
    ran_under TEXT,
    verdict TEXT NOT NULL,
    recovery_seconds REAL,
    downtime_seconds REAL,
    data_loss_rows INTEGER,
    fault_at TEXT NOT NULL DEFAULT '',
    ended_at TEXT NOT NULL DEFAULT '',
    written_by INTEGER NOT NULL,
    PRIMARY KEY (run_id, rec_id)
);
CREATE INDEX results_by_drill ON results (drill_id, ended_at);
"""
TABLES = {"runs", "results"}


class HistoryError(ReportError):
    """The history file cannot be used (another schema version, not a history file)."""


@dataclass(frozen=True)
class Result:
    run_id: str
    rec_id: str
    drill_id: str
    scenario: str
    section: str
    schedule: str  # the drill's own (least frequent) schedule
    ran_under: str | None
    verdict: str
    recovery_seconds: float | None
    downtime_seconds: float | None
    data_loss_rows: int | None
    fault_at: str
    ended_at: str


def result_from(run_id: str, document: dict[str, Any], ran_under: str | None) -> Result:
    """A history row from a REC's JSON form (its summary and record)."""
    summary, record = document["summary"], document["record"]
    probe = record.get("probe") or {}
    schedule = (record.get("schedule") or [""])[0]
    return Result(
        run_id,
        summary["rec_id"],
        summary["drill_id"],
        summary.get("scenario", ""),
        record.get("runbook_section", ""),
        schedule,
        ran_under,
        summary["verdict"],
        summary.get("recovery_seconds"),
        probe.get("downtime_seconds"),
        summary.get("data_loss_rows"),
        record.get("fault_at", ""),
        record.get("ended_at", ""),
    )


class History:
    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise HistoryError(f"{self.path}: no history yet")
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot open: {exc}") from None
        try:
            db.row_factory = sqlite3.Row
            self._check(db, create=write)
            yield db
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{self.path}: {exc}") from None
        finally:
            db.close()

    def _check(self, db: sqlite3.Connection, create: bool) -> None:
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise HistoryError(
                f"{self.path} is not a drill history (SQLite says: {exc}); left as it is"
            ) from None
        if version == SCHEMA_VERSION and tables >= TABLES:
            return
        if version == 0 and not tables:
            if create:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("BEGIN IMMEDIATE")
                try:
                    # another writer may have created it while this one waited for the lock
                    again = db.execute("PRAGMA user_version").fetchone()[0]
                    if again == 0:  # (executescript would commit first: one statement at a time)
                        for statement in filter(str.strip, SCHEMA.split(";")):
                            db.execute(statement)
                        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                return
            raise HistoryError(f"{self.path}: empty history")
        if version > SCHEMA_VERSION:
            reason = f"schema version {version} is newer than this harness's {SCHEMA_VERSION}: upgrade it"
        elif version == 0:
            reason = f"not a drill history (tables {', '.join(sorted(tables))}, no schema version)"
        else:
            reason = f"schema version {version} has no migration to {SCHEMA_VERSION}"
        raise HistoryError(f"{self.path}: {reason}; refused, the file is left as it is")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")  # takes the write lock now: no upgrade deadlock later
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def add_results(self, results: list[Result], writer: int) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO results VALUES "
                "(:run_id,:rec_id,:drill_id,:scenario,:section,:schedule,:ran_under,:verdict,"
                ":recovery_seconds,:downtime_seconds,:data_loss_rows,:fault_at,:ended_at,:written_by)",
                [{**r.__dict__, "written_by": writer} for r in results],
            )

    def add_run(self, run: dict[str, Any], results: list[Result], writer: int) -> None:
        """The run's row and every result (those written already by workers stay as they are, but
        get the run's final ran_under)."""
        row = {k: run.get(k, "") for k in RUN_COLUMNS}
        row["claimed"] = json.dumps(run.get("claimed", []))
        row["partial"] = int(bool(run.get("partial", True)))
        with self.transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO runs ({','.join(RUN_COLUMNS)}) "
                f"VALUES ({','.join(':' + c for c in RUN_COLUMNS)})",
                row,
            )
            for r in results:
                db.execute(
                    "INSERT OR IGNORE INTO results VALUES "
                    "(:run_id,:rec_id,:drill_id,:scenario,:section,:schedule,:ran_under,:verdict,"
                    ":recovery_seconds,:downtime_seconds,:data_loss_rows,:fault_at,:ended_at,:written_by)",
                    {**r.__dict__, "written_by": writer},
                )
                db.execute(
                    "UPDATE results SET ran_under=? WHERE run_id=? AND rec_id=?",
                    (r.ran_under, r.run_id, r.rec_id),
                )

    # ---- reading ---------------------------------------------------------------------------------
    def results(self, drill_id: str | None = None) -> list[Result]:
        where = " WHERE drill_id=?" if drill_id else ""
        query = f"SELECT * FROM results{where} ORDER BY ended_at, rec_id"
        with self.connect() as db:
            rows = db.execute(query, (drill_id,) if drill_id else ()).fetchall()
        return [Result(**{k: row[k] for k in Result.__dataclass_fields__}) for row in rows]

    def runs(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY started_at, run_id").fetchall()
        return [{**dict(r), "claimed": json.loads(r["claimed"]), "partial": bool(r["partial"])} for r in rows]

    def count(self) -> int:
        with self.connect() as db:
            return int(db.execute("SELECT count(*) FROM results").fetchone()[0])


RUN_COLUMNS = (
    "run_id",
    "started_at",
    "finished_at",
    "harness_revision",
    "runbook_revision",
    "runbook_sha256",
    "provider",
    "app_profile",
    "scale",
    "markexpr",
    "claimed",
    "partial",
)


def regression(result: Result, earlier: list[Result], factor: float = REGRESSION_FACTOR) -> float | None:
    """The median of the last five earlier passing runs when this passing run took more than factor
    times it; None when it did not (or there is too little history to say)."""
    if result.verdict != "passed" or result.recovery_seconds is None:
        return None
    times = [r.recovery_seconds for r in earlier if r.verdict == "passed" and r.recovery_seconds is not None]
    window = times[-REGRESSION_WINDOW:]
    if len(window) < REGRESSION_MIN_RUNS:
        return None
    median = statistics.median(window)
    return median if result.recovery_seconds > factor * median else None


def _parse(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Proven:
    subject: str  # a runbook section, or a schedule
    schedule: str  # the period that applies
    last: dt.datetime | None
    overdue: bool


def last_proven_sections(
    results: list[Result], now: dt.datetime, known: dict[str, str] | None = None
) -> list[Proven]:
    """Per runbook section: when a passing drill last proved it, overdue after the most frequent
    schedule of its drills. `known` (section -> schedule, from the catalogue) adds the sections no
    drill has proven yet."""
    out = []
    sections: dict[str, list[Result]] = {section: [] for section in known or {}}
    for r in results:
        if r.section and not r.drill_id.startswith("tests/"):
            sections.setdefault(r.section, []).append(r)
    for section, rows in sorted(sections.items()):
        schedules = [r.schedule for r in rows] + ([known[section]] if known and section in known else [])
        schedule = min((s for s in schedules if s in SCHEDULES), key=SCHEDULES.index, default="quarterly")
        times = [t for r in rows if r.verdict == "passed" for t in [_parse(r.ended_at)] if t]
        last = max(times, default=None)
        out.append(Proven(section, schedule, last, last is None or now - last > PERIODS[schedule]))
    return out


def last_proven_schedules(runs: list[dict[str, Any]], now: dt.datetime) -> list[Proven]:
    """Per schedule: the last run that evidenced it (ran and passed every drill of it)."""
    out = []
    for schedule in SCHEDULES:
        times = [
            t
            for run in runs
            if schedule in run["claimed"]
            for t in [_parse(run.get("finished_at") or run["started_at"])]
            if t
        ]
        last = max(times, default=None)
        out.append(Proven(schedule, schedule, last, last is None or now - last > PERIODS[schedule]))
    return out
