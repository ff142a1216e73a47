"""完全システム復旧: full recovery of one server, and 新規サーバーへの移行復旧 (migration to a new server).

Where this differs from the runbook's 完全復旧スクリプト (scripts/full-recovery.sh), and why:
- The script runs dropdb/createdb/pg_restore and only then `systemctl start postgresql`: with the
  database server down (the usual reason for a full recovery) every one of those commands fails,
  and it never checks a step, so it reports "Completed" anyway. Here PostgreSQL is started first
  and awaited with a real query; every step is checked and a failed one stops the action.
- The script looks for `/backup/mks/latest.dump` (a name our backups never have) and restores
  whatever is there. Here the newest *valid* database dump, uploads archive and config tarball are
  all verified before anything is touched, and exactly those files are restored.
- Order: config first (the backend reads config.yml when it starts), then the database (its
  restore starts the backend and waits for health; nginx stays down, so no user reaches a
  half-restored service), then the uploads, then nginx. A database that was dropped is created
  again with the dump's schema so the restore can keep its safety copy and swap it out.
- Health is awaited with retries through nginx, then the data's integrity (every row of the file store has
  its file) is checked before the runbook's 機能テスト.

Migration: the old server's newest valid backups are copied into the new server's backup folder
and verified by SHA-256 (the runbook's scp); from then on the old server is not needed. The old
config.yml names the old host's database port, password and paths, and its nginx site the old
ports and certificate, so neither is installed: the new host keeps its own environment config
(config.yml, the nginx site) and only the host-independent application config is restored, from
git. The old config.yml is still verified and compared key by key (names only, never values), so
the journal shows which application settings differ for an operator to review.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recovery import app_http, backups, database, health, integrity, restore_role
from recovery.actions import LEVEL_OPTION, action, option
from recovery.archives import ArchiveError, choose_backup, extract_verified, sha256_file, timestamp
from recovery.config_files import check_config, restore_config, restore_from_git, target_root
from recovery.errors import RecoveryError
from recovery.journal import ActionFailed, Journal, Step, StepRecord, now_iso
from recovery.postgres import ident, psql
from recovery.target import Target, ensure_dir, load_target
from recovery.uploads import folder_prefixes, restore_uploads, verify_uploads_archive
from recovery.waiting import WaitTimeout, wait_until
from recovery.webserver import nginx_test

log = logging.getLogger(__name__)

# config.yml keys that belong to the host, not to the application: never carried to another server
HOST_KEYS = ("database", "uploads.dir", "auth.jwt_secret")


FULL_OPTIONS = (
    LEVEL_OPTION,
    option("--health-timeout", type=float, default=60.0, help="seconds to wait for health after the restore"),
    option("--username", default="admin", help="the login of the post checks"),
    option("--login-password-file", metavar="FILE",
           help="the post checks' password (else $MKS_CHECK_PASSWORD; never on the command line)"),
)


class FullRecoveryError(RecoveryError):
    """A step of the full recovery or the migration found the system not as it must be."""


@dataclasses.dataclass(frozen=True)
class Chosen:
    """The three backups a full recovery restores, verified before anything is touched."""

    dump: Path
    uploads: Path
    config: Path


# ---- journal composition -----------------------------------------------------------------------
def splice(journal: Journal, part: str, label: str, sub: Journal) -> None:
    """Append a sub-action's step records to the journal, named part/step and titled label: title."""
    for record in sub.steps:
        journal.steps.append(dataclasses.replace(
            record, name=f"{part}/{record.name}", title=f"{label}: {record.title}",
            details={"action": sub.action, **record.details}))


def compose(journal: Journal, part: str, label: str, call: Callable[[], Journal]) -> Journal:
    """Run a sub-action and keep its steps; a failure is re-raised with the sub-action's own cause."""
    started = now_iso()
    try:
        sub = call()
    except ActionFailed as exc:
        splice(journal, part, label, exc.journal)
        cause = exc.__cause__
        raise (cause if isinstance(cause, Exception) else exc) from None
    except Exception as exc:
        journal.steps.append(StepRecord(part, label, started, now_iso(), status="failed",
                                        error=journal.mask(str(exc))))
        raise
    splice(journal, part, label, sub)
    return sub


