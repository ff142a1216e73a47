"""What a recovery acts on: paths, service names, database, URLs; loaded from a target file.

`examples/target-production.yml` has the runbook's production paths; a sandbox writes its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from recovery.commands import RunAs
from recovery.errors import RecoveryError
from recovery.service_manager import ServiceManager, SupervisorServiceManager, SystemdServiceManager


class TargetError(RecoveryError):
    """The target file is missing, malformed or incomplete."""


@dataclass(frozen=True)
class DatabaseTarget:
    host: str = "127.0.0.1"
    port: int = 5432
    name: str = "mks_db"
    user: str = "mks_user"
    superuser: str = "postgres"
    passfile: str | None = None  # libpq password file; passwords never live in the target file
    bindir: str = "/usr/lib/postgresql/15/bin"
    major: int = 15
    config_dir: str = "/etc/postgresql/15/main"
    data_dir: str = "/var/lib/postgresql/15/main"
    log_file: str = "/var/log/postgresql/postgresql-15-main.log"
    # a restore's copy is compared with this catalog (recovery/catalog.py's JSON) instead of the live one's
    catalog_reference: str | None = None
    # pg_amcheck --heapallindexed runs on a restored copy up to this size (before the swap, so it adds
    # to the recovery time); above it the journal says it was skipped
    heapcheck_max_bytes: int = 2 * 1024**3

    def env(self) -> dict[str, str]:
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGCONNECT_TIMEOUT": "5"}
        if self.passfile:
            env["PGPASSFILE"] = self.passfile
        return env

    def tool(self, name: str) -> str:
        return str(Path(self.bindir) / name)


@dataclass(frozen=True)
class ServicesTarget:
    backend: str = "mks-backend"
    database: str = "postgresql"
    web: str = "nginx"
    manager: str = "systemd"  # systemd | supervisor
    supervisor_socket: str | None = None
    supervisor_log_dir: str | None = None
    use_sudo: bool = False


@dataclass(frozen=True)
class PathsTarget:
    backup_dir: str = "/backup/mks"
    wal_archive: str = "/backup/mks/wal"
    uploads_dir: str = "/opt/mks/uploads"
    backend_dir: str = "/opt/mks/backend"
    config_file: str = "/etc/mks/config.yml"
    nginx_config: str = "/etc/nginx/nginx.conf"
    nginx_site: str = "/etc/nginx/sites-available/mks"
    certificate: str = "/etc/letsencrypt/live/example.com/cert.pem"
    scratch_dir: str = "/var/tmp/mks-recovery"  # staging and safety copies live here


@dataclass(frozen=True)
class RelationTarget:
    """A child table's rows that point to a parent's (counted per parent in the fingerprint)."""

    child: str = ""
    parent: str = ""
    column: str = ""


@dataclass(frozen=True)
class FilesTarget:
    """The file store at paths.uploads_dir: named by rows (uploads) or every file of a pattern (data_dir)."""

    kind: str = "uploads"
    rows: str | None = None  # SELECT name, sha256, size ... ORDER BY ...
    pattern: str = "**/*"


@dataclass(frozen=True)
class AppTarget:
    """What recovery needs of the app: its HTTP contract and what its data is (from the app profile)."""

    health_expect: dict[str, str] = field(default_factory=dict)  # dotted JSON path -> value when healthy
    login_path: str = ""
    username_field: str = "username"
    password_field: str = "password"
    token_path: str = "token"
    login_kind: str = "json"  # json: a token in the answer | form: an HTML form with CSRF, a session cookie
    csrf_cookie: str = "csrftoken"  # form: the cookie the login form sets, sent back in csrf_field
    csrf_field: str = "csrfmiddlewaretoken"
    session_cookie: str = "sessionid"  # form: the cookie a successful login sets
    listing_path: str = ""
    count_path: str = "count"
    upload_path: str | None = None  # None: no upload endpoint (the round trip does not apply)
    download_path: str | None = None  # with {id}
    tables: list[str] = field(default_factory=list)  # schema-qualified
    may_be_empty: list[str] = field(default_factory=list)
    volatile_columns: dict[str, list[str]] = field(default_factory=dict)  # table -> columns the app rewrites
    relation: RelationTarget | None = None
    files: FilesTarget = field(default_factory=FilesTarget)
    git_restores: list[str] = field(default_factory=list)  # backend checkout files restored from git
    config_kind: str = "yaml"  # yaml | env
    host_keys: list[str] = field(default_factory=list)
    config_env_var: str | None = None  # the variable that names the config file for the app
    workdir: str = "."  # inside the backend checkout: where the app's commands run
    check_command: list[str] = field(default_factory=list)  # the app's config check; {python}
    # created by the harness in a restore's side database before the dump runs (never by the dump)
    extensions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    name: str = "production"
    root: str = "/"  # what the runbook's absolute paths hang from: "/" on a host, the sandbox root
    service_user: str | None = None  # the account of PostgreSQL's tools and the services' files, as root
    database: DatabaseTarget = field(default_factory=DatabaseTarget)
    services: ServicesTarget = field(default_factory=ServicesTarget)
    paths: PathsTarget = field(default_factory=PathsTarget)
    backend_url: str = "http://localhost:5100"
    public_url: str = "https://example.com"
    health_path: str = ""  # the backend's health URL path, below backend_url and public_url
    app: AppTarget = field(default_factory=AppTarget)
    ca_file: str | None = None
    nginx_binary: str = "/usr/sbin/nginx"
    nginx_args: list[str] = field(default_factory=list)  # e.g. -p PREFIX -c CONF in a sandbox
    renew_command: list[str] = field(default_factory=lambda: ["certbot", "renew", "--quiet"])

    def service_account(self) -> RunAs | None:
        """The account commands run as and restored files belong to (None: the current user, no chown)."""
        return RunAs.named(self.service_user) if self.service_user else None

    def readiness(self) -> tuple[dict[str, int], dict[str, str]]:
        """When a started service counts as started: its port serves (as systemd's units of these
        services mean it); the database's by libpq's ping, the others' by a TCP connect."""
        backend = urlsplit(self.backend_url)
        ports = {self.services.backend: backend.port or (443 if backend.scheme == "https" else 80),
                 self.services.database: self.database.port}
        return ports, {self.services.database: "postgres"}

    def service_manager(self) -> ServiceManager:
        services = self.services
        if services.manager == "supervisor":
            if not services.supervisor_socket or not services.supervisor_log_dir:
                raise TargetError(
                    "services.manager supervisor needs supervisor_socket and supervisor_log_dir"
                )
            names = {services.backend: "HUP", services.database: "HUP", services.web: "HUP"}
            ports, protocols = self.readiness()
            return SupervisorServiceManager(
                Path(services.supervisor_socket), Path(services.supervisor_log_dir), names,
                ready_ports=ports, ready_protocols=protocols,
            )
        if services.manager == "systemd":
            return SystemdServiceManager(use_sudo=services.use_sudo)
        raise TargetError(f"unknown services.manager {services.manager!r} (systemd or supervisor)")

    def to_yaml(self) -> str:
        return yaml.safe_dump(_as_dict(self), sort_keys=False, allow_unicode=True)


