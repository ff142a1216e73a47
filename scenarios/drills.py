"""The drill catalogue: what breaks, how the runbook recovers, at which level and on which schedule.

Each drill is a fixtures.engine.drill.Drill; scenarios/test_drills.py runs them on their schedules and
tests/test_sabotage.py runs them with a recovery broken on purpose.

Full recovery and migration run recovery/full_system.py's actions with their own post checks off
(checks=False): the drill's post checks come after its fingerprint comparison, and the checks'
upload would otherwise count as a difference.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from fixtures.apps.profile import AppProfile
from fixtures.engine import faults
from fixtures.engine.drill import Drill, DrillRun
from fixtures.stack import Stack
from fixtures.stack.container_faults import KillPostgresContainer, LosePostgresData, new_cluster
from recovery import (
    archives,
    backups,
    config_files,
    database,
    full_system,
    pitr,
    services,
    uploads,
    webserver,
)
from recovery.actions import journaled
from recovery.errors import RecoveryError
from recovery.journal import ActionFailed, Journal
from recovery.plain_archives import NO_MANIFEST
from recovery.postgres import psql
from recovery.target import Target
from recovery.waiting import Observation, wait_until
from reports import schedules

SERVICE = "サービス復旧手順 > 1. バックエンドサービス復旧"
DATABASE = "サービス復旧手順 > 2. データベース復旧"
WEB = "サービス復旧手順 > 3. Webサーバー復旧"
DATA = "データ復旧手順"
FULL = "完全システム復旧"


class DrillRecoveryError(RecoveryError):
    """A composed recovery step of a drill found the system in the wrong state."""


# ---- recoveries -------------------------------------------------------------------------------

def await_supervisor_restart(run: DrillRun, timeout: float = 60.0) -> None:
    """自動復旧: the service manager (systemd Restart=always; here supervisord) starts a new master."""
    old = run.fault_details.get("killed_pid") or run.fault_details.get("master_pid")
    manager = run.stack.services

    def body(journal: Journal) -> None:
        def restarted() -> Observation:
            status = manager.status("mks-backend")
            return Observation(status.is_active and status.pid not in (None, old), status.detail)

        with journal.step("auto-restart", "systemdによる自動再起動確認") as step:
            wait_until(f"the service manager to restart mks-backend (old master {old})", restarted,
                       timeout=timeout, interval=0.05, error=DrillRecoveryError)
            step.note("state", manager.status("mks-backend").detail)

    run.journal(journaled(run.target, "supervisor-auto-restart", "自動再起動", body))


def recover_backend_crash(run: DrillRun) -> None:
    if "killed_pid" in run.fault_details:
        await_supervisor_restart(run)
    run.action(services.auto_recover, run.target, settle=30.0)  # the runbook's auto-recovery.sh


def recover_backend_manually(run: DrillRun) -> None:
    run.action(services.manual_recover, run.target)


def recover_database_restart(run: DrillRun) -> None:
    run.action(database.restart_database, run.target)
    run.action(services.auto_recover, run.target, settle=30.0)


def recreate_if_dropped(run: DrillRun) -> None:
    """データベース削除・再作成: restore_database keeps a safety copy of the live database and swaps
    the restored one in by renaming, so a dropped database is first created again with the schema
    of the dump to restore (full_system.prepare)."""
    target = run.target
    chosen, _ = backups.choose(target, max_age=backups.max_age_for(run.record.level))

    def body(journal: Journal) -> None:
        full_system.prepare(journal, target, chosen.path)

    run.journal(journaled(target, "database-recreate", "データベース再作成", body))


def recover_database_restore(run: DrillRun) -> None:
    recreate_if_dropped(run)
    run.action(database.restore_database, run.target, level=run.record.level)


def recover_uploads(run: DrillRun) -> None:
    run.action(uploads.restore_uploads, run.target)


def recover_nginx_config(run: DrillRun) -> None:
    """A broken config must be refused by the reload (nginx keeps serving), then fixed and reloaded."""
    try:
        journal = run.action(webserver.reload_nginx, run.target)
    except ActionFailed:
        pass  # refused: what the runbook's `nginx -t` before the reload is for
    else:
        accepted = DrillRecoveryError("nginx reloaded a configuration that nginx -t rejects")
        raise ActionFailed(journal, accepted)
    run.action(config_files.restore_config, run.target)
    run.action(webserver.reload_nginx, run.target)


def recover_certificate(run: DrillRun) -> None:
    run.action(webserver.check_certificate, run.target)


def recover_config_from_git(run: DrillRun) -> None:
    run.action(config_files.restore_from_git, run.target)
    run.action(services.manual_recover, run.target)


def recover_config_from_tarball(run: DrillRun) -> None:
    run.action(config_files.restore_config, run.target)
    run.action(services.manual_recover, run.target)


def wal_switch(run: DrillRun, timeout: float = 30.0) -> None:
    """WALアーカイブ確認: close the current WAL segment and wait until the archive has it."""
    target = run.target

    def body(journal: Journal) -> None:
        with journal.step("switch", "WALアーカイブ確認 (pg_switch_wal)") as step:
            segment = psql(step, target, "SELECT pg_walfile_name(pg_switch_wal());")[0][0]
            archived = Path(target.paths.wal_archive) / segment
            wait_until(f"{segment} to be archived", archived.exists, timeout=timeout, interval=0.1,
                       error=DrillRecoveryError)
            step.note("segment", segment)

    run.journal(journaled(target, "wal-switch", "WALアーカイブ確認", body))


def recover_pitr(run: DrillRun) -> None:
    wal_switch(run)
    run.action(pitr.point_in_time_restore, run.target, run.fault_details["target_time"])


def recover_full_system(run: DrillRun) -> None:
    """完全復旧スクリプト: config, database, uploads, services, health."""
    run.action(full_system.full_recovery, run.target, level=run.record.level, checks=False)


def recover_onto_new_volume(run: DrillRun) -> None:
    """データボリューム消失: a new, empty cluster where the lost one was, then the full recovery."""
    run.action(new_cluster, run.target)
    run.action(full_system.full_recovery, run.target, level=run.record.level, checks=False)


# ---- preparations (before the baseline) --------------------------------------------------------

def backup_database(run: DrillRun) -> None:
    run.action(database.backup_database, run.target)


def backup_uploads(run: DrillRun) -> None:
    run.action(uploads.backup_uploads, run.target)


def backup_config(run: DrillRun) -> None:
    run.action(config_files.backup_config, run.target)


def backup_all(run: DrillRun) -> None:
    backup_database(run)
    backup_uploads(run)
    backup_config(run)


def base_backup(run: DrillRun) -> None:
    run.action(pitr.base_backup, run.target, label="drill")


def plain_backups(run: DrillRun) -> None:
    """The backups a cron job makes without this harness: `pg_dump | gzip` (db_<ts>.sql.gz) and
    `tar -czf uploads_<ts>.tar.gz opt/mks/uploads` relative to /, both as the service account."""
    target = run.target
    db, account = target.database, target.service_account()
    backup_dir = Path(target.paths.backup_dir)

    def body(journal: Journal) -> None:
        with journal.step("pg_dump", "データベースバックアップ (pg_dump | gzip)") as step:
            sql = backup_dir / f"db_{backups.stamp()}.sql"
            step.run([db.tool("pg_dump"), "-Fp", "-U", db.user, "-d", db.name, "-f", str(sql)], timeout=600,
                     run_as=account, env=db.env())
            step.run(["gzip", "-n", str(sql)], timeout=600, run_as=account)
            step.note("path", f"{sql}.gz")
        with journal.step("tar", "アップロードバックアップ (tar -czf)") as step:
            root = config_files.target_root(target)
            folder = Path(target.paths.uploads_dir).relative_to(root).as_posix()
            archive = archives.backup_path(backup_dir, "uploads")
            step.run(["tar", "-czf", str(archive), "-C", str(root), folder], timeout=600, run_as=account)
            step.note("path", str(archive))

    run.journal(journaled(target, "plain-backups", "バックアップ (cron: pg_dump | gzip, tar -czf)", body))


def recover_from_plain_backups(run: DrillRun) -> None:
    """The runbook's データ復旧 1 and 2 from the plain backups: the newest of each must be the plain one,
    and the REC report says the archive's contents could only be checked against its CRC."""
    recreate_if_dropped(run)
    restored = run.action(database.restore_database, run.target, level=run.record.level)
    files = run.action(uploads.restore_uploads, run.target)
    chosen = [s.details for s in (*restored.steps, *files.steps) if s.name in ("select_backup", "select")]
    formats = [chosen[0].get("format"), chosen[1].get("verification")]
    if formats != ["PLAIN", NO_MANIFEST]:
        raise DrillRecoveryError(f"the plain backups were not the ones restored: {formats}")
    run.record.warnings.append(f"{Path(chosen[1]['archive']).name}: {NO_MANIFEST}")


