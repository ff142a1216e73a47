"""PostgreSQL from its client side: one statement through psql as the service account, and names.

Every action that speaks SQL through psql (the database restore, PITR, the full recovery) uses these.
"""

from __future__ import annotations

import re

from recovery.errors import RecoveryError
from recovery.journal import Step
from recovery.target import Target

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    """A PostgreSQL identifier we generate or read from the target: plain names only."""
    if not _IDENT.match(name):
        raise RecoveryError(f"unexpected database or role name {name!r}")
    return name


def psql(step: Step, target: Target, statement: str, *, dbname: str = "postgres",
         superuser: bool = True, timeout: float = 60) -> list[list[str]]:
    """One statement through psql as the service account; rows as lists of strings."""
    db = target.database
    argv = [db.tool("psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
            "-U", db.superuser if superuser else db.user, "-d", dbname, "-c", statement]
    out = step.run(argv, timeout=timeout, run_as=target.service_account(), env=db.env()).stdout
    return [line.split("\t") for line in out.splitlines() if line]
