"""Pytest plugin of the runbook gate: `--runbook PATH` and the `runbook` marker.

    pytest -m runbook --runbook "docs/15_復旧手順(Recovery-Procedures).md"

The gate's test (tests/test_gate_runbook.py) runs the runbook given here, else the corrected runbook
in docs/; the run fails when a section fails. Reports go to the reports folder (--drill-reports).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

DEFAULT_RUNBOOK = "docs/15_復旧手順(Recovery-Procedures).md"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mks-drill runbook gate")
    group.addoption("--runbook", dest="runbook", default=None, metavar="PATH",
                    help=f"the Markdown runbook the gate runs (default: {DEFAULT_RUNBOOK})")
    group.addoption("--runbook-changed-since", dest="runbook_changed_since", default=None, metavar="REF",
                    help="gate only the procedures whose blocks changed since the git ref, and those that "
                    "use what they make")
    group.addoption("--runbook-mutants", dest="runbook_mutants", action="store_true", default=False,
                    help="also run the gate's whole mutation self-test on the runbook (~15 s per mutant)")


@pytest.fixture(scope="session")
def runbook_path(pytestconfig: pytest.Config) -> Path:
    """The runbook under test: --runbook, else the corrected runbook of this project."""
    given = pytestconfig.getoption("runbook")
    path = Path(given) if given else pytestconfig.rootpath / DEFAULT_RUNBOOK
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if not path.is_file():
        raise pytest.UsageError(f"--runbook {path}: no such file")
    return path


@pytest.fixture(scope="session")
def runbook_only(pytestconfig: pytest.Config, runbook_path: Path) -> Callable[[str], bool] | None:
    """The procedures --runbook-changed-since selects (None: every procedure)."""
    ref = pytestconfig.getoption("runbook_changed_since")
    if not ref:
        return None
    from gate import GateError
    from gate.changes import changed, runbook_at
    from gate.parser import parse_file

    try:
        direct, behind = changed(parse_file(str(runbook_path)), runbook_at(runbook_path, ref))
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from exc
    return set(direct + behind).__contains__


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "runbook: runs the runbook's own shell blocks in a sandbox")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the gate's reports are, and each runbook's verdict."""
    from gate.report import WRITTEN

    if not WRITTEN:
        return
    terminalreporter.section("runbook gate")
    for verdict, runbook, html_report in WRITTEN:
        terminalreporter.write_line(f"{verdict}: {runbook}")
        terminalreporter.write_line(f"    report: {html_report} (and .md, .json)")
