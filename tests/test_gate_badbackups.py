"""Every procedure that restores, replaces or removes data is run under the bad backups that apply to it:
the full-recovery script and the migration to a new server too. On real stacks.

tests/data/runbook-unsafe-restores.md holds the two procedures as the corrected runbook had them before
(DROP DATABASE after only `pg_restore --list`, the uploads deleted before the archive was read to its
end, a migration that starts the service after a failed restore): the gate names the harm of each. The
corrected runbook's versions are safe under the same variants (test_gate_runbook.py runs them too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate.orchestrator import Gate
from gate.parser import parse_file

pytestmark = [pytest.mark.runbook, pytest.mark.stack]

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
MIGRATION = "完全システム復旧 > 1. 新規サーバーへの移行復旧"
FULL = "復旧自動化スクリプト > 完全復旧スクリプト"
HARM = {
    FULL: ("variant truncated newest dump: dropped the live database before the backup was known to restore",
           "variant truncated newest uploads archive: removed the uploads before the archive was read",
           "variant newest uploads archive with members escaping the folder: wrote outside /opt/mks/uploads"),
    MIGRATION: ("variant truncated newest dump: bad backup",
                "started the service on the new server with data that is not the backup's",
                "variant truncated newest uploads archive: bad backup",
                "variant newest uploads archive with members escaping the folder: bad backup"),
}


@pytest.mark.parametrize("title", [MIGRATION, FULL], ids=["migration", "full-recovery-script"])
def test_unsafe_restores_are_failed_with_their_harm_named(title, stack_factory):
    gate = Gate(parse_file(str(DATA / "runbook-unsafe-restores.md")), stack_factory, verify=False)
    [outcome] = gate.run(lambda t: t == title)
    problems = "\n".join(outcome.health.problems)
    assert not outcome.ok
    for needle in HARM[title]:
        assert needle in problems, problems
    if title == MIGRATION:  # the healthy run still passes: only the bad backups show the harm
        assert all(p.startswith("variant ") for p in outcome.health.problems), problems