# ---- migration to a new server -----------------------------------------------------------------

def offsite_copy(run: DrillRun, offsite: Path) -> Target:
    """The backups as they exist off the server (copied before the disaster); a target for them."""
    source = Path(run.target.paths.backup_dir)

    def body(journal: Journal) -> None:
        with journal.step("offsite", "バックアップの外部保管") as step:
            shutil.copytree(source, offsite, dirs_exist_ok=True)
            step.note("files", sorted(p.name for p in offsite.iterdir()))

    run.journal(journaled(run.target, "backup-offsite", "バックアップの外部保管", body))
    paths = dataclasses.replace(run.target.paths, backup_dir=str(offsite))
    return dataclasses.replace(run.target, paths=paths)


def migration(new: Stack) -> Drill:
    """新規サーバーへの移行復旧 onto `new` (a prepared server: code deployed, empty database).

    The old server's backups survive off it (in the new server's sandbox, as if mounted there);
    the old server is lost; migrate_to_new_server moves the data from those backups.
    """
    offsite: list[Target] = []

    def prepare(run: DrillRun) -> None:
        backup_all(run)
        folder = new.sandbox.path("/backup/offsite")  # type: ignore[union-attr]
        offsite.append(offsite_copy(run, folder))
        new.sandbox.give(folder, recursive=True)  # type: ignore[union-attr]

    def recover(run: DrillRun) -> None:
        run.admin_password = run.stack.secrets.admin_password  # the data, and its logins, are the old ones
        run.move_to(new)
        run.action(full_system.migrate_to_new_server, offsite[-1], new.target(), level=run.record.level,
                   checks=False)

    return Drill("migration", "完全システムテスト: 新規サーバーへの移行", "RTO-24", "quarterly",
                 f"{FULL} > 1. 新規サーバーへの移行復旧", faults.LoseServer(), recover, prepare,
                 forecast=("database", "uploads"))


