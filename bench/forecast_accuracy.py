"""Forecast accuracy: calibrate at small scales, then restore for real far beyond the calibration.

fixtures/engine/calibration.py's method, step for step, on one stack per repetition: seeded at the
smallest calibration scale, `calibrate_stack` (the database restore per scale on filler shaped like
the app's tables, each point the fastest of its samples; the uploads in two shapes per scale; a base
backup and a side server's replay of the calibration's own WAL). Then, on the same stack, the real
thing at each of `--far` (multiples of the largest calibration scale; default 4.5, i.e. as the
earlier `--big 4.5`; the far validation is `--far 10,25`: a few GB, minutes per repetition, not for
CI), in increasing order, each restored `--samples` times (default 2) and the fastest counted, as the
calibration counts its points (load only ever adds time; the other samples are in the raw output):
- database: the app-shaped filler grown to that scale, backed up, `restore_database`;
- uploads, 1 MB files: that scale's LARGE_BYTES of them, `restore_uploads`;
- uploads, ~10 kB files: that scale's SMALL_FILES of them, `restore_uploads`;
(the database and uploads restores until the service is back, as the forecast counts them: the
safety copy each makes afterwards is left out, the database's made without its safety dump)
- point-in-time recovery: a base backup of the (now larger) cluster, then `--wal-factor` x the
  calibration's WAL written by inserts, a target time, one commit after it, and
  `point_in_time_restore` to that time, timed whole (again from the same base backup and archive).
Each is compared with the calibration's forecast at the sizes measured there, and with its interval
(from the calibration's samples); the error is (forecast - measured) / measured. Medians over the
repetitions, and the worst, per multiple. With `--history FILE` every measurement is kept beside its
forecast in the drill history (reports/history.py), so the error is tracked over time.

    PYTHONPATH=. .venv/bin/python bench/forecast_accuracy.py --reps 3 [--scales 0.3,1] [--far 10,25]
        [--wal-factor 4] [--samples 2] [--json bench/out/forecast_accuracy.json] [--history FILE]
    tiny smoke (seconds, no meaning): --reps 1 --scales 0.02,0.05 --far 2 --samples 1 --wal-factor 1
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
from reports.history import History, Measurement

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
    predicted = component_forecast(calibration, sizes, "pitr")
    return {"base_bytes": sizes["database"], "wal_bytes": sizes["wal"], "measured_s": round(seconds, 2),
            "forecast_s": predicted["seconds"], "interval": (predicted["low_s"], predicted["high_s"]),
            "steps": steps, "samples_s": [r[0] for r in runs],
            "ratio_to_calibration": {"base": round(sizes["database"] / calibration.pitr.base_bytes, 2),
                                     "wal": round(sizes["wal"] / calibration.pitr.wal_bytes, 2)}}


def compare(predicted: float, measured: float, interval: tuple[float, float] | None = None,
            **extra: Any) -> dict[str, Any]:
    low, high = interval if interval is not None else (predicted, predicted)
    return {"forecast_s": round(predicted, 2), "measured_s": round(measured, 2),
            "error": round((predicted - measured) / measured, 3),
            "interval_s": [round(low, 2), round(high, 2)],
            "within_interval": low <= measured <= high, **extra}


def far_point(stack: LocalStack, calibration: Calibration, scale: float, wal_factor: float,
              samples: int) -> dict[str, Any]:
    """Every component restored for real at `scale`, beside the calibration's forecast."""
    largest_db = max(p.database_bytes for p in calibration.points)
    db = cal.measure_database(stack, scale, samples)
    fit = calibration.fit("database")
    row: dict[str, Any] = {"scale": scale}
    row["database"] = compare(fit.at(db.database_bytes), db.database_seconds,
                              calibration.interval("database", db.database_bytes), bytes=db.database_bytes,
                              ratio=round(db.database_bytes / largest_db, 2), steps=db.steps,
                              samples_s=[round(g + f, 3)
                                         for g, f in zip(db.grown(), db.fixed(), strict=True)],
                              whole_action_s=round(sum(db.steps.values()), 2))
    up = calibration.fit("uploads")
    for shape in cal.SHAPES:
        measured = cal.measure_uploads(stack, shape, scale, samples)
        largest = max((p for p in calibration.uploads if p.shape == shape), key=lambda p: p.bytes)
        row[f"uploads_{shape}"] = compare(
            up.at(measured.bytes, measured.files), measured.seconds,
            calibration.interval("uploads", measured.bytes, measured.files), bytes=measured.bytes,
            files=measured.files, samples_s=measured.samples,
            ratio_bytes=round(measured.bytes / largest.bytes, 2),
            ratio_files=round(measured.files / largest.files, 2))
    real = real_pitr(stack, calibration, wal_factor, samples)
    row["pitr"] = compare(real.pop("forecast_s"), real.pop("measured_s"), real.pop("interval"), **real)
    return row


