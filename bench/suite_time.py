"""Drill suite wall time per marker, serial against pytest-xdist on 2 workers, in the same run.

Each run is a subprocess of

    python -m pytest -p no:cacheprovider -q scenarios -m MARKER --drill-forecast=off \
        --drill-reports <a fresh temp dir> [-n 2]

timed from start to exit; serial and parallel alternate (the order flips every run) so that the
machine's other load falls on both alike. A run only counts if pytest exits 0 with no failure or
error: the parallel runs prove there is no clash of ports or paths. A failed run's reports and output
are kept in bench/out/failed-runs/ (git-ignored) and its FAILED lines printed. Medians and the speed-up
(serial / parallel) per marker are printed and written as JSON.

    .venv/bin/python bench/suite_time.py --runs 3 [--markers weekly,monthly,quarterly]
        [--json bench/out/suite_time.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fixtures.stack.sandbox import default_base_dir
from recovery.commands import run

ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "bench" / "out" / "failed-runs"
SUMMARY = re.compile(r"(\d+) (passed|failed|error|errors|skipped|deselected|xfailed|xpassed)")


def suite_once(marker: str, workers: int, scratch: Path) -> dict[str, Any]:
    reports = Path(tempfile.mkdtemp(prefix=f"reports-{marker}-{workers}-", dir=scratch))
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "scenarios",
        "-m",
        marker,
        "--drill-forecast=off",
        "--drill-reports",
        str(reports),
    ]
    if workers > 1:
        argv += ["-n", str(workers)]
    started = time.monotonic()
    result = run(argv, timeout=3600, cwd=ROOT, check=False)
    seconds = time.monotonic() - started
    last = (result.stdout.strip().splitlines() or [""])[-1]
    counts = {kind.rstrip("s"): int(n) for n, kind in SUMMARY.findall(last)}
    ok = result.returncode == 0 and not counts.get("failed") and not counts.get("error")
    # -ra's short summary names what failed; a failed run's reports are kept for its cause
    failures = [line[:300] for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if ok:
        shutil.rmtree(reports, ignore_errors=True)
    else:
        kept = KEPT / reports.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(reports, kept)
        (kept / "pytest-output.txt").write_text(result.stdout + result.stderr)
        failures.append(f"reports and output kept in {kept}")
    return {
        "seconds": round(seconds, 2),
        "ok": ok,
        "returncode": result.returncode,
        "counts": counts,
        "summary": last[-200:],
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--markers", default="weekly,monthly,quarterly")
    parser.add_argument("--budget", type=float, default=3600, help="start no run after this many seconds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    base = default_base_dir()
    base.mkdir(parents=True, exist_ok=True, mode=0o711)
    scratch = Path(tempfile.mkdtemp(prefix="suite-bench-", dir=base))
    began = time.monotonic()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for marker in args.markers.split(","):
            raw[marker] = {"serial": [], "xdist_2": []}
            for n in range(args.runs):
                if n and time.monotonic() - began > args.budget:
                    print(f"budget spent: {marker} after {n} runs", flush=True)
                    break
                order = [("serial", 1), ("xdist_2", 2)]
                if n % 2:
                    order.reverse()
                for side, workers in order:
                    row = suite_once(marker, workers, scratch)
                    raw[marker][side].append(row)
                    print(
                        f"{marker} run {n + 1}: {side} {row['seconds']:.1f}s ok={row['ok']} {row['summary']}",
                        *row["failures"],
                        sep="\n  " if row["failures"] else "",
                        flush=True,
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary: dict[str, Any] = {}
    for marker, sides in raw.items():
        good = {side: [r["seconds"] for r in rows if r["ok"]] for side, rows in sides.items()}
        entry: dict[str, Any] = {
            "runs": {side: len(rows) for side, rows in sides.items()},
            "failed_runs": {side: sum(not r["ok"] for r in rows) for side, rows in sides.items()},
            "tests": sides["serial"][0]["counts"].get("passed") if sides["serial"] else None,
        }
        for side, values in good.items():
            if values:
                entry[f"{side}_median_s"] = round(statistics.median(values), 2)
        if good["serial"] and good["xdist_2"]:
            entry["speedup"] = round(entry["serial_median_s"] / entry["xdist_2_median_s"], 2)
        summary[marker] = entry
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "raw": raw}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
