"""Reads an `strace -f -y` log and lists every path a traced process tree wrote, created or removed.

Used by the isolation tests to assert (not assume) that a harness session writes nothing outside its
sandbox roots and reports folder. Relative paths are resolved against each process's working
directory, which is followed through chdir/fchdir and inherited at fork/clone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

STRACE_ARGS = [
    "-f",
    "-qq",
    "-y",
    "--seccomp-bpf",
    "-s",
    "512",
    "-e",
    "trace=%file,%process,fchdir,bind",
]
_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD_PATH = re.compile(r"^(?:\d+|AT_FDCWD)(?:<([^>]*)>)?")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
# syscalls that change the file system; the path arguments that they change
_PATH_CALLS = {
    "mkdir": (0,),
    "rmdir": (0,),
    "unlink": (0,),
    "rename": (0, 1),
    "link": (1,),
    "symlink": (1,),
    "chmod": (0,),
    "chown": (0,),
    "lchown": (0,),
    "truncate": (0,),
    "mknod": (0,),
    "utime": (0,),
    "utimes": (0,),
    "creat": (0,),
}
_AT_CALLS = {  # (dirfd index, path index) pairs
    "mkdirat": ((0, 1),),
    "unlinkat": ((0, 1),),
    "renameat": ((0, 1), (2, 3)),
    "renameat2": ((0, 1), (2, 3)),
    "linkat": ((2, 3),),
    "symlinkat": ((1, 2),),
    "fchmodat": ((0, 1),),
    "fchownat": ((0, 1),),
    "mknodat": ((0, 1),),
    "utimensat": ((0, 1),),
}


@dataclass(frozen=True)
class Write:
    pid: int
    call: str
    path: str


def _unescape(text: str) -> str:
    return (
        text.encode("latin-1", "backslashreplace")
        .decode("unicode_escape")
        .encode("latin-1")
        .decode("utf-8", "replace")
    )


def _split_args(args: str) -> list[str]:
    parts, depth, current, in_string, escape = [], 0, [], False, False
    for ch in args:
        if in_string:
            current.append(ch)
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{(<":
            depth += 1
        elif ch in "]})>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if current:
        parts.append("".join(current).strip())
    return parts


def _string(arg: str) -> str | None:
    match = _STRING.search(arg)
    return _unescape(match.group(1)) if match else None


class _Tracker:
    def __init__(self, initial_cwd: str, root_pid: int | None):
        self.cwd: dict[int, str] = {}
        self.initial_cwd = initial_cwd
        self.root_pid = root_pid
        self.writes: list[Write] = []

    def cwd_of(self, pid: int) -> str:
        return self.cwd.setdefault(pid, self.initial_cwd)

    def resolve(self, pid: int, base: str | None, path: str) -> str:
        if path.startswith("/"):
            return os.path.normpath(path)
        return os.path.normpath(os.path.join(base or self.cwd_of(pid), path))

    def dirfd_base(self, pid: int, arg: str) -> str | None:
        match = _FD_PATH.match(arg)
        if arg.startswith("AT_FDCWD") or not match:
            return None
        return match.group(1)

    def handle(self, pid: int, call: str, args: list[str], ret: str, rest: str) -> None:
        if call in ("clone", "clone3", "fork", "vfork") and ret.isdigit():
            self.cwd[int(ret)] = self.cwd_of(pid)
            return
        if ret == "?" or ret.startswith("-"):
            return
        if call == "chdir" and args:
            self.cwd[pid] = self.resolve(pid, None, _string(args[0]) or ".")
        elif call == "fchdir" and args:
            base = self.dirfd_base(pid, args[0])
            if base:
                self.cwd[pid] = base
        elif call in ("open", "openat", "openat2"):
            flags = args[2] if call == "openat" and len(args) > 2 else (args[1] if len(args) > 1 else "")
            if any(flag in flags for flag in _WRITE_FLAGS):
                decoded = re.match(r"<([^>]*)>", rest.strip())
                path = _string(args[1] if call != "open" else args[0]) or ""
                resolved = (
                    decoded.group(1)
                    if decoded
                    else self.resolve(pid, self.dirfd_base(pid, args[0]) if call != "open" else None, path)
                )
                self.writes.append(Write(pid, call, resolved))
        elif call in _PATH_CALLS:
            for index in _PATH_CALLS[call]:
                if index < len(args) and (path := _string(args[index])) is not None:
                    self.writes.append(Write(pid, call, self.resolve(pid, None, path)))
        elif call in _AT_CALLS:
            for dir_index, path_index in _AT_CALLS[call]:
                if path_index < len(args) and (path := _string(args[path_index])) is not None:
                    base = self.dirfd_base(pid, args[dir_index])
                    self.writes.append(Write(pid, call, self.resolve(pid, base, path)))
        elif call == "bind" and len(args) > 1 and "AF_UNIX" in args[1]:
            path = _string(args[1])
            if path and not path.startswith("@"):
                self.writes.append(Write(pid, call, self.resolve(pid, None, path)))


def writes_in(log_text: str, initial_cwd: str) -> list[Write]:
    """Every successful file-system change in the log, with absolute paths.

    strace -f may print a new process's first calls before its parent's clone returns; the new process
    inherits the parent's working directory at the clone, so its calls wait until that return is read
    (taking them in log order resolved a child's `chdir` + relative writes against the parent's folder).
    """
    tracker = _Tracker(initial_cwd, None)
    pending: dict[int, str] = {}
    known: set[int] = set()
    waiting: dict[int, list[tuple[str, list[str], str, str]]] = {}

    def handle(pid: int, call: tuple[str, list[str], str, str]) -> None:
        if not known:
            known.add(pid)  # the first process of the log is the traced one
        if pid not in known:
            waiting.setdefault(pid, []).append(call)
            return
        tracker.handle(pid, *call)
        name, _, ret, _ = call
        if name in ("clone", "clone3", "fork", "vfork") and ret.isdigit():
            known.add(int(ret))
            for early in waiting.pop(int(ret), []):
                handle(int(ret), early)

    for raw in log_text.splitlines():
        match = _LINE.match(raw)
        if not match:
            continue
        pid, text = int(match.group(1)), match.group(2)
        if text.endswith("<unfinished ...>"):
            pending[pid] = text[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = _RESUMED.match(text)
        if resumed:
            text = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
        call = _CALL.match(text)
        if call:
            name, args, ret, rest = call.groups()
            handle(pid, (name, _split_args(args), ret, rest))
    for pid, calls in waiting.items():  # a clone the log never showed returning: counted, never dropped
        for call in calls:
            tracker.handle(pid, *call)
    return tracker.writes


def outside(writes: list[Write], allowed: list[str]) -> list[Write]:
    """The writes that land outside every allowed root (and outside harmless kernel files).

    initdb probes POSIX shared memory (/dev/shm/PostgreSQL.N) whatever the configuration says; such a
    segment is memory, not a file, and is tolerated only when the trace shows it removed again.
    """
    harmless = ("/dev/null", "/dev/tty", "/dev/pts/", "/proc/", "/dev/urandom")
    removed_segments = {
        w.path for w in writes if w.call == "unlink" and w.path.startswith("/dev/shm/PostgreSQL.")
    }
    roots = [os.path.normpath(a) for a in allowed]
    return [
        w
        for w in writes
        if not w.path.startswith(harmless)
        and w.path not in removed_segments
        and not any(w.path == r or w.path.startswith(r + "/") for r in roots)
    ]
