"""No secret in any artifact: mask what goes into a report, and scan what came out.

Two kinds of knowledge: secrets known by value (a stack's generated passwords and JWT secret,
handed over by the plugin) and secrets known by shape (a JWT, a private key, a credential in a URL,
`password=...`). The renderer masks both before writing; the scanner reads every artifact afterwards
and reports what still looks like a secret, so a masking gap is a finding, not a leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MASK = "********"
MIN_KNOWN_LENGTH = 8  # shorter "secrets" would mask ordinary words

SHAPES: dict[str, re.Pattern[str]] = {
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "private-key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?(?:-----END[^-]*-----|$)"),
    "url-credentials": re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)([^\s@/*]{3,})(@)"),
    "bearer": re.compile(r"\b(Bearer\s+)(?!\*{8})([A-Za-z0-9._~+/-]{16,}=*)"),
    # password=..., "secret": "...", PGPASSWORD=..., jwt_secret: ... (a value not masked already)
    "assignment": re.compile(
        r"""(?ix)
        ((?:\b|(?<=_)|(?<=PG))(?:pass(?:word|wd)?|secret|token|api[_-]?key|private[_-]?key)
         (?:["']|&quot;)?\s*[:=]\s*(?:["']|&quot;)?)
        (?!\*{8})([^\s"',;&}<]{6,})"""
    ),
}
# a structured value under such a key is a secret whatever its shape
SECRET_KEY = re.compile(r"(?i)(?:^|_|pg)(?:pass(?:word|wd)?|secret|token|api[_-]?key|private[_-]?key)$")
# value groups that hold the secret itself; other groups (the key, the scheme) stay readable
_KEEP_GROUPS = {"url-credentials": (1, 3), "bearer": (1,), "assignment": (1,)}
# values that are shapes, not secrets: placeholders, our own mask, a file that holds one
_HARMLESS = re.compile(r"^(\*+|<[^>]*>|\$\{?[A-Z_]+\}?|none|null|true|false|required|file|\.+|/.*)$", re.I)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    excerpt: str  # the finding with the secret itself masked


def _usable(secrets: Iterable[str]) -> list[str]:
    # longest first, so that a secret containing another is masked whole
    return sorted({s for s in secrets if s and len(s) >= MIN_KNOWN_LENGTH}, key=len, reverse=True)


def _mask_shape(kind: str, match: re.Match[str]) -> str:
    keep = _KEEP_GROUPS.get(kind)
    if not keep:
        return MASK
    value = match.group(2)
    if kind == "assignment" and _HARMLESS.match(value):
        return match.group(0)
    return "".join(MASK if i == 2 else (match.group(i) or "") for i in range(1, match.re.groups + 1))


def mask_text(text: str, known: Iterable[str] = ()) -> str:
    for secret in _usable(known):
        text = text.replace(secret, MASK)
    for kind, pattern in SHAPES.items():
        text = pattern.sub(lambda m, k=kind: _mask_shape(k, m), text)
    return text


def mask(value: Any, known: Iterable[str] = ()) -> Any:
    """A copy of a JSON-able value with every string masked (dict keys too)."""
    secrets = _usable(known)
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return {
            mask_text(str(k), secrets): MASK
            if isinstance(v, str) and v and SECRET_KEY.search(str(k)) and not _HARMLESS.match(v)
            else mask(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask(v, secrets) for v in value]
    return value


def scan_text(text: str, path: str, known: Iterable[str] = ()) -> list[Finding]:
    findings = []
    secrets = _usable(known)
    for number, line in enumerate(text.splitlines(), 1):
        for secret in secrets:
            if secret in line:
                findings.append(Finding(path, number, "known-secret", _excerpt(line, secrets)))
        for kind, pattern in SHAPES.items():
            for match in pattern.finditer(line):
                if kind == "assignment" and _HARMLESS.match(match.group(2)):
                    continue
                findings.append(Finding(path, number, kind, _excerpt(line, secrets)))
    return findings


def _excerpt(line: str, secrets: list[str]) -> str:
    return mask_text(line.strip(), secrets)[:160]


def scan_files(paths: Iterable[Path], known: Iterable[str] = (), root: Path | None = None) -> list[Finding]:
    """Scan every file (text, decoded leniently; binary files are scanned for their text runs)."""
    secrets = _usable(known)
    findings: list[Finding] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        shown = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
        findings.extend(scan_text(data.decode("utf-8", errors="replace"), shown, secrets))
    return findings
