"""サービス復旧: the backend's automatic and manual recovery, and its configuration check.

Where this differs from the runbook, and why:
- auto-recovery.sh exits 0 as soon as `systemctl is-active` says active, even when the backend
  answers 503 or nothing at all; here healthy means the health URL answers 200, every attempt is
  journaled, attempts back off, and the journal says why it gave up.
- `ps aux | grep gunicorn; kill -9 <PID>` kills whatever matches a word (another site's Gunicorn,
  the grep itself). Here the process holding the backend port is found from /proc, and it is killed
  only when it belongs to this service under the service manager (its systemd cgroup, or
  supervisord's session with SUPERVISOR_PROCESS_NAME of the service); anything else is reported.
  A holder that is exiting (an orphaned worker after its death signal) has no command line or
  environment any more: it is known by its process group and start time instead, and waited for.
- `netstat -tlnp | grep 5100` also matches 15100; the port is matched exactly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from recovery import health
from recovery.actions import action, option
from recovery.config_files import check_config
from recovery.errors import RecoveryError
from recovery.journal import Journal, Step
from recovery.service_manager import ServiceManager, SupervisorServiceManager
from recovery.target import Target
from recovery.waiting import Observation, WaitTimeout, wait_until

log = logging.getLogger(__name__)

SECRET_KEYS = ("password", "secret", "token", "key")


class ServiceRecoveryError(RecoveryError):
    """The service could not be brought back to health."""


# ---- health and ports ------------------------------------------------------------------------
def wait_healthy(target: Target, timeout: float, interval: float = 0.5) -> tuple[bool, str]:
    """The backend's health 200 within timeout: (True, its answer), or (False, the last answer)."""
    try:
        return True, health.wait_healthy(target, timeout, interval=interval).detail
    except WaitTimeout as exc:
        return False, exc.last


