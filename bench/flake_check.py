"""The flake check: run tests N times as the test command does, and report every failure and why.

Two modes, each run with a JUnit file whose failures and errors are listed with their reasons:

- `-m MARKER`: one marker in this checkout, as the test command's pytest runs it (two pytest-xdist
  workers, `MKS_DRILL_WORKERS` as scripts/test.sh reads it), a fresh reports folder per run:

      python -m pytest -p no:cacheprovider -n 2 -m MARKER --drill-reports <fresh dir> --junitxml <file>

- `--suite`: the flake budget of the whole suite. Each run is CI's test stage (`.ci/run` without its
  container stage: `bash scripts/test.sh --junitxml=<file> -p no:cacheprovider`) in a fresh
  `git clone` of the current commit in a temporary folder, with its own virtual environment and its
  own TMPDIR (so the sandboxes' base folder and the cluster template are made anew, as on a new
  machine). `--hog [N]` runs a CPU hog pinned to one core during the last N runs (all runs when N
  is omitted), to shake races loose. Uncommitted changes are not in the runs.

A run passes when its command exits 0 and its JUnit file names no failure and no error; a run that
ends without a JUnit file or with pytest's INTERNALERROR (an xdist worker that crashed) is listed
with its output's tail. Every test that failed at least once is listed with the runs it failed in;
each run's wall time is given. Failed runs' reports and output are kept in bench/out/flake/
(git-ignored); the summary is printed and, with --json / --markdown, written. The exit status is 1
when any run failed: the budget is zero.

    .venv/bin/python bench/flake_check.py -m quarterly --runs 20 [--json bench/out/flake.json]
        [-- extra pytest arguments]
    .venv/bin/python bench/flake_check.py --suite --runs 5 --hog 3 --markdown bench/out/flake-suite.md
        [-- extra arguments of scripts/test.sh, e.g. -k probe]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recovery.commands import run, spawn
from recovery.errors import CommandError

ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "bench" / "out" / "flake"
RUN_TIMEOUT = 3600.0
HOG = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"

Run = dict[str, Any]


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


def skipped_in(junit: Path) -> int:
    return sum(1 for case in ET.parse(junit).iter("testcase") if case.find("skipped") is not None)


def pytest_seconds(junit: Path) -> float:
    """pytest's own time (the wall time of a suite run adds the clone's set-up: its venv)."""
    return round(sum(float(suite.get("time", 0)) for suite in ET.parse(junit).iter("testsuite")), 1)


def _execute(argv: list[str], cwd: Path, env: dict[str, str], junit: Path) -> Run:
    """Run one command to its end (or its timeout) and judge it by its exit status and JUnit file."""
    started = time.monotonic()
    try:
        result = run(argv, timeout=RUN_TIMEOUT, cwd=cwd, env=env, check=False)
        returncode, output = result.returncode, result.stdout + result.stderr
    except CommandError as exc:  # a run that hangs is a failure with its reason, not a crash of the check
        returncode, output = -1, f"{exc}\n{exc.stdout}{exc.stderr}"
    seconds = time.monotonic() - started
    tests, failures = failures_in(junit) if junit.is_file() else (0, [])
    skipped = skipped_in(junit) if junit.is_file() else 0
    in_pytest = pytest_seconds(junit) if junit.is_file() else None
    if (returncode != 0 and not failures) or "INTERNALERROR" in output:
        failures.append({"test": "(the run)", "kind": "run",
                         "reason": f"exit {returncode}:\n" + "\n".join(output.splitlines()[-15:])})
    return {"seconds": round(seconds, 1), "pytest_seconds": in_pytest, "exit": returncode, "tests": tests,
            "skipped": skipped, "failures": failures, "output": output}


def _keep(outcome: Run, folder: Path, label: str) -> Run:
    """Keep a failed run's folder and output; the run's record without its output."""
    output = outcome.pop("output")
    if outcome["failures"]:
        KEPT.mkdir(parents=True, exist_ok=True)
        kept = KEPT / f"{label}-{time.strftime('%Y%m%dT%H%M%S')}-run{outcome['run']:02d}"
        shutil.copytree(folder, kept, symlinks=True, ignore=shutil.ignore_patterns(".venv", ".git", "tmp"))
        (kept / "output.txt").write_text(output)
        outcome["kept"] = str(kept)
    return outcome


def run_once(number: int, marker: str, workers: str, extra: list[str], scratch: Path) -> Run:
    folder = Path(tempfile.mkdtemp(prefix=f"run-{number:02d}-", dir=scratch))
    junit = folder / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", workers, "-m", marker,
            "--drill-reports", str(folder / "reports"), "--junitxml", str(junit), *extra]
    outcome = {"run": number, **_execute(argv, ROOT, {"PYTHONDONTWRITEBYTECODE": "1"}, junit)}
    outcome = _keep(outcome, folder, marker)
    shutil.rmtree(folder, ignore_errors=True)
    return outcome


def current_commit() -> tuple[str, bool]:
    """(HEAD's commit, whether the checkout has uncommitted changes that the runs will not have)."""
    commit = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], timeout=30).stdout.strip()
    dirty = bool(run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                     timeout=60).stdout.strip())
    return commit, dirty


