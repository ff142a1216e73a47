"""Database dump files: names, headers, verification and the choice of the one to restore.

The runbook picks `ls -t /backup/mks/db_*.dump | head -1`; here the newest *valid* dump wins, and a
dump is valid only when it is what it claims to be (custom format, of the expected database, intact,
recent enough for the recovery level). Everything here only reads.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recovery import restore_role
from recovery.archives import sha256_file
from recovery.commands import run
from recovery.errors import CommandError, RecoveryError
from recovery.integrity import app_tables, label
from recovery.levels import LEVELS
from recovery.target import Target

log = logging.getLogger(__name__)

DUMP_MAGIC = b"PGDMP"
NAME_RE = re.compile(r"^db_(\d{8})_(\d{6})\.(?:dump|sql|sql\.gz)$")
SAFETY_RE = re.compile(r"^pre_restore_(\d{8})_(\d{6})\.dump$")
STAMP_FORMAT = "%Y%m%d_%H%M%S"
DUMP_GLOBS = ("db_*.dump", "db_*.sql", "db_*.sql.gz")

# the runbook's table (recovery/levels.py): data loss allowed per level; None = the caller decides
LEVEL_MAX_AGE: dict[str, dt.timedelta | None] = {name: level.backup_max_age for name, level in LEVELS.items()}


class BackupError(RecoveryError):
    """No usable backup: missing, damaged, of another database, or too old."""


def stamp(now: dt.datetime | None = None) -> str:
    """The UTC time stamp used in every file and database name this package creates."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime(STAMP_FORMAT)


def max_age_for(level: str, override: dt.timedelta | None = None) -> dt.timedelta | None:
    """The oldest a backup may be for a level; an explicit override wins (RTO-1 has none by default)."""
    if level not in LEVEL_MAX_AGE:
        raise BackupError(f"unknown recovery level {level!r}; known: {', '.join(LEVEL_MAX_AGE)}")
    return override if override is not None else LEVEL_MAX_AGE[level]


def name_time(path: Path) -> dt.datetime | None:
    """The UTC time in a db_YYYYmmdd_HHMMSS.dump or pre_restore_... name, or None."""
    match = NAME_RE.match(path.name) or SAFETY_RE.match(path.name)
    if not match:
        return None
    return dt.datetime.strptime(f"{match[1]}_{match[2]}", STAMP_FORMAT).replace(tzinfo=dt.UTC)


def candidates(backup_dir: Path) -> list[Path]:
    """The db_*.dump, db_*.sql and db_*.sql.gz files, newest first (by the time in the name, then mtime)."""
    files = [p for pattern in DUMP_GLOBS for p in backup_dir.glob(pattern) if p.is_file()]

    def key(p: Path) -> tuple[float, float]:
        named = name_time(p)
        return (named.timestamp() if named else 0.0, p.stat().st_mtime)

    return sorted(files, key=key, reverse=True)


@dataclass(frozen=True)
class DumpHeader:
    """What `pg_restore --list` says about an archive (the part before the TOC entries)."""

    dbname: str
    created_at: dt.datetime | None
    format: str
    server_version: str
    toc_entries: int
    tables: tuple[str, ...] = ()  # tables with a TABLE DATA entry
    foreign_keys: tuple[str, ...] = ()  # FK CONSTRAINT names
    extensions: tuple[tuple[str, str], ...] = ()  # (TOC entry line, extension name) of EXTENSION entries
    listing: str = field(default="", compare=False, repr=False)  # the whole `pg_restore --list` text
    # the same, schema-qualified ("audit.access_logs_user_id_fkey"): the restored copy's are compared
    # per schema of the dump, whatever schemas the profile's tables are in
    schema_foreign_keys: tuple[str, ...] = ()


_HEADER_FIELD = re.compile(r"^;\s+([A-Za-z ]+):\s*(.*)$")


