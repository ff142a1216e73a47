"""Forecast accuracy: calibrate at two small scales, forecast a scale at least 4 times larger, measure it.

fixtures/engine/forecast.py's method, step for step: one stack seeded at the smallest calibration scale,
then `measure(stack, scale)` for each calibration scale (filler grown to scale * PAD_BYTES in the
database and the uploads, backup, restore_database and restore_uploads timed as whole actions), the
Calibration's fits (time = a + b * bytes per component, fixed database steps averaged). Then the same
stack is grown to the big scale and measured the same way; the forecast at the big point's measured
sizes is compared with its measured seconds. Each repetition uses a fresh stack; the medians of the
errors are reported.

    .venv/bin/python bench/forecast_accuracy.py --reps 3 [--scales 0.3,1] [--big 6]
        [--json bench/out/forecast_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fixtures.apps.reference.seeding import SeedPlan, seed
from fixtures.engine.forecast import COMPONENTS, Calibration, measure
from fixtures.stack.local import LocalStack, StackSettings
from fixtures.stack.sandbox import default_base_dir


def repetition(scales: list[float], big: float) -> dict[str, Any]:
    stack = LocalStack(StackSettings(), "forecast-bench")
    started = time.monotonic()
    try:
        stack.up()
        seed(stack, SeedPlan.for_scale(min(scales)))
        points = [measure(stack, s) for s in sorted(scales)]
        calibration = Calibration(points, round(time.monotonic() - started, 3))
        measured = measure(stack, big)
    finally:
        stack.down()
    row: dict[str, Any] = {"points": [asdict(p) for p in points], "big": asdict(measured)}
    total_forecast = total_measured = 0.0
    for component in COMPONENTS:
        size = getattr(measured, f"{component}_bytes")
        seconds = getattr(measured, f"{component}_seconds")
        fit = calibration.fit(component)
        predicted = fit.at(size)
        largest = max(getattr(p, f"{component}_bytes") for p in points)
        row[component] = {
            "bytes": size,
            "size_ratio_to_largest_calibration": round(size / largest, 2),
            "forecast_s": round(predicted, 2),
            "measured_s": seconds,
            "error": round((predicted - seconds) / seconds, 3),
            "fit": {"a_s": round(fit.a, 3), "b_s_per_gb": round(fit.b * 1e9, 2), "note": fit.note},
        }
        total_forecast += predicted
        total_measured += seconds
    row["total"] = {
        "forecast_s": round(total_forecast, 2),
        "measured_s": round(total_measured, 2),
        "error": round((total_forecast - total_measured) / total_measured, 3),
    }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scales", default="0.3,1", help="calibration scales (the drill suite's default)")
    parser.add_argument("--big", type=float, default=6.0, help="the scale forecast and measured")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    default_base_dir().mkdir(parents=True, exist_ok=True, mode=0o711)
    rows = []
    for n in range(args.reps):
        rows.append(repetition(scales, args.big))
        print(
            f"rep {n + 1}: "
            + ", ".join(
                f"{c} forecast {rows[-1][c]['forecast_s']}s measured {rows[-1][c]['measured_s']}s "
                f"error {rows[-1][c]['error']:+.1%}"
                for c in (*COMPONENTS, "total")
            ),
            flush=True,
        )
    summary: dict[str, Any] = {"scales": scales, "big": args.big, "reps": len(rows)}
    for c in (*COMPONENTS, "total"):
        summary[c] = {
            "forecast_median_s": round(statistics.median(r[c]["forecast_s"] for r in rows), 2),
            "measured_median_s": round(statistics.median(r[c]["measured_s"] for r in rows), 2),
            "error_median": round(statistics.median(r[c]["error"] for r in rows), 3),
            "abs_error_max": round(max(abs(r[c]["error"]) for r in rows), 3),
        }
        if c in COMPONENTS:
            summary[c]["size_ratio"] = rows[0][c]["size_ratio_to_largest_calibration"]
            summary[c]["bytes"] = rows[0][c]["bytes"]
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "raw": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
