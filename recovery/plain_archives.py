"""Plain `tar -czf` archives of a folder: the backups people already have, made without our manifest.

Such an archive names its members either relative to the folder itself (`tar -czf x -C uploads .`,
with or without `./`) or relative to / (`tar -czf x /opt/mks/uploads`, which GNU tar stores as
`opt/mks/uploads/...`). The layout is told from the members: a member at or below the folder's path
makes it root-relative, and then every member must be that folder, below it, or one of the
directories above it (which are not restored).

There is no manifest to check the contents against, so the check is what the archive itself carries:
every member's name, type and link target is checked, and the whole gzip stream is read so that its
CRC is verified. The manifest built from that read (sizes and SHA-256 of what was read) is what the
extraction is compared with, and what the caller checks the restored folder against.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from recovery import archives
from recovery.archives import CHUNK, DIR_MODE, MANIFEST_NAME, ArchiveError, Entry, Manifest, safe_relative

NO_MANIFEST = "no manifest: contents not verifiable beyond the archive's CRC"
ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


@dataclass
class _Layout:
    """Maps member names to paths inside the folder; decides root-relative or folder-relative once."""

    path: Path
    prefixes: tuple[str, ...]  # the folder's path relative to /, e.g. "opt/mks/uploads"
    prefix: str | None = None  # None: not decided yet; "": relative to the folder
    held: list[tarfile.TarInfo] = field(default_factory=list)  # directories above the folder, so far

    def place(self, member: tarfile.TarInfo) -> str | None:
        """The member's path inside the folder; None for the folder itself and the ones above it."""
        if member.name.startswith("/"):
            raise ArchiveError(f"{self.path}: member with an absolute path: {member.name}")
        name = _strip_dot(member.name)
        if name == "":
            return None  # "./": the folder itself
        relative = safe_relative(name).as_posix()
        if self.prefix is None:
            for prefix in self.prefixes:
                if relative == prefix or relative.startswith(prefix + "/"):
                    self.prefix = prefix
                    break
                if member.isdir() and prefix.startswith(relative + "/"):
                    self.held.append(member)
                    return None
            else:
                self.prefix = ""
        if self.prefix == "":
            return relative
        if relative == self.prefix:
            return None
        if relative.startswith(self.prefix + "/"):
            return relative[len(self.prefix) + 1:]
        if member.isdir() and self.prefix.startswith(relative + "/"):
            return None
        raise ArchiveError(f"{self.path}: member {member.name} lies outside the folder {self.prefix}/ that "
                           "the archive's other members are in")

    def link(self, member: tarfile.TarInfo) -> str:
        """A hardlink's target as a path inside the folder (tar stores it as the member names are)."""
        name = _strip_dot(member.linkname)
        if member.linkname.startswith("/") or not name or ".." in PurePosixPath(name).parts:
            raise ArchiveError(f"{self.path}: hardlink {member.name} -> {member.linkname} points outside the "
                               "archive")
        if self.prefix:
            if not name.startswith(self.prefix + "/"):
                raise ArchiveError(f"{self.path}: hardlink {member.name} -> {member.linkname} points outside "
                                   f"{self.prefix}/")
            name = name[len(self.prefix) + 1:]
        return name


def _strip_dot(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "" if name in (".", "") else name.rstrip("/")


def _check(path: Path, layout: _Layout, member: tarfile.TarInfo, name: str, seen: dict[str, Entry],
           symlinks: set[str]) -> None:
    """The rules of recovery.archives.verify_archive, without a manifest to compare with."""
    if name == MANIFEST_NAME:
        raise ArchiveError(f"{path}: member {name} has the name reserved for the archive manifest")
    if name in seen:
        raise ArchiveError(f"{path}: member {name} appears twice")
    if any(str(parent) in symlinks for parent in PurePosixPath(name).parents):
        raise ArchiveError(f"{path}: member {name} lies below a symlink")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise ArchiveError(f"{path}: member {name} is a device or fifo")
    if member.issym() and not archives.link_stays_inside(PurePosixPath(name), member.linkname):
        raise ArchiveError(f"{path}: symlink {name} -> {member.linkname} points outside the archive")
    if member.islnk():
        target = layout.link(member)
        if seen.get(target, Entry("", "", 0)).type != "file":
            raise ArchiveError(f"{path}: hardlink {name} -> {member.linkname} points outside the archive "
                               "(or not to a file before it)")
    elif not (member.isreg() or member.isdir() or member.issym()):
        raise ArchiveError(f"{path}: member {name} has an unsupported type {member.type!r}")


def scan_plain(path: str | Path, prefixes: tuple[str, ...], root: str) -> Manifest:
    """Read the whole archive (to the end of its gzip stream) and check every member; the manifest of
    what it holds, with `plain` set. Raises ArchiveError; nothing is written."""
    path = Path(path)
    layout = _Layout(path, prefixes)
    seen: dict[str, Entry] = {}
    symlinks: set[str] = set()
    manifest = Manifest(root=root, created="", plain=True)
    with archives.open_archive(path) as tar:
        try:
            while (member := tar.next()) is not None:
                name = layout.place(member)
                if name is None:
                    continue
                _check(path, layout, member, name, seen, symlinks)
                if member.issym():
                    entry = Entry(name, "symlink", member.mode & 0o7777, target=member.linkname)
                    symlinks.add(name)
                elif member.isdir():
                    entry = Entry(name, "dir", member.mode & 0o7777)
                elif member.islnk():
                    source = seen[layout.link(member)]
                    entry = Entry(name, "file", member.mode & 0o7777, source.size, source.sha256)
                else:
                    data = tar.extractfile(member)
                    assert data is not None
                    digest = hashlib.sha256()
                    while chunk := data.read(CHUNK):
                        digest.update(chunk)
                    entry = Entry(name, "file", member.mode & 0o7777, member.size, digest.hexdigest())
                seen[name] = entry
                manifest.entries.append(entry)
            archives.read_to_end(tar)
        except ERRORS as exc:
            raise ArchiveError(f"{path}: truncated or corrupt archive ({exc})") from None
    return manifest


def extract_plain(path: str | Path, staging_dir: str | Path, prefixes: tuple[str, ...],
                  manifest: Manifest) -> Manifest:
    """Extract a plain archive that scan_plain read into a new staging_dir; every file must hash as it
    did in that read (the archive did not change since)."""
    path, staging = Path(path), Path(staging_dir)
    layout = _Layout(path, prefixes)
    entries = {e.path: e for e in manifest.entries}
    staging.mkdir(mode=DIR_MODE, parents=False)
    os.chmod(staging, DIR_MODE)
    with archives.open_archive(path) as tar:
        try:
            while (member := tar.next()) is not None:
                name = layout.place(member)
                if name is None:
                    continue
                entry = entries.get(name)
                if entry is None:
                    raise ArchiveError(f"{path}: member {name} was not there when the archive was checked")
                if member.islnk():
                    source = (staging / layout.link(member)).open("rb")
                    digest = archives.write_file(staging, name, source, entry.mode)
                else:
                    digest = archives.write_member(tar, member, staging, name, entry.mode)
                if entry.type == "file" and digest != entry.sha256:
                    raise ArchiveError(f"{path}: member {name} changed since the archive was checked")
        except ERRORS as exc:
            raise ArchiveError(f"{path}: truncated or corrupt archive ({exc})") from None
    return manifest


def has_manifest(path: str | Path) -> bool | None:
    """True when the archive's first member is our manifest, False for a plain tar.gz, None when it
    cannot be read at all (the manifest check then says why)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
    except ERRORS:
        return None
    return first is not None and first.name == MANIFEST_NAME