def parse_list(text: str) -> DumpHeader:
    """Parse `pg_restore --list` output (run with TZ=UTC so the creation time is UTC)."""
    fields: dict[str, str] = {}
    created: dt.datetime | None = None
    tables: list[str] = []
    fks: list[tuple[str, str]] = []
    extensions: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith("; Archive created at "):
            raw = line.removeprefix("; Archive created at ").strip()
            created = _parse_created(raw)
            continue
        match = _HEADER_FIELD.match(line)
        if match:
            fields.setdefault(match[1].strip(), match[2].strip())
            continue
        if line.startswith(";") or not line.strip():
            continue
        # e.g. "3345; 0 16390 TABLE DATA public users mks_user"
        parts = line.split(";", 1)[-1].split()
        if len(parts) >= 6 and parts[2:4] == ["TABLE", "DATA"]:
            tables.append(parts[5])
        elif len(parts) >= 7 and parts[2:4] == ["FK", "CONSTRAINT"]:
            fks.append((parts[4], parts[6]))
        elif len(parts) >= 5 and parts[2] == "EXTENSION":
            extensions.append((line.strip(), parts[4]))
    if "dbname" not in fields:
        raise BackupError("not a PostgreSQL archive listing: no dbname in the header")
    try:
        entries = int(fields.get("TOC Entries", "0"))
    except ValueError:
        entries = 0
    return DumpHeader(
        dbname=fields["dbname"],
        created_at=created,
        format=fields.get("Format", "?"),
        server_version=fields.get("Dumped from database version", "?"),
        toc_entries=entries,
        tables=tuple(tables),
        foreign_keys=tuple(sorted(name for _, name in fks)),
        schema_foreign_keys=tuple(sorted(f"{schema}.{name}" for schema, name in fks)),
        extensions=tuple(extensions),
        listing=text,
    )


def _parse_created(raw: str) -> dt.datetime | None:
    # "2026-11-28 15:40:01 UTC" (pg_restore formats with the local zone; we run it with TZ=UTC)
    match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*(\S*)", raw)
    if not match:
        return None
    when = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S")
    if match[2] not in ("", "UTC", "GMT", "Z"):
        return None  # a zone we cannot trust to parse; the caller falls back to the name
    return when.replace(tzinfo=dt.UTC)


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_manifest(path: Path) -> dict[str, object] | None:
    """The row counts written beside a dump by backup_database (taken in the dump's snapshot)."""
    try:
        data = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class VerifiedBackup:
    path: Path
    header: DumpHeader
    created_at: dt.datetime
    sha256: str
    sidecar_checked: bool
    row_counts: dict[str, int] | None = field(default=None, compare=False)

    def age(self, now: dt.datetime | None = None) -> dt.timedelta:
        return (now or dt.datetime.now(dt.UTC)) - self.created_at


def is_plain(path: Path) -> bool:
    """A plain-SQL dump by its name (.sql, .sql.gz); everything else must be a custom-format archive."""
    return path.name.endswith((".sql", ".sql.gz"))


