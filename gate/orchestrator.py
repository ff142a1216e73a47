"""The gate's plan: which stack each procedure runs on, what it needs beforehand, and how it is judged.

A procedure is a level-3 section of the runbook (`### 1. データベースバックアップからの復旧`) with its
subsections; its blocks run in one bash session. Stacks (few, for a bounded wall time):
- main: every procedure that does not replace the server, in the runbook's order; replaced by a
  fresh stack when a procedure leaves it broken beyond a restart (so one defect does not hide others);
- new (+ main as the old server): 新規サーバーへの移行復旧, on a server without the MKS role and database;
- pitr: ポイントインタイムリカバリ, which replaces the data directory (and, as written, kills the server).
Before a procedure that reads /backup/mks, the gate takes the backups the runbook expects (the backup
procedure is another document): db_<ts>.dump (pg_dump -Fc), uploads_<ts>.tar.gz and config_<ts>.tar.gz
(tar relative to /, as the runbook's `tar -xzf ... -C /` assumes), and for PITR a base backup.
After each procedure: every service active, the backend healthy, login and projects answer
(recovery.integrity.post_checks), and the data's fingerprint equal to the one before it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixtures.engine.drill import Drill, DrillSettings
from fixtures.stack import Stack
from gate import appdata, drilled, migration, plans, scripted
from gate.parser import Runbook, Section
from gate.runner import SessionEnv, redact, run_session
from gate.stacks import SERVICES, Stacks, down
from gate.types import GateError, Health, OracleResult, Plan, ProcedureOutcome, Variant
from gate.verification import check_verifications
from recovery import integrity, pitr
from recovery.services import wait_healthy
from recovery.target import AppTarget
from recovery.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

__all__ = ["SERVICES", "Gate", "Health", "ProcedureOutcome", "procedures", "selected", "stack_kind",
           "summarise"]
MAIN, NEW, PITR = "main", "new", "pitr"
MAX_MAIN_STACKS = 3
DRILL_STACKS = itertools.count(1)


def procedures(runbook: Runbook) -> list[tuple[str, list[Section]]]:
    """(title, sections) per level-3 group that holds shell blocks, in the runbook's order."""
    groups: dict[tuple[str, ...], list[Section]] = {}
    for section in runbook.sections:
        if section.shell_blocks:
            groups.setdefault(section.path[:3], []).append(section)
    return [(" > ".join(key[1:] or key), sections) for key, sections in groups.items()]


def selected(runbook: Runbook, texts: list[str]) -> list[str]:
    """The procedures `--section TEXT` selects: TEXT in the procedure's title or in one of its sections'
    (`--section リストア確認` selects the restore it verifies, and so the check of its verification)."""
    return [title for title, sections in procedures(runbook)
            if any(text in title or any(text in s.key for s in sections) for text in texts)]


def stack_kind(title: str) -> str:
    if "新規サーバー" in title:
        return NEW
    if "ポイントインタイム" in title or "PITR" in title:
        return PITR
    return MAIN


