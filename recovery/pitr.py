"""完全システム復旧 2. ポイントインタイムリカバリ: base backups, the WAL archive, and the restore.

The restored server runs on the live port, under the live service, from the live config: the live
server is stopped, its data directory is renamed beside itself as the safety copy, and the restored
directory takes its place. A side port would need a second config and a server outside the service
manager; this way the recovered server is exactly the one operators and the backend know, and a
failed recovery is undone by renaming the two directories back.

Where this differs from the runbook's text: recovery.conf is only for PostgreSQL < 12 (12 and later
refuse to start with it); the recovered server does not archive until an operator allows it
(`allow_archiving`), so it cannot mix a new timeline into the live archive; the target is checked
against the base backup and the archive before anything is stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from recovery import backups, server_settings
from recovery.actions import action, aware_time, option
from recovery.database import query_answers, start_backend, wait_answering
from recovery.errors import RecoveryError
from recovery.journal import Journal, Step
from recovery.postgres import psql
from recovery.service_manager import ServiceError
from recovery.target import Target, ensure_dir
from recovery.waiting import Observation, wait_until

log = logging.getLogger(__name__)

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
INFO_FILE = "backup-info.json"
# settings that only mean something during a recovery; removed once the server is promoted
RECOVERY_KEYS = ("restore_command", "recovery_target_time", "recovery_target_action")


class PitrError(RecoveryError):
    """A point-in-time restore that cannot or did not reach its target."""


# ---- recovery settings: the one place that knows the major-version difference ----------------

def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def recovery_settings(major: int, restore_command: str, target_time: dt.datetime | str,
                      *, disable_archiving: bool = True) -> dict[str, str]:
    """Files to put in the restored data directory, by name.

    < 12: recovery.conf; >= 12: an empty recovery.signal and the settings in postgresql.auto.conf.
    postgresql.auto.conf is appended to (later lines win); the other files are written whole.
    """
    when = target_time.isoformat(sep=" ") if isinstance(target_time, dt.datetime) else target_time
    recovery = (f"restore_command = {_quote(restore_command)}\n"
                f"recovery_target_time = {_quote(when)}\n"
                "recovery_target_action = 'promote'\n")
    archive = "archive_mode = 'off'\n" if disable_archiving else ""
    header = "# point-in-time recovery (mks recovery)\n"
    if major < 12:
        files = {"recovery.conf": header + recovery}
        if archive:
            files["postgresql.auto.conf"] = header + archive
        return files
    return {"recovery.signal": "", "postgresql.auto.conf": header + recovery + archive}


def restore_command(archive: Path) -> str:
    return f"cp {archive}/%f %p"


# ---- the WAL archive -------------------------------------------------------------------------

def segment_number(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a WAL segment file name."""
    match = SEGMENT_RE.match(name)
    if not match:
        raise PitrError(f"not a WAL segment name: {name}")
    per_id = 0x100000000 // segment_size
    return int(match[1], 16), int(match[2], 16) * per_id + int(match[3], 16)


def segment_name(timeline: int, number: int, segment_size: int) -> str:
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def contiguous_from(names: list[str], start: str, segment_size: int) -> tuple[list[str], str | None]:
    """The unbroken run of segments from start (same timeline), and the first missing one after it."""
    timeline, first = segment_number(start, segment_size)
    have = {segment_number(n, segment_size)[1] for n in names
            if SEGMENT_RE.match(n) and segment_number(n, segment_size)[0] == timeline}
    if first not in have:
        return [], start
    last_present = max(have)
    run: list[str] = []
    number = first
    while number in have:
        run.append(segment_name(timeline, number, segment_size))
        number += 1
    missing = segment_name(timeline, number, segment_size) if number <= last_present else None
    return run, missing


@dataclass(frozen=True)
class ArchiveRange:
    archive: str
    segments: list[str]  # contiguous from the base backup's start segment
    missing: str | None  # the first gap after them, when later segments exist
    first_commit: dt.datetime | None
    last_commit: dt.datetime | None


