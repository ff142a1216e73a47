"""run_gate: parse a runbook, run its procedures on sandbox stacks, judge them, write the reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fixtures.stack import Stack
from gate.coverage import coverage
from gate.orchestrator import Gate
from gate.parser import parse_file
from gate.report import GateResult, judge, write_reports
from gate.types import GateError

__all__ = ["GateError", "GateResult", "run_gate"]


def run_gate(runbook_path: str, make_stack: Callable[..., Stack], reports_dir: Path | None = None,
             scenarios_dir: Path | None = None, seed_scale: float = 0.2,
             only: Callable[[str], bool] | None = None, drilled: bool = True, lang: str = "ja") -> GateResult:
    """Parse, run every procedure on sandbox stacks from `make_stack`, judge, and write the reports.

    The reports land in reports_dir (Markdown, HTML in `lang`, JSON).
    """
    started = time.monotonic()
    runbook = parse_file(runbook_path)
    gate = Gate(runbook, make_stack, seed_scale=seed_scale,
                reports_dir=Path(reports_dir) if reports_dir is not None else None, drilled=drilled)
    procedures = gate.run(only)
    blocks = [b for p in procedures for b in p.blocks]
    project = Path(__file__).resolve().parent.parent
    scenarios = Path(scenarios_dir) if scenarios_dir else project / "scenarios"
    ran = {key for p in procedures for key in p.sections}
    unselected = [s.key for s in runbook.sections if s.shell_blocks and s.key not in ran] if only else []
    result = judge(runbook, procedures, coverage(runbook, blocks, scenarios), gate.events,
                   time.monotonic() - started, unselected)
    if reports_dir is not None:
        stem = "runbook-gate-" + Path(runbook_path).stem.split("(")[0].replace(" ", "_")
        write_reports(result, Path(reports_dir), stem, lang)
    return result
