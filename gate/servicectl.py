"""`systemctl` and `journalctl` for a sandbox, over its supervisord (what the gate's shims call).

    python -m gate.servicectl systemctl status mks-backend
    python -m gate.servicectl journalctl -u mks-backend --since "1 hour ago" --no-pager

The sandbox is named by GATE_SUPERVISOR_SOCKET, GATE_SUPERVISOR_LOGS and GATE_PG_LOG; GATE_READY says when a
started unit counts as started (its port serves, as systemd's units mean it). Exit codes follow
systemd's: `status`/`is-active` answer 3 for a unit that is not active, a failed job answers 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recovery.errors import RecoveryError
from recovery.journal import tail
from recovery.service_manager import ServiceError, SupervisorServiceManager

UNITS = {"mks-backend": "HUP", "postgresql": "HUP", "nginx": "HUP"}
ALIASES = {"postgresql@15-main": "postgresql", "postgresql@13-main": "postgresql"}
ACTIONS = ("status", "start", "stop", "restart", "reload", "is-active", "cat", "daemon-reload")


def manager() -> SupervisorServiceManager:
    socket = os.environ.get("GATE_SUPERVISOR_SOCKET")
    logs = os.environ.get("GATE_SUPERVISOR_LOGS")
    if not socket or not logs:
        raise SystemExit("servicectl: GATE_SUPERVISOR_SOCKET and GATE_SUPERVISOR_LOGS must be set")
    ports: dict[str, int] = {}
    protocols: dict[str, str] = {}
    for entry in os.environ.get("GATE_READY", "").split():  # "postgresql=postgres:5432 mks-backend=tcp:5100"
        name, _, spec = entry.partition("=")
        protocol, _, port = spec.partition(":")
        ports[name], protocols[name] = int(port), protocol
    return SupervisorServiceManager(Path(socket), Path(logs), UNITS, ready_ports=ports,
                                    ready_protocols=protocols)


def unit(name: str) -> str:
    name = name.removesuffix(".service")
    return ALIASES.get(name, name)


def log_tail(name: str, lines: int) -> str:
    """The unit's log as journalctl would show it: the supervisor's capture, and PostgreSQL's own log."""
    text = manager().log_tail(name, lines)
    pg_log = os.environ.get("GATE_PG_LOG")
    if name == "postgresql" and pg_log and Path(pg_log).exists():
        text = (text + "\n" if text.strip() else "") + tail(Path(pg_log), lines)
    return text


def systemctl(argv: list[str]) -> int:
    quiet = "--quiet" in argv or "-q" in argv
    args = [a for a in argv if not a.startswith("-")]
    if not args or args[0] not in ACTIONS:
        print(f"systemctl (sandbox): supported: {', '.join(ACTIONS)}", file=sys.stderr)
        return 2
    action, names = args[0], [unit(n) for n in args[1:]]
    if action == "daemon-reload":
        return 0
    services = manager()
    worst = 0
    for name in names:
        try:
            if action == "status":
                worst = max(worst, _status(services, name))
            elif action == "is-active":
                state = services.status(name).active_state
                if not quiet:
                    print(state)
                worst = max(worst, 0 if state == "active" else 3)
            elif action == "cat":
                print(_program_section(name))
            else:
                getattr(services, action)(name)
        except ServiceError as exc:
            first = str(exc).splitlines()[0]
            print(f"Job for {name}.service failed: {first}\n"
                  f'See "systemctl status {name}.service" and "journalctl -xeu {name}.service" for details.',
                  file=sys.stderr)
            worst = max(worst, 1)
    return worst


def _status(services: SupervisorServiceManager, name: str) -> int:
    status = services.status(name)
    sub = {"active": "running", "inactive": "dead", "failed": "failed"}.get(status.active_state, "")
    print(f"● {name}.service - {name} (mks-drill sandbox, supervisord)")
    print(f"     Active: {status.active_state} ({sub}) [{status.detail}]")
    if status.pid:
        print(f"   Main PID: {status.pid}")
    print()
    print(log_tail(name, 10))
    return 0 if status.is_active else 3


def _program_section(name: str) -> str:
    conf = Path(os.environ.get("GATE_SUPERVISOR_CONF", ""))
    if not conf.is_file():
        return f"# {name}: no configuration file"
    lines, inside = [], False
    for line in conf.read_text().splitlines():
        if line.startswith("["):
            inside = line.strip() == f"[program:{name}]"
        if inside and not line.startswith("environment"):
            lines.append(line)
    return f"# {conf} (the sandbox's unit for {name})\n" + "\n".join(lines)


def journalctl(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="journalctl (sandbox)", add_help=False)
    parser.add_argument("-u", "--unit", action="append", default=[])
    parser.add_argument("-n", "--lines", type=int, default=200)
    parser.add_argument("--since")
    parser.add_argument("--until")
    parser.add_argument("-f", "--follow", action="store_true")  # never follows: a gate must end
    parser.add_argument("--no-pager", action="store_true")
    args, _ = parser.parse_known_args(argv)
    if not args.unit:
        print("journalctl (sandbox): give a unit with -u", file=sys.stderr)
        return 1
    for name in args.unit:
        print(log_tail(unit(name), args.lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("systemctl", "journalctl"):
        print("usage: python -m gate.servicectl systemctl|journalctl ...", file=sys.stderr)
        return 2
    try:
        return systemctl(argv[1:]) if argv[0] == "systemctl" else journalctl(argv[1:])
    except RecoveryError as exc:
        print(f"{argv[0]} (sandbox): {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
