"""Plain `tar -czf` archives of a folder: the backups people already have, made without our manifest.

Such an archive names its members relative to the folder itself (`tar -czf x -C uploads .`, with or
without `./`), to its parent (`tar -czf x -C /opt/mks uploads`: `uploads/...`), to a folder further up,
or to / (`tar -czf x /opt/mks/uploads`, which GNU tar stores as `opt/mks/uploads/...`). The layout is
told from the members: a first member `./` makes it folder-relative; a member at or below a tail of
the folder's path (`opt/mks/uploads`, `mks/uploads`, `uploads`; the longest that fits) fixes that
tail as the archive's root, and then every member must be that folder, below it, or one of the
directories above it (which are not restored): anything else is refused, never written one folder
too deep.

There is no manifest to check the contents against, so the check is what the archive itself carries:
every member's name, type and link target is checked, and the whole gzip stream is read so that its
CRC is verified. A restore does that read while writing each checked member into a staging folder,
discarded on any failure; the manifest built from it (sizes and SHA-256 of what was read) is what the
caller checks the restored folder against.
"""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from recovery import archives
from recovery.archives import MANIFEST_NAME, ArchiveError, Entry, Manifest, safe_relative
from recovery.staging import Staging, StagingError

NO_MANIFEST = "no manifest: contents not verifiable beyond the archive's CRC"
ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


@dataclass
class _Layout:
    """Maps member names to paths inside the folder; decides root-relative or folder-relative once."""

    path: Path
    prefixes: tuple[str, ...]  # the folder's path relative to /, e.g. "opt/mks/uploads"
    prefix: str | None = None  # None: not decided yet; "": relative to the folder

    def __post_init__(self) -> None:
        # every tail of the folder's paths, longest first: "opt/mks/uploads", "mks/uploads", "uploads"
        split = [prefix.split("/") for prefix in self.prefixes]
        tails = {"/".join(parts[n:]) for parts in split for n in range(len(parts))}
        self.prefixes = tuple(sorted(tails - {""}, key=lambda t: (-t.count("/"), t)))

    def place(self, member: tarfile.TarInfo) -> str | None:
        """The member's path inside the folder; None for the folder itself and the ones above it."""
        if member.name.startswith("/"):
            raise ArchiveError(f"{self.path}: member with an absolute path: {member.name}")
        name = _strip_dot(member.name)
        if name == "":
            if self.prefix is None:
                self.prefix = ""  # "./" (tar -C folder .): relative to the folder itself
            return None
        relative = safe_relative(name).as_posix()
        if self.prefix is None:
            for prefix in self.prefixes:
                if (relative == prefix and member.isdir()) or relative.startswith(prefix + "/"):
                    self.prefix = prefix
                    break
                if member.isdir() and prefix.startswith(relative + "/"):
                    # a directory above the folder (opt/, opt/mks/): skipped while undecided; in a
                    # folder-relative archive that is an empty folder of that name, not restored
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


def scan_plain(path: str | Path, prefixes: tuple[str, ...], root: str,
               staging: Staging | None = None) -> Manifest:
    """Read the whole archive (to the end of its gzip stream) and check every member; the manifest of
    what it holds, with `plain` set. With `staging`, each checked member is written into it in the
    same pass (the caller discards it on failure). Raises ArchiveError."""
    path = Path(path)
    layout = _Layout(path, prefixes)
    seen: dict[str, Entry] = {}
    symlinks: set[str] = set()
    manifest = Manifest(root=root, created="", plain=True)
    with archives.open_stream(path) if staging is not None else archives.open_archive(path) as tar:
        try:
            while (member := archives.next_member(tar)) is not None:
                name = layout.place(member)
                if name is None:
                    continue
                _check(path, layout, member, name, seen, symlinks)
                mode = member.mode & 0o7777
                if member.issym():
                    entry = Entry(name, "symlink", mode, target=member.linkname)
                    symlinks.add(name)
                    if staging is not None:
                        staging.symlink(name, member.linkname)
                elif member.isdir():
                    entry = Entry(name, "dir", mode)
                    if staging is not None:
                        staging.directory(name)
                elif member.islnk():
                    source = seen[layout.link(member)]
                    entry = Entry(name, "file", mode, source.size, source.sha256)
                    if staging is not None:
                        staging.copy(name, source.path, mode)
                else:
                    data = archives.member_data(tar, member)
                    if staging is not None:
                        digest = staging.file(name, data, mode)
                    else:
                        digest = archives.data_sha256(data)
                    entry = Entry(name, "file", mode, member.size, digest)
                seen[name] = entry
                manifest.entries.append(entry)
            if staging is not None:
                staging.finish()  # every file written (a worker's error is raised here)
            archives.read_to_end(tar)
        except StagingError as exc:
            raise ArchiveError(f"{path}: {exc}") from None
        except ERRORS as exc:
            raise ArchiveError(f"{path}: truncated or corrupt archive ({exc})") from None
    return manifest


def stage_plain(path: str | Path, staging_dir: str | Path, prefixes: tuple[str, ...], root: str,
                owner: tuple[int, int] | None = None) -> Manifest:
    """Check and extract a plain archive in one pass into a new staging_dir; removed on any failure."""
    staging = Staging(Path(staging_dir), owner)
    try:
        return scan_plain(path, prefixes, root, staging)
    except BaseException:
        staging.discard()
        raise


def has_manifest(path: str | Path) -> bool | None:
    """True when the archive's first member is our manifest, False for a plain tar.gz, None when it
    cannot be read at all (the manifest check then says why)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
    except ERRORS:
        return None
    return first is not None and first.name == MANIFEST_NAME
