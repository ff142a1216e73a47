"""A Markdown runbook -> sections (by heading) -> fenced blocks -> shell commands (as bash would group them).

Robust to what real runbooks contain: Japanese headings, a fence left open at the end of the file
(the block runs to the end, and the document gets a problem noted), comment-only lines, placeholders
such as `<PID>`, non-shell blocks (the REC template's ```markdown), multi-line commands (a trailing
backslash, a quote or `$(` left open, a here-document, `while ... done`).

The gate's marking convention (documented at the top of the corrected runbook):
- `# gate: skip 理由` on its own line: the next command is documentation only in a sandbox;
- `<!-- gate: skip 理由 -->` right before a fence: the whole block is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh", ""}
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
SKIP_LINE = re.compile(r"^\s*#\s*gate:\s*skip\b\s*(.*)$")
SKIP_BLOCK = re.compile(r"^\s*<!--\s*gate:\s*skip\b\s*(.*?)\s*-->\s*$")
HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
OPENERS = {"if", "while", "until", "for", "case", "select", "{"}
CLOSERS = {"fi", "done", "esac", "}"}


@dataclass
class Command:
    text: str  # as written, possibly several lines
    line: int  # its first line in the file
    skip_reason: str | None = None  # marked by the gate convention as documentation only

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ""


@dataclass
class Block:
    lang: str
    line: int  # line of the opening fence
    text: str
    closed: bool
    skip_reason: str | None = None
    commands: list[Command] = field(default_factory=list)

    @property
    def is_shell(self) -> bool:
        return self.lang.lower() in SHELL_LANGS

    @property
    def is_script(self) -> bool:
        return self.text.startswith("#!")


@dataclass
class Section:
    title: str
    level: int
    path: tuple[str, ...]  # the headings above it and itself
    line: int
    blocks: list[Block] = field(default_factory=list)

    @property
    def key(self) -> str:
        return " > ".join(self.path[1:] if len(self.path) > 1 else self.path)

    @property
    def shell_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.is_shell]


@dataclass
class Runbook:
    path: str
    sections: list[Section]
    problems: list[str] = field(default_factory=list)  # of the document itself

    def section(self, title: str) -> Section:
        found = [s for s in self.sections if s.title == title or s.key == title]
        if len(found) != 1:
            raise KeyError(f"{len(found)} sections named {title!r}")
        return found[0]


def parse_file(path: str | Path) -> Runbook:
    return parse(Path(path).read_text(encoding="utf-8"), str(path))


def parse(text: str, path: str = "<runbook>") -> Runbook:
    lines = text.splitlines()
    sections: list[Section] = []
    problems: list[str] = []
    stack: list[tuple[int, str]] = []
    current = Section("(前文)", 0, ("(前文)",), 1)
    pending_skip: str | None = None
    i = 0
    while i < len(lines):
        raw = lines[i]
        opened = FENCE_OPEN.match(raw)
        heading = HEADING.match(raw)
        if opened:
            fence, lang = opened.group(2), opened.group(3)
            body, j, closed = _fence_body(lines, i + 1, fence)
            if not closed:
                problems.append(f"line {i + 1}: the ```{lang} fence is never closed "
                                "(it runs to the end of the file)")
            block = Block(lang, i + 1, "\n".join(body), closed, pending_skip)
            if block.is_shell:
                block.commands = split_commands(body, i + 2)
            current.blocks.append(block)
            pending_skip = None
            i = j + 1
            continue
        if heading:
            level, title = len(heading.group(1)), heading.group(2)
            if current.blocks or current.level:
                sections.append(current)
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            current = Section(title, level, tuple(t for _, t in stack), i + 1)
        else:
            marker = SKIP_BLOCK.match(raw)
            if marker:
                pending_skip = marker.group(1) or "marked gate: skip"
            elif raw.strip():
                pending_skip = None
        i += 1
    sections.append(current)
    return Runbook(path, [s for s in sections if s.level or s.blocks], problems)


def _fence_body(lines: list[str], start: int, fence: str) -> tuple[list[str], int, bool]:
    """The lines up to the closing fence (same character, at least as long, nothing after it)."""
    closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    for j in range(start, len(lines)):
        if closing.match(lines[j]):
            return lines[start:j], j, True
    return lines[start:], len(lines), False


@dataclass
class _State:
    single: bool = False
    double: bool = False
    parens: int = 0
    compound: int = 0
    heredocs: list[tuple[str, bool]] = field(default_factory=list)  # (delimiter, strip tabs)
    continued: bool = False

    @property
    def open(self) -> bool:
        return self.single or self.double or self.parens > 0 or self.compound > 0 or bool(self.heredocs) \
            or self.continued


def split_commands(lines: list[str], first_line: int) -> list[Command]:
    """Group a shell block's lines into complete commands; a shebang block is one command (a script)."""
    if lines and lines[0].startswith("#!"):
        return [Command("\n".join(lines), first_line)]
    commands: list[Command] = []
    state = _State()
    buffer: list[str] = []
    start = first_line
    skip: str | None = None
    reading_heredocs: list[tuple[str, bool]] = []
    for offset, line in enumerate(lines):
        number = first_line + offset
        if reading_heredocs:
            buffer.append(line)
            delimiter, strip = reading_heredocs[0]
            if (line.lstrip("\t") if strip else line) == delimiter:
                reading_heredocs.pop(0)
                if not reading_heredocs and not state.open:
                    commands.append(Command("\n".join(buffer), start, skip))
                    buffer, skip = [], None
            continue
        if not buffer:
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                marker = SKIP_LINE.match(line)
                if marker:
                    skip = marker.group(1) or "marked gate: skip"
                continue
            start = number
        buffer.append(line)
        _scan(line, state)
        if state.heredocs:
            reading_heredocs, state.heredocs = state.heredocs, []
            continue
        if not state.open:
            commands.append(Command("\n".join(buffer), start, skip))
            buffer, skip = [], None
    if buffer:  # an unfinished command at the end of the block: keep it, bash will complain
        commands.append(Command("\n".join(buffer), start, skip))
    return commands


def _scan(line: str, state: _State) -> None:
    """Advance the quoting/nesting state over one line (enough of bash's grammar for runbooks)."""
    state.continued = False
    word = ""
    i = 0
    at_word_start = True
    while i < len(line):
        ch = line[i]
        if state.single:
            if ch == "'":
                state.single = False
            i += 1
            continue
        if ch == "\\":
            if i == len(line) - 1:
                state.continued = True
            i += 2
            at_word_start = False
            continue
        if state.double:
            if ch == '"':
                state.double = False
            elif line.startswith("$(", i):
                state.parens += 1
                i += 1
            elif ch == ")" and state.parens:
                state.parens -= 1
            i += 1
            continue
        if ch == "#" and at_word_start:
            break
        if ch == "'":
            state.single = True
        elif ch == '"':
            state.double = True
        elif ch == "(":
            state.parens += 1
        elif ch == ")":
            state.parens = max(0, state.parens - 1)
        elif line.startswith("<<", i) and not line.startswith("<<<", i):
            match = HEREDOC.match(line, i)
            if match:
                state.heredocs.append((match.group(3), match.group(1) == "-"))
                i = match.end()
                continue
        if ch.isspace() or ch in ";|&()":
            _keyword(word, state)
            word = ""
            at_word_start = True
        else:
            word += ch
            at_word_start = False
        i += 1
    _keyword(word, state)


def _keyword(word: str, state: _State) -> None:
    if word in OPENERS:
        state.compound += 1
    elif word in CLOSERS and state.compound:
        state.compound -= 1