# ---- the steps both actions share --------------------------------------------------------------
def choose_backups(target: Target, level: str, notes: dict[str, Any]) -> Chosen:
    """The newest valid dump (recent enough for the level), uploads archive and config tarball."""
    backup_dir = Path(target.paths.backup_dir)
    limit = backups.max_age_for(level)
    dump, skipped = backups.choose(target, max_age=limit)
    notes["level"] = level
    notes["database_dump"] = {"path": str(dump.path), "created_at": dump.created_at.isoformat(),
                              "age_hours": round(dump.age().total_seconds() / 3600, 2),
                              "sha256": dump.sha256, "sidecar_checked": dump.sidecar_checked,
                              "row_counts": dump.row_counts}
    if skipped:
        notes["database_dumps_skipped"] = skipped
    found: dict[str, Any] = {}
    prefixes = folder_prefixes(target)
    uploads, manifest = choose_backup(backup_dir, "uploads", "uploads", None, found,
                                      verify=lambda path: verify_uploads_archive(path, prefixes))
    notes["uploads_archive"] = {"path": str(uploads), "files": len(manifest.files),
                                "bytes": manifest.total_bytes, **found}
    found = {}
    config, manifest = choose_backup(backup_dir, "config", "/", None, found)
    notes["config_archive"] = {"path": str(config), "files": [e.path for e in manifest.files], **found}
    return Chosen(dump.path, uploads, config)


def login_credentials(journal: Journal, username: str, password: str | None,
                      password_file: str | None) -> tuple[str, str]:
    """The post checks' login, resolved before anything is touched; the password is masked."""
    user, secret = app_http.credentials(username, password, password_file)
    journal.secrets.append(secret)
    return user, secret


def stop_services(journal: Journal, target: Target) -> None:
    with journal.step("stop_services", "サービス停止") as step:
        manager = target.service_manager()
        for name in (target.services.backend, target.services.web):
            manager.stop(name)
            step.note(name, manager.status(name).detail)


def postgresql_up(journal: Journal, target: Target, timeout: float) -> None:
    """PostgreSQL must answer a real query before anything uses it (the runbook starts it last)."""
    with journal.step("postgresql", "PostgreSQL起動確認") as step:
        manager, name = target.service_manager(), target.services.database
        was = manager.status(name)
        step.note("was", was.detail)
        if not was.is_active:
            manager.start(name)
            step.note("started", True)
        step.note("answer", database.wait_answering(target, timeout))


def prepare(journal: Journal, target: Target, dump: Path) -> None:
    """The live database and the uploads folder exist, so the restores can save and swap them."""
    with journal.step("prepare", "リストア準備 (データベース・アップロードディレクトリ)") as step:
        db = target.database
        live, user = ident(db.name), ident(db.user)
        exists = psql(step, target, f"SELECT 1 FROM pg_database WHERE datname = '{live}';")
        if exists:
            step.note("database", f"{live} exists")
        else:
            # the runbook's createdb; with the dump's schema, so the safety copy and swap have a subject
            if backups.is_plain(dump):  # its schema and data come in one script, restored beside it
                psql(step, target, f"CREATE DATABASE {live} OWNER {user};")
                step.note("database", f"{live} was missing: created empty ({dump.name} is plain SQL)")
            else:
                # the dump's schema, run as a restore role of its own as every dump is (restore_role)
                schema_only(step, target, backups.verify_dump(dump, target), live)
                step.note("database", f"{live} was missing: created with the schema of {dump.name}")
        uploads = Path(target.paths.uploads_dir)
        if uploads.is_dir():
            step.note("uploads_dir", "exists")
        else:
            ensure_dir(uploads, target, mode=0o755)
            step.note("uploads_dir", f"{uploads} was missing: created empty")


