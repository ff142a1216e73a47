"""The drill framework itself: probe and canary arithmetic, the forecast fit, settings parsing, the
record, the schedule markers, and (on one stack) the verdict's time and forecast limbs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fixtures.engine.drill import SCHEDULES, DrillFailed
from fixtures.engine.faults import KillBackendWorkers
from fixtures.engine.forecast import Calibration, CalibrationPoint, Forecaster, ForecastError, fit, forecast
from fixtures.engine.plugin import RECORD_KEY, parse_bytes, parse_levels
from fixtures.engine.probes import AvailabilityProbe, CanaryRow, ProbeError, downtime, loss_summary
from reports.model import LEVELS, DrillRecord
from scenarios import test_drills
from scenarios.drills import BACKEND_WORKERS, CATALOGUE, sabotaged


def test_downtime_runs_from_the_first_failure_to_the_first_success_after_the_last():
    ok = lambda t: (t, True, 200, 1.0)  # noqa: E731
    bad = lambda t: (t, False, 502, 1.0)  # noqa: E731
    assert downtime([ok(0.0), ok(0.1)]) == 0.0
    assert downtime([ok(0.0), bad(0.1), bad(0.2), ok(0.3), bad(0.4), ok(0.5), ok(0.6)]) == pytest.approx(0.4)
    assert downtime([ok(0.0), bad(0.1), bad(0.3)]) == pytest.approx(0.2)  # still down at the end


def test_the_probe_refuses_an_interval_over_100_ms():
    with pytest.raises(ProbeError):
        AvailabilityProbe(lambda: ("https://127.0.0.1:1", "/dev/null"), 0.0, interval=0.2)


def test_data_loss_counts_only_rows_committed_before_the_fault():
    rows = [CanaryRow(n, 100.0 + n) for n in range(1, 6)]  # committed at 101 .. 105
    kept_all = loss_summary(rows, {1, 2, 3, 4, 5}, fault_wall=105.5, interval=0.05)
    assert (kept_all.committed, kept_all.lost_rows, kept_all.lost_seconds) == (5, 0, 0.0)
    lost_tail = loss_summary(rows, {1, 2, 3}, fault_wall=105.5, interval=0.05)
    assert (lost_tail.lost_rows, lost_tail.lost_ids, lost_tail.lost_seconds) == (2, [4, 5], 1.5)
    table_gone = loss_summary(rows, None, fault_wall=104.0, interval=0.05)  # rows 5 came after the fault
    assert (table_gone.committed, table_gone.lost_rows, table_gone.lost_seconds) == (4, 4, 3.0)


def test_the_fit_is_least_squares_and_never_optimistic():
    exact = fit([(100, 2.0), (300, 4.0), (500, 6.0)])
    assert (exact.a, exact.b) == pytest.approx((1.0, 0.01))
    # a slope below zero, or a negative fixed cost: refitted through the origin, an upper bound of
    # the per-byte cost (each point's seconds per byte is one) weighted towards the largest point;
    # no longer the smallest point's seconds per byte, fixed cost and all (issue 14: a forecast 20x
    # too high under load)
    noisy = fit([(100, 3.0), (200, 2.5)])
    assert noisy.a == 0 and noisy.b == pytest.approx(800 / 50000) and noisy.note
    clamped = fit([(100, 0.5), (200, 1.5)])  # a = -0.5: no negative fixed cost
    assert clamped.a == 0 and clamped.b == pytest.approx(350 / 50000) and clamped.note
    with pytest.raises(ForecastError):
        fit([(100, 1.0), (100, 2.0)])


def test_forecast_adds_the_components_and_keeps_the_fixed_steps_out_of_the_slope():
    # the database's data steps take 0.5 s at 10 MB and 1.5 s at 30 MB, plus 3 s of fixed steps
    points = [CalibrationPoint(0.3, 10**7, 10**6, 3.5, 0.2, 3.0),
              CalibrationPoint(1, 3 * 10**7, 3 * 10**6, 4.5, 0.6, 3.0)]
    result = forecast(Calibration(points), {"database": 1e9, "uploads": 1e8}, ["database", "uploads"])
    database = 3.0 + 1e9 * (1.0 / 2e7)
    uploads = 1e8 * (0.4 / 2e6)
    assert result.seconds == pytest.approx(database + uploads, abs=0.1)
    assert set(result.basis["components"]) == {"database", "uploads"} and len(result.basis["points"]) == 2


def test_settings_parse_sizes_and_level_overrides():
    assert parse_bytes("20GB") == 20e9 and parse_bytes("1.5 GiB") == 1.5 * 2**30 and parse_bytes("1e6") == 1e6
    assert parse_levels("database-restore=RTO-1, uploads-restore = RTO-24") == {
        "database-restore": "RTO-1", "uploads-restore": "RTO-24"}
    with pytest.raises(pytest.UsageError):
        parse_levels("database-restore=RTO-2")
    with pytest.raises(pytest.UsageError):
        parse_bytes("lots")


def test_every_drill_carries_the_markers_of_every_schedule_that_includes_it():
    tests = (test_drills.test_weekly_drill, test_drills.test_monthly_drill, test_drills.test_quarterly_drill)
    params = [p for test in tests for mark in test.pytestmark if mark.name == "parametrize"
              for p in mark.args[1]]
    assert {p.values[0].name for p in params} == {d.name for d in CATALOGUE}
    for p in params:
        drill = p.values[0]
        marks = {m.name for m in p.marks}
        assert marks == {*SCHEDULES[SCHEDULES.index(drill.schedule):], "stack"}, drill.name
    migration_marks = {m.name for m in test_drills.test_migration_to_a_new_server.pytestmark}
    assert migration_marks == {"quarterly", "stack"}
    assert all(d.level in LEVELS for d in CATALOGUE)
    assert len({d.name for d in CATALOGUE}) == len(CATALOGUE)


def test_a_record_survives_json():
    record = DrillRecord("x", "s", ["monthly", "quarterly"], "RTO-4", "r")
    assert DrillRecord.from_dict(json.loads(record.to_json())) == record


@pytest.mark.stack
def test_the_verdict_fails_on_recovery_time_and_on_the_forecast(stack, drill_runner, drill_settings, request,
                                                                monkeypatch):
    monkeypatch.setitem(LEVELS, "TEST-0", {"rto_seconds": 0.001, "rpo_seconds": 0, "loss_text": "test"})
    strict = dataclasses.replace(drill_settings, levels={BACKEND_WORKERS.name: "TEST-0"}, forecaster=None)
    with pytest.raises(DrillFailed) as caught:
        drill_runner(BACKEND_WORKERS, stack, strict)
    assert "is over the TEST-0 target" in caught.value.record.failure_reason
    assert caught.value.record.data_loss_rows == 0 and caught.value.record.probe.requests > 0

    # a production far too big for RTO-1 at the (synthetic) measured throughput of 1 s per MB
    forecaster = Forecaster(drill_settings.forecaster.settings if drill_settings.forecaster else None,  # type: ignore[arg-type]
                            [0.3, 1], {"database": 1e10, "uploads": 0})
    forecaster._calibration = Calibration([CalibrationPoint(0.3, 10**6, 0, 1.0, 0, 0),
                                           CalibrationPoint(1, 2 * 10**6, 0, 2.0, 0, 0)])
    drill = sabotaged(BACKEND_WORKERS, fault=KillBackendWorkers(), forecast=("database",))
    with pytest.raises(DrillFailed) as caught:
        drill_runner(drill, stack, dataclasses.replace(drill_settings, forecaster=forecaster))
    record = caught.value.record
    assert record.forecast_seconds == pytest.approx(10000, rel=0.01)
    assert "forecast recovery time 10000s" in record.failure_reason
    assert request.node.stash[RECORD_KEY] is record
    path = dict(request.node.user_properties)["drill_record"]
    text = Path(path).read_text(encoding="utf-8")
    saved = json.loads(text)
    assert saved["verdict"] == "failed" and saved["forecast_seconds"] == record.forecast_seconds
    assert not any(secret in text for secret in stack.secrets.values())
