"""The runbook's scripts under the faults they exist for, and the test procedure without production.

- 自動復旧スクリプト (scripts/auto-recovery.sh): the backend stopped (systemctl is-active says inactive); it
  must bring the service back. Variants: a healthy system (it must leave the backend alone), the backend
  running with its database down (a restart cannot help: it must not report success), the backend unable
  to start (its YAML broken: every attempt fails, and it must say so with a non-zero exit).
- 完全復旧スクリプト (scripts/full-recovery.sh): its drill's fault (database dropped and uploads wiped),
  from backups in the runbook's names: the newest data back, the files the backup's, services running.
Each is judged by `exit status tells the truth`: exit 0 only when the backend is healthy (200 with the
app's health expectation), a non-zero exit only when it is not, and never a last line that says failure
with exit 0.
- テスト手順: a test procedure works on its copy (/opt/mks_test, mks_test), so its outcome cannot depend on
  the production instance. It runs on a healthy system (as every procedure without a drill) and once
  more on a fresh system whose production is down (mks-backend and nginx stopped, mks_db closed to
  connections); a command that passes on the first and fails on the second reads production: its
  check says production's state, not the copy's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from fixtures.engine.drill import DrillRun
from fixtures.engine.faults import DeleteRowsByMistake, Details, FaultDidNotBite, StopPostgres
from fixtures.stack import Stack
from gate import drilled
from gate.parser import Section
from gate.runner import FAILED, NOT_RUN, PASSED, BlockOutcome, CommandOutcome, run_session
from gate.stacks import Stacks
from gate.types import Context, OracleResult, ProcedureOutcome
from recovery import health

AUTO, FULL, TEST = "自動復旧スクリプト", "完全復旧スクリプト", "テスト手順"
SCRIPT_TIMEOUT = 180.0  # the original's three attempts of `sleep 30` fit; a script that hangs does not
FAILURE_LINE = re.compile(r"(?i)\bfail(?:ed|s|ure)?\b|\berror\b|失敗|異常|できな")
TRUTH = "exit status tells the truth"


# ---- faults ------------------------------------------------------------------------------------

@dataclass
class StopBackend:
    """mks-backend stopped (an operator's stop, or a crash past the restart limit): is-active says so."""

    name: str = "backend-stopped"
    label: str = "mks-backend 停止 (systemctl is-active: inactive)"

    def inject(self, stack: Stack) -> Details:
        pid = stack.services.main_pid("mks-backend")
        stack.services.stop("mks-backend")
        return {"stopped_pid": pid}

    def confirm(self, stack: Stack, details: Details) -> str:
        status = stack.services.status("mks-backend")
        if status.is_active:
            raise FaultDidNotBite(f"mks-backend is still {status.active_state}")
        return f"mks-backend is {status.active_state} (pid {details['stopped_pid']} stopped)"


@dataclass
class NothingBroken:
    """No fault: the script's first branch (a healthy service is left alone)."""

    name: str = "nothing-broken"
    label: str = "障害なし (正常稼働中)"

    def inject(self, stack: Stack) -> Details:
        return {}

    def confirm(self, stack: Stack, details: Details) -> str:
        answer = health.backend(stack.target())
        if not answer.ok:
            raise FaultDidNotBite(f"the system is not healthy to begin with: {answer.detail[:120]}")
        return "healthy"


@dataclass
class DamagedThenServerDown:
    """Rows deleted, the uploads wiped with stale files left, then PostgreSQL stopped: a full recovery must
    start the server, replace the damaged database (not only create a missing one) and clear the folder."""

    name: str = "damaged-then-server-down"
    label: str = "データ破損・アップロード消失 (古い不要ファイルが残存) の後に PostgreSQL 停止"

    def inject(self, stack: Stack) -> Details:
        rows, files = DeleteRowsByMistake(), drilled.WipeUploadsLeaveStale()
        found = {"rows": rows.inject(stack), "files": files.inject(stack)}
        found["confirmed"] = f"{rows.confirm(stack, found['rows'])}; {files.confirm(stack, found['files'])}"
        return {**found, "server": StopPostgres().inject(stack)}

    def confirm(self, stack: Stack, details: Details) -> str:
        return f"{details['confirmed']}; {StopPostgres().confirm(stack, details['server'])}"


# ---- oracles -----------------------------------------------------------------------------------

def _script_outcome(blocks: list[BlockOutcome]) -> CommandOutcome | None:
    ran = [c for b in blocks for c in b.commands if c.ran is not None]
    return ran[-1] if ran else None


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def judge_exit(script: CommandOutcome | None, healthy: bool, health_detail: str) -> OracleResult:
    """Exit 0 only when healthy, non-zero only when not, and no failure printed last with exit 0."""
    if script is None or script.status == NOT_RUN:
        return OracleResult(TRUTH, False, "the script did not run")
    if script.exit_code is None:
        return OracleResult(TRUTH, False, f"the script did not end ({script.reason}): it tells nothing")
    last = _last_line(script.output)
    state = "healthy" if healthy else f"not healthy ({health_detail[:120]})"
    if script.exit_code == 0 and FAILURE_LINE.search(last):
        return OracleResult(TRUTH, False, f"printed failure and exited 0 (`{last[:100]}`); "
                            f"the system is {state}")
    if script.exit_code == 0 and not healthy:
        return OracleResult(TRUTH, False, f"reported success (exit 0, `{last[:80]}`) while the system "
                            f"is {state}")
    if script.exit_code != 0 and healthy:
        return OracleResult(TRUTH, False, f"exited {script.exit_code} while the system is healthy "
                            f"(a false alarm: `{last[:80]}`)")
    return OracleResult(TRUTH, True, f"exit {script.exit_code}, the system {state} (`{last[:80]}`)")


def exit_status_truthful(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    answer = health.backend(run_.target)
    return [judge_exit(_script_outcome(ctx.blocks), answer.ok, answer.detail)]


def healthy_left_alone(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """On a healthy system the script exits at once: a restart would be an outage of its own."""
    status = run_.stack.services.status("mks-backend")
    before = ctx.notes.get("backend_pid")
    ok = status.is_active and status.pid == before
    return [OracleResult("a healthy backend is left alone", ok,
                         f"pid {before} still serving" if ok else
                         f"restarted a healthy backend (pid {before} -> {status.pid}, "
                         f"{status.active_state})")]


def refusal_reported(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """A procedure that refuses under a bad backup says so: one of its commands exits non-zero (one that
    puts the old state back and then exits 0 leaves the operator believing the recovery was done)."""
    return [refusal_said(ctx.blocks)]


def refusal_said(blocks: list[BlockOutcome]) -> OracleResult:
    failed = [c for b in blocks for c in b.commands if c.status == FAILED]
    if failed:
        c = failed[0]
        said = f"exit {c.exit_code}" if c.exit_code is not None else c.reason
        return OracleResult("the refusal is reported", True,
                            f"line {c.line} `{c.original.splitlines()[0][:60]}` fails ({said})")
    return OracleResult("the refusal is reported", False,
                        "every command exited 0: the procedure did not say that the recovery did not happen")


def prepare_nothing(run_: DrillRun, ctx: Context) -> None:
    """No backups to prepare: the auto-recovery script restarts, it restores nothing."""


def prepare_full(run_: DrillRun, ctx: Context) -> None:
    """Dumps and uploads archives in the runbook's names, an older and a newest of each."""
    drilled.prepare_database(run_, ctx)
    drilled.prepare_uploads(run_, ctx)


# ---- which procedure ---------------------------------------------------------------------------

def is_test_procedure(title: str) -> bool:
    return title.rsplit(" > ", 1)[-1].split(". ", 1)[-1] == TEST


# ---- テスト手順 without production -------------------------------------------------------------

def production_down(stack: Stack) -> str:
    """The production instance unavailable; the server (where the test's own database lives) running."""
    for service in ("nginx", "mks-backend"):
        stack.services.stop(service)
    with stack.pg.connect("postgres") as conn:
        conn.execute("ALTER DATABASE mks_db WITH ALLOW_CONNECTIONS false")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'mks_db'")
    return "mks-backend and nginx stopped, mks_db closed to connections"


def reads_production(healthy: list[BlockOutcome], down: list[BlockOutcome]) -> OracleResult:
    """Commands that pass with production up and fail with it down (the same procedure, the same system)."""
    before = {(c.line, c.original): c for b in healthy for c in b.commands}
    changed = []
    for block in down:
        for c in block.commands:
            was = before.get((c.line, c.original))
            if was is not None and was.status == PASSED and c.status == FAILED:
                down_as = c.exit_code if c.exit_code is not None else c.reason
                changed.append(f"line {c.line} `{c.original.splitlines()[0][:70]}` (exit 0 with production "
                               f"up, {down_as} with it down)")
    name = "the test works on its copy, not production"
    if changed:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
        return OracleResult(name, False, f"reads the production instance: {shown}")
    ran = sum(1 for b in down for c in b.commands if c.ran is not None)
    return OracleResult(name, True, f"the same outcome with production down ({ran} commands ran)")


def check_test_procedure(stacks: Stacks, outcome: ProcedureOutcome, sections: list[Section]) -> None:
    """The procedure once more on a fresh system whose production is down; the verdict joins `outcome`."""
    started = time.monotonic()
    outcome.mode = "healthy system, then again with production down (a test must work on its copy)"
    with stacks.borrowed(f"isolation-{stacks.sessions + 1}") as stack:
        text = "\n".join(b.text for s in sections for b in s.shell_blocks)
        if "/backup/" in text:
            stacks.ensure_backups(stack, force=True)
        what = production_down(stack)
        stacks.events.append(f"stack {stack.name}: {what}")
        name = stacks.next_session("isolation")
        blocks = run_session(sections, stacks.check_session(stack), name)
    result = reads_production(outcome.blocks, blocks)
    outcome.health.checks.append(f"oracle {result.name}: {'ok' if result.ok else 'FAILED'} ({result.detail})")
    if not result.ok:
        outcome.health.ok = False
        outcome.health.problems.append(f"oracle {result.name}: {result.detail}")
    outcome.seconds = round(outcome.seconds + time.monotonic() - started, 1)
