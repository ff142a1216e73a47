"""One way to write a recovery action: `@action` builds its journal, plans a dry run, ends a failure.

An action's body takes the journal it records into, then the target, then its own arguments, and
returns nothing; the decorated action is called with the target and those arguments (plus
`dry_run`) and returns the finished Journal, or raises ActionFailed carrying it. An action with a
`cli` name is registered for `python -m recovery`, with the command-line options it takes.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recovery import levels
from recovery.journal import Journal
from recovery.target import Target, TargetError

PlanStep = tuple[str, str, str]  # name, title (the runbook's words), what the step would do
# a plan that depends on the target or the arguments: (journal, target, *args, **kwargs) -> None
PlanWriter = Callable[..., None]
Body = Callable[..., None]


def journaled(target: Target, name: str, title: str, body: Callable[[Journal], None],
              *, dry_run: bool = False) -> Journal:
    """Run body(journal) in a new journal: finished when it returns, ActionFailed when it raises."""
    journal = Journal(name, title, target.name, dry_run=dry_run)
    try:
        body(journal)
    except Exception as exc:
        raise journal.failed(exc) from exc
    return journal.finish()


@dataclass(frozen=True)
class Option:
    """One command-line option of an action, and the keyword argument its value becomes."""

    flags: tuple[str, ...]
    argparse: dict[str, Any]
    keyword: str  # the action's parameter
    convert: Callable[[Any], Any] | None = None  # may raise RecoveryError: a usage error

    @property
    def dest(self) -> str:
        return str(self.argparse.get("dest") or self.flags[0].lstrip("-").replace("-", "_"))


def option(*flags: str, keyword: str | None = None, convert: Callable[[Any], Any] | None = None,
           **argparse: Any) -> Option:
    """An option as argparse takes it; its value goes to `keyword` (default: the option's dest)."""
    made = Option(flags, argparse, "")
    return Option(flags, argparse, keyword or made.dest, convert)


def secret_file(path: str) -> str:
    """The secret held in a file (its first line), for options that must never carry it themselves."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TargetError(f"{path}: {exc.strerror}") from None


def aware_time(text: str) -> dt.datetime:
    """A date and time with its time zone, from the command line."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date and time: {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (write +09 or +00)")
    return when


@dataclass(frozen=True)
class Action:
    """A declared action; call it like the function it wraps, without the journal."""

    name: str  # the journal's action name
    title: str  # the journal's title
    body: Body
    plan: Sequence[PlanStep] | PlanWriter = ()
    cli: str | None = None  # the command-line name; None: Python only
    help: str = ""
    options: tuple[Option, ...] = ()
    module: str = field(default="", compare=False)

    def __call__(self, target: Target, *args: Any, dry_run: bool = False, **kwargs: Any) -> Journal:
        def record(journal: Journal) -> None:
            if not dry_run:
                self.body(journal, target, *args, **kwargs)
            elif callable(self.plan):
                self.plan(journal, target, *args, **kwargs)
            else:
                for name, title, what in self.plan:
                    journal.plan(name, title, what=what)

        return journaled(target, self.name, self.title, record, dry_run=dry_run)


_REGISTRY: dict[str, Action] = {}


def action(name: str, title: str, *, plan: Sequence[PlanStep] | PlanWriter = (), cli: str | None = None,
           help: str = "", options: Sequence[Option] = ()) -> Callable[[Body], Action]:
    """Declare body(journal, target, ...) as an action; with `cli`, register it for the command line."""
    def declare(body: Body) -> Action:
        declared = Action(name, title, body, plan, cli, help or title, tuple(options), body.__module__)
        if cli is not None:
            if cli in _REGISTRY:
                raise ValueError(f"two actions named {cli}: {_REGISTRY[cli].module} and {declared.module}")
            _REGISTRY[cli] = declared
        return declared

    return declare


def registered(module: str | None = None) -> list[Action]:
    """The command-line actions (of one module), in the order they were declared."""
    return [a for a in _REGISTRY.values() if module is None or a.module == module]


# options several actions share
BACKUP_OPTION = option("--backup", metavar="PATH", help="this archive instead of the newest valid one")
LEVEL_OPTION = option("--level", default="RTO-24", choices=levels.NAMES)
