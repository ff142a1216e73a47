"""The run as a Prometheus text file (`metrics.prom`, for node_exporter's textfile collector).

Per drill (labels: `drill`, the test's node id; its `scenario`; `schedule`, the drill's own, not what
a run selected, so that every run adds to the same series): the last time it
passed (from the history, so a failed run does not reset it), and this run's recovery seconds,
user-visible downtime seconds, data loss rows and verdict (1 passed, 0 failed). Written with
prometheus_client's own writer, which replaces the file atomically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from reports.history import Result

FILE = "metrics.prom"
LABELS = ("drill", "scenario", "schedule")


def _time(value: str) -> float | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def registry_for(
    results: list[Result], last_success: dict[str, str], run_id: str, earlier: Sequence[Result] = ()
) -> CollectorRegistry:
    """This run's results; `earlier` (the latest result of each other drill in the history) adds
    their last success, so a weekly run's file still says when the quarterly drills last passed."""
    registry = CollectorRegistry()
    success = Gauge(
        "mks_drill_last_success_timestamp_seconds",
        "Unix time the drill last passed (any run in the history)",
        LABELS,
        registry=registry,
    )
    recovery = Gauge(
        "mks_drill_recovery_seconds",
        "Recovery time of the drill in this run: fault until every post check passed",
        LABELS,
        registry=registry,
    )
    downtime = Gauge(
        "mks_drill_downtime_seconds",
        "User-visible downtime of the drill in this run",
        LABELS,
        registry=registry,
    )
    loss = Gauge(
        "mks_drill_data_loss_rows",
        "Committed canary rows missing after the recovery",
        LABELS,
        registry=registry,
    )
    verdict = Gauge(
        "mks_drill_verdict", "Verdict of the drill in this run: 1 passed, 0 failed", LABELS, registry=registry
    )
    run = Gauge("mks_drill_run_info", "The run these figures are from", ("run_id",), registry=registry)
    run.labels(run_id).set(1)
    for r in results:
        labels = (r.drill_id, r.scenario, r.schedule)  # stable across runs: one series per drill
        verdict.labels(*labels).set(1 if r.verdict == "passed" else 0)
        if r.recovery_seconds is not None:
            recovery.labels(*labels).set(r.recovery_seconds)
        if r.downtime_seconds is not None:
            downtime.labels(*labels).set(r.downtime_seconds)
        if r.data_loss_rows is not None:
            loss.labels(*labels).set(r.data_loss_rows)
    ran = {r.drill_id for r in results}
    for r in [*results, *(e for e in earlier if e.drill_id not in ran)]:
        when = _time(last_success.get(r.drill_id, ""))
        if when is not None:
            success.labels(r.drill_id, r.scenario, r.schedule).set(when)
    return registry


def write(
    folder: Path,
    results: list[Result],
    last_success: dict[str, str],
    run_id: str,
    earlier: Sequence[Result] = (),
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    write_to_textfile(str(path), registry_for(results, last_success, run_id, earlier))
    return path
