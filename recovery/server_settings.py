"""What a server started on a restored base backup runs: the harness's settings, not the backup's.

A base backup carries the source server's postgresql.auto.conf (and, where the configuration lives
in the data directory, its postgresql.conf and pg_hba.conf). Whoever could write the backup could
set there a command the server runs (archive_command, restore_command, recovery_end_command,
ssl_passphrase_command ...), a library it loads (shared_preload_libraries, archive_library ...), a
file or folder it reads or writes (ssl_*, hba_file, log_directory ...), where it listens, or an
include of any other file. Before such a server starts, every one of those is taken out of the
restored files and the live server's own lines for them (its postgresql.auto.conf's) are put in
their place; what was taken out is reported. The list follows PostgreSQL 15's pg_settings: every
parameter that names a program, a library, a file or folder, or where the server listens.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from recovery.target import Target

AUTO_CONF = "postgresql.auto.conf"
GUARDED = frozenset({
    # programs
    "archive_command", "restore_command", "archive_cleanup_command", "recovery_end_command",
    "ssl_passphrase_command", "ssl_passphrase_command_supports_reload",
    # libraries
    "archive_library", "shared_preload_libraries", "session_preload_libraries", "local_preload_libraries",
    "dynamic_library_path", "jit_provider",
    # files and folders
    "data_directory", "config_file", "hba_file", "ident_file", "external_pid_file", "krb_server_keyfile",
    "unix_socket_directories", "unix_socket_group", "unix_socket_permissions", "logging_collector",
    "log_destination", "log_directory", "log_filename", "log_file_mode", "stats_temp_directory",
    "promote_trigger_file",
    # where it listens and whom it follows
    "listen_addresses", "port", "primary_conninfo", "primary_slot_name",
    # other files read as configuration
    "include", "include_dir", "include_if_exists",
})
# every ssl_* file path and option, archive_* (archive_mode: the harness decides), recovery_* (the
# harness writes its own recovery target)
GUARDED_PREFIXES = ("ssl", "archive_", "recovery_")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?)\s*(?:=|\s)")


def guarded(name: str) -> bool:
    name = name.lower()
    return name in GUARDED or name.startswith(GUARDED_PREFIXES)


def split(text: str, source: str) -> tuple[list[str], list[str]]:
    """(the lines kept, what was taken out: "file:line name") of a configuration file's text."""
    kept: list[str] = []
    removed: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            kept.append(line)
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            removed.append(f"{source}:{number} (not a setting)")
        elif guarded(match[1]):
            removed.append(f"{source}:{number} {match[1].lower()}")
        else:
            kept.append(line)
    return kept, removed


def own_lines(live_data: Path) -> list[str]:
    """The live server's own lines for the guarded settings (from its postgresql.auto.conf)."""
    try:
        text = (live_data / AUTO_CONF).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines()
            if (match := _ASSIGNMENT.match(line)) is not None and guarded(match[1])]


def guard(restored: Path, live_data: Path, target: Target) -> list[str]:
    """Make the restored data directory's configuration the harness's for every guarded setting;
    what the base backup set for them (file:line name), for the journal."""
    removed: list[str] = []
    auto = restored / AUTO_CONF
    text = auto.read_text(encoding="utf-8", errors="replace") if auto.exists() else ""
    kept, removed = split(text, AUTO_CONF)
    header = ["# the base backup's settings that run programs, load libraries, name files or include",
              "# others were left out; the live server's own follow (mks recovery)"] if removed else []
    _write(auto, "\n".join([*kept, *header, *own_lines(live_data)]) + "\n", target)
    config_dir = Path(target.database.config_dir)
    if config_dir.resolve() == Path(target.database.data_dir).resolve():
        # the configuration lives in the data directory: the live server's files replace the backup's
        for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
            theirs, ours = restored / name, live_data / name
            if theirs.exists() and (not ours.exists() or theirs.read_bytes() != ours.read_bytes()):
                removed.append(f"{name} (replaced by the live server's)")
            if ours.exists():
                shutil.copyfile(ours, theirs)
                _own(theirs, target)
    return removed


def _write(path: Path, text: str, target: Target) -> None:
    path.write_text(text, encoding="utf-8")
    _own(path, target)


def _own(path: Path, target: Target) -> None:
    account = target.service_account()
    if account is not None and not account.is_current:
        os.chown(path, account.uid, account.gid)
    os.chmod(path, 0o600)
