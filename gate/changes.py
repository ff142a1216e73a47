"""Which procedures a change to the runbook touches: `--changed-since REF` gates only those.

A procedure is changed when a block of one of its sections differs from the runbook as it was at the git
ref (its text, its language, a skip mark; a section added, removed or renamed). It depends on another
when it uses a variable the other sets or a file the other writes: a change to the one gates the other
too. Prose outside the blocks does not run, and does not count.
"""

from __future__ import annotations

import re
from pathlib import Path

from gate.orchestrator import procedures
from gate.parser import Runbook, Section, parse
from gate.types import GateError
from recovery.commands import run
from recovery.errors import CommandError

# a variable set where a command starts (not `-v NAME=1` or `chmod u=rwX`), or a loop's variable
ASSIGNED = re.compile(r"(?:(?:^|[;&|(]|\bthen|\bdo|\belse)\s*(?:export\s+|local\s+|readonly\s+)?"
                      r"([A-Za-z_][A-Za-z0-9_]*)=|\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b)", re.MULTILINE)
USED = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
# where a command writes a file: a redirection, -f/-czf FILE, tee, mkdir -p, or cp/mv's last word
WRITTEN = re.compile(r"(?:>{1,2}|\s-[a-zA-Z]*f\s+|\btee\s+(?:-a\s+)?|\bmkdir\s+-p\s+)(/[^\s;|&)'\"]+)")
PATH = re.compile(r"(/[A-Za-z0-9_./*-]+)")
COMMON = {"PATH", "HOME", "USER", "PWD", "TMPDIR"}


def runbook_at(path: Path, ref: str) -> str | None:
    """The runbook's text at the git ref (None: the file did not exist there)."""
    folder = path.resolve().parent
    try:
        top = run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], timeout=30).stdout.strip()
        run(["git", "-C", top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], timeout=30)
    except CommandError as exc:
        raise GateError(f"--changed-since {ref}: not a commit of the git checkout of {path}: {exc}") from exc
    relative = path.resolve().relative_to(Path(top).resolve())
    try:
        return run(["git", "-C", top, "show", f"{ref}:{relative.as_posix()}"], timeout=30).stdout
    except CommandError:
        return None


def _blocks(sections: list[Section]) -> list[tuple[str, tuple[tuple[str, str, str | None], ...]]]:
    return [(s.key, tuple((b.lang, b.text, b.skip_reason) for b in s.blocks)) for s in sections]


def _text(sections: list[Section]) -> str:
    return "\n".join(b.text for s in sections for b in s.shell_blocks if not b.skip_reason)


def makes(sections: list[Section]) -> tuple[set[str], set[str]]:
    """(variables it sets, files it writes; a path cut at its first expansion or wildcard)"""
    text = _text(sections)
    variables = {m.group(1) or m.group(2) for m in ASSIGNED.finditer(text)} - COMMON
    files = {re.split(r"[$*]", m.group(1))[0] for m in WRITTEN.finditer(text)}
    return variables, {f for f in files if f.count("/") >= 2 and f not in ("/dev/null", "/tmp/")}


def uses(sections: list[Section]) -> tuple[set[str], set[str]]:
    text = _text(sections)
    return {m.group(1) for m in USED.finditer(text)}, {m.group(1) for m in PATH.finditer(text)}


def dependents(book: Runbook, titles: set[str]) -> set[str]:
    """The procedures that use a variable or a file one of `titles` makes (and theirs, in turn)."""
    groups = dict(procedures(book))
    found, todo = set(titles), list(titles)
    while todo:
        variables, files = makes(groups[todo.pop()])
        for title, sections in groups.items():
            if title in found:
                continue
            used_vars, used_paths = uses(sections)
            own_vars, _ = makes(sections)
            reads = any(p.startswith(f) for p in used_paths for f in files)
            if variables & (used_vars - own_vars) or reads:
                found.add(title)
                todo.append(title)
    return found


def changed(book: Runbook, before: str | None) -> tuple[list[str], list[str]]:
    """(the procedures whose blocks changed, those that depend on them), in the runbook's order."""
    now = procedures(book)
    if before is None:
        return [t for t, _ in now], []
    then = {title: _blocks(sections) for title, sections in procedures(parse(before, book.path))}
    direct = {title for title, sections in now if then.get(title) != _blocks(sections)}
    behind = dependents(book, direct) - direct
    return [t for t, _ in now if t in direct], [t for t, _ in now if t in behind]
