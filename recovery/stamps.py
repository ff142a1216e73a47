"""A backup proven restorable gets a signed stamp beside it: `<backup>.verified.json`.

Written when a restore of it (db-restore, uploads-restore, or a drill running them) succeeded: every
check of the restore passed, so the backup is known to restore. The stamp says which backup (its name,
bytes and SHA-256: a stamp of another or a changed file is refused), when, by which run, what passed,
and the harness's version; it is signed with Ed25519 (the key format and signature document of the
run manifests' signatures, reports/signing.py), by the given key or, without one, by a key made for
this stamp alone (which proves the stamp is whole, not who wrote it: pin a key to verify).
`python -m reports verify-backup FILE` checks it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recovery.archives import sha256_file
from recovery.errors import RecoveryError
from recovery.journal import Journal

SUFFIX = ".verified.json"
# the actions whose success proves a backup restorable: the step and detail that name the backup
PROVING = {"database_restore": ("select_backup", "backup"), "uploads-restore": ("select", "archive")}


class StampError(RecoveryError):
    """A stamp cannot be written (no key, no backup)."""


def stamp_path(backup: Path) -> Path:
    return backup.with_name(backup.name + SUFFIX)


def canonical(body: dict[str, Any]) -> bytes:
    """The bytes a stamp's signature covers."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def harness_version() -> str:
    try:
        return importlib.metadata.version("mks-drill")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise StampError(f"cannot read the stamp key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise StampError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise StampError(f"{path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def proven_backup(journal: Journal) -> Path | None:
    """The backup a succeeded restore proved restorable (None for another action or a failed one)."""
    if journal.status != "succeeded" or journal.action not in PROVING:
        return None
    step_name, detail = PROVING[journal.action]
    for step in journal.steps:
        if step.name == step_name and step.details.get(detail):
            return Path(str(step.details[detail]))
    return None


def stamp(backup: Path, *, run: str, checks: list[str], key: Ed25519PrivateKey | None = None,
          action: str = "", now: dt.datetime | None = None) -> Path:
    """Write `<backup>.verified.json` (replacing an earlier stamp atomically)."""
    if not backup.is_file():
        raise StampError(f"{backup}: no such backup to stamp")
    ephemeral = key is None
    signer = key or Ed25519PrivateKey.generate()
    body = {"backup": backup.name, "bytes": backup.stat().st_size, "sha256": sha256_file(backup),
            "verified_at": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"), "run": run,
            "action": action, "checks": checks, "harness_version": harness_version()}
    public = signer.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    document = {"stamp": body, "signature": {
        "algorithm": "ed25519", "ephemeral_key": ephemeral,
        "public_key": public.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "fingerprint": "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("="),
        "signature": base64.b64encode(signer.sign(canonical(body))).decode()}}
    path = stamp_path(backup)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def stamp_journal(journal: Journal, *, run: str | None = None, key: Ed25519PrivateKey | None = None
                  ) -> Path | None:
    """Stamp the backup a succeeded restore proved (None when the journal proves none); its checks are
    the restore's steps, all passed."""
    backup = proven_backup(journal)
    if backup is None:
        return None
    checks = [step.name for step in journal.steps if step.status == "ok"]
    return stamp(backup, run=run or f"{journal.action}@{journal.started_at}", checks=checks, key=key,
                 action=journal.action)
