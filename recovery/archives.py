"""tar.gz backups that carry their own SHA-256 manifest, and the checks made before trusting one.

The manifest is the archive's first member (`.mks-manifest.json`), not a sidecar file: a backup is
copied and transferred as one file (the runbook scp's `uploads_latest.tar.gz` alone), so a sidecar
would be lost or paired with the wrong archive. Reading the manifest first also lets `verify_archive`
check each member while streaming the archive once.

The manifest's format is recovery.manifest. Nothing is written but into a new staging directory,
each member checked before or as it is written, the directory discarded when any member fails;
callers swap staging into place. Members are written by GNU tar fed the checked stream
(recovery.tar_extract) or, without it, here one by one (Python 3.11.2 has no tarfile 'data' filter).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from recovery.commands import input_to, output_of
from recovery.errors import CommandError
from recovery.manifest import FORMAT, MANIFEST_NAME, ArchiveError, Entry, Manifest  # noqa: F401 (FORMAT: tests')
from recovery.progress import Progress
from recovery.staging import DIR_MODE, Staging, StagingError, file_mode  # noqa: F401 (DIR_MODE, file_mode: the restores')
from recovery.tar_reader import TarReader, Truncated, UnusualHeader
from recovery.tar_stream import TarfileMembers, below_any, data_sha256, member_data, next_member, read_to_end
from recovery.waiting import wait_until

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
FILE_MODE = 0o644


def safe_name(name: str) -> str:
    """A member name as a normalised relative path ("a//./b" -> "a/b") that stays inside; raise for
    anything else. The same rules as PurePosixPath's parts, with string operations: it runs once per
    member of archives of 100,000 files."""
    if not name or "\0" in name:
        raise ArchiveError(f"member with an empty or NUL name: {name!r}")
    if name.startswith("/"):
        raise ArchiveError(f"member with an absolute path: {name}")
    parts = [part for part in name.split("/") if part and part != "."]
    if ".." in parts:
        raise ArchiveError(f"member with a '..' component: {name}")
    if not parts:
        raise ArchiveError(f"member without a name: {name!r}")
    return "/".join(parts)


def safe_relative(name: str) -> PurePosixPath:
    """A member name as a relative path that stays inside; raise for anything else."""
    return PurePosixPath(safe_name(name))


def link_stays_inside(member: PurePosixPath, target: str) -> bool:
    if not target or target.startswith("/"):
        return False
    depth = len(member.parent.parts)
    for part in PurePosixPath(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part != ".":
            depth += 1
    return True


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return data_sha256(handle)


# ---- creating --------------------------------------------------------------------------------
def _walk(source: Path, include: Iterable[str] | None) -> Iterator[tuple[str, str]]:
    """(relative name, path) of every entry below source, or of the included names; strings, not
    Paths: this runs once per file of folders of 100,000 files."""
    if include is not None:
        for relative in include:
            safe_relative(relative)
            yield relative, os.fspath(source / relative)
        return
    top = os.fspath(source)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        prefix = "" if dirpath == top else dirpath[len(top) + 1:] + "/"
        for name in sorted(dirnames) + sorted(filenames):
            yield prefix + name, f"{dirpath}/{name}"


def scan(source_dir: Path, root: str, include: Iterable[str] | None = None) -> Manifest:
    """The manifest of a directory (or of the named files below it): sizes, hashes, modes."""
    source = Path(source_dir)
    if not source.is_dir():
        raise ArchiveError(f"{source} is not a directory")
    manifest = Manifest(root=root, created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    for relative, path in _walk(source, include):
        if relative == MANIFEST_NAME:
            raise ArchiveError(f"{path}: the name {MANIFEST_NAME} is reserved for the archive manifest")
        try:
            entry = _entry(source, relative, path)
        except FileNotFoundError:
            if include is not None:
                raise ArchiveError(f"{path}: no such file to archive") from None
            continue  # removed while the folder was listed (a live folder): not part of this copy
        manifest.entries.append(entry)
    return manifest


def _entry(source: Path, relative: str, path: str) -> Entry:
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        if not link_stays_inside(PurePosixPath(relative), target):
            raise ArchiveError(f"{path} is a symlink to {target}, outside {source}")
        return Entry(relative, "symlink", mode, target=target)
    if stat.S_ISDIR(info.st_mode):
        return Entry(relative, "dir", mode)
    if stat.S_ISREG(info.st_mode):
        return Entry(relative, "file", mode, info.st_size, sha256_file(path))
    raise ArchiveError(f"{path} is not a regular file, directory or symlink; not archived")


VANISH_RETRIES = 3


def create_archive(source_dir: str | Path, dest_tar_gz: str | Path, *, root: str | None = None,
                   include: Iterable[str] | None = None) -> Manifest:
    """Write dest (tar.gz): the manifest first, then every entry of source_dir (or the included files).

    Written to a temporary name and renamed, so a crash never leaves a half archive under the real
    name. A file that changes between hashing and archiving is an error (back up again).
    """
    source, dest = Path(source_dir), Path(dest_tar_gz)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    for attempt in range(1, VANISH_RETRIES + 1):
        manifest = scan(source, root or source.name, include)
        try:
            with _gzip_writer(partial) as tar:
                raw = manifest.to_json()
                tar.addfile(_tarinfo(MANIFEST_NAME, tarfile.REGTYPE, 0o644, len(raw)), io.BytesIO(raw))
                del raw  # megabytes for 100,000 entries
                for entry in manifest.entries:
                    _add(tar, source, entry)
            os.chmod(partial, 0o600)
            os.replace(partial, dest)
            break
        except FileNotFoundError as exc:
            # a live folder changes: a file listed by the scan was removed before it was archived
            if include is not None or attempt == VANISH_RETRIES:
                raise ArchiveError(f"{exc.filename} vanished while it was archived; back up again") from None
            log.info("%s vanished while archiving %s; scanning again", exc.filename, source)
        finally:
            partial.unlink(missing_ok=True)
    log.info("archived %d files (%d bytes) of %s into %s", len(manifest.files), manifest.total_bytes,
             source, dest)
    return manifest


@contextlib.contextmanager
def _gzip_writer(dest: Path) -> Iterator[tarfile.TarFile]:
    """A tar.gz being written at gzip -6, the level tar -czf uses (tarfile's own default is -9):
    compressed by pigz on every core where installed, else by Python's gzip. GNU tar's own format,
    like tar -czf: a UTF-8 name fits in the member's header, where the pax format adds a second
    header for every name that is not ASCII (twice the headers to write and to read)."""
    pigz = shutil.which("pigz")
    if pigz is None:
        with tarfile.open(dest, "w:gz", format=tarfile.GNU_FORMAT, compresslevel=6) as tar:
            yield tar
        return
    try:
        with input_to([pigz, "-6", "-c"], stdout_path=dest, timeout=600) as sink, \
                tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            yield tar
    except CommandError as exc:
        raise ArchiveError(f"{dest}: pigz failed: {exc}") from None


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, source: Path, entry: Entry) -> None:
    path = source / entry.path
    if entry.type == "dir":
        tar.addfile(_tarinfo(entry.path, tarfile.DIRTYPE, entry.mode))
    elif entry.type == "symlink":
        info = _tarinfo(entry.path, tarfile.SYMTYPE, entry.mode)
        info.linkname = entry.target
        tar.addfile(info)
    else:
        with open(path, "rb") as handle:
            reader = _HashingReader(handle)
            tar.addfile(_tarinfo(entry.path, tarfile.REGTYPE, entry.mode, entry.size), reader)
            if reader.digest.hexdigest() != entry.sha256 or reader.read(1):
                raise ArchiveError(f"{path} changed while it was archived; back up again")


class _HashingReader:
    def __init__(self, handle: io.BufferedReader):
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


# ---- verifying and extracting ----------------------------------------------------------------
def open_archive(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise ArchiveError(f"{path}: no such archive")
    try:
        return tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{path}: not a readable tar.gz ({exc})") from None


def decompressor() -> str:
    """What open_stream decompresses with here."""
    return "pigz" if shutil.which("pigz") else "python gzip"


@contextlib.contextmanager
def decompressed(path: Path) -> Iterator[IO[bytes]]:
    """The archive's tar bytes for one sequential read: decompressed by pigz in its own process where
    it is installed (it checks the gzip CRC; a non-zero exit is a corrupt archive), else by Python's
    gzip. How far the archive is read shows as progress (recovery.progress): pigz reads the file
    through a descriptor shared with this process, whose offset says how far it is."""
    if not path.is_file():
        raise ArchiveError(f"{path}: no such archive")
    with open(path, "rb", buffering=0) as handle:  # unbuffered: its offset is what was read
        if handle.read(2) != b"\x1f\x8b":
            raise ArchiveError(f"{path}: not a readable tar.gz (no gzip magic)")
        fd = handle.fileno()
        os.lseek(fd, 0, os.SEEK_SET)
        size = os.fstat(fd).st_size
        with Progress(f"{path.name} read", lambda: os.lseek(fd, 0, os.SEEK_CUR), total=size):
            pigz = shutil.which("pigz")
            if pigz is None:
                with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                    yield stream
                return
            try:
                with output_of([pigz, "-dc"], timeout=600, stdin=fd) as stream:
                    yield stream
            except CommandError as exc:
                detail = (exc.stderr or exc.reason).strip().splitlines()[-1:] or [exc.reason]
                raise ArchiveError(f"{path}: truncated or corrupt archive (pigz: {detail[0]})") from None


@contextlib.contextmanager
def open_stream(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive as a tar stream for one sequential read (see decompressed)."""
    with decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        yield tar


def manifest_of(path: Path, tar: tarfile.TarFile | TarReader | TarfileMembers) -> Manifest:
    """The manifest, read from the archive's first member; ArchiveError when it is not an mks archive."""
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isreg():
        raise ArchiveError(f"{path}: the first member is not {MANIFEST_NAME}; not an mks archive")
    handle = tar.extractfile(first)
    assert handle is not None
    return Manifest.read(handle)


class MemberRules:
    """The rules every member of an mks archive must pass, checked as the archive is streamed."""

    def __init__(self, path: Path, manifest: Manifest, expected_root: str):
        if manifest.root != expected_root:
            raise ArchiveError(f"{path}: an archive of {manifest.root!r}, not of {expected_root!r}")
        self.path, self.expected = path, {}
        for entry in manifest.entries:
            name = safe_name(entry.path)
            self.expected[entry.path if name == entry.path else name] = entry  # one copy of the string
        # the entries no member has matched yet; a name in expected but no longer here was seen (and a
        # file's sha256 matched its entry's). Shrinking a copy keeps no member's name string: a set of
        # the names seen held 100,000 new strings at the end
        self.unseen = dict(self.expected)
        self.symlinks: set[str] = set()

    def _seen(self, name: str) -> bool:
        return name in self.expected and name not in self.unseen

    def before(self, member: tarfile.TarInfo) -> tuple[str, Entry]:
        """Checks that need no data: name, type, links; the member's name and manifest entry."""
        path, name = self.path, safe_name(member.name)
        if self._seen(name) or name == MANIFEST_NAME:
            raise ArchiveError(f"{path}: member {name} appears twice")
        if self.symlinks and below_any(name, self.symlinks):
            raise ArchiveError(f"{path}: member {name} lies below a symlink")
        entry = self.expected.get(name)
        if entry is None:
            raise ArchiveError(f"{path}: member {name} is not in the manifest")
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise ArchiveError(f"{path}: member {name} is a device or fifo")
        if member.issym():
            if not link_stays_inside(PurePosixPath(name), member.linkname):
                raise ArchiveError(f"{path}: symlink {name} -> {member.linkname} points outside the archive")
            if entry.type != "symlink" or entry.target != member.linkname:
                raise ArchiveError(f"{path}: symlink {name} does not match the manifest")
            self.symlinks.add(name)
        elif member.islnk():
            if not self._seen(self.link(member)):
                raise ArchiveError(f"{path}: hardlink {name} -> {member.linkname} points outside the archive")
        elif member.isdir():
            if entry.type != "dir":
                raise ArchiveError(f"{path}: member {name} is a directory, the manifest says {entry.type}")
        elif not member.isreg():
            raise ArchiveError(f"{path}: member {name} has an unsupported type {member.type!r}")
        return name, entry

    def link(self, member: tarfile.TarInfo) -> str:
        try:
            return safe_name(member.linkname)
        except ArchiveError:
            return ""

    def after(self, member: tarfile.TarInfo, name: str, entry: Entry, digest: str) -> None:
        """The data's sha256 (a hardlink's is its target's) and size against the manifest."""
        if member.isreg() or member.islnk():
            if member.islnk():  # a file seen before: its data matched its entry's sha256
                target = self.expected[self.link(member)]
                digest = target.sha256 if target.type == "file" else ""
            wrong_size = member.isreg() and member.size != entry.size
            if entry.type != "file" or digest != entry.sha256 or wrong_size:
                raise ArchiveError(f"{self.path}: member {name} does not match its manifest sha256/size")
        del self.unseen[name]

    def finish(self) -> None:
        missing = sorted(self.unseen)
        if missing:
            raise ArchiveError(f"{self.path}: {len(missing)} manifest entries not in the archive, "
                               f"e.g. {missing[0]}")


def check_members(path: Path, reader: TarReader | TarfileMembers, expected_root: str,
                  on_member: Callable[[tarfile.TarInfo, str, Entry], None] | None = None) -> Manifest:
    """Every member of a tar stream against its manifest (the first member), its data hashed, the
    stream read to its end; `on_member(member, name, entry)` for each member that passed."""
    manifest = manifest_of(path, reader)
    rules = MemberRules(path, manifest, expected_root)
    while (member := reader.next()) is not None:
        name, entry = rules.before(member)
        rules.after(member, name, entry, reader.data_sha256() if member.isreg() else "")
        if on_member is not None:
            on_member(member, name, entry)
    rules.finish()
    reader.read_to_end()  # past the end-of-archive blocks: the gzip CRC is checked
    return manifest


def verify_archive(path: str | Path, expected_root: str) -> Manifest:
    """Read the whole archive and refuse it unless every member is safe and matches the manifest
    (recovery.tar_reader's pace; an archive with a header it leaves to tarfile is read again so)."""
    path = Path(path)
    for reader_type in (TarReader, TarfileMembers):
        try:
            with decompressed(path) as stream:
                return check_members(path, reader_type(stream), expected_root)
        except UnusualHeader:
            continue
        except (Truncated, tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"{path}: truncated or corrupt archive ({exc})") from None
    raise AssertionError("TarfileMembers raises no UnusualHeader")


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of an mks archive (its first member) alone, without reading further."""
    path = Path(path)
    with open_archive(path) as tar:
        try:
            return manifest_of(path, tar)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"{path}: truncated or corrupt archive ({exc})") from None


def stage_archive(path: str | Path, staging_dir: str | Path, expected_root: str,
                  owner: tuple[int, int] | None = None) -> Manifest:
    """Check and extract in one pass into a new staging_dir (owned by `owner` as it is written): each
    member is checked before it is written and its sha256, computed while writing, against the
    manifest; the gzip stream is read to its end. Any failure removes staging_dir and raises."""
    path = Path(path)
    with open_stream(path) as tar:
        staging = Staging(Path(staging_dir), owner)
        try:
            manifest = manifest_of(path, tar)
            rules = MemberRules(path, manifest, expected_root)
            while (member := next_member(tar)) is not None:
                name, entry = rules.before(member)
                digest = ""
                if member.isdir():
                    staging.directory(name)
                elif member.issym():
                    staging.symlink(name, member.linkname)
                elif member.islnk():
                    digest = staging.copy(name, rules.link(member), entry.mode)
                else:
                    digest = staging.file(name, member_data(tar, member), entry.mode)
                rules.after(member, name, entry, digest)
            staging.finish()  # every file written as hashed (a worker's error is raised here)
            rules.finish()
            read_to_end(tar)
        except StagingError as exc:
            staging.discard()
            raise ArchiveError(f"{path}: {exc}") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            staging.discard()
            raise ArchiveError(f"{path}: truncated or corrupt archive ({exc})") from None
        except BaseException:
            staging.discard()
            raise
    return manifest


def extract_verified(path: str | Path, staging_dir: str | Path, expected_root: str) -> Manifest:
    """Verify and extract into a new staging_dir (which must not exist); see stage_archive."""
    return stage_archive(path, staging_dir, expected_root)


def listing(directory: str | Path) -> dict[str, str]:
    """Every entry below directory with its type, mode and sha256: compare before and after."""
    base = Path(directory)
    result = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            kind = "l" if stat.S_ISLNK(info.st_mode) else "d" if stat.S_ISDIR(info.st_mode) else "f"
            digest = sha256_file(path) if kind == "f" else os.readlink(path) if kind == "l" else ""
            result[path.relative_to(base).as_posix()] = f"{kind} {stat.S_IMODE(info.st_mode):04o} {digest}"
    return result


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(Path(dirpath) / name, uid, gid)


# ---- backup files: naming and choosing -------------------------------------------------------
def timestamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def backup_path(directory: Path, prefix: str) -> Path:
    """directory/PREFIX_YYYYmmdd_HHMMSS.tar.gz; never an existing file (wait for the next second)."""
    def free() -> Path | None:
        candidate = directory / f"{prefix}_{timestamp()}.tar.gz"
        return None if candidate.exists() else candidate

    return wait_until(f"a free name for a {prefix} backup in {directory}", free, timeout=3, interval=0.1,
                      error=ArchiveError)


def backups(directory: Path, prefix: str) -> list[Path]:
    """The scheduled backups PREFIX_YYYYmmdd_HHMMSS.tar.gz, newest first (by the time in the name).

    Safety copies (PREFIX_pre_restore_*) are not candidates: they are restored only when named.
    """
    import re

    pattern = re.compile(rf"{re.escape(prefix)}_(\d{{8}}_\d{{6}})\.tar\.gz")
    found = [(m.group(1), p) for p in directory.glob(f"{prefix}_*.tar.gz")
             if (m := pattern.fullmatch(p.name)) and p.is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def choose_backup(directory: Path, prefix: str, root: str, explicit: str | Path | None,
                  notes: dict[str, Any], verify: Callable[[Path], Manifest] | None = None,
                  ) -> tuple[Path, Manifest]:
    """The named archive, or the newest one that verifies (by `verify`, default verify_archive against
    root); the refused ones are noted with why."""
    def check(candidate: Path) -> Manifest:
        return verify(candidate) if verify is not None else verify_archive(candidate, root)

    if explicit is not None:
        return Path(explicit), check(Path(explicit))
    candidates = backups(directory, prefix)
    if not candidates:
        raise ArchiveError(f"no backup {directory}/{prefix}_YYYYmmdd_HHMMSS.tar.gz found")
    refused = []
    for candidate in candidates:
        try:
            manifest = check(candidate)
        except ArchiveError as exc:
            refused.append(str(exc))
            log.warning("skipping %s", exc)
            continue
        if refused:
            notes["refused_newer_backups"] = refused
        return candidate, manifest
    raise ArchiveError(f"none of the {len(candidates)} {prefix} backups in {directory} is valid: "
                       + "; ".join(refused))
