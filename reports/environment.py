"""The environment a drill ran in: OS, PostgreSQL, nginx, Python, harness and runbook revisions.

What the drill recorded in DrillRecord.environment wins; what it left out is looked up here, once
per process (the versions do not change during a run).
"""

from __future__ import annotations

import functools
import platform
import shutil
import sys
from pathlib import Path

from recovery.archives import sha256_file
from recovery.commands import run
from recovery.errors import RecoveryError

PROJECT = Path(__file__).resolve().parents[1]
RUNBOOK_GLOB = "15_復旧手順*.md"
ORDER = (
    "os",
    "kernel",
    "python",
    "postgresql",
    "nginx",
    "harness_revision",
    "runbook",
    "runbook_revision",
    "runbook_sha256",
    "host",
)


def _first_line(argv: list[str], cwd: Path | None = None) -> str:
    try:
        # GIT_OPTIONAL_LOCKS=0: `git status` must not refresh the project's index (a write outside
        # the sandbox and the reports folder)
        result = run(argv, timeout=10, cwd=cwd, check=False, env={"GIT_OPTIONAL_LOCKS": "0"})
    except RecoveryError:
        return ""
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0].strip() if result.returncode == 0 and text else ""


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def postgresql_version(bindir: str | None = None) -> str:
    candidates = [Path(bindir) / "postgres"] if bindir else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    for binary in candidates:
        if binary.exists():
            return _first_line([str(binary), "--version"])
    return ""


def nginx_version(binary: str | None = None) -> str:
    found = (
        binary or shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    )
    if not found:
        return ""
    try:
        result = run([found, "-v"], timeout=10, check=False)
    except RecoveryError:
        return ""
    return (result.stderr or result.stdout).strip().replace("nginx version: ", "")


def git_revision(path: Path) -> str:
    """The commit that last changed path (a file) or HEAD (a folder), with a mark when modified."""
    folder = path if path.is_dir() else path.parent
    if not shutil.which("git"):
        return ""
    if path.is_dir():
        rev = _first_line(["git", "-C", str(folder), "rev-parse", "HEAD"])
        dirty = _first_line(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"])
    else:
        rev = _first_line(["git", "-C", str(folder), "log", "-1", "--format=%H", "--", path.name])
        dirty = _first_line(["git", "-C", str(folder), "status", "--porcelain", "--", path.name])
    if not rev:
        return "(not under git)"
    return rev + (" (modified)" if dirty else "")


def find_runbook(configured: str | None, root: Path = PROJECT) -> Path | None:
    """The runbook file: as configured, else the first 15_復旧手順*.md under the project."""
    if configured:
        path = Path(configured)
        return path if path.is_file() else None
    for found in sorted(root.rglob(RUNBOOK_GLOB)):
        if ".venv" not in found.parts and "out" not in found.parts:
            return found
    return None


@functools.cache
def machine(runbook: str | None = None) -> dict[str, str]:
    info = {
        "os": os_name(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "postgresql": postgresql_version(),
        "nginx": nginx_version(),
        "harness_revision": git_revision(PROJECT),
        "host": platform.node(),
    }
    path = find_runbook(runbook)
    if path is None:
        info.update(runbook="(not found: set --drill-runbook)", runbook_revision="", runbook_sha256="")
    else:
        info.update(runbook=path.name, runbook_revision=git_revision(path), runbook_sha256=sha256_file(path))
    return info


def complete(recorded: dict[str, str], runbook: str | None = None) -> dict[str, str]:
    """The recorded environment, completed from this machine, in a stable order."""
    found = machine(runbook)
    merged = dict(found)
    for key, value in recorded.items():
        # a recorded "15" says less than the "postgres (PostgreSQL) 15.18 ..." found here
        if value not in (None, "") and not (found.get(key) and str(value) in found[key]):
            merged[key] = str(value)
    ordered = {k: merged[k] for k in ORDER if k in merged}
    ordered.update({k: v for k, v in merged.items() if k not in ordered})
    return ordered