def backend_port(target: Target) -> int:
    parts = urlsplit(target.backend_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on the TCP port (IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def port_holders(port: int) -> list[int]:
    """Pids with a listening socket on the port open."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    holders = []
    if not wanted:
        return holders
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if any(os.readlink(fd) in wanted for fd in fds):
                holders.append(int(entry.name))
        except OSError:
            continue
    return sorted(holders)


PF_EXITING = 0x4  # the kernel's flag of a task in do_exit (include/linux/sched.h)
EXIT_WAIT = 10.0  # seconds an exiting holder of the port gets to let go of it


@dataclass(frozen=True)
class ProcessInfo:
    """What /proc tells of a process; everything but the command line survives until it is reaped."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    flags: int
    start_ticks: int  # clock ticks after boot
    cmdline: str

    @classmethod
    def read(cls, pid: int) -> ProcessInfo | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return cls(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0], int(fields[6]),
                   int(fields[19]), cmdline.strip()[:300])

    @property
    def exiting(self) -> bool:
        """In exit: a zombie, flagged by the kernel, or with its memory (the command line) released."""
        return self.state in "ZXx" or bool(self.flags & PF_EXITING) or not self.cmdline

    @property
    def started(self) -> float:
        """Start time in epoch seconds (to the second: the kernel's boot time is whole seconds)."""
        return _boot_time() + self.start_ticks / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ServiceRecoveryError("/proc/stat has no btime")


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def belongs_to_service(manager: ServiceManager, service: str, pid: int) -> tuple[bool, str]:
    """Is pid part of the service's process tree under its service manager? (and why / why not)"""
    info = ProcessInfo.read(pid)
    if info is None:
        return False, f"pid {pid} is gone"
    if isinstance(manager, SupervisorServiceManager):
        return _supervised_by(manager, service, info)
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False, f"pid {pid}: cgroup unreadable"
    unit = f"/{service}.service"
    if any(line.rstrip().endswith(unit) for line in cgroup.splitlines()):
        return True, f"pid {pid} is in the cgroup of {service}.service"
    return False, f"pid {pid} ({info.cmdline}) is not in the cgroup of {service}.service"


def _supervised_by(manager: SupervisorServiceManager, service: str, info: ProcessInfo) -> tuple[bool, str]:
    """A process of the program: in supervisord's session, and named by its environment or its group.

    The environment (SUPERVISOR_PROCESS_NAME) is unreadable once a process is exiting; its process
    group is not: supervisord starts each process of a program in a group of its own, so the group
    is the service's when supervisord's log says it spawned the group's leader for the service, and
    the process started after that spawn (a pid reused since then could not pass).
    """
    pid = info.pid
    try:
        supervisord = int(manager.rpc().supervisor.getPID())  # type: ignore[arg-type]
    except OSError as exc:
        return False, f"supervisord does not answer ({exc}); cannot tell who owns pid {pid}"
    supervisor_info = ProcessInfo.read(supervisord)
    not_ours = f"pid {pid} ({info.cmdline}) is not program {service} of supervisord {supervisord}"
    if pid == supervisord or info.sid != supervisord or supervisor_info is None:
        return False, not_ours
    if info.start_ticks < supervisor_info.start_ticks:
        return False, f"{not_ours}: it is older than supervisord"
    name = _environ(pid).get("SUPERVISOR_PROCESS_NAME")
    if name is not None:
        if name == service:
            return True, f"pid {pid} runs in supervisord's session as program {service}"
        return False, f"{not_ours}: it is program {name}"
    program, spawned = manager.spawns().get(info.pgid, (None, 0.0))
    if program == service and info.started >= spawned - 1.0:  # whole seconds against milliseconds
        return True, (f"pid {pid} ({'exiting' if info.exiting else info.cmdline}) is in process group "
                      f"{info.pgid}, which supervisord spawned for program {service}")
    return False, f"{not_ours}: its environment is unreadable and its group {info.pgid} is not the service's"


def stop_pid(pid: int, grace: float = 5.0) -> str:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
        except ProcessLookupError:
            return "gone"
        try:
            wait_until(f"pid {pid} to exit after {sig.name}", lambda: _is_gone(pid),
                       timeout=grace, interval=0.05)
        except WaitTimeout:
            continue
        return f"stopped by {sig.name}"
    return "still alive after SIGKILL"


def _is_gone(pid: int) -> bool:
    return ProcessInfo.read(pid) is None or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---- actions ---------------------------------------------------------------------------------
AUTO_PLAN = (
    ("check", "サービスチェック", "service state and health URL 200"),
    ("wait-restart", "自動再起動の完了待ち", "if the manager restarts it already: health first"),
    ("attempt-N", "復旧実行", "restart, then wait for health 200; back off between attempts"),
)


def _plan_auto(journal: Journal, target: Target, max_attempts: int = 3, *_: object, **__: object) -> None:
    for name, title, what in AUTO_PLAN:
        journal.plan(name, title, what=what, service=target.services.backend, max_attempts=max_attempts)


@action("service-auto-recover", "自動復旧", plan=_plan_auto, cli="service-auto-recover",
        help="自動復旧: restart until health answers 200 (bounded, with backoff)",
        options=(option("--max-attempts", type=int, default=3),
                 option("--backoff", type=float, default=2.0,
                        help="first pause in seconds, doubled after each failed attempt"),
                 option("--settle", type=float, default=30.0,
                        help="seconds to wait for health after a restart")))
def auto_recover(journal: Journal, target: Target, max_attempts: int = 3,
                 backoff: float | Callable[[int], float] = 2.0, settle: float = 30.0) -> None:
    """The runbook's auto-recovery.sh, with health 200 as the test of success.

    `backoff` is the first pause (doubled after each failed attempt) or a function of the attempt
    number; `settle` bounds the wait for health after each restart (the script's `sleep 30`).
    """
    service = target.services.backend
    pause = backoff if callable(backoff) else (lambda n: float(backoff) * 2 ** (n - 1))
    manager = target.service_manager()
    with journal.step(*AUTO_PLAN[0][:2]) as step:
        status = manager.status(service)
        answer = health.backend(target)
        step.note("state", status.detail)
        step.note("health", answer.detail)
    if answer.ok:
        journal.steps[-1].details["verdict"] = "healthy; nothing to do"
        return
    if status.active_state == "activating":
        # the service manager is restarting it already (Restart=always): a restart now would
        # only start the load over again; give that start its settle time first
        with journal.step("wait-restart", "自動再起動の完了待ち") as step:
            ok, seen = wait_healthy(target, settle)
            step.note("state", manager.status(service).detail)
            step.note("health", seen)
            if ok:
                step.note("verdict", "recovered by the service manager's own restart")
                return
    reasons = []
    for attempt in range(1, max_attempts + 1):
        with journal.step(f"attempt-{attempt}", f"復旧実行 ({attempt}/{max_attempts})") as step:
            try:
                manager.restart(service)
            except RecoveryError as exc:
                step.note("restart_error", str(exc))
            ok, seen = wait_healthy(target, settle)
            step.note("state", manager.status(service).detail)
            step.note("health", seen)
            if ok:
                step.note("verdict", "Recovery successful")
                return
            reasons.append(f"attempt {attempt}: {seen}")
            step.note("log_tail", manager.log_tail(service, 10))
            if attempt < max_attempts:
                step.note("backoff_seconds", pause(attempt))
                time.sleep(pause(attempt))
    with journal.step("give-up", "自動復旧失敗 (手動対応が必要)") as step:
        step.note("reasons", reasons)
        raise ServiceRecoveryError(f"{service} not healthy after {max_attempts} restarts; manual "
                                   f"intervention required. Last: {reasons[-1]}")


MANUAL_PLAN = (
    ("stop", "サービス停止", "stop the service through the service manager"),
    ("stale-process", "プロセス確認", "free the backend port; kill only the service's own leftovers"),
    ("start", "サービス起動", "start the service"),
    ("health", "起動確認", "service active and health URL 200"),
)


def _plan_manual(journal: Journal, target: Target, *_: object, **__: object) -> None:
    for name, title, what in MANUAL_PLAN:
        journal.plan(name, title, what=what, service=target.services.backend, port=backend_port(target))


@action("service-manual-recover", "手動復旧", plan=_plan_manual, cli="service-manual-recover",
        help="手動復旧: stop, free the port, start, wait for health")
def manual_recover(journal: Journal, target: Target, health_timeout: float = 60.0) -> None:
    """Stop, clear a stale process of this service from the backend port, start, wait for health."""
    service, port = target.services.backend, backend_port(target)
    manager = target.service_manager()
    with journal.step(*MANUAL_PLAN[0][:2]) as step:
        step.note("before", manager.status(service).detail)
        manager.stop(service)
        step.note("after", manager.status(service).detail)
    with journal.step(*MANUAL_PLAN[1][:2]) as step:
        free_port(manager, service, port, step)
    with journal.step(*MANUAL_PLAN[2][:2]) as step:
        manager.start(service)
        step.note("state", manager.status(service).detail)
    with journal.step(*MANUAL_PLAN[3][:2]) as step:
        ok, seen = wait_healthy(target, health_timeout)
        step.note("health", seen)
        if not ok:
            step.note("log_tail", manager.log_tail(service, 20))
            raise ServiceRecoveryError(f"{service} not healthy {health_timeout:g}s after start: {seen}")


def free_port(manager: ServiceManager, service: str, port: int, step: Step) -> None:
    """Stop the service's own leftovers on the port, wait for its exiting ones; report anything else."""
    holders = port_holders(port)
    step.note("holders", [f"{p}: {info.cmdline}" for p in holders if (info := ProcessInfo.read(p))])
    foreign: list[str] = []
    exiting: dict[int, str] = {}
    for pid in holders:
        ours, why = belongs_to_service(manager, service, pid)
        info = ProcessInfo.read(pid)
        if info is None or pid not in port_holders(port):
            step.note(f"pid_{pid}", "let go of the port while being checked")
        elif not ours:
            foreign.append(why)
        elif info.exiting:
            exiting[pid] = why
            step.note(f"pid_{pid}", f"{why}; exiting: waiting for it to let go")
        else:
            step.note(f"pid_{pid}", f"{why}; {stop_pid(pid)}")
    if foreign:
        raise ServiceRecoveryError(f"port {port} is held by a process not of {service}; not killing it: "
                                   + "; ".join(foreign))
    started = time.monotonic()
    released: dict[int, float] = {}

    def exiting_let_go() -> Observation:
        still = port_holders(port)
        released.update({pid: time.monotonic() - started for pid in exiting if pid not in still
                         and pid not in released})
        return Observation(len(released) >= len(exiting),
                           f"{len(exiting) - len(released)} exiting holder(s) still hold port {port}")

    with contextlib.suppress(WaitTimeout):  # one stuck in its exit is stopped below
        wait_until(f"exiting holders of port {port} to let go", exiting_let_go, timeout=EXIT_WAIT,
                   interval=0.05)
    for pid, why in exiting.items():
        if pid in released:
            step.note(f"pid_{pid}", f"{why}; exiting: let go of the port after {released[pid]:.2f}s")
        else:  # ours, but stuck in its exit: stopped as any leftover of the service is
            step.note(f"pid_{pid}", f"{why}; exiting, still holding the port after {EXIT_WAIT:g}s; "
                      f"{stop_pid(pid)}")

    def port_free() -> Observation:
        inodes = listening_inodes(port)
        return Observation(not inodes, f"still listening (socket inodes {', '.join(sorted(inodes))})")

    wait_until(f"port {port} to be free after the stale process was stopped", port_free,
               timeout=5, interval=0.1, error=ServiceRecoveryError)
    step.note("port", f"{port} free")


CHECK_PLAN = (
    ("unit", "設定ファイル確認", "the service's program definition"),
    ("config", "環境変数確認", "the config file parses; the app's check command (app.check_command) as the "
                            "service user"),
    ("port", "ポート確認", "the backend port listens, held by the service"),
)


def _secret_values(data: object) -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str) and any(word in str(key).lower() for word in SECRET_KEYS):
                found.append(value)
            else:
                found += _secret_values(value)
    elif isinstance(data, list):
        for value in data:
            found += _secret_values(value)
    return found


