"""The runbook gate: run a Markdown runbook's own shell blocks in a sandbox stack and judge each section.

    pytest -m runbook --runbook "docs/15_復旧手順(Recovery-Procedures).md"

`run_gate` lives in gate.run (its imports at module level) and is handed out from here when asked for:
the light modules a practice shell uses (gate.mapping, gate.shims) do not load the whole gate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gate.types import GateError

if TYPE_CHECKING:
    from gate.run import GateResult, run_gate

__all__ = ["GateError", "GateResult", "run_gate"]


def __getattr__(name: str) -> Any:
    if name in ("run_gate", "GateResult"):
        from gate import run

        return getattr(run, name)
    raise AttributeError(f"module 'gate' has no attribute {name!r}")
