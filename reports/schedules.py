"""What a run covered of the runbook's test schedule (毎週 / 毎月 / 毎四半期), and what it may claim.

The drill catalogue registers each drill with the least frequent schedule that runs it
(scenarios/drills.py calls register()). A run evidences a schedule only when every drill of that
schedule ran in it and passed; a drill's markers (every schedule that includes it) say nothing about
what this run did. Which schedule a drill "ran under" comes from the run's `-m` expression: the
widest selected schedule that includes the drill, or none for an ad hoc selection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reports.numbering import ReportError

SCHEDULES = ("weekly", "monthly", "quarterly")  # as fixtures.engine.drill.SCHEDULES
PERIODS = {
    "weekly": dt.timedelta(days=7),
    "monthly": dt.timedelta(days=31),
    "quarterly": dt.timedelta(days=92),
}
CATALOGUE_MODULE = "scenarios.drills"


class ScheduleError(ReportError):
    """A drill registered twice with different facts, or an unknown schedule."""


@dataclass(frozen=True)
class Registered:
    name: str
    scenario: str
    schedule: str  # the least frequent schedule that runs it
    section: str

    def schedules(self) -> list[str]:
        return list(SCHEDULES[SCHEDULES.index(self.schedule) :])


REGISTRY: dict[str, Registered] = {}


def register(name: str, scenario: str, schedule: str, section: str) -> None:
    if schedule not in SCHEDULES:
        raise ScheduleError(f"drill {name}: unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
    entry = Registered(name, scenario, schedule, section)
    known = REGISTRY.get(name)
    if known is not None and known != entry:
        raise ScheduleError(f"drill {name} registered twice with different facts: {known} / {entry}")
    clash = [r.name for r in REGISTRY.values() if r.scenario == scenario and r.name != name]
    if clash:
        raise ScheduleError(f"drills {name} and {clash[0]} have the same scenario {scenario!r}")
    REGISTRY[name] = entry


def catalogue() -> dict[str, Registered]:
    """The registered drills; the catalogue module is imported when nothing registered yet (the
    xdist controller never imports test modules)."""
    if not REGISTRY:
        with contextlib.suppress(ImportError):
            importlib.import_module(CATALOGUE_MODULE)
    return dict(REGISTRY)


def sections(known: dict[str, Registered]) -> dict[str, str]:
    """Runbook section -> the most frequent schedule of the drills that prove it."""
    out: dict[str, str] = {}
    for drill in known.values():
        if drill.section not in out or SCHEDULES.index(drill.schedule) < SCHEDULES.index(out[drill.section]):
            out[drill.section] = drill.schedule
    return out


_PARAM = re.compile(r"\[([^\]]+)\]$")


def drill_of(summary: dict[str, Any], known: dict[str, Registered]) -> Registered | None:
    """The registered drill a REC is of: by the test's parameter id (the drill name), else its scenario."""
    found = _PARAM.search(str(summary.get("drill_id", "")))
    if found and found.group(1) in known:
        return known[found.group(1)]
    return next((r for r in known.values() if r.scenario == summary.get("scenario")), None)


def selected(markexpr: str | None, ad_hoc: bool = False) -> list[str]:
    """The schedules a `-m` expression selects: those whose drills (marked with the schedule and
    `stack`) it matches. No expression selects all, unless the drills were picked by hand (test ids,
    `-k`): then none."""
    if not markexpr:
        return [] if ad_hoc else list(SCHEDULES)
    from _pytest.mark.expression import Expression  # the parser pytest itself uses for -m

    expression = Expression.compile(markexpr)
    out = []
    for schedule in SCHEDULES:
        marks = {schedule, "stack"}
        if expression.evaluate(lambda name, marks=marks, **_: name in marks):
            out.append(schedule)
    return out


def ran_under(drill: Registered | None, chosen: list[str]) -> str | None:
    if drill is None:
        return None
    wider = [s for s in drill.schedules() if s in chosen]
    return wider[-1] if wider else None


@dataclass
class ScheduleCoverage:
    schedule: str
    required: list[str]
    ran: list[str]
    passed: list[str]

    @property
    def missing(self) -> list[str]:
        return [d for d in self.required if d not in self.ran]

    @property
    def failed(self) -> list[str]:
        return [d for d in self.ran if d not in self.passed]

    @property
    def evidenced(self) -> bool:
        return bool(self.required) and not self.missing and not self.failed


@dataclass
class Coverage:
    selected: list[str]
    schedules: list[ScheduleCoverage] = field(default_factory=list)
    ran_under: dict[str, str | None] = field(default_factory=dict)  # rec id -> schedule
    ad_hoc: bool = False  # -k or explicit node ids: the run picked drills itself
    unregistered: list[str] = field(default_factory=list)  # rec ids of drills not in the catalogue

    @property
    def claimed(self) -> list[str]:
        return [c.schedule for c in self.schedules if c.evidenced]

    @property
    def partial(self) -> bool:
        """The run fell short of what it selected: a selected schedule is not evidenced."""
        wanted = [c for c in self.schedules if c.schedule in self.selected]
        return self.ad_hoc or not wanted or any(not c.evidenced for c in wanted)

    def of(self, schedule: str) -> ScheduleCoverage:
        return next(c for c in self.schedules if c.schedule == schedule)

    def to_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "claimed": self.claimed,
            "partial": self.partial,
            "ad_hoc": self.ad_hoc,
            "ran_under": self.ran_under,
            "schedules": {
                c.schedule: {
                    "required": c.required,
                    "ran": c.ran,
                    "passed": c.passed,
                    "missing": c.missing,
                    "failed": c.failed,
                    "evidenced": c.evidenced,
                }
                for c in self.schedules
            },
        }


def coverage(
    summaries: Iterable[dict[str, Any]],
    markexpr: str | None = None,
    ad_hoc: bool = False,
    known: dict[str, Registered] | None = None,
) -> Coverage:
    """What the run's RECs (self-tests excluded by the caller) cover of each schedule."""
    known = catalogue() if known is None else known
    chosen = selected(markexpr, ad_hoc)
    result = Coverage(chosen, ad_hoc=ad_hoc)
    verdicts: dict[str, list[str]] = {}
    for summary in summaries:
        drill = drill_of(summary, known)
        result.ran_under[summary["rec_id"]] = ran_under(drill, chosen)
        if drill is None:
            result.unregistered.append(summary["rec_id"])
            continue
        verdicts.setdefault(drill.name, []).append(str(summary.get("verdict")))
    for schedule in SCHEDULES:
        required = sorted(r.name for r in known.values() if schedule in r.schedules())
        ran = [d for d in required if d in verdicts]
        passed = [d for d in ran if all(v == "passed" for v in verdicts[d])]
        result.schedules.append(ScheduleCoverage(schedule, required, ran, passed))
    return result