def verify_dump(path: Path, target: Target, *, max_age: dt.timedelta | None = None,
                now: dt.datetime | None = None) -> VerifiedBackup:
    """Check one dump without touching any database; raise BackupError saying what is wrong."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BackupError(f"{path}: cannot read: {exc.strerror}") from None
    if size == 0:
        raise BackupError(f"{path}: empty file")
    if is_plain(path):
        return _verify_plain(path, target, max_age=max_age, now=now)
    with open(path, "rb") as handle:
        magic = handle.read(len(DUMP_MAGIC))
    if magic != DUMP_MAGIC:
        hint = " (it looks like plain SQL text)" if _looks_like_text(path) else ""
        raise BackupError(f"{path}: not a pg_dump custom-format archive (no PGDMP magic){hint}")
    digest = sha256_file(path)
    checked = _check_sidecar(path, digest)
    header = list_header(path, target)
    if header.dbname not in dump_databases(path, target):
        raise BackupError(f"{path}: a dump of database {header.dbname!r}, not {target.database.name!r}")
    declared = restore_role.extensions(target)
    for entry, name in header.extensions:
        if name not in declared:
            raise BackupError(f"{path}: TOC entry {entry!r} creates extension {name}, which the target does "
                              f"not declare (app.extensions: {', '.join(declared)}): a restore creates "
                              "only those, never the dump")
    manifest = read_manifest(path)
    counts = manifest.get("row_counts") if manifest else None
    return _dated(VerifiedBackup(path, header, _created(path, header), digest, checked,
                                 dict(counts) if isinstance(counts, dict) else None), max_age, now)


def dump_databases(path: Path, target: Target) -> set[str]:
    """The databases a dump of this name may be of: the target's, and for a safety copy
    pre_restore_<ts>.dump also the old database that restore renamed aside at <ts> (<db>_pre_<ts>)."""
    names = {target.database.name}
    if (safety := SAFETY_RE.match(path.name)) is not None:
        names.add(f"{target.database.name}_pre_{safety[1]}_{safety[2]}")
    return names


def _check_sidecar(path: Path, digest: str) -> bool:
    side = sidecar(path)
    if not side.exists():
        return False
    expected = side.read_text(encoding="utf-8").split()[:1]
    if not expected or expected[0].lower() != digest:
        raise BackupError(f"{path}: sha256 {digest} does not match its sidecar {side.name}")
    return True


def _created(path: Path, header: DumpHeader) -> dt.datetime:
    created = header.created_at or name_time(path)
    if created is None:
        raise BackupError(f"{path}: cannot tell when it was made (no time in its header or name)")
    return created


def _dated(verified: VerifiedBackup, max_age: dt.timedelta | None, now: dt.datetime | None) -> VerifiedBackup:
    created, path = verified.created_at, verified.path
    if max_age is not None and verified.age(now) > max_age:
        raise BackupError(f"{path}: made {created.isoformat()}, {_hours(verified.age(now))} ago; the level "
                          f"allows at most {_hours(max_age)}")
    return verified


def list_header(path: Path, target: Target) -> DumpHeader:
    """`pg_restore --list` as the service account; a damaged TOC is a BackupError."""
    try:
        result = run([target.database.tool("pg_restore"), "--list", str(path)], timeout=120,
                     run_as=target.service_account(), env={"TZ": "UTC"})
    except CommandError as exc:
        detail = (exc.stderr or exc.stdout).strip().splitlines()[-1:] or [exc.reason]
        raise BackupError(f"{path}: pg_restore --list fails: {detail[0]}") from None
    return parse_list(result.stdout)


def choose(target: Target, *, max_age: dt.timedelta | None,
           now: dt.datetime | None = None) -> tuple[VerifiedBackup, list[str]]:
    """The newest valid db_*.dump in backup_dir, and why each newer one was passed over.

    Damaged or foreign dumps are skipped; an old one is not: when the newest valid dump is too old,
    older ones are older still, so that is the error.
    """
    backup_dir = Path(target.paths.backup_dir)
    found = candidates(backup_dir) if backup_dir.is_dir() else []
    if not found:
        raise BackupError(f"no database backup found: no db_*.dump in {backup_dir}")
    skipped: list[str] = []
    for path in found:
        try:
            verified = verify_dump(path, target, max_age=None, now=now)
        except BackupError as exc:
            skipped.append(str(exc))
            continue
        if max_age is not None and verified.age(now) > max_age:
            made, age = verified.created_at.isoformat(), _hours(verified.age(now))
            raise BackupError(f"the newest valid backup {path.name} was made {made}, {age} ago;"
                              f" the level allows at most {_hours(max_age)}")
        return verified, skipped
    raise BackupError(f"no valid database backup in {backup_dir}:\n  " + "\n  ".join(skipped))


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(512)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


# ---- plain-SQL dumps (pg_dump -Fp, often piped through gzip) ------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
PLAIN_HEAD = b"-- PostgreSQL database dump"
PLAIN_END = b"-- PostgreSQL database dump complete"
CLUSTER_HEAD = b"-- PostgreSQL database cluster dump"
# psql meta-commands pg_dump itself writes (15.14 and later fence the script with \restrict)
PLAIN_META = (b"\\restrict ", b"\\unrestrict ")
_COPY = re.compile(rb"^COPY (\S+) \(.*\) FROM stdin;$")
_FK = re.compile(rb"^\s+ADD CONSTRAINT (\S+) FOREIGN KEY ")
_ALTER = re.compile(rb"^ALTER TABLE (?:ONLY )?(\S+)$")
_STARTED = re.compile(rb"^-- Started on (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*(\S*)")
_VERSION = re.compile(rb"^-- Dumped from database version (.+)$")


@dataclass
class _PlainScan:
    """What one read of a plain dump found: its tables' row counts, foreign keys, header facts."""

    path: Path
    declared: tuple[str, ...] = ()  # the extensions the harness creates
    rows: dict[str, int] = field(default_factory=dict)
    foreign_keys: list[str] = field(default_factory=list)
    schema_foreign_keys: list[str] = field(default_factory=list)
    altered: str = "public"  # the schema of the last ALTER TABLE line (an FK's line follows it)
    created: dt.datetime | None = None
    version: str = "?"
    head: bool = False
    complete_at: int = 0  # line number of the "dump complete" comment
    copying: str | None = None
    number: int = 0

    def line(self, raw: bytes) -> None:
        self.number += 1
        line = raw.rstrip(b"\r\n")
        if self.copying is not None:
            if line == b"\\.":
                self.copying = None
            else:
                self.rows[self.copying] += 1
            return
        if self.complete_at and line.strip() and not line.startswith((b"--", *PLAIN_META)):
            raise BackupError(f"{self.path}: SQL after the 'dump complete' line (line {self.number}): "
                              "two dumps in one file?")
        if line.startswith(b"\\"):
            self._meta(line)
        elif line.startswith(b"--"):
            self._comment(line)
        elif (copy := _COPY.match(line)) is not None:
            table = copy[1].decode(errors="replace").replace('"', "")
            self.copying = table.removeprefix("public.")
            self.rows.setdefault(self.copying, 0)
        elif (fk := _FK.match(line)) is not None:
            name = fk[1].decode(errors="replace").replace('"', "")
            self.foreign_keys.append(name)
            self.schema_foreign_keys.append(f"{self.altered}.{name}")
        elif (extension := restore_role.extension_line(line)) is not None and extension not in self.declared:
            raise BackupError(f"{self.path}: line {self.number} creates extension {extension}, which the "
                              f"target does not declare (app.extensions: {', '.join(self.declared)}): a "
                              "restore creates only those, never the dump")
        elif (altered := _ALTER.match(line)) is not None:
            table = altered[1].decode(errors="replace")
            self.altered = table.split(".", 1)[0].replace('"', "") if "." in table else "public"
        elif not self.head and line.strip():
            raise BackupError(f"{self.path}: SQL before any '-- PostgreSQL database dump' header "
                              f"(line {self.number}): not a pg_dump plain-format dump")

    def _meta(self, line: bytes) -> None:
        if line.startswith(PLAIN_META):
            return
        text = line.decode(errors="replace")[:60]
        if line.startswith(b"\\connect"):
            raise BackupError(f"{self.path}: line {self.number} is {text!r}: a dump made with --create "
                              "(or of several databases) restores into the database it names, not beside "
                              "the live one; dump without --create")
        raise BackupError(f"{self.path}: line {self.number} is the psql meta-command {text!r}, which pg_dump "
                          "does not write; refusing to run it")

    def _comment(self, line: bytes) -> None:
        if line.startswith(CLUSTER_HEAD):
            raise BackupError(f"{self.path}: a pg_dumpall cluster dump (roles and every database), not a "
                              "dump of one database")
        if line.startswith(PLAIN_END):
            self.complete_at = self.number
        elif line.startswith(PLAIN_HEAD):
            self.head = True
        elif (started := _STARTED.match(line)) is not None:
            self.created = _parse_created(b" ".join(started.groups()).decode())
        elif (version := _VERSION.match(line)) is not None:
            self.version = version[1].decode(errors="replace").strip()


