"""Shim executables, first on the PATH of a runbook block, that aim the runbook's tools at a sandbox.

- systemctl, journalctl: `python -m gate.servicectl` over the sandbox's supervisord;
- sudo: drops its options and runs the command as the block's account (`-u postgres` sets PGUSER);
- psql, pg_dump, pg_restore, createdb, dropdb, createuser, dropuser, pg_basebackup, pg_waldump, pg_isready:
  the sandbox server's own binaries (not Debian's version-guessing wrapper); PGHOST/PGPORT/PGPASSFILE
  come from the block's environment;
- nginx: the sandbox nginx with its prefix and configuration (`nginx -t` tests the sandbox site);
- certbot: `certbot renew` renews from the sandbox CA.
Absolute production paths given to the shims are mapped by the command-text mapping before they run.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from recovery.target import Target

PG_TOOLS = ("psql", "pg_dump", "pg_restore", "createdb", "dropdb", "createuser", "dropuser",
            "pg_basebackup", "pg_waldump", "pg_controldata", "pg_isready")
PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ShimSpec:
    bin_dir: Path
    pg_bindir: str
    nginx_argv: list[str]
    renew_argv: list[str]
    service_env: dict[str, str]  # GATE_SUPERVISOR_SOCKET, GATE_SUPERVISOR_LOGS, GATE_PG_LOG, ...

    @classmethod
    def for_target(cls, target: Target, root: Path, bin_dir: Path) -> ShimSpec:
        """The shims of a sandbox's recovery target (the gate's sessions and the practice shell)."""
        ports, protocols = target.readiness()
        return cls(
            bin_dir=bin_dir,
            pg_bindir=target.database.bindir,
            nginx_argv=[target.nginx_binary, *target.nginx_args],
            renew_argv=list(target.renew_command),
            service_env={
                "GATE_SUPERVISOR_SOCKET": str(target.services.supervisor_socket),
                "GATE_SUPERVISOR_LOGS": str(target.services.supervisor_log_dir),
                "GATE_SUPERVISOR_CONF": str(root / "etc/supervisor/supervisord.conf"),
                "GATE_PG_LOG": target.database.log_file,
                "GATE_READY": " ".join(f"{name}={protocols.get(name, 'tcp')}:{port}"
                                       for name, port in sorted(ports.items())),
            },
        )


def _write(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body, encoding="utf-8")
    os.chmod(path, 0o755)


def shell_env(bin_dir: Path, home: Path, root: Path) -> dict[str, str]:
    """What a runbook block's shell sees besides the database's variables: the shims first on PATH,
    a home and temp folder in the sandbox, no user git config, no pager, no psql history."""
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "TMPDIR": str(root / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PAGER": "cat",
        "PSQL_HISTORY": "/dev/null",
        "MKS_CHECK_USER": "admin",  # 機能テスト's login reads these instead of a literal password
    }


def write_shims(spec: ShimSpec) -> Path:
    """Write every shim into spec.bin_dir (inside the sandbox) and return it."""
    spec.bin_dir.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(spec.service_env.items()))
    pythonpath = shlex.quote(str(PROJECT_DIR))
    for tool in ("systemctl", "journalctl"):
        _write(spec.bin_dir / tool,
               f'{env} PYTHONPATH={pythonpath} PYTHONDONTWRITEBYTECODE=1 exec {python} -m gate.servicectl '
               f'{tool} "$@"\n')
    _write(spec.bin_dir / "sudo", SUDO)
    for tool in PG_TOOLS:
        _write(spec.bin_dir / tool, f'exec {shlex.quote(str(Path(spec.pg_bindir) / tool))} "$@"\n')
    _write(spec.bin_dir / "nginx", f'exec {shlex.join(spec.nginx_argv)} "$@"\n')
    _write(spec.bin_dir / "certbot",
           'if [ "$1" != renew ]; then echo "certbot (sandbox): only renew" >&2; exit 2; fi\n'
           f"exec {shlex.join(spec.renew_argv)}\n")
    return spec.bin_dir


SUDO = """\
# sandbox sudo: the block already runs as the account the sandbox allows; keep the environment
while [ $# -gt 0 ]; do
    case "$1" in
        -u|--user) [ "$2" = postgres ] && export PGUSER=postgres; shift 2 ;;
        -u*) [ "${1#-u}" = postgres ] && export PGUSER=postgres; shift ;;
        -g|-C|-h|-p|-r|-t|-D) shift 2 ;;
        --) shift; break ;;
        -*) shift ;;
        *) break ;;
    esac
done
[ $# -eq 0 ] && { echo "sudo (sandbox): no command" >&2; exit 1; }
exec "$@"
"""