_COMMIT_RE = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (UTC|GMT)")


def parse_waldump_times(text: str) -> list[dt.datetime]:
    """Commit and abort times in `pg_waldump --rmgr=Transaction` output (run with TZ=UTC)."""
    out = []
    for match in _COMMIT_RE.finditer(text):
        raw = match[1]
        fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in raw else "%Y-%m-%d %H:%M:%S"
        out.append(dt.datetime.strptime(raw, fmt).replace(tzinfo=dt.UTC))
    return out


def archive_range(target: Target, start_segment: str, archive: Path | None = None,
                  step: Step | None = None) -> ArchiveRange:
    """The segments a recovery from start_segment can replay, and the commit times they cover.

    Times come from the WAL itself (pg_waldump), the same records recovery_target_time is
    compared with, so they do not depend on file times or on anyone having written them down.
    """
    archive = Path(archive or target.paths.wal_archive)
    names = sorted(p.name for p in archive.iterdir() if SEGMENT_RE.match(p.name)) if archive.is_dir() else []
    if not names:
        return ArchiveRange(str(archive), [], start_segment, None, None)
    size = (archive / names[0]).stat().st_size
    segments, missing = contiguous_from(names, start_segment, size)
    times: list[dt.datetime] = []
    if segments:
        argv = [target.database.tool("pg_waldump"), "--path", str(archive), "--rmgr=Transaction",
                segments[0], segments[-1]]
        kwargs = {"timeout": 600, "run_as": target.service_account(), "env": {"TZ": "UTC"}, "check": False}
        if step is not None:
            result = step.run(argv, **kwargs)  # type: ignore[arg-type]
        else:
            from recovery.commands import run

            result = run(argv, **kwargs)  # type: ignore[arg-type]
        times = parse_waldump_times(result.stdout)
    return ArchiveRange(str(archive), segments, missing, min(times, default=None), max(times, default=None))


# ---- base backups ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseBackup:
    path: str
    label: str
    started_at: str
    ended_at: str  # our clock after pg_basebackup returned: an upper bound of the backup's end
    start_lsn: str
    start_segment: str
    stop_lsn: str | None
    timeline: int
    major: int

    @property
    def end_time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.ended_at)


def parse_backup_label(text: str) -> dict[str, str]:
    """START WAL LOCATION, LABEL, START TIMELINE ... of a backup_label file."""
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    match = re.match(r"(\S+) \(file ([0-9A-F]{24})\)", fields.get("START WAL LOCATION", ""))
    if not match:
        raise PitrError("backup_label has no START WAL LOCATION")
    return {"start_lsn": match[1], "start_segment": match[2], "label": fields.get("LABEL", ""),
            "timeline": fields.get("START TIMELINE", "1")}


@action("pitr_base_backup", "ポイントインタイムリカバリ ベースバックアップ", cli="pitr-base-backup",
        help="ポイントインタイムリカバリ ベースバックアップ (pg_basebackup -Ft -z, WAL streamed)",
        plan=(("pg_basebackup", "ベースバックアップ取得",
               "pg_basebackup -Ft -z -X stream into backup_dir/base/<ts>, with its time and WAL range"),),
        options=(option("--label", help="the backup's label (default: mks <ts>)"),))