def run_suite_once(number: int, commit: str, workers: str, extra: list[str], scratch: Path,
                   hog: bool) -> Run:
    """CI's test stage in a fresh clone of `commit`, with a TMPDIR of its own."""
    folder = scratch / f"run-{number:02d}"
    folder.mkdir(mode=0o755)
    clone, junit = folder / "clone", folder / "junit.xml"
    # a short TMPDIR, as /tmp is: the tests' sandboxes below it must keep PostgreSQL's socket path
    # within the 107 bytes of a Unix socket (a TMPDIR inside the scratch folder did not)
    tmp = Path(tempfile.mkdtemp(prefix=f"mksf{number}-", dir="/tmp"))
    tmp.chmod(0o1777)  # as /tmp: the servers' account makes its sandboxes' base folder here
    run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], timeout=600)
    run(["git", "-C", str(clone), "checkout", "-q", "--detach", commit], timeout=600)
    argv = ["bash", "scripts/test.sh", f"--junitxml={junit}", "-p", "no:cacheprovider", *extra]
    env = {"MKS_DRILL_WORKERS": workers, "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"}
    for variable in ("VIRTUAL_ENV", "MKS_DRILL_VENV", "PYTHONPATH"):  # the clone's own venv, not ours
        env[variable] = ""
    with hogging(hog):
        outcome = {"run": number, "hog": hog, **_execute(argv, clone, env, junit)}
    outcome = _keep(outcome, folder, "suite")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return outcome


@contextmanager
def hogging(on: bool) -> Iterator[None]:
    """A process that spins on one core (the last one this process may use) for as long as it lasts."""
    if not on:
        yield
        return
    core = max(os.sched_getaffinity(0))
    hog = spawn([sys.executable, "-c", HOG, str(core)])
    try:
        yield
    finally:
        hog.kill()
        hog.wait(timeout=10)


def flaky_tests(runs: list[Run]) -> dict[str, list[tuple[int, str]]]:
    """test -> [(run, first line of its reason)] for every test that failed at least once."""
    found: dict[str, list[tuple[int, str]]] = {}
    for outcome in runs:
        for failure in outcome["failures"]:
            first = (failure["reason"].splitlines() or [failure["kind"]])[0]
            found.setdefault(failure["test"], []).append((outcome["run"], first))
    return found


