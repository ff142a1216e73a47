"""設定ファイル復旧: configuration files from git, or from a verified config tarball.

Where this differs from the runbook's shell blocks, and why:
- `git checkout HEAD -- config/production.yml` silently throws local edits away; here the current
  files are copied to the scratch folder first, the revision and each path are checked to exist,
  and git runs as the service account with the caller's git configuration ignored.
- `tar -xzf /backup/mks/config_$(date +%Y%m%d).tar.gz -C /` only finds a backup taken today and lets
  the archive write anywhere under /. Here the newest config backup that verifies is used, its
  paths are relative to the target's root, and only the known configuration files are written
  (each by an atomic rename, owner the service account, mode never executable).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

import yaml

from recovery.actions import BACKUP_OPTION, action, option
from recovery.archives import (
    ArchiveError,
    backup_path,
    choose_backup,
    create_archive,
    extract_verified,
    file_mode,
    timestamp,
)
from recovery.commands import RunAs
from recovery.errors import RecoveryError
from recovery.journal import Journal
from recovery.target import PathsTarget, Target

ROOT = "/"  # config archives hold paths relative to the target's root
PREFIX = "config"
GIT_FILES = ("config/production.yml", "alembic.ini")
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}

GIT_PLAN = (
    ("log", "最新コミット確認", "git log --oneline -5"),
    ("check", "リビジョン確認", "the revision and every file exist in it"),
    ("safety-copy", "現在の設定ファイル退避", "copy the current files into the scratch dir"),
    ("checkout", "設定ファイル復旧", "git checkout REV -- FILES"),
)
BACKUP_PLAN = (("archive", "設定バックアップ作成", "config.yml and the nginx site, relative to the root"),)
RESTORE_PLAN = (
    ("select", "設定バックアップ確認", "newest config_*.tar.gz that verifies, or the named one"),
    ("safety-copy", "現在の設定ファイル退避", "config_pre_restore_<ts>.tar.gz in the backup dir"),
    ("stage", "リストア実行", "extract into the scratch dir, verify sha256, config.yml parses"),
    ("install", "設定ファイル配置", "each file by atomic rename, owner the service account"),
    ("check", "設定確認", "config.yml parses as YAML; nginx -t when the site was restored"),
)


class ConfigRestoreError(RecoveryError):
    """A configuration file could not be restored as asked."""


def target_root(target: Target) -> Path:
    """The folder the production paths hang from: "/" on a host, the sandbox root in a sandbox.

    Derived from the paths that keep their production suffix (ROOT/backup/mks, ROOT/etc/mks/...);
    they must all agree.
    """
    if target.root != "/":
        return Path(target.root)
    defaults = PathsTarget()
    roots = set()
    for name in ("backup_dir", "uploads_dir", "backend_dir", "config_file", "nginx_site"):
        value, default = getattr(target.paths, name), getattr(defaults, name)
        if value.endswith(default):
            roots.add(value[: len(value) - len(default)] or "/")
    if len(roots) != 1:
        raise ConfigRestoreError(f"cannot tell the root of target {target.name}: its paths suggest {roots}")
    return Path(roots.pop())


def config_members(target: Target) -> list[str]:
    """The configuration files a config backup holds, relative to the target's root."""
    root = target_root(target)
    members = []
    for path in (target.paths.config_file, target.paths.nginx_site):
        relative = Path(path).relative_to(root).as_posix()
        if (root / relative).is_file() or path == target.paths.config_file:
            members.append(relative)
    return members


# ---- from a tarball --------------------------------------------------------------------------
def _plan_backup(journal: Journal, target: Target) -> None:
    journal.plan(*BACKUP_PLAN[0][:2], what=BACKUP_PLAN[0][2], backup_dir=target.paths.backup_dir)


@action("config-backup", "設定ファイルバックアップ", plan=_plan_backup, cli="config-backup",
        help="設定ファイルのバックアップ (config.yml, nginx site)")
def backup_config(journal: Journal, target: Target) -> None:
    """Write backup_dir/config_YYYYmmdd_HHMMSS.tar.gz of config.yml and the nginx site."""
    with journal.step(*BACKUP_PLAN[0][:2]) as step:
        dest = backup_path(Path(target.paths.backup_dir), PREFIX)
        members = config_members(target)
        create_archive(target_root(target), dest, root=ROOT, include=members)
        step.note("archive", str(dest))
        step.note("files", members)


def _plan_restore(journal: Journal, target: Target, backup: str | Path | None = None) -> None:
    for name, title, what in RESTORE_PLAN:
        journal.plan(name, title, what=what, backup=str(backup or "newest"),
                     backup_dir=target.paths.backup_dir)


@action("config-restore", "設定ファイル復旧 (手動バックアップからの復旧)", plan=_plan_restore,
        cli="config-restore", help="設定ファイル復旧 (手動バックアップから)", options=(BACKUP_OPTION,))
