"""The service manager the runbook speaks to (systemctl status|start|stop|restart|reload|is-active).

`SystemdServiceManager` is for real hosts; `SupervisorServiceManager` drives supervisord, which runs
the services of a sandbox with the same meaning (an automatic restart like systemd Restart=always).
"""

from __future__ import annotations

import re
import socket
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from recovery.commands import run
from recovery.errors import RecoveryError
from recovery.waiting import Observation, wait_until

# supervisord's main log line for each process it starts (supervisor/process.py, level info)
SPAWNED = re.compile(
    r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) INFO spawned: '(?P<name>[^']+)' with pid (?P<pid>\d+)$",
    re.MULTILINE,
)
LOG_SCAN_BYTES = 2_000_000
READY_TIMEOUT = 60.0  # a started service that listens must accept connections within this
SETTLE_TIMEOUT = 60.0  # a start or stop under way must end within this before a job waiting on it fails
TRANSIENT = ("activating", "deactivating")


class ServiceError(RecoveryError):
    """The service manager could not do what was asked of a service."""


def port_accepts(port: int, host: str = "127.0.0.1", protocol: str = "tcp") -> bool:
    """Whether the server on host:port accepts connections now. For "postgres", a server that
    answers but is still starting up (or shutting down) does not: that is libpq's ping."""
    if protocol == "postgres":
        from psycopg import pq

        return pq.PGconn.ping(f"host={host} port={port} connect_timeout=1".encode()) == pq.Ping.OK
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# supervisord process states -> the words systemctl uses
_ACTIVE_STATE = {
    "RUNNING": "active",
    "STARTING": "activating",
    "BACKOFF": "activating",
    "STOPPING": "deactivating",
    "STOPPED": "inactive",
    "EXITED": "inactive",
    "FATAL": "failed",
    "UNKNOWN": "failed",
}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    active_state: str  # active | activating | deactivating | inactive | failed
    pid: int | None
    detail: str  # the manager's own words for the state
    log_file: str | None
    manager_state: str = ""  # the manager's own state name (supervisord: RUNNING, BACKOFF, FATAL, ...)

    @property
    def is_active(self) -> bool:
        return self.active_state == "active"