def base_backup(journal: Journal, target: Target, label: str | None = None) -> None:
    """pg_basebackup -Ft -z into backup_dir/base/<ts>, with a record of its time and WAL range."""
    ts = backups.stamp()
    with journal.step("pg_basebackup", "ベースバックアップ取得") as step:
        base = ensure_dir(Path(target.paths.backup_dir) / "base", target)
        path = base / ts
        if path.exists():
            raise PitrError(f"{path} exists already")
        started = dt.datetime.now(dt.UTC)
        db = target.database
        step.run([db.tool("pg_basebackup"), "-U", db.superuser, "-D", str(path), "-Ft", "-z",
                  "-X", "stream", "-c", "fast", "-l", label or f"mks {ts}"], timeout=3600,
                 run_as=target.service_account(), env=db.env())
        ended = dt.datetime.now(dt.UTC)
        with tarfile.open(path / "base.tar.gz") as tar:
            member = tar.extractfile("backup_label")
            label_fields = parse_backup_label(member.read().decode() if member else "")
        stop_lsn = None
        manifest = path / "backup_manifest"
        if manifest.exists():
            ranges = json.loads(manifest.read_text()).get("WAL-Ranges") or [{}]
            stop_lsn = ranges[-1].get("End-LSN")
        info = BaseBackup(str(path), label_fields["label"], started.isoformat(), ended.isoformat(),
                          label_fields["start_lsn"], label_fields["start_segment"], stop_lsn,
                          int(label_fields["timeline"]), db.major)
        (path / INFO_FILE).write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
        step.note("base_backup", asdict(info))


def base_backups(target: Target) -> list[BaseBackup]:
    """The recorded base backups, oldest first."""
    base = Path(target.paths.backup_dir) / "base"
    found = []
    for info in sorted(base.glob(f"*/{INFO_FILE}")) if base.is_dir() else []:
        try:
            found.append(BaseBackup(**json.loads(info.read_text(encoding="utf-8"))))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", info, exc)
    return sorted(found, key=lambda b: b.ended_at)


# ---- point-in-time restore -------------------------------------------------------------------

def _utc(target_time: dt.datetime | str) -> dt.datetime:
    if isinstance(target_time, str):
        try:
            target_time = dt.datetime.fromisoformat(target_time)
        except ValueError:
            raise PitrError(f"target time {target_time!r} is not like '2024-01-09 10:00:00+09'") from None
    if target_time.tzinfo is None:
        raise PitrError("target_time needs a time zone (the runbook writes +09)")
    return target_time.astimezone(dt.UTC)


def _pitr_dirs(target: Target) -> tuple[Path, Path, Path, Path]:
    """The data directory, and beside it the restored one, the safety copy, a failed restore."""
    ts = backups.stamp()
    data_dir = Path(target.database.data_dir)
    return (data_dir, data_dir.with_name(f"{data_dir.name}.pitr_{ts}"),
            data_dir.with_name(f"{data_dir.name}.pre_pitr_{ts}"),
            data_dir.with_name(f"{data_dir.name}.failed_pitr_{ts}"))


def _plan_pitr(journal: Journal, target: Target, target_time: dt.datetime | str, **kwargs: object) -> None:
    _utc(target_time)
    data_dir, fresh, safety, _ = _pitr_dirs(target)
    for name, title, what in PITR_PLAN:
        journal.plan(name, title, what=what.format(fresh=fresh, safety=safety, data=data_dir))


@action("pitr_restore", "ポイントインタイムリカバリ PITR実行", plan=_plan_pitr, cli="pitr",
        help="ポイントインタイムリカバリ",
        options=(option("--target-time", required=True, type=aware_time,
                        help="with a time zone, e.g. '2024-01-09 10:00:00+09'"),))
def point_in_time_restore(journal: Journal, target: Target, target_time: dt.datetime | str, *,
                          archive: Path | str | None = None, timeout: float = 300.0) -> None:
    """Recover the cluster to target_time from the newest base backup that ends before it.

    A dry run only plans (it reads nothing, like the other actions' dry runs).
    """
    when = _utc(target_time)
    wal = Path(archive or target.paths.wal_archive)
    data_dir, fresh, safety, failed = _pitr_dirs(target)
    with journal.step("preflight", "WALアーカイブ確認") as step:
        chosen = _choose_base(target, when)
        step.note("base_backup", chosen.path)
        step.note("base_backup_end", chosen.ended_at)
        covered = archive_range(target, chosen.start_segment, wal, step)
        step.note("archive", str(wal))
        step.note("segments", [covered.segments[0], covered.segments[-1]] if covered.segments else [])
        step.note("first_missing", covered.missing)
        step.note("last_commit", covered.last_commit.isoformat() if covered.last_commit else None)
        _check_covered(when, chosen, covered)
    with journal.step("restore_base", "ベースバックアップ展開") as step:
        _extract(step, target, Path(chosen.path), fresh)
        # before the recovery settings are appended: those are the harness's too
        untrusted = server_settings.guard(fresh, data_dir, target)
        step.note("untrusted_settings", untrusted)
        if untrusted:
            step.note("warning", "the base backup set programs, libraries, files or includes in its "
                                 "configuration; left out, the live server's own apply: "
                                 + ", ".join(untrusted))
        files = recovery_settings(target.database.major, restore_command(wal), when)
        for name, content in files.items():
            _write_setting(fresh / name, content, append=name == "postgresql.auto.conf", target=target)
        step.note("data_dir", str(fresh))
        step.note("settings", sorted(files))
    _swap_and_recover(journal, target, (data_dir, fresh, safety, failed), timeout)


