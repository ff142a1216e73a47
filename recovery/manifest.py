"""The manifest an mks archive carries as its first member: every entry's path, type, mode, size and
SHA-256, as JSON with one entry a line (read line by line, so the raw text is never held whole)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from recovery.errors import RecoveryError

MANIFEST_NAME = ".mks-manifest.json"
FORMAT = "mks-archive/1"
LINES_A_BATCH = 2000


class ArchiveError(RecoveryError):
    """An archive is unreadable, unsafe or does not match its manifest; nothing was extracted."""


@dataclass(frozen=True, slots=True)  # slots: a manifest of 100,000 entries stays in memory
class Entry:
    path: str
    type: str  # file | dir | symlink
    mode: int
    size: int = 0
    sha256: str = ""
    target: str = ""  # symlinks only

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "type": self.type, "mode": f"{self.mode:04o}"}
        if self.type == "file":
            data.update(size=self.size, sha256=self.sha256)
        if self.type == "symlink":
            data["target"] = self.target
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        try:
            # one copy of each type name for all entries (100,000 copies of "file" otherwise)
            return cls(path=str(data["path"]), type=sys.intern(str(data["type"])),
                       mode=int(str(data["mode"]), 8), size=int(data.get("size", 0)),
                       sha256=str(data.get("sha256", "")), target=str(data.get("target", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"manifest entry {data!r} is malformed: {exc}") from None


@dataclass
class Manifest:
    root: str  # what the archive's paths are relative to ("uploads", "/")
    created: str
    entries: list[Entry] = field(default_factory=list)
    plain: bool = False  # built from reading a plain tar.gz (recovery.plain_archives), not carried by it

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type == "file"]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files)

    def to_json(self) -> bytes:
        """One entry a line, by json's C encoder (indent= would take its pure-Python one: seconds
        for 100,000 entries)."""
        encode = json.JSONEncoder(ensure_ascii=False).encode
        head = encode({"format": FORMAT, "root": self.root, "created": self.created})
        entries = ",\n".join(encode(e.to_dict()) for e in self.entries)
        return f'{head[:-1]}, "entries": [\n{entries}\n]}}\n'.encode()

    @classmethod
    def read(cls, handle: IO[bytes]) -> Manifest:
        """The manifest from a reader, line by line when it is laid out as to_json writes it (one entry
        a line: the raw text is never held whole), else (an older archive's indented JSON) whole."""
        head = handle.readline()
        if not head.rstrip().endswith(b'"entries": ['):
            return cls.from_json(head + handle.read())
        try:
            body = json.loads(head.rstrip()[:-len(b', "entries": [')] + b"}")
        except ValueError as exc:
            raise ArchiveError(f"manifest is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ArchiveError(f"manifest format is not {FORMAT}")
        manifest = cls(str(body.get("root", "")), str(body.get("created", "")))
        lines: list[bytes] = []
        numbers: list[int] = []
        for number, line in enumerate(handle, start=2):
            text = line.strip()
            if not text:  # to_json of no entries writes an empty line
                continue
            if text == b"]}":
                manifest.entries += _entries(lines, numbers)
                if handle.read().strip():
                    raise ArchiveError(f"manifest has data after its end (line {number})")
                return manifest
            lines.append(text.removesuffix(b","))
            numbers.append(number)
            if len(lines) == LINES_A_BATCH:
                manifest.entries += _entries(lines, numbers)
                lines, numbers = [], []
        raise ArchiveError("manifest ends before its entry list does")

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:  # each entry becomes an Entry as it is parsed: never all of them twice in memory
            body = json.loads(raw, object_hook=_entry_hook)
        except ValueError as exc:
            raise ArchiveError(f"manifest is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ArchiveError(f"manifest format is not {FORMAT}")
        entries = body.get("entries")
        if not isinstance(entries, list):
            raise ArchiveError("manifest has no entry list")
        return cls(str(body.get("root", "")), str(body.get("created", "")),
                   [e if isinstance(e, Entry) else Entry.from_dict(e) for e in entries])


def _entries(lines: list[bytes], numbers: list[int]) -> list[Entry]:
    """The entries of a batch of manifest lines, parsed by one call of json's C decoder (one call a
    line took a second for 100,000 entries, before tar could start); a bad line is named."""
    try:
        rows = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        rows = None
    if not isinstance(rows, list) or len(rows) != len(lines):
        rows = []
        for number, text in zip(numbers, lines, strict=True):
            try:
                rows.append(json.loads(text))
            except ValueError as exc:
                raise ArchiveError(f"manifest line {number} is not JSON: {exc}") from None
    entries = []
    for number, data in zip(numbers, rows, strict=True):
        if not isinstance(data, dict):
            raise ArchiveError(f"manifest line {number} is not an entry: {str(data)[:80]!r}")
        entries.append(Entry.from_dict(data))
    return entries


def _entry_hook(data: dict[str, Any]) -> Any:
    """json's object hook: a manifest entry as an Entry, any other object as it is (a malformed entry
    too: from_json then says what is wrong with it)."""
    if "path" in data and "type" in data and "format" not in data:
        try:
            return Entry.from_dict(data)
        except ArchiveError:
            return data
    return data
