"""The flake check: run one marker N times as the test command does, and report every failure and why.

Each run is a subprocess of the test command's pytest with its defaults (two pytest-xdist workers,
`MKS_DRILL_WORKERS` as scripts/test.sh reads it), a fresh reports folder and a JUnit file:

    python -m pytest -p no:cacheprovider -n 2 -m MARKER --drill-reports <fresh dir> --junitxml <file>

A run passes when pytest exits 0 and its JUnit file names no failure and no error. Every failed
test is listed with its run, its id and the first lines of its reason; a run that ends without a
JUnit file or with pytest's INTERNALERROR (an xdist worker that crashed) is listed with its output's
tail. Failed runs' reports and output are kept in bench/out/flake/ (git-ignored); the summary is
printed and, with --json, written. The exit status is 1 when any run failed: the budget is zero.

    .venv/bin/python bench/flake_check.py -m quarterly --runs 20 [--json bench/out/flake.json]
        [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from recovery.commands import run
from recovery.errors import CommandError

ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "bench" / "out" / "flake"
RUN_TIMEOUT = 3600.0


def failures_in(junit: Path) -> tuple[int, list[dict[str, str]]]:
    """(tests run, [{test, kind, reason}]) from a JUnit XML file."""
    tree = ET.parse(junit)
    found, count = [], 0
    for case in tree.iter("testcase"):
        count += 1
        for kind in ("failure", "error"):
            for element in case.findall(kind):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                reason = (element.get("message") or element.text or "").strip()
                found.append({"test": name, "kind": kind, "reason": "\n".join(reason.splitlines()[:6])})
    return count, found


def run_once(number: int, marker: str, workers: str, extra: list[str], scratch: Path) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"run-{number:02d}-", dir=scratch))
    junit = folder / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", workers, "-m", marker,
            "--drill-reports", str(folder / "reports"), "--junitxml", str(junit), *extra]
    started = time.monotonic()
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    try:
        result = run(argv, timeout=RUN_TIMEOUT, cwd=ROOT, env=env, check=False)
        returncode, output = result.returncode, result.stdout + result.stderr
    except CommandError as exc:  # a run that hangs is a failure with its reason, not a crash of the check
        returncode, output = -1, f"{exc}\n{exc.stdout}{exc.stderr}"
    seconds = time.monotonic() - started
    tests, failures = failures_in(junit) if junit.is_file() else (0, [])
    if (returncode != 0 and not failures) or "INTERNALERROR" in output:
        failures.append({"test": "(the run)", "kind": "run",
                         "reason": f"pytest exit {returncode}:\n" + "\n".join(output.splitlines()[-15:])})
    outcome = {"run": number, "seconds": round(seconds, 1), "exit": returncode, "tests": tests,
               "failures": failures}
    if failures:
        KEPT.mkdir(parents=True, exist_ok=True)
        kept = KEPT / f"{marker}-{time.strftime('%Y%m%dT%H%M%S')}-run{number:02d}"
        shutil.copytree(folder, kept)
        (kept / "output.txt").write_text(output)
        outcome["kept"] = str(kept)
    shutil.rmtree(folder, ignore_errors=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--marker", required=True, help="weekly, monthly, quarterly, stack, ...")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", default=os.environ.get("MKS_DRILL_WORKERS", "2"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="further pytest arguments (after --)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="mks-drill-flake-"))
    runs = []
    try:
        for number in range(1, args.runs + 1):
            outcome = run_once(number, args.marker, args.workers, args.extra, scratch)
            runs.append(outcome)
            verdict = "passed" if not outcome["failures"] else f"FAILED ({len(outcome['failures'])})"
            print(f"run {number}/{args.runs}: {verdict}, {outcome['tests']} tests, {outcome['seconds']}s",
                  flush=True)
            for failure in outcome["failures"]:
                print(f"    {failure['kind']} {failure['test']}\n        "
                      + failure["reason"].replace("\n", "\n        "), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    failed = [r for r in runs if r["failures"]]
    failures = sum(len(r["failures"]) for r in runs)
    passed = len(runs) - len(failed)
    print(f"\n-m {args.marker}, -n {args.workers}: {passed} of {len(runs)} runs passed, {failures} failures")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"marker": args.marker, "workers": args.workers, "runs": runs},
                                        ensure_ascii=False, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