class ServiceManager(Protocol):
    def status(self, name: str) -> ServiceStatus: ...
    def start(self, name: str) -> None: ...
    def start_nowait(self, name: str) -> None: ...
    def stop(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...
    def reload(self, name: str) -> None: ...
    def is_active(self, name: str) -> bool: ...
    def main_pid(self, name: str) -> int | None: ...
    def log_tail(self, name: str, lines: int = 20) -> str: ...


def wait_active(manager: ServiceManager, name: str, timeout: float = 30.0) -> ServiceStatus:
    """Wait until the service is active (after an automatic restart, for example)."""
    def active() -> ServiceStatus | Observation:
        status = manager.status(name)
        return status if status.is_active else Observation(False, status.detail)

    found = wait_until(f"{name} to be active", active, timeout=timeout, interval=0.1, error=ServiceError,
                       log_tail=lambda: manager.log_tail(name))
    assert isinstance(found, ServiceStatus)
    return found


def wait_settled(manager: ServiceManager, name: str, transient: tuple[str, ...] = TRANSIENT,
                 timeout: float = SETTLE_TIMEOUT) -> ServiceStatus:
    """The service's status once it has left the transient states (a start or a stop under way).

    A job on a service that is starting waits for that start to end, as systemd queues a job behind
    the unit's start job: a reload of a program supervisord still counts as STARTING would otherwise
    be refused, a start would return before the service counts as started, and a check made right
    after would find it "activating".
    """
    def settled() -> ServiceStatus | Observation:
        status = manager.status(name)
        return Observation(False, status.detail) if status.active_state in transient else status

    found = wait_until(f"{name} to finish {' or '.join(transient)}", settled, timeout=timeout,
                       interval=0.05, error=ServiceError, log_tail=lambda: manager.log_tail(name))
    assert isinstance(found, ServiceStatus)
    return found


class SupervisorServiceManager:
    """ServiceManager over supervisord's XML-RPC socket.

    A start waits for the program's startsecs and, for a program with a ready port, until that port
    accepts connections (systemd's Type=notify): startsecs alone is a timer, and a service that
    fails while loading more slowly than that, on a busy host, would count as started.
    """

    def __init__(self, socket: Path, log_dir: Path, reload_signals: Mapping[str, str],
                 ready_ports: Mapping[str, int] | None = None,
                 ready_protocols: Mapping[str, str] | None = None):
        self.socket = socket
        self.log_dir = log_dir
        self.reload_signals = dict(reload_signals)  # the known programs, and how each reloads
        self.ready_ports = dict(ready_ports or {})  # program -> loopback port it serves when ready
        self.ready_protocols = dict(ready_protocols or {})  # program -> "postgres" ("tcp" when absent)

    def rpc(self) -> xmlrpc.client.ServerProxy:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def _call(self, name: str, action: str, *args: object) -> object:
        if name not in self.reload_signals:
            raise ServiceError(f"unknown service {name!r}; known: {', '.join(self.reload_signals)}")
        try:
            return getattr(self.rpc().supervisor, action)(*args)
        except xmlrpc.client.Fault as fault:
            raise ServiceError(
                f"{action} {name} failed: {fault.faultString}\n--- {name} log ---\n{self.log_tail(name)}"
            ) from None
        except OSError as exc:
            raise ServiceError(f"supervisord at {self.socket} does not answer: {exc}") from None

    def status(self, name: str) -> ServiceStatus:
        return self._status(name, self._info(name))

    def _info(self, name: str) -> dict[str, object]:
        info = self._call(name, "getProcessInfo", name)
        assert isinstance(info, dict)
        return info

    @staticmethod
    def _status(name: str, info: dict[str, object]) -> ServiceStatus:
        state = str(info["statename"])
        active = _ACTIVE_STATE.get(state, "failed")
        if state == "EXITED" and info.get("exitstatus") != 0:
            active = "failed"
        return ServiceStatus(
            name=name,
            active_state=active,
            pid=int(info["pid"]) or None,  # type: ignore[call-overload]
            detail=f"{state} {info.get('description', '')}".strip(),
            log_file=str(info.get("stdout_logfile") or "") or None,
            manager_state=state,
        )

    def _decided(self, name: str) -> ServiceStatus:
        """The status, once supervisord has decided whether an EXITED program restarts (autorestart).

        It decides in its event loop's next round, and runs at least one round between two requests:
        EXITED twice with the same start time is a program that stays exited. The start time is in
        whole seconds; a program restarted and EXITED again in between ran its startsecs first (one
        that exits sooner is BACKOFF), so with a startsecs of 1 or more its start time is a later one,
        and it is asked again.
        """
        def decided() -> ServiceStatus | Observation:
            first = self._info(name)
            if first["statename"] != "EXITED":
                return self._status(name, first)
            again = self._info(name)
            if again["statename"] != "EXITED" or again.get("start") == first.get("start"):
                return self._status(name, again)
            return Observation(False, "EXITED, restarted and EXITED again")

        found = wait_until(f"supervisord to decide on {name} after its exit", decided,
                           timeout=SETTLE_TIMEOUT, interval=0.0, error=ServiceError,
                           log_tail=lambda: self.log_tail(name))
        assert isinstance(found, ServiceStatus)
        return found

    def is_active(self, name: str) -> bool:
        return self.status(name).is_active

    def start(self, name: str) -> None:
        status = self.status(name)
        if status.active_state == "active":
            return
        if status.active_state == "activating":  # a start under way is this start: wait for its end
            self._wait_started(name)
            return
        if status.active_state == "deactivating":  # supervisord cannot spawn a program still stopping
            wait_settled(self, name, ("deactivating",))
        self._start_process(name)

    def _start_process(self, name: str) -> None:
        try:
            self._call(name, "startProcess", name, True)
        except ServiceError as exc:
            if "ALREADY_STARTED" not in str(exc):
                raise
            # supervisord spawned it itself (autorestart) after the state this start was decided on
            self._wait_started(name)
            return
        self._wait_ready(name)

    def _wait_started(self, name: str) -> None:
        status = wait_settled(self, name, ("activating",))
        if not status.is_active:
            raise ServiceError(f"{name} failed to start ({status.detail})\n--- {name} log ---\n"
                               f"{self.log_tail(name)}")
        self._wait_ready(name)

    def _wait_ready(self, name: str) -> None:
        """Until the program's ready port accepts; its exit (or a respawn) before that is a failure."""
        port = self.ready_ports.get(name)
        if port is None:
            return
        started = self.status(name)

        def listening() -> Observation:
            status = self.status(name)
            if status.pid != started.pid or status.manager_state != "RUNNING":
                raise ServiceError(f"{name} exited before it was ready ({status.detail})\n"
                                   f"--- {name} log ---\n{self.log_tail(name)}")
            protocol = self.ready_protocols.get(name, "tcp")
            return Observation(port_accepts(port, protocol=protocol), f"pid {status.pid} ready on {port}?")

        wait_until(f"{name} to listen on 127.0.0.1:{port}", listening, timeout=READY_TIMEOUT,
                   interval=0.05, error=ServiceError, log_tail=lambda: self.log_tail(name))

    def start_nowait(self, name: str) -> None:
        """Spawn and return at once; the caller waits for readiness with a real request."""
        status = self.status(name)
        if status.active_state == "deactivating":  # supervisord cannot spawn a program still stopping
            status = wait_settled(self, name, ("deactivating",))
        if status.active_state in ("active", "activating"):
            return
        try:
            self._call(name, "startProcess", name, False)
        except ServiceError as exc:
            if "ALREADY_STARTED" not in str(exc):  # else: supervisord restarted it itself since the status
                raise

    def stop(self, name: str) -> None:
        """Stopped, and not to be restarted by supervisord: a program that has just exited is restarted
        in supervisord's next round when it autorestarts (systemd's stop cancels that restart)."""
        def stopped() -> Observation:
            status = self._decided(name)
            if status.active_state == "deactivating":  # a stop under way: stopProcess says NOT_RUNNING
                return Observation(False, status.detail)
            if status.active_state in ("inactive", "failed"):
                return Observation(True, status.detail)
            if not self._has_exec(status):
                return Observation(False, f"pid {status.pid} has not exec'd {name} yet")
            try:
                self._call(name, "stopProcess", name, True)
            except ServiceError as exc:
                if "NOT_RUNNING" not in str(exc):
                    raise
                return Observation(False, f"{name} exited as it was being stopped")  # look again
            return Observation(True, "STOPPED")

        wait_until(f"{name} to stop", stopped, timeout=SETTLE_TIMEOUT, interval=0.05, error=ServiceError,
                   log_tail=lambda: self.log_tail(name))

    def wait_exec(self, name: str) -> None:
        """Until a program supervisord has just spawned runs its own code (see _has_exec)."""
        def execed() -> Observation:
            status = self.status(name)
            return Observation(self._has_exec(status), f"{status.detail}: pid {status.pid} not exec'd yet")

        wait_until(f"{name} to exec", execed, timeout=SETTLE_TIMEOUT, interval=0.01, error=ServiceError)

    def _has_exec(self, status: ServiceStatus) -> bool:
        """Whether supervisord's child runs its program yet. Between its fork and its exec it is a copy
        of supervisord, whose SIGTERM handler only takes note: a stop sent then is lost, and stopping
        takes the program's stopwaitsecs and a SIGKILL."""
        if status.manager_state != "STARTING" or not status.pid:
            return True
        try:
            child = Path(f"/proc/{status.pid}/cmdline").read_bytes()
            supervisord = Path(f"/proc/{self._call_supervisor('getPID')}/cmdline").read_bytes()
        except OSError:  # gone: nothing left to wait for
            return True
        return child != supervisord

    def _call_supervisor(self, action: str) -> object:
        try:
            return getattr(self.rpc().supervisor, action)()
        except (OSError, xmlrpc.client.Error) as exc:
            raise ServiceError(f"supervisord at {self.socket} does not answer: {exc}") from None

    def restart(self, name: str) -> None:
        self.stop(name)
        self._start_process(name)

    def reload(self, name: str) -> None:
        status = wait_settled(self, name)
        if not status.is_active:
            raise ServiceError(f"cannot reload {name}: it is not active ({status.detail})")
        self._call(name, "signalProcess", name, self.reload_signals[name])

    def main_pid(self, name: str) -> int | None:
        return self.status(name).pid

    def spawns(self) -> dict[int, tuple[str, float]]:
        """pid -> (program, epoch seconds) of each process supervisord started, from its main log.

        supervisord puts every process it starts into a process group of its own, which the
        program's children inherit: this is how a process of a program is known after it has lost
        its command line and environment (while exiting), and after the process it came from is gone.
        """
        try:
            text = str(self.rpc().supervisor.readLog(-LOG_SCAN_BYTES, 0))
        except (OSError, xmlrpc.client.Error):
            return {}
        spawns = {}
        for match in SPAWNED.finditer(text):  # in log order: a reused pid keeps its latest program
            when = datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            spawns[int(match["pid"])] = (match["name"], when)
        return spawns

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 20) -> str:
        from recovery.journal import tail

        return tail(self.log_file(name), lines)

    def wait_active(self, name: str, timeout: float = 30.0) -> ServiceStatus:
        return wait_active(self, name, timeout)


