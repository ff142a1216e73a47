"""The gate's own vocabulary, below every other module of the package: its error, what a plan is made of
(oracles, variants, the context they share) and what a procedure's run ends in.

Nothing here imports another module of the gate except the runner's command outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gate.runner import FAILED, BlockOutcome

if TYPE_CHECKING:  # the drill engine is heavy: the light modules of the gate import this one
    from fixtures.engine.drill import DrillRun


class GateError(Exception):
    """The gate itself could not do its work (not a runbook defect: those are results)."""


@dataclass
class OracleResult:
    name: str
    ok: bool
    detail: str


@dataclass
class Context:
    """What a plan's prepare learns and its oracles need (one per drilled run)."""

    notes: dict[str, Any] = field(default_factory=dict)
    blocks: list[BlockOutcome] = field(default_factory=list)
    oracles: list[OracleResult] = field(default_factory=list)


Oracle = Callable[["DrillRun", Context], list[OracleResult]]


@dataclass
class Variant:
    """The same procedure with a bad backup (or another state it must survive)."""

    name: str
    prepare: Callable[[DrillRun, Context], None]
    fault: Any
    judges: tuple[Oracle, ...]
    env: Callable[[DrillRun], dict[str, str]] | None = None


@dataclass
class Plan:
    drill: str  # name in scenarios.drills.CATALOGUE
    prepare: Callable[[DrillRun, Context], None] | None = None  # None: the drill's own
    fault: Any = None  # None: the drill's own
    oracles: tuple[Oracle, ...] = ()
    env: Callable[[DrillRun], dict[str, str]] | None = None  # extra environment of the blocks
    variants: tuple[Variant, ...] = ()


@dataclass
class Health:
    ok: bool
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class ProcedureOutcome:
    title: str
    stack: str
    sections: list[str]
    blocks: list[BlockOutcome]
    health: Health
    seconds: float
    mode: str = "healthy system (not drilled: no fault defined)"

    @property
    def ok(self) -> bool:
        return self.health.ok and all(b.status != FAILED for b in self.blocks)


def first_error(exc: BaseException) -> str:
    """`Type: first line of the message`: one line for a report."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