def schema_only(step: Step, target: Target, chosen: backups.VerifiedBackup, live: str) -> None:
    role = restore_role.role_name(f"{live}_restore_{timestamp()}")
    try:
        with restore_role.restorer(step, target, live, role) as restorer:
            database.run_pg_restore(step, target, chosen, restorer, 1, "--schema-only",
                                    "--single-transaction")
            restore_role.hand_over(step, target, restorer)
    except BaseException:
        psql(step, target, f"DROP DATABASE IF EXISTS {live} WITH (FORCE);")
        restore_role.drop(step, target, role)
        raise


def start_and_check(journal: Journal, target: Target, health_timeout: float,
                    login: tuple[str, str] | None) -> None:
    """Backend and nginx up, health with retries, integrity, then the runbook's 機能テスト."""
    manager = target.service_manager()
    with journal.step("start_backend", "バックエンド起動") as step:
        database.start_backend(step, target, health_timeout)
    with journal.step("start_nginx", "Nginx起動 (nginx -t の後)") as step:
        nginx_test(target, step)
        manager.start(target.services.web)
        step.note("status", manager.status(target.services.web).detail)
    with journal.step("health", "ヘルスチェック (リトライ付き)") as step:
        attempts, code = wait_public_health(target, health_timeout)
        step.note("url", target.public_url)
        step.note("attempts", attempts)
        step.note("status_code", code)
        if code != 200:
            raise FullRecoveryError(f"{target.public_url}{target.health_path} answers {code} after "
                                    f"{attempts} attempts in {health_timeout:g}s")
    with journal.step("integrity", "データ整合性確認") as step:
        # taken before the post checks, whose upload adds a document: this is the restored data
        found = integrity.fingerprint(target)
        step.note("row_counts", dict(found.row_counts))
        step.note("files_checked", found.files_checked)
        step.note("fingerprint", found.to_dict())
        problems = found.problems()
        if problems:
            raise FullRecoveryError("the restored data is not consistent:\n  " + "\n  ".join(problems[:20]))
    if login is None:
        journal.plan("post_checks", "機能テスト", what="skipped: checks=False")
        return
    with journal.step("post_checks", "機能テスト (ヘルス・認証・データアクセス・アップロード)") as step:
        result = integrity.post_checks(target, *login)
        step.note("checks", {c.name: ("ok " if c.ok else "FAILED ") + c.detail for c in result.checks})
        if not result.ok:
            failed = ", ".join(f"{c.name} ({c.detail})" for c in result.failures())
            raise FullRecoveryError(f"post checks failed: {failed}")


def wait_public_health(target: Target, timeout: float) -> tuple[int, int | None]:
    """Health through nginx, retried with a growing pause until 200 or the timeout."""
    answers: list[health.Health] = []

    def answer() -> health.Health:
        answers.append(health.public(target))
        return answers[-1]

    with contextlib.suppress(WaitTimeout):
        wait_until(f"health 200 at {target.public_url}", answer, timeout=timeout,
                   interval=lambda n: min(0.2 * 2 ** (n - 1), 5.0))
    return len(answers), answers[-1].status


# ---- 完全復旧 -----------------------------------------------------------------------------------
FULL_PLAN = (
    ("verify_backups", "バックアップ確認",
     "newest valid db_*.dump (recent enough for the level), uploads_*.tar.gz and config_*.tar.gz;"
     " nothing is touched before all three verify"),
    ("stop_services", "サービス停止", "stop the backend and nginx"),
    ("postgresql", "PostgreSQL起動確認", "start PostgreSQL when it is down; wait for a real query"),
    ("config", "設定ファイル復旧", "restore_config from the verified tarball (before the backend starts)"),
    ("prepare", "リストア準備",
     "a dropped database is created with the dump's schema; the uploads folder exists"),
    ("database", "データベース復旧", "restore_database from the verified dump (beside, verify, swap)"),
    ("uploads", "アップロードファイル復旧", "restore_uploads from the verified archive (staging, swap)"),
    ("start_backend", "バックエンド起動", "start the backend; wait for its health"),
    ("start_nginx", "Nginx起動", "nginx -t, then start nginx"),
    ("health", "ヘルスチェック (リトライ付き)", "health 200 through nginx, retried with backoff"),
    ("integrity", "データ整合性確認", "fingerprint: every file row has its file, amcheck clean"),
    ("post_checks", "機能テスト", "health, login, projects, upload and download"),
)