def restore_config(journal: Journal, target: Target, backup: str | Path | None = None) -> None:
    """Restore config.yml (and the nginx site) from `backup` or the newest valid config backup."""
    backup_dir, scratch = Path(target.paths.backup_dir), Path(target.paths.scratch_dir)
    staging = scratch / f"config-staging-{timestamp()}"
    try:
        root = target_root(target)
        known = (target.paths.config_file, target.paths.nginx_site)
        allowed = {Path(p).relative_to(root).as_posix() for p in known}
        with journal.step(*RESTORE_PLAN[0][:2]) as step:
            archive, manifest = choose_backup(backup_dir, PREFIX, ROOT, backup, step.record.details)
            unknown = sorted(e.path for e in manifest.files if e.path not in allowed)
            if unknown:
                raise ArchiveError(f"{archive}: holds files that are not configuration files of the target: "
                                   f"{', '.join(unknown)}")
            step.note("archive", str(archive))
            step.note("files", [e.path for e in manifest.files])
        with journal.step(*RESTORE_PLAN[1][:2]) as step:
            present = [m for m in sorted(allowed) if (root / m).is_file()]
            if present:
                safety = backup_path(backup_dir, f"{PREFIX}_pre_restore")
                create_archive(root, safety, root=ROOT, include=present)
                step.note("safety_copy", str(safety))
        with journal.step(*RESTORE_PLAN[2][:2]) as step:
            scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
            extract_verified(archive, staging, ROOT)
            step.note("staging", str(staging))
            config_name = Path(target.paths.config_file).relative_to(root).as_posix()
            if (staging / config_name).is_file():
                check_config(staging / config_name, target.app.config_kind)  # refused before it goes live
                step.note("config_yml", "parses")
        with journal.step(*RESTORE_PLAN[3][:2]) as step:
            account = target.service_account()
            for entry in manifest.files:
                _install(staging / entry.path, root / entry.path, file_mode(entry.mode), account)
            step.note("installed", [str(root / e.path) for e in manifest.files])
            step.note("owner", account.name if account else "current user")
        with journal.step(*RESTORE_PLAN[4][:2]) as step:
            check_config(Path(target.paths.config_file), target.app.config_kind)
            step.note("config_yml", "parses")
            site = Path(target.paths.nginx_site).relative_to(root).as_posix()
            if any(e.path == site for e in manifest.files):
                from recovery.webserver import nginx_test

                nginx_test(target, step)  # not reloaded here: nginx-reload does that after its own test
    finally:
        if staging.exists():
            shutil.rmtree(staging)


# ---- from git --------------------------------------------------------------------------------
def _plan_git(journal: Journal, target: Target, files: tuple[str, ...] | list[str] | None = None,
              revision: str = "HEAD") -> None:
    for name, title, what in GIT_PLAN:
        journal.plan(name, title, what=what, backend_dir=target.paths.backend_dir, revision=revision,
                     files=list(files or target.app.git_restores or GIT_FILES))


@action("config-git-restore", "設定ファイル復旧 (Gitからの復旧)", plan=_plan_git, cli="config-git-restore",
        help="設定ファイル復旧 (Gitから)",
        options=(option("--revision", default="HEAD"),
                 option("--file", action="append", dest="files", metavar="PATH",
                        help="relative to the backend checkout "
                             "(repeatable; default: production.yml, alembic.ini)")))
def restore_from_git(journal: Journal, target: Target, files: tuple[str, ...] | list[str] | None = None,
                     revision: str = "HEAD") -> None:
    """`git checkout REV -- FILES` in the backend checkout, as the service account (default FILES: the
    target's app.git_restores, else the runbook's config/production.yml and alembic.ini)."""
    files = list(files or target.app.git_restores or GIT_FILES)
    backend = Path(target.paths.backend_dir)
    account = target.service_account()
    git = ["git", "-C", str(backend)]
    with journal.step(*GIT_PLAN[0][:2]) as step:
        for name in files:
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise ConfigRestoreError(f"{name}: give paths relative to the checkout, inside it")
        result = step.run([*git, "log", "--oneline", "-5"], timeout=30, run_as=account, env=GIT_ENV)
        step.note("recent_commits", result.stdout.strip().splitlines())
    with journal.step(*GIT_PLAN[1][:2]) as step:
        commit = step.run([*git, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                          timeout=30, run_as=account, env=GIT_ENV, check=False)
        if not commit.ok:
            raise ConfigRestoreError(f"revision {revision!r} does not exist in {backend}")
        step.note("commit", commit.stdout.strip())
        for name in files:
            found = step.run([*git, "cat-file", "-e", f"{commit.stdout.strip()}:{name}"], timeout=30,
                             run_as=account, env=GIT_ENV, check=False)
            if not found.ok:
                raise ConfigRestoreError(f"{name} is not in revision {revision}")
    with journal.step(*GIT_PLAN[2][:2]) as step:
        kept = Path(target.paths.scratch_dir) / f"config_pre_restore_{timestamp()}"
        for name in files:
            if (backend / name).is_file():
                (kept / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.copy2(backend / name, kept / name)
        step.note("safety_copy", str(kept))
    with journal.step(*GIT_PLAN[3][:2]) as step:
        step.run([*git, "checkout", commit.stdout.strip(), "--", *files], timeout=60, run_as=account,
                 env=GIT_ENV)
        step.note("restored", list(files))


def _install(staged: Path, live: Path, mode: int, account: RunAs | None) -> None:
    live.parent.mkdir(parents=True, exist_ok=True)
    temp = live.with_name(f".{live.name}.restore-tmp")
    shutil.copyfile(staged, temp)
    os.chmod(temp, mode)
    if account is not None:
        os.chown(temp, account.uid, account.gid)
    os.replace(temp, live)


def check_config(path: Path, kind: str = "yaml") -> dict[str, object]:
    """The app's config file parses (yaml: a mapping; env: KEY=VALUE lines); its values, never shown."""
    if kind != "env":
        return check_yaml(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigRestoreError(f"{path}: {exc.strerror}") from None
    values: dict[str, object] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise ConfigRestoreError(f"{path}: line {number} is not KEY=VALUE")
        values[key.strip()] = value.strip().strip("\"'")
    return values


def check_yaml(path: Path) -> dict[str, object]:
    """config.yml must parse to a mapping; the error names the line, never the file's values."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigRestoreError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", "error")
        raise ConfigRestoreError(f"{path}:{where} is not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigRestoreError(f"{path}: the top level is not a mapping")
    return data
