"""A manifest of artifact hashes per run, and its verification.

The format is sha256sum's (`<hex>  <path>`), paths relative to the manifest's folder, so both
`python -m reports verify DIR` and `cd DIR && sha256sum -c MANIFEST.sha256` check it. A changed,
missing or unlisted-but-claimed file is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from recovery.archives import sha256_file
from reports.numbering import ReportError

MANIFEST = "MANIFEST.sha256"


class ManifestError(ReportError):
    """A manifest cannot be read."""


@dataclass
class Verification:
    manifest: Path
    checked: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.changed and not self.missing

    def lines(self) -> list[str]:
        out = [f"{self.manifest}: {self.checked} files"]
        out += [f"  CHANGED  {p}" for p in self.changed]
        out += [f"  MISSING  {p}" for p in self.missing]
        out.append("  OK" if self.ok else "  FAILED")
        return out


def write(folder: Path, files: Iterable[Path]) -> Path:
    """Write folder/MANIFEST.sha256 listing every file (sorted, each once)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for path in sorted({Path(p).resolve() for p in files}):
        relative = os.path.relpath(path, folder.resolve())
        if "\n" in relative or "\\" in relative:
            raise ManifestError(f"unusable file name in manifest: {relative!r}")
        lines.append(f"{sha256_file(path)}  {relative}\n")
    target = folder / MANIFEST
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, target)
    return target


def entries(manifest: Path) -> list[tuple[str, str]]:
    try:
        text = manifest.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read {manifest}: {exc.strerror}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, relative = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ManifestError(f"{manifest}:{number}: not a sha256sum line")
        out.append((digest.lower(), relative))
    return out


def verify(manifest: Path) -> Verification:
    result = Verification(manifest)
    for digest, relative in entries(manifest):
        path = manifest.parent / relative
        result.checked += 1
        if not path.is_file():
            result.missing.append(relative)
        elif sha256_file(path) != digest:
            result.changed.append(relative)
    return result


def find(location: Path) -> list[Path]:
    """The manifests at a location: the file itself, a run folder's, or every run's of a reports folder."""
    if location.is_file():
        return [location]
    if (location / MANIFEST).is_file():
        return [location / MANIFEST]
    return sorted(location.glob(f"runs/*/{MANIFEST}"))