def _plan_full(journal: Journal, target: Target, *, level: str = "RTO-24", **kwargs: object) -> None:
    _plan(journal, FULL_PLAN, {
        "config": restore_config(target, dry_run=True),
        "database": database.restore_database(target, level, dry_run=True),
        "uploads": restore_uploads(target, dry_run=True)})


@action("full_recovery", "完全システム復旧 (完全復旧スクリプト)", plan=_plan_full, cli="full-recovery",
        help="完全システム復旧: verify backups, PostgreSQL up, restore config, db, uploads",
        options=FULL_OPTIONS)
def full_recovery(journal: Journal, target: Target, *, level: str = "RTO-24", health_timeout: float = 60.0,
                  username: str = "admin", password: str | None = None,
                  login_password_file: str | None = None, checks: bool = True) -> None:
    """The runbook's 完全復旧スクリプト in an order that works; every step checked and journaled.

    The post checks log in as `username` with `password`, else the first line of
    `login_password_file`, else $MKS_CHECK_PASSWORD (resolved before anything is touched).
    """
    with journal.step("verify_backups", "バックアップ確認") as step:
        login = login_credentials(journal, username, password, login_password_file) if checks else None
        chosen = choose_backups(target, level, step.record.details)
    stop_services(journal, target)
    postgresql_up(journal, target, health_timeout)
    compose(journal, "config", "設定ファイル復旧", lambda: restore_config(target, chosen.config))
    prepare(journal, target, chosen.dump)
    compose(journal, "database", "データベース復旧", lambda: database.restore_database(
        target, level, chosen.dump, health_timeout=health_timeout))
    compose(journal, "uploads", "アップロードファイル復旧",
            lambda: restore_uploads(target, chosen.uploads))
    start_and_check(journal, target, health_timeout, login)


def _plan(journal: Journal, plan: tuple[tuple[str, str, str], ...], subs: dict[str, Journal]) -> None:
    for name, title, what in plan:
        if name in subs:
            splice(journal, name, title, subs[name])
        else:
            journal.plan(name, title, what=what)


# ---- 新規サーバーへの移行復旧 ------------------------------------------------------------------
MIGRATE_PLAN = (
    ("verify_backups", "移行元バックアップ確認",
     "the old server's newest valid dump, uploads archive and config tarball; the new one untouched"),
    ("transfer", "バックアップ転送", "copy into the new server's backup folder; SHA-256 must match"),
    ("release_old", "移行元サーバー切り離し", "the old server is not used from here on"),
    ("stop_services", "サービス停止", "stop the new server's backend and nginx"),
    ("postgresql", "PostgreSQL起動確認", "start PostgreSQL when it is down; wait for a real query"),
    ("environment_config", "環境設定の維持",
     "keep the new host's config.yml and nginx site; compare the old config.yml's keys (names only)"),
    ("config_git", "アプリケーション設定 (Gitから)", "restore_from_git: config/production.yml, alembic.ini"),
    ("prepare", "リストア準備", "the database and the uploads folder exist"),
    ("database", "データベースリストア", "restore_database from the transferred dump"),
    ("uploads", "アップロードファイルリストア", "restore_uploads from the transferred archive"),
    ("start_backend", "バックエンド起動", "start the backend; wait for its health"),
    ("start_nginx", "Nginx起動", "nginx -t, then start nginx"),
    ("health", "ヘルスチェック (リトライ付き)", "health 200 through nginx, retried with backoff"),
    ("integrity", "データ整合性確認", "fingerprint: every file row has its file, amcheck clean"),
    ("post_checks", "機能テスト", "login with the old server's users"),
)


