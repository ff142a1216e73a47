"""The journal of a recovery action: named, ordered steps, each with its commands and outcome.

One JSON document per action (Chaos Toolkit's run journal is the model); every report is made from
it. Secrets handed to the journal are masked in everything it records.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recovery.commands import CommandResult, RunAs, run
from recovery.errors import CommandError, RecoveryError

MASK = "********"
OUTPUT_LIMIT = 4000


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, or a note that it cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class CommandRecord:
    argv: list[str]
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str


@dataclass
class StepRecord:
    name: str
    title: str  # the runbook's words for the step (Japanese where the runbook is)
    started_at: str = ""
    ended_at: str = ""
    seconds: float = 0.0
    status: str = "pending"  # ok | failed | skipped | planned
    commands: list[CommandRecord] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Step:
    """What a running step offers: run a command (recorded) and note facts."""

    def __init__(self, journal: Journal, record: StepRecord):
        self.journal = journal
        self.record = record

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        run_as: RunAs | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        check: bool = True,
        input_text: str | None = None,
        stdin: int | None = None,
        inherit_env: bool = True,
        stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        try:
            result = run(argv, timeout=timeout, run_as=run_as, env=env, cwd=cwd, check=check,
                         input_text=input_text, stdin=stdin, inherit_env=inherit_env, stderr_line=stderr_line)
        except CommandError as exc:
            self.record.commands.append(
                self.journal.command_record(exc.argv, exc.returncode, 0.0, exc.stdout, exc.stderr)
            )
            raise
        self.record.commands.append(
            self.journal.command_record(
                result.argv, result.returncode, result.seconds, result.stdout, result.stderr
            )
        )
        return result

    def note(self, key: str, value: Any) -> None:
        self.record.details[key] = self.journal.mask(value)


@dataclass
class Journal:
    action: str
    title: str
    target: str
    started_at: str = field(default_factory=now_iso)
    ended_at: str = ""
    status: str = "running"  # running | succeeded | failed | planned
    steps: list[StepRecord] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list, repr=False)
    dry_run: bool = False

    def mask(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, list | tuple):
            return [self.mask(v) for v in value]
        if isinstance(value, dict):
            return {k: self.mask(v) for k, v in value.items()}
        return value

    def command_record(
        self, argv: list[str], returncode: int | None, seconds: float, stdout: str, stderr: str
    ) -> CommandRecord:
        return CommandRecord(
            self.mask(list(argv)),
            returncode,
            round(seconds, 3),
            self.mask(stdout[-OUTPUT_LIMIT:]),
            self.mask(stderr[-OUTPUT_LIMIT:]),
        )

    @contextmanager
    def step(self, name: str, title: str) -> Iterator[Step]:
        """Run one step: timed, recorded; an exception marks it failed and propagates."""
        record = StepRecord(name=name, title=title, started_at=now_iso())
        self.steps.append(record)
        started = time.monotonic()
        try:
            yield Step(self, record)
        except BaseException as exc:
            record.status = "failed"
            record.error = self.mask(str(exc))
            raise
        else:
            record.status = "ok"
        finally:
            record.ended_at = now_iso()
            record.seconds = round(time.monotonic() - started, 3)

    def plan(self, name: str, title: str, **details: Any) -> None:
        """Record a step that a dry run would take, without taking it."""
        self.steps.append(StepRecord(name=name, title=title, status="planned", details=self.mask(details)))

    def finish(self, error: BaseException | None = None) -> Journal:
        self.ended_at = now_iso()
        if error or any(s.status == "failed" for s in self.steps):
            self.status = "failed"
        else:
            self.status = "planned" if self.dry_run else "succeeded"
        return self

    def failed(self, error: BaseException) -> ActionFailed:
        """Finish as failed and return the error to raise: `raise journal.failed(exc) from exc`."""
        self.finish(error)
        return ActionFailed(self, error)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("secrets")
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def failed_step(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status == "failed"), None)


class ActionFailed(RecoveryError):
    """A recovery action stopped at a failed step; the journal says which and why."""

    def __init__(self, journal: Journal, cause: BaseException):
        self.journal = journal
        step = journal.failed_step()
        where = f"step {step.name} ({step.title})" if step else "before its first step"
        super().__init__(f"{journal.action} failed at {where}: {journal.mask(str(cause))}")