class SystemdServiceManager:
    """ServiceManager over systemctl, for operators on real hosts."""

    def __init__(self, use_sudo: bool = False, timeout: float = 120.0):
        self.prefix = ["sudo", "-n"] if use_sudo else []
        self.timeout = timeout

    def _systemctl(self, *args: str, check: bool = True) -> str:
        try:
            return run([*self.prefix, "systemctl", *args], timeout=self.timeout, check=check).stdout
        except RecoveryError as exc:
            raise ServiceError(str(exc)) from None

    def status(self, name: str) -> ServiceStatus:
        out = self._systemctl("show", name, "--property=ActiveState,SubState,MainPID", check=False)
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        pid = int(props.get("MainPID", "0") or 0)
        return ServiceStatus(
            name,
            props.get("ActiveState", "unknown"),
            pid or None,
            f"{props.get('ActiveState', '?')} ({props.get('SubState', '?')})",
            None,
        )

    def start(self, name: str) -> None:
        self._systemctl("start", name)

    def start_nowait(self, name: str) -> None:
        """Queue the start and return; the caller waits for readiness with a real request."""
        self._systemctl("start", "--no-block", name)

    def stop(self, name: str) -> None:
        self._systemctl("stop", name)

    def restart(self, name: str) -> None:
        self._systemctl("restart", name)

    def reload(self, name: str) -> None:
        self._systemctl("reload", name)

    def is_active(self, name: str) -> bool:
        return self.status(name).is_active

    def main_pid(self, name: str) -> int | None:
        return self.status(name).pid

    def log_tail(self, name: str, lines: int = 20) -> str:
        return run(
            [*self.prefix, "journalctl", "-u", name, "-n", str(lines), "--no-pager"], timeout=30, check=False
        ).stdout