# ---- what a drill needs of the app (app profile -> why not; None: it applies) ----------------------

def needs_git_file(app: AppProfile) -> str | None:
    return None if app.git_restores else "the profile names no file that git restores (git_restores)"


def needs_relation(app: AppProfile) -> str | None:
    return None if app.integrity.relation else "the profile has no parent/child relation (integrity.relation)"


def needs_config_password(app: AppProfile) -> str | None:
    template = app.relative(app.config.template).read_text(encoding="utf-8")
    return None if "$db_password" in template or "${db_password}" in template else \
        "the config template holds no database password ($db_password) to make wrong"


# ---- the catalogue ----------------------------------------------------------------------------

BACKEND_MASTER = Drill(
    "backend-crash-master", "サービス停止テスト: mks-backend マスター強制終了", "RTO-1", "weekly",
    f"{SERVICE} > 自動復旧", faults.KillBackendMaster(), recover_backend_crash)
BACKEND_WORKERS = Drill(
    "backend-crash-workers", "サービス停止テスト: mks-backend ワーカー強制終了", "RTO-1", "weekly",
    f"{SERVICE} > 自動復旧", faults.KillBackendWorkers(), recover_backend_crash)
BACKEND_MANUAL = Drill(
    "backend-manual", "バックエンド手動復旧: マスター強制終了後", "RTO-1", "monthly",
    f"{SERVICE} > 手動復旧", faults.KillBackendMaster(), recover_backend_manually)
DB_IMMEDIATE = Drill(
    "database-immediate-stop", "データベース再起動: 即時停止", "RTO-1", "monthly",
    f"{DATABASE} > 再起動手順", faults.StopPostgres("immediate"), recover_database_restart)
DB_CRASH = Drill(
    "database-crash", "データベース再起動: クラッシュ", "RTO-1", "monthly",
    f"{DATABASE} > 再起動手順", faults.StopPostgres("crash"), recover_database_restart)
DB_RESTORE = Drill(
    "database-restore", "データベース復旧テスト: データベース消失", "RTO-4", "monthly",
    f"{DATA} > 1. データベースバックアップからの復旧", faults.DropDatabase(), recover_database_restore,
    prepare=backup_database, forecast=("database",), twice=True)
NGINX_CONFIG = Drill(
    "nginx-config", "Webサーバー復旧: 設定ファイル破損", "RTO-1", "monthly",
    f"{WEB} > 設定確認 / 再起動手順", faults.BrokenNginxConfig(), recover_nginx_config,
    prepare=backup_config)
