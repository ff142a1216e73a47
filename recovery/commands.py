"""The one wrapper for external commands: argv only (no shell), a timeout always, errors with output.

When the harness runs as root, PostgreSQL and the services run as an unprivileged user; `run_as`
names that user and the command is started with its uid, gid and groups.

A tool (pg_dump, tar, git) inherits the caller's environment, as it would from an operator's shell. A
service or an app's own command (`inherit_env=False`) gets only what a service manager gives a unit:
`declared_environment`, never the caller's variables (a test runner's PYTEST_CURRENT_TEST switches
some apps into a test mode).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from recovery.errors import CommandError

log = logging.getLogger(__name__)

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's default PATH
SYSTEM_LANG = "C.UTF-8"


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class RunAs:
    """The account that runs servers and their tools; `None` fields mean "the current user"."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = field(default=())

    @classmethod
    def current(cls) -> RunAs:
        entry = pwd.getpwuid(os.getuid())
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @classmethod
    def named(cls, name: str) -> RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise CommandError([], None, "", "", f"no such user {name!r} to run the services as") from None
        groups = tuple(os.getgrouplist(name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups)

    @property
    def is_current(self) -> bool:
        return self.uid == os.getuid()


def declared_environment(run_as: RunAs | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A unit's environment: PATH, LANG, the account's HOME, USER and LOGNAME, then what the unit
    declares (`env`, which may replace any of them); nothing of the caller's own environment."""
    account = run_as or RunAs.current()
    declared = {"PATH": SYSTEM_PATH, "LANG": SYSTEM_LANG, "HOME": account.home, "USER": account.name,
                "LOGNAME": account.name}
    declared.update(env or {})
    return declared


def _environment(run_as: RunAs | None, env: Mapping[str, str] | None, inherit: bool) -> dict[str, str]:
    if not inherit:
        return declared_environment(run_as, env)
    full_env = dict(os.environ)
    if run_as is not None and not run_as.is_current:
        full_env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    full_env.update(env or {})
    return full_env


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    run_as: RunAs | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input_text: str | None = None,
    check: bool = True,
    stdin: int | None = None,
    inherit_env: bool = True,
    stderr_line: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run argv and wait at most `timeout` seconds; raise CommandError unless it succeeds (when check).

    `stdin` is a file descriptor to read from instead of `input_text` (a pipe fed by the caller);
    `inherit_env=False`: only the declared environment (see declared_environment) and `env`;
    `stderr_line` sees each line of stderr as it comes (a verbose tool's progress).
    """
    args = [os.fspath(a) for a in argv]
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    kwargs = _identity_kwargs(run_as)
    full_env = _environment(run_as, env, inherit_env)
    started = time.monotonic()
    log.debug("run %s", args)
    if stderr_line is not None:
        proc = _run_watched(args, timeout, stdin, full_env, cwd, stderr_line, kwargs)
    else:
        proc = _run_captured(args, timeout, input_text, stdin, full_env, cwd, kwargs)
    result = CommandResult(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stdout, proc.stderr, f"exit status {proc.returncode}")
    return result


def _run_captured(args: list[str], timeout: float, input_text: str | None, stdin: int | None,
                  env: dict[str, str], cwd: str | os.PathLike[str] | None,
                  kwargs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args,
            input=input_text,
            stdin=stdin,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            args, None, _text(exc.stdout), _text(exc.stderr), f"timed out after {timeout:g}s"
        ) from None
    except OSError as exc:
        raise CommandError(args, None, "", str(exc), "could not start") from None


def _run_watched(args: list[str], timeout: float, stdin: int | None, env: dict[str, str],
                 cwd: str | os.PathLike[str] | None, stderr_line: Callable[[str], None],
                 kwargs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """subprocess.run's capture, with each stderr line handed to stderr_line as it comes; killed at
    the timeout."""
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL if stdin is None else stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                env=env, cwd=cwd, **kwargs)  # type: ignore[call-overload]
    except OSError as exc:
        raise CommandError(args, None, "", str(exc), "could not start") from None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    err: list[str] = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            err.append(line)
            stderr_line(line.rstrip("\n"))
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    if expired.is_set():
        raise CommandError(args, None, "".join(out), "".join(err), f"timed out after {timeout:g}s")
    return subprocess.CompletedProcess(args, proc.returncode, "".join(out), "".join(err))


@contextlib.contextmanager
def output_of(argv: Sequence[str | os.PathLike[str]], *, timeout: float,
              stdin: int | None = None) -> Iterator[IO[bytes]]:
    """Run argv with its stdout as a binary stream for the caller to read (a decompressor). When the
    caller is done, the rest is drained and the exit status checked (CommandError); when the caller
    fails, the command is killed. `timeout` bounds the wait for its exit after the caller's read.
    `stdin`: a file descriptor it reads (an open file: its offset shows how far the command is)."""
    args = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL if stdin is None else stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise CommandError(args, None, "", str(exc), "could not start") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        yield proc.stdout
        while proc.stdout.read(1024 * 1024):
            pass
        _wait_checked(proc, args, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _wait_checked(proc: subprocess.Popen[bytes], args: list[str], timeout: float) -> None:
    """The streamed command's end: CommandError when it overruns or exits non-zero (with its stderr)."""
    assert proc.stderr is not None
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandError(args, None, "", "", f"timed out after {timeout:g}s") from None
    if code != 0:
        raise CommandError(args, code, "", _text(proc.stderr.read()), f"exit status {code}")


@contextlib.contextmanager
def input_to(argv: Sequence[str | os.PathLike[str]], *, stdout_path: str | os.PathLike[str] | None = None,
             timeout: float, run_as: RunAs | None = None,
             cwd: str | os.PathLike[str] | None = None) -> Iterator[IO[bytes]]:
    """Run argv (as `run_as`, in `cwd`) with its stdin as a binary stream for the caller to write (a
    compressor, an extractor) and its stdout into stdout_path (or nowhere). When the caller is done,
    stdin is closed and the exit status checked (CommandError); when the caller fails, the command is
    killed."""
    args = [os.fspath(a) for a in argv]
    with open(stdout_path or os.devnull, "wb") as out:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE, cwd=cwd,
                                    **_identity_kwargs(run_as))
        except OSError as exc:
            raise CommandError(args, None, "", str(exc), "could not start") from None
    assert proc.stdin is not None and proc.stderr is not None
    try:
        yield proc.stdin
        proc.stdin.close()
        _wait_checked(proc, args, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        proc.stderr.close()


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    run_as: RunAs | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout_path: str | os.PathLike[str] | None = None,
    inherit_env: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running process (a supervisor); the caller owns it and must stop it.
    `inherit_env=False`: only the declared environment and `env` (a service's)."""
    args = [os.fspath(a) for a in argv]
    full_env = dict(os.environ, **(env or {})) if inherit_env else declared_environment(run_as, env)
    out = open(stdout_path, "ab") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            args,
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_identity_kwargs(run_as),
        )
    except OSError as exc:
        raise CommandError(args, None, "", str(exc), "could not start") from None
    finally:
        if stdout_path:
            out.close()  # type: ignore[union-attr]


def _identity_kwargs(run_as: RunAs | None) -> dict[str, object]:
    if run_as is None or run_as.is_current:
        return {}
    if os.geteuid() != 0:
        raise CommandError([], None, "", "", f"only root can run commands as {run_as.name}")
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
