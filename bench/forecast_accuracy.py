"""Forecast accuracy: calibrate at small scales, then restore for real at 4x+ the largest calibration size.

fixtures/engine/calibration.py's method, step for step, on one stack per repetition: seeded at the
smallest calibration scale, `calibrate_stack` (the database restore per scale, the uploads in two
shapes per scale, a base backup and a side server's replay of the calibration's own WAL). Then, on
the same stack, the real thing at `--big` (default 5, i.e. 5x the largest default scale), each
restored `--samples` times (default 2) and the fastest counted, as the calibration counts its points
(load only ever adds time; the other samples are in the raw output):
- database: filler grown to big * 20 MB, backed up, `restore_database`;
- uploads, 1 MB files: big * 120 MB of them, `restore_uploads`;
- uploads, ~10 kB files: big * 6000 of them, `restore_uploads`;
(the database and uploads restores until the service is back, as the forecast counts them: the
safety copy each makes afterwards is left out, the database's made without its safety dump)
- point-in-time recovery: a base backup of the (now larger) cluster, then `--wal-factor` x the
  calibration's WAL written by inserts, a target time, one commit after it, and
  `point_in_time_restore` to that time, timed whole (again from the same base backup and archive).
Each is compared with the calibration's forecast at the sizes measured there; the error is
(forecast - measured) / measured. Medians over the repetitions, and the worst.

    PYTHONPATH=. .venv/bin/python bench/forecast_accuracy.py --reps 3 [--scales 0.3,1] [--big 5]
        [--wal-factor 4] [--samples 2] [--json bench/out/forecast_accuracy.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fixtures.engine import calibration as cal
from fixtures.engine.forecast import Calibration, component_forecast
from fixtures.stack.local import LocalStack, StackSettings
from fixtures.stack.sandbox import default_base_dir
from recovery import pitr
from recovery.integrity import connect

WAL_TABLE = "drill_bench_wal"


def write_wal(stack: LocalStack, nbytes: int) -> None:
    """Insert text rows (like the calibration's filler) until nbytes of WAL are written."""
    with connect(stack.target()) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {WAL_TABLE} (id bigserial PRIMARY KEY, filler text)")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        start = cal.lsn(row[0] if row else "0/0")
        while True:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            if cal.lsn(row[0] if row else "0/0") - start >= nbytes:
                return
            conn.execute(f"INSERT INTO {WAL_TABLE} (filler) SELECT string_agg(md5(random()::text), '')"
                         " FROM generate_series(1, 20000) AS r, generate_series(1, 31) GROUP BY r")


def real_pitr(stack: LocalStack, calibration: Calibration, wal_factor: float, samples: int) -> dict[str, Any]:
    assert calibration.pitr is not None
    base = cal.start_pitr(stack)
    write_wal(stack, int(wal_factor * calibration.pitr.wal_bytes))
    target = stack.target()
    with connect(target) as conn:
        row = conn.execute("SELECT now(), pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        when, end = row[0], cal.lsn(row[1])
        conn.execute(f"INSERT INTO {WAL_TABLE} (filler) VALUES ('after the target')")  # a later commit
    cal.switch_wal(stack)
    runs = []
    for _ in range(samples):  # the same base backup and archive (the recovered server does not archive)
        started = time.monotonic()
        journal = pitr.point_in_time_restore(target, when.astimezone(dt.UTC))
        steps = {step.name: step.seconds for step in journal.steps}
        runs.append((round(time.monotonic() - started, 2), steps))
    seconds, steps = min(runs, key=lambda r: r[0])
    sizes = {"database": cal._base_bytes(Path(base.path)), "wal": end - cal.lsn(base.start_lsn)}
    predicted = component_forecast(calibration, sizes, "pitr")["seconds"]
    return {"base_bytes": sizes["database"], "wal_bytes": sizes["wal"], "measured_s": round(seconds, 2),
            "forecast_s": predicted, "steps": steps, "samples_s": [r[0] for r in runs],
            "ratio_to_calibration": {"base": round(sizes["database"] / calibration.pitr.base_bytes, 2),
                                     "wal": round(sizes["wal"] / calibration.pitr.wal_bytes, 2)}}


def compare(predicted: float, measured: float, **extra: Any) -> dict[str, Any]:
    return {"forecast_s": round(predicted, 2), "measured_s": round(measured, 2),
            "error": round((predicted - measured) / measured, 3), **extra}


def repetition(scales: list[float], big: float, wal_factor: float, samples: int) -> dict[str, Any]:
    stack = LocalStack(StackSettings(), "forecast-bench")
    try:
        stack.up()
        calibration = cal.calibrate_stack(stack, scales)
        largest_db = max(p.database_bytes for p in calibration.points)
        db = cal.measure_database(stack, big, samples)
        fit = calibration.fit("database")
        row: dict[str, Any] = {"calibration": asdict(calibration)}
        row["database"] = compare(fit.at(db.database_bytes), db.database_seconds, bytes=db.database_bytes,
                                  ratio=round(db.database_bytes / largest_db, 2), steps=db.steps,
                                  whole_action_s=round(sum(db.steps.values()), 2))
        up = calibration.fit("uploads")
        for shape in cal.SHAPES:
            measured = cal.measure_uploads(stack, shape, big, samples)
            largest = max((p for p in calibration.uploads if p.shape == shape), key=lambda p: p.bytes)
            row[f"uploads_{shape}"] = compare(
                up.at(measured.bytes, measured.files), measured.seconds, bytes=measured.bytes,
                files=measured.files, samples_s=measured.samples,
                ratio_bytes=round(measured.bytes / largest.bytes, 2),
                ratio_files=round(measured.files / largest.files, 2))
        real = real_pitr(stack, calibration, wal_factor, samples)
        row["pitr"] = compare(real.pop("forecast_s"), real.pop("measured_s"), **real)
    finally:
        stack.down()
    return row


KEYS = ("database", "uploads_large", "uploads_small", "pitr")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scales", default="0.3,1", help="calibration scales (the drill suite's default)")
    parser.add_argument("--big", type=float, default=5.0, help="the scale restored for real")
    parser.add_argument("--wal-factor", type=float, default=4.0,
                        help="WAL replayed by the real PITR, as a multiple of the calibration's")
    parser.add_argument("--samples", type=int, default=2,
                        help="real restores per measurement; the fastest counts, as in the calibration")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    default_base_dir().mkdir(parents=True, exist_ok=True, mode=0o711)
    rows = []
    for n in range(args.reps):
        started = time.monotonic()
        rows.append(repetition(scales, args.big, args.wal_factor, args.samples))
        print(f"rep {n + 1} ({time.monotonic() - started:.0f}s, calibration "
              f"{rows[-1]['calibration']['seconds']:.1f}s): "
              + "; ".join(f"{k} forecast {rows[-1][k]['forecast_s']}s measured {rows[-1][k]['measured_s']}s "
                          f"error {rows[-1][k]['error']:+.1%}" for k in KEYS), flush=True)
    summary: dict[str, Any] = {"scales": scales, "big": args.big, "wal_factor": args.wal_factor,
                               "reps": len(rows),
                               "calibration_seconds": [r["calibration"]["seconds"] for r in rows]}
    for k in KEYS:
        summary[k] = {
            "forecast_median_s": round(statistics.median(r[k]["forecast_s"] for r in rows), 2),
            "measured_median_s": round(statistics.median(r[k]["measured_s"] for r in rows), 2),
            "error_median": round(statistics.median(r[k]["error"] for r in rows), 3),
            "abs_error_max": round(max(abs(r[k]["error"]) for r in rows), 3),
            **{key: v for key, v in rows[0][k].items()
               if key not in ("forecast_s", "measured_s", "error", "steps", "whole_action_s", "samples_s")},
            "forecast_s": [r[k]["forecast_s"] for r in rows],
            "measured_s": [r[k]["measured_s"] for r in rows],
        }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "raw": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
