"""`python -m gate RUNBOOK`: the runbook gate for a reviewer, without pytest.

    python -m gate "docs/15_復旧手順(Recovery-Procedures).md"
    python -m gate path/to/runbook.md --mutants            # the mutation self-test instead
    python -m gate path/to/runbook.md --mutants --limit 5  # a bounded sample
    python -m gate path/to/runbook.md --section PITR       # only the procedures whose title has PITR
    python -m gate path/to/runbook.md --changed-since origin/main  # only what changed, and what uses it
    python -m gate RUNBOOK --drill-app fixtures/apps/kiroku/profile.yml --section ポイントインタイム

Exit status: 0 every section passed (with --mutants: every mutant that can change the outcome was
killed), 1 one failed (or a mutant survived), 2 usage error. Stacks live under the sandbox base folder
and are all removed at the end, also after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gate.changes import changed, runbook_at
from gate.orchestrator import selected
from gate.parser import parse_file
from gate.report import section_lines
from gate.run import run_gate
from gate.types import GateError

USAGE_ERROR, FAILED_EXIT = 2, 1


@contextmanager
def stacks(base_dir: Path | None, service_user: str | None, app: Any = None) -> Iterator[Any]:
    """A make_stack(name, seed_scale) like the pytest fixture's (app: an AppProfile, None for the
    default); every stack made is torn down."""
    from fixtures.apps.seeding import seed_stack
    from fixtures.stack.composed import StackSettings
    from fixtures.stack.local import LocalStack
    from fixtures.stack.sandbox import default_base_dir, reap_abandoned

    settings = StackSettings(base_dir=(base_dir or default_base_dir()).resolve(), service_user=service_user,
                             **({"app": app} if app is not None else {}))
    reap_abandoned(settings.base_dir)
    made: list[LocalStack] = []

    def make(name: str = "primary", seed_scale: float | None = 0.2) -> LocalStack:
        stack = LocalStack(settings, name)
        made.append(stack)
        stack.up()
        if seed_scale is not None:
            seed_stack(stack, float(seed_scale))
        return stack

    try:
        yield make
    finally:
        for stack in reversed(made):
            try:
                stack.down()
            except Exception as exc:  # tear the others down too
                logging.getLogger(__name__).warning("stack %s did not go down: %s", stack.name, exc)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gate", description="Run a runbook's procedures in "
                                     "sandbox stacks, drilled under their faults, and judge every section.")
    parser.add_argument("runbook", help="the Markdown runbook")
    parser.add_argument("--mutants", action="store_true", help="the mutation self-test of the gate")
    parser.add_argument("--limit", type=int, default=None, help="with --mutants: at most this many")
    parser.add_argument("--section", "--only", dest="section", action="append", default=[], metavar="TEXT",
                        help="only the procedures whose title, or one of whose sections' titles, contains "
                        "TEXT, with the checks of their verification sections (repeatable; default: all)")
    parser.add_argument("--changed-since", default=None, metavar="REF",
                        help="only the procedures whose blocks changed since the git ref, and those that use "
                        "a variable or a file they make (with --section: both)")
    parser.add_argument("--lang", choices=("ja", "en"), default="ja",
                        help="the HTML report's language (default: ja, as the REC reports)")
    parser.add_argument("--reports", default="reports/out", help="reports folder (default: reports/out)")
    parser.add_argument("--base-dir", default=None, help="sandbox base folder")
    parser.add_argument("--service-user", default=None, help="account for the servers when run as root")
    parser.add_argument("--drill-app", default=None, metavar="PATH",
                        help="the app profile (YAML) of the app under drill (default: the reference backend)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return USAGE_ERROR if exc.code else 0
    path = Path(args.runbook)
    if not path.is_file():
        print(f"python -m gate: {args.runbook}: no such file", file=sys.stderr)
        return USAGE_ERROR
    app = None
    if args.drill_app:
        from fixtures.apps.profile import ProfileError, load_profile

        try:
            app = load_profile(args.drill_app)
        except ProfileError as exc:
            print(f"python -m gate: --drill-app: {exc}", file=sys.stderr)
            return USAGE_ERROR
    only = None
    if args.section or args.changed_since:
        titles = selected(parse_file(str(path)), args.section)
        if args.section and not titles:
            print(f"python -m gate: --section {' / '.join(args.section)}: no procedure or section of "
                  f"{args.runbook} matches", file=sys.stderr)
            return USAGE_ERROR
        if args.changed_since:
            try:
                direct, behind = changed(parse_file(str(path)), runbook_at(path, args.changed_since))
            except GateError as exc:
                print(f"python -m gate: {exc}", file=sys.stderr)
                return USAGE_ERROR
            print(f"changed since {args.changed_since}: {', '.join(direct) or 'no procedure'}"
                  + (f"; using what they make: {', '.join(behind)}" if behind else ""))
            titles += direct + behind
        only = set(titles).__contains__
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    reports = Path(args.reports).resolve()
    with stacks(Path(args.base_dir) if args.base_dir else None, args.service_user, app) as make:
        if args.mutants:
            from gate.mutants import run_mutants, write_mutation_report

            report = run_mutants(str(path.resolve()), make, reports, limit=args.limit)
            written = write_mutation_report(report, reports)
            print("\n".join(report.lines()))
            print(f"report: {written}")
            real = [r for r in report.survivors if not r.mutant.equivalent]
            return FAILED_EXIT if real else 0
        result = run_gate(str(path.resolve()), make, reports, only=only, lang=args.lang)
    print("\n".join(section_lines(result)))
    print(f"Runbook gate: {result.verdict}")
    return 0 if result.passed else FAILED_EXIT


if __name__ == "__main__":
    sys.exit(main())