class Gate:
    """Runs a parsed runbook on stacks from `make_stack(name, seed_scale)`; their maker tears them down."""

    def __init__(self, runbook: Runbook, make_stack: Callable[..., Stack], seed_scale: float = 0.2,
                 timeout_per_block: float = 90.0, reports_dir: Path | None = None, drilled: bool = True,
                 variants: bool = True, verify: bool = True):
        self.runbook = runbook
        self.reports_dir = reports_dir
        self.drilled = drilled  # False: every procedure on a healthy system (the gate before drills)
        self.drill_stacks = 0
        self.variants = variants  # the data procedures also under bad backups
        self.verify = verify  # the verification sections once more against the states wrong for them
        self.pool = Stacks(make_stack, seed_scale, timeout_per_block)
        self.seed_scale = seed_scale
        self.stacks: dict[str, Stack] = {}
        self.main_count = 0

    # what the pool knows, as the gate's (reports and tests read them here)
    @property
    def events(self) -> list[str]:
        return self.pool.events

    @property
    def secrets(self) -> list[str]:
        return self.pool.secrets

    @property
    def app(self) -> AppTarget | None:
        """What the app profile of the stacks says of the app (the first stack's)."""
        return self.pool.app

    # ---- stacks ------------------------------------------------------------------------------
    def main(self) -> Stack:
        if MAIN not in self.stacks:
            self.main_count += 1
            if self.main_count > MAX_MAIN_STACKS:
                raise GateError(f"more than {MAX_MAIN_STACKS} main stacks were needed")
            name = MAIN if self.main_count == 1 else f"{MAIN}-{self.main_count}"
            self.stacks[MAIN] = self.pool.new(name, self.seed_scale)
        return self.stacks[MAIN]

    def _retire_main(self, why: str) -> None:
        stack = self.stacks.pop(MAIN)
        self.events.append(f"stack {stack.name} retired ({why}); the next procedure gets a fresh one")
        stack.down()

    # ---- the run -----------------------------------------------------------------------------
    def run(self, only: Callable[[str], bool] | None = None) -> list[ProcedureOutcome]:
        """Every procedure (or those whose title `only` accepts); each ends in an outcome, never a crash."""
        outcomes = []
        for title, sections in procedures(self.runbook):
            if only is not None and not only(title):
                continue
            started = time.monotonic()
            try:
                outcomes.append(self._procedure(title, sections))
            except Exception as exc:  # the gate's own error inside one procedure: that procedure's failure
                log.exception("procedure %s stopped the gate", title)
                outcomes.append(self._crashed(title, sections, exc, started))
        if self.verify:
            check_verifications(self.pool, self.runbook.sections, outcomes)
        return outcomes

    def _crashed(self, title: str, sections: list[Section], exc: Exception,
                 started: float) -> ProcedureOutcome:
        text = str(exc).strip()
        message = redact(f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}", self.secrets)
        health = Health(False, [], [f"the procedure could not be judged: {message}"])
        outcome = ProcedureOutcome(title, "-", [s.key for s in sections], [], health,
                                   round(time.monotonic() - started, 1))
        if stack_kind(title) == MAIN and MAIN in self.stacks:
            try:
                self._retire_main(f"error while judging {title}")
            except Exception as down:  # the stack factory tears it down at the end anyway
                log.info("retiring the main stack failed: %s", down)
        return outcome

    def _procedure(self, title: str, sections: list[Section]) -> ProcedureOutcome:
        planned = plans.plan_for(title) if self.drilled else None
        if planned is not None:  # a drill's procedure, or one of the runbook's scripts under its faults
            return self._drilled(title, sections, *planned)
        outcome = self._on_healthy_system(title, sections)
        if self.drilled and scripted.is_test_procedure(title):
            try:
                scripted.check_test_procedure(self.pool, outcome, sections)
            except Exception as exc:  # the gate's own trouble: this procedure's failure, said plainly
                log.exception("the test procedure's check without production")
                outcome.health.ok = False
                outcome.health.problems.append(redact(f"the check without production could not run: "
                                                      f"{type(exc).__name__}: {exc}", self.secrets))
        return outcome

    def _on_healthy_system(self, title: str, sections: list[Section]) -> ProcedureOutcome:
        kind = stack_kind(title)
        started = time.monotonic()
        old = None
        extra_env: dict[str, str] = {}
        text = "\n".join(b.text for s in sections for b in s.shell_blocks)
        if kind == NEW:
            old = self.main()
            self.pool.ensure_backups(old, force=True)
            baseline = self.pool.backed_up[old.name]
            stack = self.stacks.get(NEW) or self._new_server()
        elif kind == PITR:
            stack = self.stacks.get(PITR) or self.pool.new(PITR, self.seed_scale)
            self.stacks[PITR] = stack
            baseline, extra_env["TARGET_TIME"] = self._prepare_pitr(stack)
        else:
            stack = self.main()
            if "/backup/" in text:
                self.pool.ensure_backups(stack)
            baseline = integrity.fingerprint(stack.target())
        extra_env["MKS_CHECK_PASSWORD"] = (old or stack).secrets.admin_password  # for 機能テスト's login
        session = self.pool.session(stack, old, extra_env)
        blocks = run_session(sections, session, self.pool.next_session("session"))
        upload = stack.target().app.upload_path
        allow_added = bool(upload) and str(upload) in text
        # after a migration the admin's password is the old server's (its users table was restored)
        password = (old or stack).secrets.admin_password
        health = self.health(stack, baseline, allow_added, password)
        outcome = ProcedureOutcome(title, stack.name, [s.key for s in sections], blocks, health,
                                   round(time.monotonic() - started, 1))
        if kind == PITR and health.ok:
            self._check_new_timeline(stack, health)
        if kind == NEW and self.drilled and self.variants:
            outcome.mode = "healthy system, then under bad backups of the old server"
            migration.check_migration(self.pool, outcome, sections)
            outcome.seconds = round(time.monotonic() - started, 1)
        if kind == MAIN and not health.ok:
            self._repair_main(stack)
        return outcome

    def _drilled(self, title: str, sections: list[Section], plan: Plan,
                 drill: Drill, timeout: float | None = None) -> ProcedureOutcome:
        """The procedure as the recovery of its drill, on a stack of its own (removed afterwards)."""
        started = time.monotonic()
        self.drill_stacks = next(DRILL_STACKS)  # unique among the gates of one process (mutants)
        stack = self.pool.new(f"drill-{self.drill_stacks}", self.seed_scale, keep_amcheck=True)
        reports = (self.reports_dir or stack.root / "run") / "gate-drills"
        self.pool.sessions += 1

        def session_for(current: Stack, env: dict[str, str]) -> SessionEnv:
            return self.pool.check_session(current, env, timeout)

        try:
            result = drilled.run_drilled(plan, drill, sections, stack, session_for, DrillSettings(reports),
                                         f"drill-{self.drill_stacks}")
        finally:
            down(stack)
        self.events.append(f"{title}: drilled under {result.drill} on {stack.name}: {result.verdict}")
        if self.variants:
            for variant in plan.variants:
                outcome = self._variant(variant, drill, sections, timeout)
                result.checks.append(f"{outcome.name}: {'safe' if outcome.ok else 'HARM'} ({outcome.detail})")
                if not outcome.ok:
                    result.problems.append(f"{outcome.name}: {outcome.detail}")
        health = self._redacted(Health(not result.problems, result.checks, summarise(result.problems)))
        return ProcedureOutcome(title, stack.name, [s.key for s in sections], result.blocks, health,
                                round(time.monotonic() - started, 1),
                                mode=f"under fault: drill {result.drill} ({result.fault})")

    def _variant(self, variant: Variant, drill: Drill, sections: list[Section],
                 timeout: float | None = None) -> OracleResult:
        number = next(DRILL_STACKS)
        try:
            stack = self.pool.new(f"drill-{number}", self.seed_scale, keep_amcheck=True)
        except Exception as exc:
            return OracleResult(f"variant {variant.name}", False, f"no stack: {exc}")
        reports = (self.reports_dir or stack.root / "run") / "gate-drills"

        def session_for(current: Stack, env: dict[str, str]) -> SessionEnv:
            return self.pool.check_session(current, env, timeout)

        try:
            return drilled.run_variant(variant, drill, sections, stack, session_for, DrillSettings(reports),
                                       f"drill-{number}")
        finally:
            down(stack)

    # ---- preconditions -----------------------------------------------------------------------
    def _new_server(self) -> Stack:
        """A stack standing for the new server after OS and packages: no MKS role, no MKS database."""
        self.stacks[NEW] = self.pool.new_server(NEW)
        return self.stacks[NEW]

    def _prepare_pitr(self, stack: Stack) -> tuple[Any, str]:
        """A base backup, the target time, then a commit after it, archived (so the target is reachable)."""
        target = stack.target()
        pitr.base_backup(target)
        baseline = integrity.fingerprint(target)
        time.sleep(1.1)
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        time.sleep(1.1)
        with stack.pg.connect() as conn:
            conn.execute("CREATE TABLE gate_after_target_time (id int)")
            conn.execute("DROP TABLE gate_after_target_time")
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]

            def archived() -> bool:
                last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
                return last is not None and last >= segment

            with contextlib.suppress(WaitTimeout):  # as before: the restore then says what is missing
                wait_until(f"{segment} to be archived", archived, timeout=30, interval=0.2)
        self.events.append(f"stack {stack.name}: base backup, target time {when}, WAL {segment} archived")
        return baseline, when

    # ---- judging -----------------------------------------------------------------------------
    def health(self, stack: Stack, baseline: Any, allow_added: bool = False,
               password: str | None = None) -> Health:
        health = Health(True)
        services = stack.services
        for name in SERVICES:
            status = services.status(name)
            health.checks.append(f"{name}: {status.active_state}")
            if not status.is_active:
                health.ok = False
                health.problems.append(f"{name} is {status.active_state} ({status.detail})")
        target = stack.target()
        if not any(p.startswith("postgresql") for p in health.problems):
            healthy, detail = wait_healthy(target, timeout=15)
        else:
            healthy, detail = False, "PostgreSQL is not running"
        if not healthy:
            health.ok = False
            health.problems.append(f"backend not healthy: {detail[:200]}")
            fatal = drilled.server_fatal(target.database.log_file)
            if fatal and not services.is_active("postgresql"):
                health.problems.append("server log: " + fatal)
            return self._redacted(health)
        checks = integrity.post_checks(target, "admin", password or stack.secrets.admin_password,
                                        upload=False)
        for check in checks.checks:
            health.checks.append(f"{check.name}: {'ok' if check.ok else 'FAILED'} ({check.detail})")
            if not check.ok:
                health.ok = False
                health.problems.append(f"post check {check.name}: {check.detail}")
        try:
            after = integrity.fingerprint(target)
        except Exception as exc:
            health.ok = False
            health.problems.append(f"fingerprint: {type(exc).__name__}: {str(exc)[:200]}")
            return self._redacted(health)
        known = set(baseline.problems())
        diffs = integrity.compare(baseline, after) + [p for p in after.problems() if p not in known]
        if allow_added:
            diffs = [d for d in diffs if not appdata.upload_grew(d, baseline, after, target)]
        health.checks.append("data: " + ("same as before the procedure" if not diffs else "CHANGED"))
        if diffs:
            health.ok = False
            health.problems += [f"data: {d}" for d in summarise(diffs)]
        return self._redacted(health)

    def _check_new_timeline(self, stack: Stack, health: Health) -> None:
        """A point-in-time recovery ends on a new timeline; a plain restart would stay on the first."""
        with stack.pg.connect() as conn:
            timeline = int(conn.execute("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
                           .fetchone()[0], 16)
        health.checks.append(f"timeline: {timeline}")
        if timeline < 2:
            health.ok = False
            health.problems.append("no point-in-time recovery happened (the server is still on timeline 1)")

    def _redacted(self, health: Health) -> Health:
        health.problems = [redact(p, self.secrets) for p in health.problems]
        health.checks = [redact(c, self.secrets) for c in health.checks]
        return health

    def _repair_main(self, stack: Stack) -> None:
        """Bring the main stack back for the next procedure, or retire it."""
        try:
            for name in SERVICES:
                stack.services.start(name)
            ok, _ = wait_healthy(stack.target(), timeout=15)
        except Exception as exc:
            ok = False
            log.info("repair of %s failed: %s", stack.name, exc)
        if ok:
            self.events.append(f"stack {stack.name}: services started again after an unhealthy procedure")
            self.pool.backed_up.pop(stack.name, None)
        else:
            self._retire_main("unhealthy after a procedure, and a restart did not help")


def summarise(lines: list[str], limit: int = 3) -> list[str]:
    """Lines of one kind ("file missing: a", "file missing: b", ...) beyond `limit` become one line:
    the count and the first few."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        kind, sep, rest = line.partition(": ")
        groups.setdefault(kind if sep else line, []).append(rest if sep else "")
    out = []
    for kind, rests in groups.items():
        if len(rests) <= limit or not any(rests):
            out += [f"{kind}: {r}" if r else kind for r in rests]
        else:
            out.append(f"{kind}: {len(rests)} (first {limit}: {', '.join(rests[:limit])})")
    return out

