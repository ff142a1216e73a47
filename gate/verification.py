"""Checks that cannot fail: the runbook's verification sections run once more against a wrong state.

A verification section (リストア確認, ファイル確認, 復旧後の確認手順 and the like) exists to tell a person
that the recovery did not work. The gate gives it a state that is wrong for it (rows of the app profile's
tables missing against the backup, a child row of its relation whose parent is gone, files of its file
store missing or changed, the database stopped so that the backend answers 503, every answer of the
backend late for a check whose comment says it measures response time) and runs the section's blocks
alone:
- it can fail: a command exits non-zero, or its output says something is wrong;
- it only prints numbers for a person to compare: every command it ran only shows something;
- this check cannot fail: it exits 0 and prints nothing alarming; the report says what it missed.
The last two are the procedure's problems (its verification gives no verdict). A section is held
against every state wrong for it, by its title or by what its comments say it checks; one that fails
under one state and exits 0 under another is reported for the one it misses. A state that does not
apply to the app (an orphan without a parent/child relation) is skipped, its reason in the checks.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fixtures.apps.profile import REFERENCE_PROFILE, load_profile
from fixtures.stack import Stack
from gate import appdata, latency
from gate.parser import Section
from gate.runner import DISPLAY_ONLY, FAILED, BlockOutcome, run_session
from gate.stacks import Stacks
from gate.types import ProcedureOutcome
from recovery import integrity
from recovery.target import AppTarget

log = logging.getLogger(__name__)

ALARM = re.compile(r"(?i)\b(?:error|fatal|fail(?:ed|ure)?|unhealthy|refused|cannot|could not|differs?)\b"
                   r"|エラー|失敗|異常")
CAN_FAIL, NUMBERS_ONLY, CANNOT_FAIL = "can fail", "only prints numbers for a person to compare", \
    "this check cannot fail"
SKIPPED = "skipped"


@dataclass(frozen=True)
class WrongState:
    name: str  # {child}: a row of the profile's relation's child table, in words (document)
    sections: tuple[str, ...]  # the last title of the verification sections it is wrong for
    make: Callable[[Stack], str]  # makes the state; returns what is wrong, in words
    needs_backups: bool = False
    needs_relation: bool = False
    claims: re.Pattern[str] | None = None  # a comment that says the section checks this: also held to it
    delay: float = 0.0  # every connection to the backend's port held this long (gate.latency)

    def applies(self, section: Section) -> bool:
        """The section is wrong under this state: by its title, or by what a comment says it checks."""
        if section.path[-1].split(". ", 1)[-1] in self.sections:
            return True
        comments = (line for b in section.shell_blocks for line in b.text.splitlines()
                    if line.lstrip().startswith("#"))
        return self.claims is not None and any(self.claims.search(line) for line in comments)

    def title(self, app: AppTarget) -> str:
        return self.name.format(child=integrity.singular(app.relation.child) if app.relation else "row")

    def skipped(self, app: AppTarget) -> str | None:
        """Why the state does not apply to this app, or None."""
        return appdata.NO_RELATION if self.needs_relation and app.relation is None else None


def _rows_missing(stack: Stack) -> str:
    target = stack.target()
    with integrity.connect(target, "mks_db") as conn:
        table = appdata.first_nonempty(conn, target)
        if table is None:
            raise ValueError(f"none of the app profile's tables has rows ({', '.join(target.app.tables)})")
        before = appdata.count(conn, table)
        deleted = appdata.delete_some(conn, table, 10)
    return f"{deleted} of {before} {integrity.label(table)} rows missing against the backup"


def _orphan(stack: Stack) -> str:
    target = stack.target()
    with integrity.connect(target, "mks_db") as conn:
        child = appdata.orphan_one(conn, target)
    parent = target.app.relation.parent if target.app.relation else "its parent"
    return f"a row of {child} whose {parent} row does not exist (an orphaned foreign key)"


def _uploads(stack: Stack) -> list[Path]:
    return appdata.store_files(stack.target())


def _files_missing(stack: Stack) -> str:
    files = _uploads(stack)
    for path in files[:5]:
        path.unlink()
    return f"5 of {len(files)} uploaded files missing"


def _file_changed(stack: Stack) -> str:
    files = _uploads(stack)
    with open(files[0], "r+b") as handle:  # the same file: owner, mode and size stay
        handle.write(b"X")
    return f"one uploaded file changed ({files[0].name}, same size)"


def _file_extra(stack: Stack) -> str:
    stack.sandbox.write_text(stack.uploads_dir / ".not-in-the-backup", "stale\n", mode=0o640)
    return "a file the backup does not have (hidden)"


def _database_stopped(stack: Stack) -> str:
    stack.services.stop("postgresql")
    return "PostgreSQL stopped: the backend answers 503, the database refuses connections"


SLOW_SECONDS = 5.0  # the corrected runbook allows 2 s


def _slow(stack: Stack) -> str:
    return f"every answer of the backend comes {SLOW_SECONDS:g} s late (an overloaded server)"


DATA, FILES = ("リストア確認", "データ整合性確認"), ("ファイル確認",)
WRONG_STATES = (
    WrongState("rows missing", DATA, _rows_missing, needs_backups=True),
    WrongState("an orphaned {child}", DATA, _orphan, needs_backups=True, needs_relation=True),
    WrongState("files missing", FILES, _files_missing, needs_backups=True),
    WrongState("a file changed", FILES, _file_changed, needs_backups=True),
    WrongState("a stale extra file", FILES, _file_extra, needs_backups=True),
    WrongState("database stopped", ("接続確認", "機能テスト", "パフォーマンス確認"), _database_stopped),
    WrongState("slow responses", ("パフォーマンス確認",), _slow,
               claims=re.compile(r"(?i)レスポンスタイム|レスポンス時間|応答時間|response time|latency"),
               delay=SLOW_SECONDS),
)


@dataclass
class Verdict:
    section: str
    state: str
    result: str  # CAN_FAIL, NUMBERS_ONLY or CANNOT_FAIL
    evidence: str

    @property
    def line(self) -> str:
        return f"verification {self.section} against {self.state}: {self.result} ({self.evidence})"


def judge(section: str, state: str, missed: str, blocks: list[BlockOutcome]) -> Verdict:
    ran = [c for b in blocks for c in b.commands if c.ran is not None]
    failed = [c for c in ran if c.status == FAILED]
    if failed:
        c = failed[0]
        return Verdict(section, state, CAN_FAIL, f"line {c.line} `{c.original.splitlines()[0][:60]}` "
                       f"exits {c.exit_code}")
    alarming = [c for c in ran if ALARM.search(c.output)]
    if alarming:
        c = alarming[0]
        said = ALARM.search(c.output)
        return Verdict(section, state, CAN_FAIL, f"line {c.line} prints `{said.group(0) if said else ''}`")
    if ran and all(DISPLAY_ONLY.match(_one_line(c.original)) for c in ran):
        return Verdict(section, state, NUMBERS_ONLY, f"it exits 0; {len(ran)} commands print what a person "
                       f"must compare, and it missed: {missed}")
    return Verdict(section, state, CANNOT_FAIL, f"it exits 0 and prints nothing alarming; it missed: {missed}"
                   if ran else "none of its commands ran")


def _one_line(command: str) -> str:
    """A multi-line psql -c "..." as one line, its SQL comments dropped (for DISPLAY_ONLY)."""
    kept = [line.split("--", 1)[0].strip() for line in command.splitlines()]
    return re.sub(r'-c "\s+', '-c "', " ".join(part for part in kept if part))


def verification_sections(outcomes: list[ProcedureOutcome], sections: list[Section],
                          state: WrongState) -> list[Section]:
    run = {key for o in outcomes if o.stack != "-" for key in o.sections}  # "-": could not be judged
    return [s for s in sections if s.shell_blocks and state.applies(s) and s.key in run]


def check_verifications(stacks: Stacks, runbook_sections: list[Section],
                        outcomes: list[ProcedureOutcome]) -> list[Verdict]:
    """Every verification section against its wrong state; verdicts land in their procedure's outcome."""
    verdicts = []
    app = stacks.app or load_profile(REFERENCE_PROFILE).to_app_target()  # no stack made: the default app
    for state in WRONG_STATES:
        sections = verification_sections(outcomes, runbook_sections, state)
        if not sections:
            continue
        name, why = state.title(app), state.skipped(app)
        if why:
            verdicts += [Verdict(s.key, name, SKIPPED, why) for s in sections]
            continue
        try:
            verdicts += _against(stacks, state, name, sections)
        except Exception as exc:  # the gate's own trouble: said, not raised
            log.exception("verification against %s", name)
            verdicts += [Verdict(s.key, name, CANNOT_FAIL, f"could not be checked: {exc}")
                         for s in sections]
    _what_it_catches(verdicts)
    for verdict in verdicts:
        outcome = next(o for o in outcomes if verdict.section in o.sections)
        outcome.health.checks.append(verdict.line)
        if verdict.result not in (CAN_FAIL, SKIPPED):
            outcome.health.ok = False
            outcome.health.problems.append(verdict.line)
    return verdicts


def _what_it_catches(verdicts: list[Verdict]) -> None:
    """A miss of a section that fails under other states says so: it checks something, not this."""
    for verdict in verdicts:
        if verdict.result in (NUMBERS_ONLY, CANNOT_FAIL):
            caught = [v.state for v in verdicts if v.section == verdict.section and v.result == CAN_FAIL]
            if caught:
                verdict.evidence += f"; it fails under {', '.join(caught)}, not under this"


def _against(stacks: Stacks, state: WrongState, name: str, sections: list[Section]) -> list[Verdict]:
    with stacks.borrowed(f"verify-{len(stacks.events)}") as stack, contextlib.ExitStack() as held:
        if state.needs_backups:
            stacks.ensure_backups(stack, force=True)
        missed = state.make(stack)
        port = held.enter_context(latency.delayed(stack.backend_port, state.delay)) if state.delay else None
        stacks.events.append(f"stack {stack.name}: {missed}")
        out = []
        for section in sections:
            session = stacks.next_session("verify")
            blocks = run_session([section], stacks.check_session(stack, backend_port=port), session)
            out.append(judge(section.key, name, missed, blocks))
        return out