def repetition(scales: list[float], far: list[float], wal_factor: float, samples: int) -> dict[str, Any]:
    stack = LocalStack(StackSettings(), "forecast-bench")
    try:
        stack.up()
        calibration = cal.calibrate_stack(stack, scales)
        rows = {factor: far_point(stack, calibration, factor * max(scales), wal_factor, samples)
                for factor in sorted(far)}
    finally:
        stack.down()
    return {"calibration": asdict(calibration), "far": rows}


KEYS = ("database", "uploads_large", "uploads_small", "pitr")
SIZE_OF = {"database": "bytes", "uploads_large": "bytes", "uploads_small": "bytes", "pitr": "base_bytes"}


def keep(history_file: Path, rows: list[dict[str, Any]], command: str) -> int:
    """Every measurement beside its forecast in the drill history; how many were kept."""
    store = History(history_file)
    kept = 0
    for n, row in enumerate(rows):
        for factor, point in row["far"].items():
            for key in KEYS:
                got = point[key]
                now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                store.add_measurement(Measurement(
                    now, key.split("_")[0], float(got[SIZE_OF[key]]), got.get("files"), got["measured_s"],
                    f"{command} rep {n + 1} {factor:g}x {key}", got["forecast_s"], *got["interval_s"]))
                kept += 1
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scales", default="0.3,1", help="calibration scales (the drill suite's default)")
    parser.add_argument("--far", default="4.5",
                        help="multiples of the largest calibration scale restored for real (e.g. 10,25)")
    parser.add_argument("--big", type=float, default=None,
                        help="(older form) one scale restored for real: --far big / largest scale")
    parser.add_argument("--wal-factor", type=float, default=4.0,
                        help="WAL replayed by the real PITR, as a multiple of the calibration's")
    parser.add_argument("--samples", type=int, default=2,
                        help="real restores per measurement; the fastest counts, as in the calibration")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--history", type=Path, default=None,
                        help="keep every measurement beside its forecast in this drill history file")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    far = [args.big / max(scales)] if args.big else [float(f) for f in args.far.split(",")]
    default_base_dir().mkdir(parents=True, exist_ok=True, mode=0o711)
    rows = []
    for n in range(args.reps):
        started = time.monotonic()
        rows.append(repetition(scales, far, args.wal_factor, args.samples))
        for factor, point in rows[-1]["far"].items():
            print(f"rep {n + 1} at {factor:g}x ({time.monotonic() - started:.0f}s, calibration "
                  f"{rows[-1]['calibration']['seconds']:.1f}s): "
                  + "; ".join(f"{k} forecast {point[k]['forecast_s']}s [{point[k]['interval_s'][0]}-"
                              f"{point[k]['interval_s'][1]}] measured {point[k]['measured_s']}s "
                              f"error {point[k]['error']:+.1%}" for k in KEYS), flush=True)
    summary: dict[str, Any] = {"scales": scales, "far": far, "wal_factor": args.wal_factor, "reps": len(rows),
                               "calibration_seconds": [r["calibration"]["seconds"] for r in rows]}
    for factor in sorted(far):
        points = [r["far"][factor] for r in rows]
        summary[f"{factor:g}x"] = {k: {
            "forecast_median_s": round(statistics.median(p[k]["forecast_s"] for p in points), 2),
            "measured_median_s": round(statistics.median(p[k]["measured_s"] for p in points), 2),
            "error_median": round(statistics.median(p[k]["error"] for p in points), 3),
            "abs_error_max": round(max(abs(p[k]["error"]) for p in points), 3),
            "within_interval": [p[k]["within_interval"] for p in points],
            **{key: v for key, v in points[0][k].items()
               if key not in ("forecast_s", "measured_s", "error", "steps", "whole_action_s", "samples_s",
                              "within_interval")},
            "forecast_s": [p[k]["forecast_s"] for p in points],
            "measured_s": [p[k]["measured_s"] for p in points],
        } for k in KEYS}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "raw": rows}, indent=2, default=str))
    if args.history:
        print(f"kept {keep(args.history, rows, 'bench/forecast_accuracy.py')} measurements in {args.history}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