CERTIFICATE = Drill(
    "certificate", "Webサーバー復旧: SSL証明書 期限切れ間近", "RTO-1", "monthly",
    f"{WEB} > SSL証明書確認", faults.CertificateAboutToExpire(), recover_certificate)
UPLOADS = Drill(
    "uploads-restore", "アップロードファイル復旧: フォルダ消失", "RTO-4", "monthly",
    f"{DATA} > 2. アップロードファイル復旧", faults.WipeUploads(), recover_uploads,
    prepare=backup_uploads, forecast=("uploads",), twice=True)
PLAIN_BACKUPS = Drill(
    "plain-backups-restore", "データ復旧テスト: cronのバックアップ (pg_dump | gzip, tar -czf) から復旧",
    "RTO-4", "monthly", f"{DATA} > 1. データベースバックアップからの復旧",
    faults.Several((faults.DropDatabase(), faults.WipeUploads())), recover_from_plain_backups,
    prepare=plain_backups)
CONFIG_GIT = Drill(
    "config-git", "設定ファイル復旧: YAML 破損 (Git)", "RTO-1", "monthly",
    f"{DATA} > 3. 設定ファイル復旧 > Gitからの復旧", faults.BrokenYaml(), recover_config_from_git,
    applies=needs_git_file)
CONFIG_TARBALL = Drill(
    "config-tarball", "設定ファイル復旧: 認証情報の誤り (手動バックアップ)", "RTO-1", "monthly",
    f"{DATA} > 3. 設定ファイル復旧 > 手動バックアップからの復旧", faults.WrongDatabaseCredentials(),
    recover_config_from_tarball, prepare=backup_config, applies=needs_config_password, twice=True)
FULL_RECOVERY = Drill(
    "full-recovery", "完全システムテスト: データベースとアップロードの消失", "RTO-24", "quarterly",
    f"{FULL} / 完全復旧スクリプト", faults.Several((faults.DropDatabase(), faults.WipeUploads())),
    recover_full_system, prepare=backup_all, forecast=("database", "uploads"))
PITR = Drill(
    "point-in-time-recovery", "完全システムテスト: 誤操作による削除からのPITR", "RTO-1", "quarterly",
    f"{FULL} > 2. ポイントインタイムリカバリ", faults.DeleteRowsByMistake(), recover_pitr,
    prepare=base_backup, applies=needs_relation, forecast=("pitr",))

# faults only a container stack has (scenarios/test_drills.py skips them on other providers)
PG_CONTAINER_KILL = Drill(
    "postgres-container-kill", "データベース再起動: コンテナ強制終了 (docker kill)", "RTO-1", "monthly",
    f"{DATABASE} > 再起動手順", KillPostgresContainer(), recover_database_restart)
PG_VOLUME_LOST = Drill(
    "postgres-volume-lost", "完全システムテスト: PostgreSQLデータボリューム消失", "RTO-24", "quarterly",
    f"{FULL} / 完全復旧スクリプト", LosePostgresData(), recover_onto_new_volume, prepare=backup_all,
    forecast=("database", "uploads"))
CONTAINER_ONLY = (PG_CONTAINER_KILL, PG_VOLUME_LOST)

CATALOGUE = (BACKEND_MASTER, BACKEND_WORKERS, BACKEND_MANUAL, DB_IMMEDIATE, DB_CRASH, DB_RESTORE,
             NGINX_CONFIG, CERTIFICATE, UPLOADS, PLAIN_BACKUPS, CONFIG_GIT, CONFIG_TARBALL, FULL_RECOVERY,
             PITR)


def sabotaged(drill: Drill, **changes: object) -> Drill:
    return dataclasses.replace(drill, **changes)  # type: ignore[arg-type]


def param(drill: Drill) -> object:
    """A pytest parameter marked with every schedule that includes the drill, and `stack`."""
    marks = [getattr(pytest.mark, schedule) for schedule in drill.schedules()]
    return pytest.param(drill, id=drill.name, marks=[*marks, pytest.mark.stack])


def register_schedules() -> None:
    """Tell the reports which drills make up each schedule: a run evidences a schedule only when all
    of them ran and passed (reports/schedules.py)."""
    # migration() builds its recovery around the new server, which only the run provides; its facts
    # (name, scenario, schedule, section) do not depend on it
    for drill in (*CATALOGUE, migration(None)):  # type: ignore[arg-type]
        schedules.register(drill.name, drill.scenario, drill.schedule, drill.runbook_section)


register_schedules()