def ensure_dir(path: Path, target: Target, mode: int = 0o750) -> Path:
    """Make a directory the target's service account can write to."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    account = target.service_account()
    if account is not None and not account.is_current:
        os.chown(path, account.uid, account.gid)
    return path


def _as_dict(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _as_dict(getattr(obj, f.name)) for f in fields(obj)}
    return obj


def load_target(path: str | Path) -> Target:
    """Read a target file; unknown keys and wrong types are errors that name the file and key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise TargetError(f"{path}: target file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise TargetError(f"{path}{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise TargetError(f"{path}: the top level must be a mapping")
    if "run_as" in data:  # the key's name before it said what it holds; target files written then still load
        if "service_user" in data:
            raise TargetError(f"{path}: run_as and service_user both given; keep service_user")
        data["service_user"] = data.pop("run_as")
    return _build(Target, data, str(path), "")  # type: ignore[no-any-return]


NESTED: dict[tuple[type, str], type] = {
    (Target, "database"): DatabaseTarget, (Target, "services"): ServicesTarget,
    (Target, "paths"): PathsTarget,
    (Target, "app"): AppTarget, (AppTarget, "relation"): RelationTarget, (AppTarget, "files"): FilesTarget,
}


def _build(cls: type, data: dict[str, Any], source: str, prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise TargetError(f"{source}: unknown key {prefix}{sorted(unknown)[0]}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        nested = NESTED.get((cls, key))
        if nested is not None and value is not None:
            if not isinstance(value, dict):
                raise TargetError(f"{source}: {prefix}{key} must be a mapping")
            values[key] = _build(nested, value, source, f"{prefix}{key}.")
        else:
            values[key] = value
    return cls(**values)
