"""Every drill result of every run, in one SQLite file (`<reports>/history.sqlite` by default).

Writers are the processes that render RECs (pytest-xdist workers, the controller, two sessions on
one reports folder): each write is one short `BEGIN IMMEDIATE` transaction in WAL mode with a busy
timeout, so writers queue instead of failing, and a (run, REC) pair is written once. The schema
version is SQLite's `user_version`; a file of another version, or not ours, is refused with the
reason and left as it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.numbering import ReportError
from reports.schedules import PERIODS, SCHEDULES

SCHEMA_VERSION = 2  # 2: the forecasts and measurements tables (a file of version 1 gets them added)
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
# version 2: every forecast at production size (with its fit, so that it can be evaluated at the size
# of a later measurement) and every measured restore of a component at a larger size
FORECAST_SCHEMA = """
CREATE TABLE IF NOT EXISTS forecasts (
    run_id TEXT NOT NULL,
    rec_id TEXT NOT NULL,
    drill_id TEXT NOT NULL,
    component TEXT NOT NULL,
    made_at TEXT NOT NULL,
    size REAL,
    files REAL,
    seconds REAL NOT NULL,
    low_seconds REAL,
    high_seconds REAL,
    model TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, rec_id, component)
);
CREATE TABLE IF NOT EXISTS measurements (
    measured_at TEXT NOT NULL,
    component TEXT NOT NULL,
    size REAL NOT NULL,
    files REAL,
    seconds REAL NOT NULL,
    source TEXT NOT NULL,
    forecast_seconds REAL,
    low_seconds REAL,
    high_seconds REAL,
    PRIMARY KEY (measured_at, component, source)
);
"""
TABLES = {"runs", "results"}
FORECAST_TABLES = {"forecasts", "measurements"}


class HistoryError(ReportError):
    """The history file cannot be used (another schema version, not a history file)."""


@dataclass(frozen=True)
class ForecastRow:
    """One component's forecast at production size, as a drill's REC carries it."""

    run_id: str
    rec_id: str
    drill_id: str
    component: str
    made_at: str
    size: float | None
    files: float | None
    seconds: float
    low_seconds: float | None
    high_seconds: float | None
    model: str = "{}"  # the component's fit (a, b_seconds_per_gb, c_ms_per_file), JSON

    def at(self, size: float, files: float | None = None) -> tuple[float, float, float] | None:
        """(point, low, high) at another size: the fit's line, the interval scaled with the point;
        None when the fit is not kept (the PITR's has two sizes)."""
        fit = json.loads(self.model or "{}")
        if "b_seconds_per_gb" not in fit:
            return None
        point = fit.get("a", 0.0) + fit["b_seconds_per_gb"] * size / 1e9 \
            + fit.get("c_ms_per_file", 0.0) * (files or 0.0) / 1e3
        ratio = point / self.seconds if self.seconds else 1.0
        low = point if self.low_seconds is None else self.low_seconds * ratio
        high = point if self.high_seconds is None else self.high_seconds * ratio
        return point, low, high


@dataclass(frozen=True)
class Measurement:
    """A component's restore measured for real at a larger size than the calibration's: a drill at
    a larger scale, the bench, or a real restore's journal; the forecast at its size beside it."""

    measured_at: str
    component: str
    size: float
    files: float | None
    seconds: float
    source: str
    forecast_seconds: float | None = None
    low_seconds: float | None = None
    high_seconds: float | None = None

    @property
    def error(self) -> float | None:
        """(forecast - measured) / measured."""
        if self.forecast_seconds is None or not self.seconds:
            return None
        return (self.forecast_seconds - self.seconds) / self.seconds

    @property
    def within_interval(self) -> bool | None:
        if self.low_seconds is None or self.high_seconds is None:
            return None
        return self.low_seconds <= self.seconds <= self.high_seconds


MB = 1024 * 1024
AFTER_RECOVERY = ("safety_copy",)  # made after the service is back: not counted, as the forecast does not


def measurement_from_journal(journal: dict[str, Any], source: str) -> Measurement:
    """A real database restore's journal (recovery's JSON) as a measurement: its steps until the
    service was back, and the live database's size its free space check noted (needed_mb of the
    side database). HistoryError when it is not a succeeded database restore with that note."""
    if journal.get("action") != "database_restore" or journal.get("status") != "succeeded":
        raise HistoryError(f"{source}: not a succeeded database restore's journal "
                           f"(action {journal.get('action')!r}, status {journal.get('status')!r})")
    steps = journal.get("steps") or []
    notes = [n for s in steps if s.get("name") == "select_backup"
             for n in (s.get("details") or {}).get("free_space") or []
             if any("side database" in part for part in n.get("for", []))]
    if not notes or not isinstance(notes[0].get("needed_mb"), int | float):
        raise HistoryError(f"{source}: its select_backup step notes no side database size (free_space)")
    seconds = sum(float(s.get("seconds") or 0) for s in steps if s.get("name") not in AFTER_RECOVERY)
    return Measurement(journal.get("ended_at", ""), "database", float(notes[0]["needed_mb"]) * MB, None,
                       round(seconds, 3), source)


def forecasts_from(run_id: str, document: dict[str, Any]) -> tuple[ForecastRow, ...]:
    """The forecast rows of a REC's JSON form, one per component (none when it has no forecast)."""
    summary, record = document["summary"], document["record"]
    parts = (record.get("forecast_basis") or {}).get("components") or {}
    if record.get("forecast_seconds") is None:
        return ()
    made = record.get("ended_at", "")
    rows = []
    for component, part in parts.items():
        model = {k: part[k] for k in ("a", "b_seconds_per_gb", "c_ms_per_file") if k in part}
        rows.append(ForecastRow(run_id, summary["rec_id"], summary["drill_id"], component, made,
                                part.get("bytes", part.get("base_bytes")), part.get("files"),
                                float(part.get("seconds", 0.0)), part.get("low_s"), part.get("high_s"),
                                json.dumps(model, sort_keys=True)))
    return tuple(rows)


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
    forecasts: tuple[ForecastRow, ...] = field(default=(), compare=False)  # not a column of results


RESULT_COLUMNS = tuple(f for f in Result.__dataclass_fields__ if f != "forecasts")


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
        forecasts_from(run_id, document),
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
        if version == SCHEMA_VERSION and tables >= TABLES | FORECAST_TABLES:
            return
        if version == 1 and tables >= TABLES:  # readable as it is; a writer adds version 2's tables
            if create:
                self._upgrade(db, 1, FORECAST_SCHEMA)  # version 1 to 2: the forecast tables added
            return
        if version == 0 and not tables:
            if create:
                db.execute("PRAGMA journal_mode=WAL")
                self._upgrade(db, 0, SCHEMA + FORECAST_SCHEMA)
                return
            raise HistoryError(f"{self.path}: empty history")
        if version > SCHEMA_VERSION:
            reason = f"schema version {version} is newer than this harness's {SCHEMA_VERSION}: upgrade it"
        elif version == 0:
            reason = f"not a drill history (tables {', '.join(sorted(tables))}, no schema version)"
        else:
            reason = f"schema version {version} has no migration to {SCHEMA_VERSION}"
        raise HistoryError(f"{self.path}: {reason}; refused, the file is left as it is")

    @staticmethod
    def _upgrade(db: sqlite3.Connection, version: int, schema: str) -> None:
        """Run `schema` and set the current version, when the file is still at `version`: another
        writer may have done it while this one waited for the lock (one statement at a time:
        executescript would commit first)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] == version:
                for statement in filter(str.strip, schema.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
            self._add_forecasts(db, [f for r in results for f in r.forecasts])

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
            self._add_forecasts(db, [f for r in results for f in r.forecasts])

    @staticmethod
    def _add_forecasts(db: sqlite3.Connection, rows: list[ForecastRow]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO forecasts VALUES (:run_id,:rec_id,:drill_id,:component,:made_at,:size,"
            ":files,:seconds,:low_seconds,:high_seconds,:model)",
            [r.__dict__ for r in rows],
        )

    def add_measurement(self, measured: Measurement) -> Measurement:
        """Keep a measured restore beside its forecast: the one it brings, else the newest forecast
        of the component made before it, evaluated at its size (see ForecastRow.at). What was kept."""
        if measured.forecast_seconds is None:
            earlier = [f for f in self.forecasts(measured.component) if f.made_at <= measured.measured_at]
            for row in reversed(earlier):
                found = row.at(measured.size, measured.files)
                if found is not None:
                    measured = dataclasses.replace(measured, forecast_seconds=round(found[0], 3),
                                                   low_seconds=round(found[1], 3),
                                                   high_seconds=round(found[2], 3))
                    break
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO measurements VALUES (:measured_at,:component,:size,:files,:seconds,"
                ":source,:forecast_seconds,:low_seconds,:high_seconds)",
                measured.__dict__,
            )
        return measured

    # ---- reading ---------------------------------------------------------------------------------
    def results(self, drill_id: str | None = None) -> list[Result]:
        where = " WHERE drill_id=?" if drill_id else ""
        query = f"SELECT * FROM results{where} ORDER BY ended_at, rec_id"
        with self.connect() as db:
            rows = db.execute(query, (drill_id,) if drill_id else ()).fetchall()
        return [Result(**{k: row[k] for k in RESULT_COLUMNS}) for row in rows]

    def _rows(self, table: str, order: str, component: str | None) -> list[dict[str, Any]]:
        """A forecast table's rows, of one component or all; none from a version 1 file not written
        since (it has not got the table yet)."""
        with self.connect() as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
            if found.fetchone() is None:
                return []
            where = " WHERE component=?" if component else ""
            return [dict(r) for r in db.execute(f"SELECT * FROM {table}{where} ORDER BY {order}",
                                                (component,) if component else ()).fetchall()]

    def forecasts(self, component: str | None = None) -> list[ForecastRow]:
        """Every forecast kept, oldest first."""
        return [ForecastRow(**r) for r in self._rows("forecasts", "made_at, rec_id", component)]

    def measurements(self, component: str | None = None) -> list[Measurement]:
        """Every measurement with the forecast beside it, oldest first: the forecast's error over time."""
        return [Measurement(**r) for r in self._rows("measurements", "measured_at, source", component)]

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
