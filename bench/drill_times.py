"""The drills' recovery times (the REC reports' 復旧時間) and the run's wall time, two checkouts side by side.

Each run is a subprocess, in the checkout's own folder (its code imported from there), of

    python -m pytest -p no:cacheprovider -q scenarios -m MARKER --drill-forecast=off \
        --drill-reports <a fresh temp dir> -n 0

timed from start to exit; the checkouts alternate (the order flips every run) so that the machine's
other load falls on both alike. Every drill's recovery and downtime seconds are read from the run's
records/*.json (recovery_seconds, probe.downtime_seconds: what its REC report says; older checkouts have
no metrics.prom). A run that did not pass is reported and left out. Medians per drill, the ratio
after / before, and the wall time's are printed and written as JSON.

    .venv/bin/python bench/drill_times.py --before /work/wt-old --after . --runs 3 \
        [--marker quarterly] [--keyword 'database-crash or ...'] [--json bench/out/drill_times.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DRILL = re.compile(r"\[([^\]]+)\]$")


def one_run(checkout: Path, marker: str,
            keyword: str = "") -> tuple[bool, float, dict[str, dict[str, float]], str]:
    """(passed, wall seconds, {drill: {recovery, downtime}}, pytest's last line)."""
    reports = Path(tempfile.mkdtemp(prefix="drill-times-"))
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "scenarios", "-m", marker,
            "--drill-forecast=off", f"--drill-reports={reports}", "-n", "0",
            *(["-k", keyword] if keyword else [])]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.monotonic()
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    times: dict[str, dict[str, float]] = {}
    for record in (reports / "records").glob("*.json"):  # what the REC reports are made from
        data = json.loads(record.read_text(encoding="utf-8"))
        drill = DRILL.search(str(data.get("drill_id", "")))
        probe = data.get("probe") or {}
        found = {"recovery": data.get("recovery_seconds"), "downtime": probe.get("downtime_seconds")}
        for kind, value in found.items():
            if drill and isinstance(value, int | float):
                times.setdefault(drill[1], {})[kind] = float(value)
    shutil.rmtree(reports, ignore_errors=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return done.returncode == 0, round(seconds, 1), times, last


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the older checkout")
    parser.add_argument("--after", type=Path, default=Path("."), help="the newer checkout (default: here)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--marker", default="quarterly")
    parser.add_argument("--keyword", default="", help="only the drills pytest -k selects")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for n in range(args.runs):
        order = list(sides) if n % 2 == 0 else list(reversed(sides))
        for name in order:
            passed, seconds, times, last = one_run(sides[name], args.marker, args.keyword)
            results[name].append({"passed": passed, "seconds": seconds, "times": times, "last": last})
            verdict = "passed" if passed else "FAILED"
            print(f"run {n + 1}: {name} {verdict} in {seconds} s: {last}", flush=True)
    summary: dict[str, Any] = {"marker": args.marker, "checkouts": {k: str(v) for k, v in sides.items()},
                               "wall_s": {}, "drills": {}}
    for name, runs in results.items():
        good = [r for r in runs if r["passed"]]
        summary["wall_s"][name] = median([r["seconds"] for r in good])
        for run in good:
            for drill, values in run["times"].items():
                for kind, value in values.items():
                    summary["drills"].setdefault(drill, {}).setdefault(f"{kind}_{name}", []).append(value)
    for values in summary["drills"].values():
        for key in list(values):
            values[key] = median(values[key])
        for kind in ("recovery", "downtime"):
            before, after = values.get(f"{kind}_before"), values.get(f"{kind}_after")
            if before and after:
                values[f"{kind}_ratio"] = round(after / before, 2)
    before_wall, after_wall = summary["wall_s"]["before"], summary["wall_s"]["after"]
    if before_wall and after_wall:
        summary["wall_ratio"] = round(after_wall / before_wall, 2)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "runs": results}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