def _plan_check(journal: Journal, target: Target) -> None:
    for name, title, what in CHECK_PLAN:
        journal.plan(name, title, what=what, service=target.services.backend,
                     config_file=target.paths.config_file, port=backend_port(target))


@action("service-check-config", "設定確認", plan=_plan_check, cli="service-check-config",
        help="設定確認: program definition, config.yml, check-config, port")
def check_service_config(journal: Journal, target: Target) -> None:
    """設定確認: the program definition, config.yml, the backend's own check-config, the port."""
    service, port = target.services.backend, backend_port(target)
    config = Path(target.paths.config_file)
    manager = target.service_manager()
    with journal.step(*CHECK_PLAN[0][:2]) as step:
        if isinstance(manager, SupervisorServiceManager):
            infos = manager.rpc().supervisor.getAllConfigInfo()
            info = next((i for i in infos if i["name"] == service), None)  # type: ignore[union-attr]
            if info is None:
                raise ServiceRecoveryError(f"supervisord has no program {service}")
            step.note("command", info["command"])
            for key in ("directory", "startsecs", "startretries", "stopwaitsecs"):
                step.note(key, str(info.get(key)))
        else:
            sudo = ["sudo", "-n"] if target.services.use_sudo else []
            result = step.run([*sudo, "systemctl", "cat", f"{service}.service"], timeout=30)
            step.note("unit", result.stdout[-1500:])
    with journal.step(*CHECK_PLAN[1][:2]) as step:
        app = target.app
        values = check_config(config, app.config_kind)
        journal.secrets += _secret_values(values)
        step.note("config_yml", f"{config} parses")
        backend = Path(target.paths.backend_dir)
        workdir = backend / app.workdir
        venv_python = backend / "venv/bin/python"
        python = str(venv_python) if venv_python.exists() else sys.executable
        env = {"PYTHONPATH": str(workdir), "PYTHONDONTWRITEBYTECODE": "1"}
        if app.config_env_var:
            env[app.config_env_var] = str(config)
        if app.config_kind == "env":
            env.update({k: str(v) for k, v in values.items()})
        if app.check_command:
            result = step.run([part.format(python=python) for part in app.check_command], timeout=60,
                              run_as=target.service_account(), env=env, cwd=workdir, inherit_env=False)
            step.note("check_config", result.stdout.strip())
        else:
            step.note("check_config", "the app has no config check command (app.check_command)")
    with journal.step(*CHECK_PLAN[2][:2]) as step:
        holders = port_holders(port)
        if not holders:
            raise ServiceRecoveryError(f"nothing listens on the backend port {port}")
        verdicts = [belongs_to_service(manager, service, pid) for pid in holders]
        step.note("holders", [why for _, why in verdicts])
        if not any(ours for ours, _ in verdicts):
            raise ServiceRecoveryError(f"port {port} listens, but not by {service}")
