"""新規サーバーへの移行復旧 under bad backups: the old server's newest dump or uploads archive is bad, and
the procedure runs on a fresh new server as it did on the healthy run.

Nothing on the new server is live yet, so the harm is what it would put into service: the backend
started on a database or uploads that are not a backup's (a restore that stopped halfway), or files
written outside the uploads folder. Safe: the new server serves a valid backup's data completely, or it
does not serve and a failing command says that the migration did not happen.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.stack import Stack
from gate import appdata, badbackups
from gate.parser import Section
from gate.runner import run_session
from gate.scripted import refusal_said
from gate.stacks import Stacks, down
from gate.types import OracleResult, ProcedureOutcome, first_error
from recovery import health, integrity

log = logging.getLogger(__name__)

NUMBER = itertools.count(1)


def _newest(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[-1]


def _truncated_dump(folder: Path) -> str:
    newest = _newest(folder, "db_*.dump")
    badbackups.truncate(newest)
    return f"{newest.name} truncated, its table of contents intact"


def _truncated_archive(folder: Path) -> str:
    newest = _newest(folder, "uploads_*.tar.gz")
    badbackups.truncate(newest)
    return f"{newest.name} truncated"


def _escaping_archive(folder: Path) -> str:
    return badbackups.add_escaping_members(_newest(folder, "uploads_*.tar.gz"))


@dataclass(frozen=True)
class MigrationVariant:
    name: str
    spoil: Callable[[Path], str]  # the old server's backup folder -> what was made bad, in words


VARIANTS = (
    MigrationVariant("truncated newest dump", _truncated_dump),
    MigrationVariant("truncated newest uploads archive", _truncated_archive),
    MigrationVariant("newest uploads archive with members escaping the folder", _escaping_archive),
)


def check_migration(stacks: Stacks, outcome: ProcedureOutcome, sections: list[Section]) -> None:
    """Every variant on one old server (its newest backups spoiled, then removed) and a new server each;
    the verdicts join `outcome` as the drilled procedures' variants do."""
    try:
        with stacks.borrowed(f"old-{next(NUMBER)}") as old:
            stacks.ensure_backups(old, force=True)  # the older backups: valid
            baseline = integrity.fingerprint(old.target())  # the data of every backup taken here
            results = [_variant(stacks, old, baseline, variant, sections) for variant in VARIANTS]
    except Exception as exc:  # the gate's own trouble: the procedure's failure, said plainly
        log.exception("the migration's variants")
        results = [OracleResult("variants", False, f"could not be run: {first_error(exc)}")]
    for result in results:
        outcome.health.checks.append(f"{result.name}: {'safe' if result.ok else 'HARM'} ({result.detail})")
        if not result.ok:
            outcome.health.ok = False
            outcome.health.problems.append(f"{result.name}: {result.detail}")


def _variant(stacks: Stacks, old: Stack, baseline: Any, variant: MigrationVariant,
             sections: list[Section]) -> OracleResult:
    name = f"variant {variant.name}"
    folder = old.sandbox.path("/backup/mks")
    before = set(folder.iterdir())
    try:
        stacks.ensure_backups(old, force=True)  # the newest, then spoiled
        bad = variant.spoil(folder)
        stacks.events.append(f"stack {old.name}: {bad}")
        new = stacks.new_server(f"new-{next(NUMBER)}")
        try:
            env = {"MKS_CHECK_PASSWORD": old.secrets.admin_password}
            blocks = run_session(sections, stacks.session(new, old, env), stacks.next_session("migration"))
            return _judge(name, bad, new, baseline, blocks)
        finally:
            down(new)
    except Exception as exc:
        return OracleResult(name, False, f"the variant could not be judged: {first_error(exc)}")
    finally:
        for path in set(folder.iterdir()) - before:  # the next variant spoils a newest set of its own
            path.unlink()


def _judge(name: str, bad: str, new: Stack, baseline: Any, blocks: list[Any]) -> OracleResult:
    target = new.target()
    uploads = Path(target.paths.uploads_dir)
    outside = badbackups.escaped(new.root, uploads)
    if outside:
        return OracleResult(name, False, f"bad backup ({bad}): wrote outside "
                            f"/{appdata.store_member(target)}: {', '.join(outside[:3])}")
    serving = health.backend(target).ok
    try:
        after = integrity.fingerprint(target)
        known = set(baseline.problems())
        diffs = integrity.compare(baseline, after) + [p for p in after.problems() if p not in known]
    except Exception as exc:
        diffs = [f"mks_db cannot be read: {first_error(exc)}"]
    if serving and diffs:
        return OracleResult(name, False, f"bad backup ({bad}): started the service on the new server with "
                            f"data that is not the backup's ({'; '.join(d[:160] for d in diffs[:2])})")
    if serving:
        return OracleResult(name, True, f"bad backup ({bad}): the new server serves a valid backup "
                            "completely")
    said = refusal_said(blocks)
    return OracleResult(name, said.ok, f"bad backup ({bad}): the service was not started on data that is "
                        f"not the backup's; {said.detail}")
