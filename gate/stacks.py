"""The gate's stacks, for every part of the gate that runs blocks: a stack made, seeded and settled; the
backups the runbook expects taken on it; a bash session's environment on it; and its teardown.

The orchestrator, the scripts' checks and the verification checks all use one `Stacks` (its secrets are
redacted everywhere, its events land in the report).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fixtures.stack import Stack
from gate import appdata
from gate.mapping import SandboxInfo
from gate.runner import SessionEnv
from gate.shims import PROJECT_DIR, ShimSpec, shell_env, write_shims
from recovery import integrity
from recovery.commands import run
from recovery.database import backup_database
from recovery.target import AppTarget

log = logging.getLogger(__name__)

SERVICES = ("postgresql", "mks-backend", "nginx")


class Stacks:
    """Stacks from `make_stack(name, seed_scale)` (their maker tears them down at the end as well)."""

    def __init__(self, make_stack: Callable[..., Stack], seed_scale: float = 0.2,
                 timeout_per_block: float = 90.0):
        self.make_stack = make_stack
        self.seed_scale = seed_scale
        self.timeout_per_block = timeout_per_block
        self.secrets: list[str] = []
        self.events: list[str] = []
        self.backed_up: dict[str, Any] = {}  # stack name -> fingerprint at its last backups
        self.sessions = 0
        self.last_backup = 0.0
        self.app: AppTarget | None = None  # what the app profile of the stacks says of the app (the first's)

    def new(self, name: str, seed: float | None, keep_amcheck: bool = False) -> Stack:
        """A stack up, seeded at `seed` (None: not seeded), every service settled."""
        started = time.monotonic()
        stack = self.make_stack(f"gate-{name}", seed_scale=seed)
        self.secrets += stack.secrets.values()
        self.app = self.app or stack.target().app
        for service in SERVICES:  # settled, so that the first `systemctl status` sees a running unit
            stack.services.wait_active(service, timeout=30)
        # amcheck is the harness's own (for fingerprints); production's database has no extension, and a
        # superuser-only extension would make every restore as mks_user fail where production's would not
        # (a drilled procedure keeps it for the drill's baseline and takes its backups without it)
        if not keep_amcheck:
            with stack.pg.connect("mks_db") as conn:
                conn.execute("DROP EXTENSION IF EXISTS amcheck")
        self.events.append(f"stack {stack.name} up and seeded in {time.monotonic() - started:.1f}s")
        return stack

    def new_server(self, name: str) -> Stack:
        """A stack standing for a new server after OS and packages: no MKS role, no MKS database."""
        stack = self.new(name, None)
        stack.services.stop("mks-backend")
        with stack.pg.connect() as conn:
            conn.execute("DROP DATABASE mks_db")
            conn.execute("DROP ROLE mks_user")
        self.events.append(f"stack {stack.name}: as a new server: no mks_db, no mks_user, backend stopped")
        return stack

    @contextmanager
    def borrowed(self, name: str, keep_amcheck: bool = False) -> Iterator[Stack]:
        """A seeded stack for one check, torn down after it."""
        stack = self.new(name, self.seed_scale, keep_amcheck=keep_amcheck)
        try:
            yield stack
        finally:
            down(stack)

    def next_session(self, prefix: str) -> str:
        self.sessions += 1
        return f"{prefix}-{self.sessions}"

    def session(self, stack: Stack, old: Stack | None = None, extra_env: dict[str, str] | None = None,
                timeout: float | None = None, backend_port: int | None = None) -> SessionEnv:
        """The environment of a bash session on `stack` (old: the old server of a migration; backend_port:
        where the runbook's localhost:5100 goes, the stack's backend by default)."""
        target = stack.target()
        root = stack.root
        work = root / "run/gate"
        work.mkdir(parents=True, exist_ok=True)
        stack.sandbox.give(work)
        bin_dir = write_shims(ShimSpec.for_target(target, root, work / "bin"))
        stack.sandbox.give(bin_dir, recursive=True)
        # certbot renews as root on a real host; in the sandbox the block's account renews its own certificate
        stack.sandbox.give(stack.sandbox.path("/etc/letsencrypt"), recursive=True)
        info = SandboxInfo(root=root, backend_port=backend_port or stack.backend_port,
                           pg_major=target.database.major,
                           service_account=stack.sandbox.service_account.name,
                           renew_command=" ".join(target.renew_command),
                           old_root=old.root if old is not None else None)
        home = root / "run/home"
        env = {
            **stack.pg.client_env(),
            **shell_env(bin_dir, home, root),
            "PYTHONDONTWRITEBYTECODE": "1",
            # the project's modules (the sandbox CA's renewal, `python -m recovery`) for the block's python
            "PYTHONPATH": str(PROJECT_DIR),
            **(extra_env or {}),
        }
        run_as = None if stack.sandbox.service_account.is_current else stack.sandbox.service_account
        return SessionEnv(info, bin_dir, work, home, run_as, env, self.secrets,
                          timeout_per_block=timeout if timeout is not None else self.timeout_per_block)

    def check_session(self, stack: Stack, env: dict[str, str] | None = None, timeout: float | None = None,
                      backend_port: int | None = None) -> SessionEnv:
        """A session on a stack of its own (a drill, a check): the admin's password for a login check."""
        return self.session(stack, None, {"MKS_CHECK_PASSWORD": stack.secrets.admin_password, **(env or {})},
                            timeout, backend_port)

    def ensure_backups(self, stack: Stack, force: bool = False) -> None:
        """Backups as the (separate) backup procedure makes them, unless they still match the data."""
        target = stack.target()
        now = integrity.fingerprint(target)
        if not force and self.backed_up.get(stack.name) == now:
            return
        time.sleep(max(0.0, self.last_backup + 1.05 - time.monotonic()))  # names carry the second
        self.last_backup = time.monotonic()
        backup_database(target)
        stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        backup_dir = stack.sandbox.path("/backup/mks")
        for prefix, members in (("uploads", [appdata.store_member(target)]),
                                ("config", appdata.config_members(target))):
            dest = backup_dir / f"{prefix}_{stamp}.tar.gz"
            run(["tar", "-czf", str(dest), "-C", str(stack.root), *members], timeout=300,
                run_as=None if stack.sandbox.service_account.is_current else stack.sandbox.service_account)
        self.backed_up[stack.name] = now
        self.events.append(f"backups taken on {stack.name} (db, uploads, config {stamp})")


def down(stack: Stack) -> None:
    """Tear a stack down; a failure is logged (the stack factory tears it down at the end anyway)."""
    try:
        stack.down()
    except Exception as exc:
        log.info("stack %s did not go down: %s", stack.name, exc)