PITR_PLAN = (
    ("preflight", "WALアーカイブ確認", "base backup ending before the target; archive covers it, no gap"),
    ("restore_base", "ベースバックアップ展開", "extract the base backup into {fresh}; its settings that run "
     "programs, load libraries or name files replaced by the live server's; recovery settings"),
    ("stop", "PostgreSQL停止", "stop backend and PostgreSQL; {data} -> {safety}; {fresh} -> {data}"),
    ("recover", "PostgreSQL起動・リカバリ完了確認", "start; wait for promotion"),
    ("verify", "リカバリ後の確認", "archive_mode off; recovery settings reset"),
    ("start_backend", "サービス起動", "start the backend, wait for health 200"),
)


def _choose_base(target: Target, when: dt.datetime) -> BaseBackup:
    found = base_backups(target)
    if not found:
        raise PitrError(f"no base backup in {Path(target.paths.backup_dir) / 'base'}")
    usable = [b for b in found if b.end_time <= when]
    if not usable:
        raise PitrError(f"target {when.isoformat()} is before the end of the oldest base backup "
                        f"({found[0].ended_at}); nothing was changed")
    return usable[-1]


def _check_covered(when: dt.datetime, chosen: BaseBackup, covered: ArchiveRange) -> None:
    if not covered.segments:
        raise PitrError(f"the archive {covered.archive} lacks {chosen.start_segment}, where the base backup "
                        "starts; nothing was changed")
    if covered.last_commit is None or when > covered.last_commit:
        gap = f" (segment {covered.missing} is missing)" if covered.missing else ""
        last = covered.last_commit.isoformat() if covered.last_commit else "none"
        raise PitrError(f"target {when.isoformat()} is after the last archived transaction ({last}){gap}; "
                        "nothing was changed")


def _extract(step: Step, target: Target, source: Path, dest: Path) -> None:
    ensure_dir(dest, target, mode=0o700)
    os.chmod(dest, 0o700)
    account = target.service_account()
    step.run(["tar", "-xzf", str(source / "base.tar.gz"), "-C", str(dest)], timeout=3600, run_as=account)
    wal_tar = source / "pg_wal.tar.gz"
    if wal_tar.exists():
        step.run(["tar", "-xzf", str(wal_tar), "-C", str(dest / "pg_wal")], timeout=3600, run_as=account)
    # stale state from the source server must not confuse the recovered one
    for name in ("postmaster.pid", "postmaster.opts", "recovery.signal", "standby.signal"):
        (dest / name).unlink(missing_ok=True)


def _write_setting(path: Path, content: str, *, append: bool, target: Target) -> None:
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        handle.write(content)
    account = target.service_account()
    if account is not None and not account.is_current:
        os.chown(path, account.uid, account.gid)
    os.chmod(path, 0o600)