def migrate_to_new_server(old: Target, new: Target, *, level: str = "RTO-24", health_timeout: float = 60.0,
                          username: str = "admin", password: str | None = None,
                          login_password_file: str | None = None, checks: bool = True,
                          after_transfer: Callable[[], None] | None = None,
                          dry_run: bool = False) -> Journal:
    """Move the old server's data onto the new one through its backups.

    `after_transfer` runs once the backups are on the new server: the moment the old server may
    go (a drill of the loss of the whole server tears it down there). The post checks log in with a
    user of the old server's data.
    """
    return _migrate(new, old, level=level, health_timeout=health_timeout, username=username,
                    password=password, login_password_file=login_password_file, checks=checks,
                    after_transfer=after_transfer, dry_run=dry_run)


def _plan_migrate(journal: Journal, new: Target, old: Target, *, level: str = "RTO-24",
                  **kwargs: object) -> None:
    journal.plan("servers", "移行元・移行先", old=old.name, new=new.name)
    _plan(journal, MIGRATE_PLAN, {
        "config_git": restore_from_git(new, dry_run=True),
        "database": database.restore_database(new, level, dry_run=True),
        "uploads": restore_uploads(new, dry_run=True)})


@action("migrate_to_new_server", "完全システム復旧 1. 新規サーバーへの移行復旧", plan=_plan_migrate)
def _migrate(journal: Journal, new: Target, old: Target, **kwargs: Any) -> None:
    _migration(journal, new, old, **kwargs)


def _migration(journal: Journal, new: Target, old: Target, *, level: str = "RTO-24",
               health_timeout: float = 60.0, username: str = "admin", password: str | None = None,
               login_password_file: str | None = None, checks: bool = True,
               after_transfer: Callable[[], None] | None = None) -> None:
    """The migration's steps, journaled on the new server."""
    with journal.step("verify_backups", "移行元バックアップ確認") as step:
        step.note("old_server", old.name)
        step.note("new_server", new.name)
        login = login_credentials(journal, username, password, login_password_file) if checks else None
        chosen = choose_backups(old, level, step.record.details)
    with journal.step("transfer", "バックアップ転送") as step:
        moved = transfer(chosen, old, new, step.record.details)
    with journal.step("release_old", "移行元サーバー切り離し") as step:
        if after_transfer is not None:
            after_transfer()
        step.note("note", f"{old.name} is not used from here on")
    stop_services(journal, new)
    postgresql_up(journal, new, health_timeout)
    with journal.step("environment_config", "環境設定の維持 (新サーバーの config.yml, nginx)") as step:
        keep_environment_config(new, moved.config, step.record.details)
    compose(journal, "config_git", "アプリケーション設定 (Gitから)", lambda: restore_from_git(new))
    prepare(journal, new, moved.dump)
    compose(journal, "database", "データベースリストア", lambda: database.restore_database(
        new, level, moved.dump, health_timeout=health_timeout))
    compose(journal, "uploads", "アップロードファイルリストア",
            lambda: restore_uploads(new, moved.uploads))
    start_and_check(journal, new, health_timeout, login)


def transfer(chosen: Chosen, old: Target, new: Target, notes: dict[str, Any]) -> Chosen:
    """Copy the chosen backups (and the dump's sidecar and counts) into the new backup folder."""
    dest_dir = ensure_dir(Path(new.paths.backup_dir), new)
    copies: dict[str, Path] = {}
    files = []
    for kind, source in (("dump", chosen.dump), ("uploads", chosen.uploads), ("config", chosen.config)):
        companions = [backups.sidecar(source), backups.manifest_path(source)] if kind == "dump" else []
        for path in [source, *[c for c in companions if c.is_file()]]:
            files.append(copy_verified(path, dest_dir / path.name, new))
        copies[kind] = dest_dir / source.name
    notes["from"] = str(Path(old.paths.backup_dir))
    notes["to"] = str(dest_dir)
    notes["files"] = files
    return Chosen(copies["dump"], copies["uploads"], copies["config"])


