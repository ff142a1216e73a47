"""Is this backup proven restorable, when, by which run? The stamps recovery/stamps.py writes, checked;
and metrics per backup set for monitoring.

`python -m reports verify-backup FILE [--public-key PEM]`: FILE is a backup or its `.verified.json`.
Exit 0 only when the stamp is there, its signature valid (by the pinned key when one is given) and it
describes this very file (bytes and SHA-256); 1 with the reason otherwise.

`python -m reports backup-metrics DIR [--history FILE]`: Prometheus text, per backup set (database
dumps, uploads archives): the newest backup's age, the newest *verified* backup's age, the last result
of a drill that restores that set. A value that is not known has no sample, and
`mks_backup_known{set,value}` says 0 for it: absent is never reported as fine.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from recovery.archives import sha256_file
from recovery.backups import DUMP_GLOBS, name_time
from recovery.stamps import SUFFIX, canonical, stamp_path
from reports import signing
from reports.history import History, HistoryError, Result

# the backup sets, their file patterns, and the drills (scenario names) whose pass restores one of them
SETS = {"database": DUMP_GLOBS, "uploads": ("uploads_*.tar.gz", "uploads_*.tgz")}
RESTORED_BY = {
    "database": ("database-restore", "plain-backups-restore", "full-recovery", "migration"),
    "uploads": ("uploads-restore", "plain-backups-restore", "full-recovery", "migration"),
}


@dataclass
class StampCheck:
    state: str  # valid | absent | invalid
    detail: str
    verified_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.state == "valid"


def backup_of(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(SUFFIX)) if path.name.endswith(SUFFIX) else path


def check(path: Path, pinned: Ed25519PublicKey | None = None) -> StampCheck:
    """The stamp of a backup (or the stamp file itself): valid, absent or invalid, with why."""
    backup = backup_of(path)
    stamp = stamp_path(backup)
    if not stamp.is_file():
        return StampCheck("absent", f"{backup.name}: NOT VERIFIED (no {stamp.name}): no run has proven "
                                    "this backup restorable")
    try:
        document = json.loads(stamp.read_text(encoding="utf-8"))
        body, seal = document["stamp"], document["signature"]
        embedded = serialization.load_pem_public_key(seal["public_key"].encode())
        signature = base64.b64decode(seal["signature"], validate=True)
        when = dt.datetime.fromisoformat(body["verified_at"])
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        return StampCheck("invalid", f"{stamp.name}: unreadable stamp ({type(exc).__name__}: {exc})")
    if not isinstance(embedded, Ed25519PublicKey):
        return StampCheck("invalid", f"{stamp.name}: not an Ed25519 signature")
    key = pinned or embedded
    if pinned is not None and signing.fingerprint(embedded) != signing.fingerprint(pinned):
        return StampCheck("invalid", f"{stamp.name}: signed by {signing.fingerprint(embedded)}, not by the "
                                     f"pinned key {signing.fingerprint(pinned)} (wrong key)")
    try:
        key.verify(signature, canonical(body))
    except InvalidSignature:
        return StampCheck("invalid", f"{stamp.name}: TAMPERED: the signature does not match the stamp's "
                                     "content (changed after it was signed)")
    if body.get("backup") != backup.name:
        return StampCheck("invalid", f"{stamp.name}: stamps {body.get('backup')!r}, not {backup.name}")
    if not backup.is_file():
        return StampCheck("invalid", f"{backup}: the stamped backup is missing")
    if backup.stat().st_size != body.get("bytes") or sha256_file(backup) != body.get("sha256"):
        return StampCheck("invalid", f"{backup.name}: CHANGED since it was verified (bytes or SHA-256 differ "
                                     "from the stamp's)")
    pin = "pinned key" if pinned is not None else (
        "a key made for this stamp alone" if seal.get("ephemeral_key") else "key embedded in the stamp")
    checks = ", ".join(body.get("checks", []))
    return StampCheck("valid", f"{backup.name}: VERIFIED restorable at {body['verified_at']} by run "
                               f"{body.get('run')} ({body.get('action')}: {checks}); harness "
                               f"{body.get('harness_version')}; signature valid ({signing.fingerprint(key)}, "
                               f"{pin})", when if when.tzinfo else when.replace(tzinfo=dt.UTC))


def _made_at(path: Path) -> dt.datetime:
    return name_time(path) or dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)


def _last_drill(results: list[Result], backup_set: str) -> Result | None:
    relevant = [r for r in results if r.scenario in RESTORED_BY[backup_set]]
    return max(relevant, key=lambda r: r.ended_at) if relevant else None


def registry_for(backup_dir: Path, results: list[Result] | None, now: dt.datetime | None = None,
                 pinned: Ed25519PublicKey | None = None) -> CollectorRegistry:
    """The metrics of every backup set in backup_dir; `results` None: no history to read."""
    now = now or dt.datetime.now(dt.UTC)
    registry = CollectorRegistry()
    labels = ("set",)
    newest = Gauge("mks_backup_newest_age_seconds", "Age of the newest backup of the set", labels,
                   registry=registry)
    verified = Gauge("mks_backup_newest_verified_age_seconds",
                     "Age of the newest backup of the set with a valid verified stamp (proven restorable)",
                     labels, registry=registry)
    verified_when = Gauge("mks_backup_last_verified_timestamp_seconds",
                          "When the newest verified backup of the set was proven restorable", labels,
                          registry=registry)
    drill = Gauge("mks_backup_last_drill_result", "Last drill restoring the set: 1 passed, 0 failed",
                  labels, registry=registry)
    known = Gauge("mks_backup_known", "1 when the value is known, 0 when it is absent (no backup, none "
                  "verified, no drill in the history): absent is not fine", ("set", "value"),
                  registry=registry)
    for name, patterns in SETS.items():
        files = sorted({p for pattern in patterns for p in backup_dir.glob(pattern) if p.is_file()},
                       key=_made_at, reverse=True)
        known.labels(name, "newest").set(1 if files else 0)
        if files:
            newest.labels(name).set((now - _made_at(files[0])).total_seconds())
        proven = next((p for p in files if check(p, pinned).ok), None)
        known.labels(name, "verified").set(1 if proven else 0)
        if proven is not None:
            verified.labels(name).set((now - _made_at(proven)).total_seconds())
            stamped = check(proven, pinned).verified_at
            if stamped is not None:
                verified_when.labels(name).set(stamped.timestamp())
        last = _last_drill(results or [], name)
        known.labels(name, "drill").set(1 if last else 0)
        if last is not None:
            drill.labels(name).set(1 if last.verdict == "passed" else 0)
    return registry


def metrics_text(backup_dir: Path, history: Path | None = None, now: dt.datetime | None = None,
                 pinned: Ed25519PublicKey | None = None) -> str:
    results = None
    if history is not None and history.is_file():
        try:
            results = History(history).results()
        except HistoryError:
            results = None
    return generate_latest(registry_for(backup_dir, results, now, pinned)).decode()