def markdown(runs: list[Run], title: str, facts: dict[str, str]) -> str:
    """The budget's summary: each run (load, wall time, counts) and every test that failed once."""
    failed = [r for r in runs if r["failures"]]
    under_load = sum(1 for r in runs if r.get("hog"))
    verdict = "met" if not failed else "missed"
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += [f"- runs: {len(runs)} ({under_load} under a CPU hog on one core); "
              f"failed runs: {len(failed)}; budget 0: {verdict}", "",
              "| run | CPU hog | wall time | of it pytest | tests | skipped | failures | exit |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['run']} | {'yes' if r.get('hog') else 'no'} | {_duration(r['seconds'])} "
                     f"| {_duration(r.get('pytest_seconds'))} | {r['tests']} | {r.get('skipped', 0)} "
                     f"| {len(r['failures'])} | {r['exit']} |")
    flaky = flaky_tests(runs)
    lines += ["", "## Tests that failed at least once", ""]
    if not flaky:
        lines.append("None.")
    else:
        lines += ["| test | failed in runs | first reason |", "|---|---|---|"]
        for test, where in sorted(flaky.items(), key=lambda item: (-len(item[1]), item[0])):
            reason = where[0][1].replace("|", "\\|")[:200]
            lines.append(f"| `{test}` | {', '.join(str(n) for n, _ in where)} | {reason} |")
    kept = [r["kept"] for r in runs if r.get("kept")]
    if kept:
        lines += ["", "Failed runs' output and reports: " + ", ".join(f"`{k}`" for k in kept)]
    return "\n".join(lines) + "\n"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s"


def _print_run(outcome: Run, total: int) -> None:
    verdict = "passed" if not outcome["failures"] else f"FAILED ({len(outcome['failures'])})"
    load = ", under the CPU hog" if outcome.get("hog") else ""
    print(f"run {outcome['run']}/{total}: {verdict}, {outcome['tests']} tests, {outcome['seconds']}s{load}",
          flush=True)
    for failure in outcome["failures"]:
        print(f"    {failure['kind']} {failure['test']}\n        "
              + failure["reason"].replace("\n", "\n        "), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("-m", "--marker", help="weekly, monthly, quarterly, stack, ...")
    mode.add_argument("--suite", action="store_true",
                      help="the whole test stage of .ci/run, each run in a fresh clone of HEAD")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", default=os.environ.get("MKS_DRILL_WORKERS", "2"))
    parser.add_argument("--hog", type=int, nargs="?", const=-1, default=0, metavar="N",
                        help="--suite: a CPU hog pinned to one core during the last N runs (all without N)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the summary as Markdown here")
    parser.add_argument("extra", nargs="*", help="further pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.hog and not args.suite:
        parser.error("--hog goes with --suite")
    hogged = args.runs if args.hog < 0 else min(args.hog, args.runs)
    scratch = Path(tempfile.mkdtemp(prefix="mks-drill-flake-"))
    scratch.chmod(0o755)  # the servers' account (as root: postgres) runs from the clones inside
    facts = {"machine": f"{platform.node()}, {os.cpu_count()} cores",
             "started": time.strftime("%Y-%m-%d %H:%M"),
             "command": shlex.join(["bench/flake_check.py", *(argv if argv is not None else sys.argv[1:])])}
    if args.suite:
        commit, dirty = current_commit()
        facts["commit"] = commit + (" (uncommitted changes of the checkout are not in the runs)"
                                    if dirty else "")
        print(f"flake budget of the suite at {facts['commit']}: {args.runs} runs, {hogged} under the CPU hog",
              flush=True)
    runs: list[Run] = []
    try:
        for number in range(1, args.runs + 1):
            if args.suite:
                hog = number > args.runs - hogged
                outcome = run_suite_once(number, commit, args.workers, args.extra, scratch, hog)
            else:
                outcome = run_once(number, args.marker, args.workers, args.extra, scratch)
            runs.append(outcome)
            _print_run(outcome, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    failed = [r for r in runs if r["failures"]]
    failures = sum(len(r["failures"]) for r in runs)
    what = "the suite" if args.suite else f"-m {args.marker}"
    print(f"\n{what}, -n {args.workers}: {len(runs) - len(failed)} of {len(runs)} runs passed, "
          f"{failures} failures")
    for test, where in flaky_tests(runs).items():
        print(f"    {test}: failed in runs {', '.join(str(n) for n, _ in where)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"marker": args.marker, "suite": args.suite, "workers": args.workers,
                                         **facts, "runs": runs}, ensure_ascii=False, indent=2))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        title = "Flake budget of the suite" if args.suite else f"Flake check of -m {args.marker}"
        args.markdown.write_text(markdown(runs, title, facts), encoding="utf-8")
        print(f"summary: {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