def _verify_plain(path: Path, target: Target, *, max_age: dt.timedelta | None,
                  now: dt.datetime | None) -> VerifiedBackup:
    """Read a .sql or .sql.gz dump to its end (the gzip CRC included) and check it is one whole
    pg_dump plain-format dump of one database, safe to feed to psql; nothing is run."""
    with open(path, "rb") as raw:
        magic = raw.read(len(GZIP_MAGIC))
    compressed = path.name.endswith(".gz")
    if compressed and magic != GZIP_MAGIC:
        hint = " (it looks like plain SQL text: name it .sql)" if _looks_like_text(path) else ""
        raise BackupError(f"{path}: not gzip (no gzip magic){hint}")
    if not compressed and magic == GZIP_MAGIC:
        raise BackupError(f"{path}: gzip-compressed, but named .sql: name it .sql.gz")
    scan, digest = _PlainScan(path, restore_role.extensions(target)), hashlib.sha256()
    with open(path, "rb") as raw:
        hashed = Hashing(raw, digest)
        try:
            stream = gzip.GzipFile(fileobj=hashed, mode="rb") if compressed else hashed
            for line in stream:  # type: ignore[attr-defined]
                scan.line(line)
        except EOFError:
            raise BackupError(f"{path}: truncated: the gzip stream ends before its end marker") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise BackupError(f"{path}: corrupt gzip stream ({exc})") from None
    if not scan.head:
        raise BackupError(f"{path}: no '-- PostgreSQL database dump' header: not a pg_dump plain-format dump")
    if scan.copying is not None:
        raise BackupError(f"{path}: truncated: it ends inside the data of table {scan.copying}")
    if not scan.complete_at:
        raise BackupError(f"{path}: truncated: no '-- PostgreSQL database dump complete' line at its end")
    tables = [label(t) for t in app_tables(target)]
    present = [t for t in tables if t in scan.rows]
    if not present:
        raise BackupError(f"{path}: holds no data for any of the tables {', '.join(tables)}: "
                          f"a dump of another database?")
    checked = _check_sidecar(path, digest.hexdigest())
    header = DumpHeader(dbname="", created_at=scan.created, format="PLAIN", server_version=scan.version,
                        toc_entries=0, tables=tuple(scan.rows), foreign_keys=tuple(sorted(scan.foreign_keys)),
                        schema_foreign_keys=tuple(sorted(scan.schema_foreign_keys)))
    counts = {t: scan.rows[t] for t in present}
    return _dated(VerifiedBackup(path, header, _created(path, header), digest.hexdigest(), checked, counts),
                  max_age, now)


class Hashing:
    """A binary reader that hashes what passes through it (the dump is read once for both)."""

    def __init__(self, handle: Any, digest: Any):
        self.handle, self.digest = handle, digest

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.handle.readline(size)
        self.digest.update(data)
        return data

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def plain_statement(path: Path, number: int, limit: int = 160) -> str:
    """The statement of a plain dump (.sql or .sql.gz) that ends at line `number`, shortened: what a
    refusal quotes. Its start is taken to be the line after the last blank or comment line before it
    (pg_dump separates its statements so)."""
    lines: list[str] = []
    try:
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
            for count, line in enumerate(stream, start=1):  # type: ignore[arg-type]
                text = line.decode(errors="replace").strip()
                lines = [] if not text or text.startswith("--") else [*lines[-20:], text]
                if count == number:
                    break
    except (OSError, EOFError, zlib.error):
        return "?"
    said = " ".join(lines)
    return said if len(said) <= limit else said[:limit] + "…"