def copy_verified(source: Path, dest: Path, target: Target) -> dict[str, Any]:
    """One file to the other server: written under a temporary name, its SHA-256 compared, renamed.

    A file of that name already on the new server is reused when identical and never overwritten.
    """
    digest = sha256_file(source)
    if dest.exists():
        if sha256_file(dest) != digest:
            raise FullRecoveryError(f"{dest} exists on the new server with other content; not overwritten")
        return {"file": dest.name, "sha256": digest, "bytes": dest.stat().st_size, "copied": False}
    partial = dest.with_name(f".{dest.name}.transfer")
    try:
        shutil.copyfile(source, partial)
        os.chmod(partial, 0o640)
        account = target.service_account()
        if account is not None and not account.is_current:
            os.chown(partial, account.uid, account.gid)
        received = sha256_file(partial)
        if received != digest:
            raise FullRecoveryError(f"{source.name}: sha256 {received} after the transfer, {digest} before")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return {"file": dest.name, "sha256": digest, "bytes": dest.stat().st_size, "copied": True}


def keep_environment_config(new: Target, archive: Path, notes: dict[str, Any]) -> None:
    """Verify the old config tarball, compare its config.yml with the new host's; install nothing."""
    root = target_root(new)
    config_name = Path(new.paths.config_file).relative_to(root).as_posix()
    site_name = Path(new.paths.nginx_site).relative_to(root).as_posix()
    own = check_config(Path(new.paths.config_file), new.app.config_kind)
    staging = Path(new.paths.scratch_dir) / f"migrate-config-{timestamp()}"
    ensure_dir(staging.parent, new, mode=0o700)
    try:
        manifest = extract_verified(archive, staging, "/")
        names = [e.path for e in manifest.files]
        old_config = (check_config(staging / config_name, new.app.config_kind)
                      if config_name in names else None)
    except ArchiveError as exc:
        raise FullRecoveryError(f"the old server's config backup does not verify: {exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    notes["old_config_archive"] = {"path": str(archive), "files": names}
    notes["decision"] = ("kept the new host's config.yml and nginx site: they name this host's database "
                         "port, password, uploads path, ports and certificate; the application config "
                         "comes from git (config/production.yml, alembic.ini)")
    notes["not_installed"] = [n for n in (config_name, site_name) if n in names]
    if old_config is not None:
        notes.update(compare_config(old_config, own, new.app.host_keys or HOST_KEYS))


def compare_config(old: dict[str, Any], new: dict[str, Any],
                   host_keys: tuple[str, ...] | list[str] = HOST_KEYS) -> dict[str, list[str]]:
    """Key paths that differ between two config.yml mappings (names only: values may be secrets)."""
    a, b = _flatten(old), _flatten(new)
    differ = sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))

    def host(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in host_keys)

    return {"host_keys_differing": [k for k in differ if host(k)],
            "application_keys_differing": [k for k in differ if not host(k)]}


_MISSING = object()


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _plan_migrate_cli(journal: Journal, target: Target, old_target: str | None = None, *,
                      level: str = "RTO-24", **kwargs: object) -> None:
    old = load_target(old_target) if old_target else Target(name="(the server named by --old-target)")
    _plan_migrate(journal, target, old, level=level)


@action("migrate_to_new_server", "完全システム復旧 1. 新規サーバーへの移行復旧", plan=_plan_migrate_cli,
        cli="migrate", help="新規サーバーへの移行復旧: the old server's backups onto this (new) target",
        options=(option("--old-target", metavar="FILE",
                        help="the old server's target file (its backups are read)"),
                 *FULL_OPTIONS))
def migrate_from_target_file(journal: Journal, target: Target, old_target: str | None = None, *,
                             level: str = "RTO-24", health_timeout: float = 60.0, username: str = "admin",
                             login_password_file: str | None = None) -> None:
    """The CLI's migrate: `target` is the new server, `old_target` the old server's target file."""
    if old_target is None:
        raise FullRecoveryError("migrate needs --old-target FILE: the old server's target file")
    _migration(journal, target, load_target(old_target), level=level, health_timeout=health_timeout,
               username=username, login_password_file=login_password_file)