def _swap_and_recover(journal: Journal, target: Target, dirs: tuple[Path, Path, Path, Path],
                      timeout: float) -> None:
    data_dir, fresh, safety, failed = dirs
    services = target.service_manager()
    db_service, backend = target.services.database, target.services.backend
    try:
        with journal.step("stop", "PostgreSQL停止") as step:
            services.stop(backend)
            services.stop(db_service)
            data_dir.rename(safety)
            fresh.rename(data_dir)
            step.note("safety_copy", str(safety))
        with journal.step("recover", "PostgreSQL起動・リカバリ完了確認") as step:
            try:
                services.start(db_service)
            except ServiceError as exc:  # it exited before the manager counted it as started
                first, log_tail = str(exc).splitlines()[0], _log_lines(target)
                raise PitrError(f"the server stopped during recovery ({first}):\n{log_tail}") from None
            step.note("answer", _wait_promoted(target, timeout))
            step.note("log_tail", _log_lines(target))
        with journal.step("verify", "リカバリ後の確認") as step:
            archive_mode = psql(step, target, "SHOW archive_mode;")[0][0]
            step.note("archive_mode", archive_mode)
            if archive_mode != "off":
                raise PitrError(f"the recovered server archives (archive_mode = {archive_mode})")
            for key in RECOVERY_KEYS:
                psql(step, target, f"ALTER SYSTEM RESET {key};")
            psql(step, target, "SELECT pg_reload_conf();")
            rows = psql(step, target, "SELECT count(*) FROM pg_database WHERE datname = "
                                      f"'{target.database.name}';")
            if rows != [["1"]]:
                raise PitrError(f"database {target.database.name} is not in the recovered cluster")
    except BaseException:
        with journal.step("rollback", "元のデータディレクトリへ戻す") as step:
            services.stop(db_service)
            if safety.exists():
                if data_dir.exists():
                    data_dir.rename(failed)
                    step.note("failed_data_dir", str(failed))
                safety.rename(data_dir)
            elif fresh.exists():
                shutil.rmtree(fresh)
            services.start(db_service)
            wait_answering(target, timeout)
            services.start(backend)
        raise
    with journal.step("start_backend", "サービス起動") as step:
        start_backend(step, target, 60)


def _wait_promoted(target: Target, timeout: float) -> str:
    services = target.service_manager()

    def promoted() -> Observation:
        status = services.status(target.services.database)
        if status.active_state in ("inactive", "failed"):
            raise PitrError(f"the server stopped during recovery ({status.detail}):\n{_log_lines(target)}")
        return query_answers(target)

    answer = wait_until("the recovered server to be promoted", promoted, timeout=timeout, interval=0.3,
                        error=PitrError, not_yet=(psycopg.Error, OSError),
                        log_tail=lambda: _log_lines(target))
    return answer.detail


def _log_lines(target: Target, lines: int = 15) -> str:
    from recovery.journal import tail

    return tail(Path(target.database.log_file), lines)


@action("pitr_allow_archiving", "アーカイブ再開", cli="allow-archiving",
        help="アーカイブ再開: after a PITR is accepted, archive WAL again (restarts PostgreSQL)",
        plan=(("archive_on", "アーカイブ再開", "ALTER SYSTEM RESET archive_mode"),
              ("restart", "PostgreSQL再起動",
               "restart PostgreSQL; wait for a real query; SHOW archive_mode")))
def allow_archiving(journal: Journal, target: Target) -> None:
    """The operator's decision after checking the recovered data: archive again (needs a restart)."""
    with journal.step("archive_on", "アーカイブ再開") as step:
        psql(step, target, "ALTER SYSTEM RESET archive_mode;")
    with journal.step("restart", "PostgreSQL再起動") as step:
        target.service_manager().restart(target.services.database)
        step.note("answer", wait_answering(target, 60))
        step.note("archive_mode", psql(step, target, "SHOW archive_mode;")[0][0])


def remove_safety_copy(path: Path) -> None:
    """Delete a pre_pitr_ data directory once the recovered data is accepted (an operator's call)."""
    if ".pre_pitr_" not in path.name and ".failed_" not in path.name:
        raise PitrError(f"{path} is not a safety copy made by point_in_time_restore")
    shutil.rmtree(path)
