"""復旧後の確認: the data's fingerprint, its comparison, and the functional and performance checks.

A fingerprint is computed in SQL (counts, constraints, children per parent of the app's relation, row
checksums, amcheck, recovery.catalog's catalog, sequences and collation versions) plus a pass over the
app's file store (the files its rows name, or a data directory).
Two fingerprints are equal exactly when nothing the runbook's 3. データ整合性確認 looks at has changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from recovery import catalog, health
from recovery.actions import action, option, secret_file
from recovery.app_http import (
    auth_headers,
    credentials,
    describe,
    http_client,
    json_field,
    listing_count,
    login,
    mask_secrets,
)
from recovery.archives import sha256_file
from recovery.errors import RecoveryError
from recovery.journal import Journal
from recovery.target import AppTarget, RelationTarget, Target

log = logging.getLogger(__name__)

def connect(target: Target, dbname: str | None = None, *, superuser: bool = True) -> psycopg.Connection:
    """A libpq connection through the target's password file (no password in any argument)."""
    db = target.database
    params: dict[str, Any] = {"host": db.host, "port": db.port, "dbname": dbname or db.name,
                              "user": db.superuser if superuser else db.user, "connect_timeout": 5}
    if db.passfile:
        params["passfile"] = db.passfile
    return psycopg.connect(make_conninfo(**params), autocommit=True)


@dataclass(frozen=True)
class Fingerprint:
    database: str
    row_counts: tuple[tuple[str, int], ...]
    foreign_keys: tuple[str, ...]
    # the app's relation (the runbook's documents of projects): children pointing to no parent, and
    # (parent id, children) for every parent
    orphans: int
    children_per_parent: tuple[tuple[int, int], ...]
    checksums: tuple[tuple[str, str], ...]  # md5 over the rows' md5s, ordered by id
    files_checked: int
    missing_files: tuple[str, ...]
    mismatched_files: tuple[str, ...]  # "stored_name: why"
    indexes_checked: tuple[str, ...]
    index_errors: tuple[str, ...]
    relation: tuple[str, str] = ("child", "parent")  # how the relation's tables are named in messages
    catalog: str = ""  # recovery.catalog's snapshot, as JSON ("" in records made before it was taken)
    sequence_problems: tuple[str, ...] = ()  # owned sequences at or below their column's max
    collation_problems: tuple[str, ...] = ()  # recorded collation versions that are not the system's

    def count(self, table: str) -> int:
        return dict(self.row_counts)[label(table)]

    def problems(self) -> list[str]:
        """What is wrong with this data on its own (without a baseline to compare with)."""
        out: list[str] = []
        if self.orphans:
            child, parent = self.relation
            out.append(f"{self.orphans} {child} point to a {singular(parent)} that does not exist")
        out += [f"file missing: {name}" for name in self.missing_files]
        out += [f"file differs: {entry}" for entry in self.mismatched_files]
        out += [f"amcheck: {entry}" for entry in self.index_errors]
        return out + list(self.sequence_problems) + list(self.collation_problems)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        def tuples(value: list[Any]) -> tuple[Any, ...]:
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)

        # the names of these fields in records written before the relation came from the app profile
        renamed = {"orphan_documents": "orphans", "documents_per_project": "children_per_parent"}
        return cls(**{renamed.get(k, k): tuples(v) if isinstance(v, list) else v for k, v in data.items()})


def fingerprint(target: Target, dbname: str | None = None, *, check_files: bool = True,
                checksums: bool = True) -> Fingerprint:
    """The fingerprint of the target's database (or of `dbname` on the same server) and its files.

    Tables, the parent/child relation and the file store are the target's (`app`, from the app profile).
    Without `checksums` the rows' content is not read, nor the children counted per parent (a
    restore's verification compares counts, keys, orphans and indexes with the dump's: reading every
    row costs most of its time, and the per-parent counts of 750,000 projects 150 MB, for nothing).
    """
    name = dbname or target.database.name
    app = target.app
    tables = app_tables(target)
    with connect(target, name) as conn:
        counts = tuple((label(t), _scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(_table(t))))
                       for t in tables)
        schemas = sorted({t.split(".")[0] for t in tables})
        fks = tuple(r[0] for r in conn.execute(
            "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE contype = 'f' AND n.nspname = ANY(%s) ORDER BY conname", (schemas,)).fetchall())
        orphans, per_parent = _relation(conn, app.relation, per_parent=checksums)
        sums = tuple((label(t), _content_digest(conn, t, app.volatile_columns.get(t, [])))
                     for t in tables) if checksums else ()
        indexes, index_errors = _amcheck(conn, tables)
        facts = (json.dumps(catalog.snapshot(conn), sort_keys=True),
                 tuple(catalog.sequence_problems(conn, tables)), tuple(catalog.collation_problems(conn)))
        rows = conn.execute(app.files.rows).fetchall() \
            if check_files and app.files.kind == "uploads" and app.files.rows else []
    if check_files and app.files.kind == "data_dir":
        rows = _store_rows(Path(target.paths.uploads_dir), app.files.pattern)
        digest = hashlib.md5("".join(f"{n}:{h}:{b}\n" for n, h, b in rows).encode()).hexdigest()
        counts += (("files", len(rows)),)
        sums += (("files", digest),)
    missing, mismatched = _check_files(Path(target.paths.uploads_dir), rows)
    names = (label(app.relation.child), label(app.relation.parent)) if app.relation else ("child", "parent")
    return Fingerprint(name, counts, fks, orphans, per_parent, sums, len(rows), missing, mismatched,
                       indexes, index_errors, names, *facts)


def label(table: str) -> str:
    """How a table is named in fingerprints and messages: without the schema when it is public."""
    return table.removeprefix("public.")


def singular(table: str) -> str:
    """A row of the table in words: public.documents -> document, audit.access_logs -> access_log."""
    name = table.rpartition(".")[2]
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


def app_tables(target: Target) -> tuple[str, ...]:
    if not target.app.tables:
        raise RecoveryError(f"target {target.name}: app.tables names no table to check")
    return tuple(target.app.tables)


def _content_digest(conn: psycopg.Connection, table: str, volatile: list[str]) -> str:
    """md5 over the rows' md5s; columns the app rewrites by itself (a login's time) left out."""
    row = sql.SQL("t::text") if not volatile else sql.SQL("(to_jsonb(t) - {}::text[])::text").format(
        sql.Literal(volatile))
    found = conn.execute(sql.SQL(
        "SELECT coalesce(md5(string_agg(md5({row}), '' ORDER BY {row})), '') FROM {table} t").format(
        row=row, table=_table(table))).fetchone()
    return str(found[0]) if found else ""


def _table(qualified: str) -> sql.Composable:
    schema, _, table = qualified.rpartition(".")
    return sql.Identifier(schema or "public", table)


def _relation(conn: psycopg.Connection, relation: RelationTarget | None, per_parent: bool = True
              ) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Children pointing to no parent, and children per parent (the runbook's documents per project;
    () without `per_parent`)."""
    if relation is None:
        return 0, ()
    child, parent, column = _table(relation.child), _table(relation.parent), sql.Identifier(relation.column)
    orphans = _scalar(conn, sql.SQL(
        "SELECT count(*) FROM {c} d WHERE d.{k} IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM {p} p WHERE p.id = d.{k})").format(c=child, p=parent, k=column))
    if not per_parent:
        return orphans, ()
    counted = tuple((int(r[0]), int(r[1])) for r in conn.execute(sql.SQL(
        "SELECT p.id, count(d.{k}) FROM {p} p LEFT JOIN {c} d ON d.{k} = p.id GROUP BY p.id ORDER BY p.id"
    ).format(c=child, p=parent, k=column)).fetchall())
    return orphans, counted


def _store_rows(folder: Path, pattern: str) -> list[tuple[str, str, int]]:
    """(name, sha256, size) of every file of a data directory matching pattern."""
    if not folder.is_dir():
        return []
    return [(p.relative_to(folder).as_posix(), sha256_file(p), p.stat().st_size)
            for p in sorted(folder.glob(pattern)) if p.is_file() and not p.is_symlink()]


def _scalar(conn: psycopg.Connection, query: Any) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _amcheck(conn: psycopg.Connection, tables: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone()
    names = [r[0] for r in conn.execute(
        "SELECT CASE n.nspname WHEN 'public' THEN '' ELSE n.nspname || '.' END || ic.relname"
        " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_am am ON am.oid = ic.relam"
        " JOIN pg_namespace n ON n.oid = tc.relnamespace WHERE am.amname = 'btree'"
        " AND n.nspname || '.' || tc.relname = ANY(%s) ORDER BY 1", (list(tables),)).fetchall()]
    if not installed:
        return tuple(names), ("the amcheck extension is not installed in this database",)
    errors: list[str] = []
    for index in names:
        try:
            qualified = index if "." in index else f"public.{index}"
            conn.execute("SELECT bt_index_check(%s::regclass)", (qualified,))
        except psycopg.Error as exc:
            errors.append(f"{index}: {str(exc).strip().splitlines()[0]}")
    return tuple(names), tuple(errors)


def _check_files(uploads: Path, rows: list[tuple[Any, ...]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    missing: list[str] = []
    mismatched: list[str] = []
    root = uploads.resolve()
    for stored_name, sha256, size in rows:
        path = (uploads / stored_name).resolve()
        if not path.is_relative_to(root):
            mismatched.append(f"{stored_name}: outside the uploads folder")
            continue
        try:
            actual_size = path.stat().st_size
        except FileNotFoundError:
            missing.append(stored_name)
            continue
        if actual_size != size:
            mismatched.append(f"{stored_name}: {actual_size} bytes, expected {size}")
            continue
        if sha256_file(path) != sha256.strip():
            mismatched.append(f"{stored_name}: sha256 differs")
    return tuple(missing), tuple(mismatched)


def compare(before: Fingerprint, after: Fingerprint) -> list[str]:
    """Human-readable differences between two fingerprints; empty when the data is the same."""
    diffs: list[str] = []
    b_counts, a_counts = dict(before.row_counts), dict(after.row_counts)
    for table in sorted(set(b_counts) | set(a_counts)):
        if b_counts.get(table) != a_counts.get(table):
            diffs.append(f"{table}: {b_counts.get(table)} rows before, {a_counts.get(table)} after")
    b_sums, a_sums = dict(before.checksums), dict(after.checksums)
    for table in sorted(set(b_sums) | set(a_sums)):
        if b_sums.get(table) != a_sums.get(table) and b_counts.get(table) == a_counts.get(table):
            diffs.append(f"{table}: same row count but the rows' content differs")
    lost = sorted(set(before.foreign_keys) - set(after.foreign_keys))
    gained = sorted(set(after.foreign_keys) - set(before.foreign_keys))
    if lost:
        diffs.append(f"foreign keys missing: {', '.join(lost)}")
    if gained:
        diffs.append(f"foreign keys added: {', '.join(gained)}")
    child, parent = after.relation
    if before.orphans != after.orphans:
        diffs.append(f"orphan {child}: {before.orphans} before, {after.orphans} after")
    b_pp, a_pp = dict(before.children_per_parent), dict(after.children_per_parent)
    changed = [p for p in sorted(set(b_pp) | set(a_pp)) if b_pp.get(p) != a_pp.get(p)]
    if changed:
        shown = ", ".join(f"{singular(parent)} {p}: {b_pp.get(p)} -> {a_pp.get(p)}" for p in changed[:10])
        more = f" (and {len(changed) - 10} more)" if len(changed) > 10 else ""
        diffs.append(f"{child} per {singular(parent)} differ: {shown}{more}")
    for label, b_list, a_list in (("missing files", before.missing_files, after.missing_files),
                                  ("mismatched files", before.mismatched_files, after.mismatched_files),
                                  ("amcheck errors", before.index_errors, after.index_errors)):
        new = sorted(set(a_list) - set(b_list))
        if new:
            diffs.append(f"{label} now: {', '.join(new[:10])}" + (" ..." if len(new) > 10 else ""))
    if before.catalog and after.catalog:  # what the catalog lost or weakened: a constraint, RLS, a grant...
        diffs += catalog.compare_catalogs(json.loads(before.catalog), json.loads(after.catalog))
    if set(before.indexes_checked) != set(after.indexes_checked):
        diffs.append(f"indexes differ: {sorted(before.indexes_checked)} -> {sorted(after.indexes_checked)}")
    return diffs


# ---- 1. 機能テスト and 2. パフォーマンス確認 -----------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str  # for a failure: "expected ...; seen ..."
    expected: str = ""
    seen: str = ""


@dataclass
class CheckResult:
    kind: str
    url: str
    checks: list[Check] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (check, why it does not apply)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str, *, expected: str = "", seen: str = "") -> bool:
        """Record a check; a failed one with an expectation reads "expected X; seen Y"."""
        if not ok and expected:
            detail = f"expected {expected}; seen {seen or detail}"
        self.checks.append(Check(name, ok, detail, expected, seen))
        return ok


def post_checks(target: Target, username: str | None = None, password: str | None = None, *,
                password_file: str | Path | None = None, expect_projects: bool = True, upload: bool = True,
                url: str | None = None) -> CheckResult:
    """The runbook's 機能テスト: health, login, the listing, and an upload that is read back.

    A failed check says what was expected and what came back (status, missing field, the first
    bytes of the body, with the password and tokens masked). The upload round trip adds one
    document (row and file) to the live data, as the runbook's does; an app without an upload
    endpoint gets it as a skipped check (`skipped`), never a silent pass.
    """
    username, password = credentials(username, password, password_file)
    secrets = [password]
    app = target.app
    with http_client(target, url) as client:
        result = CheckResult("post_checks", str(client.base_url))
        step = "health"
        try:
            answer = health.probe(client, target.health_path, app.health_expect)
            want = " saying " + ", ".join(f"{k}={v!r}" for k, v in app.health_expect.items()) \
                if app.health_expect else ""
            result.add("health", answer.ok, f"HTTP {answer.status}" if answer.status else answer.detail,
                       expected=f"HTTP 200 from {target.health_path}{want}",
                       seen=mask_secrets(answer.detail, secrets))
            step = "login"
            response, token, missing = login(client, app, username, password)
            secrets += [token] if token else []
            seen = "; ".join(filter(None, (missing, describe(response, secrets))))
            if not result.add("login", bool(token), f"HTTP {response.status_code}",
                              expected=f"HTTP 200 from {app.login_path} with a token at {app.token_path!r}"
                              if app.login_kind == "json" else
                              f"the form at {app.login_path} accepted, a {app.session_cookie} cookie set",
                              seen=seen):
                return result
            auth = auth_headers(app, token)
            step = "projects"
            listing = client.get(app.listing_path, headers=auth)
            count, missing = listing_count(listing, app)
            ok = listing.status_code == 200 and not missing and (count > 0 or not expect_projects)
            want = "above 0" if expect_projects else "present"
            result.add("projects", ok, f"HTTP {listing.status_code}, {count} in {app.listing_path}",
                       expected=f"HTTP 200 from {app.listing_path} with a count at {app.count_path!r} {want}",
                       seen="; ".join(filter(None, (missing, describe(listing, secrets)))))
            if upload and app.upload_path and app.download_path:
                step = "upload"
                _upload_round_trip(client, auth, result, app, secrets)
            elif upload:
                result.skipped.append(("upload", "the app has no upload endpoint (http.upload is none)"))
        except httpx.HTTPError as exc:
            result.add(step, False, f"{type(exc).__name__}: {exc}", expected="an HTTP answer",
                       seen=mask_secrets(f"{type(exc).__name__}: {exc}", secrets))
    return result


def _upload_round_trip(client: httpx.Client, auth: dict[str, str], result: CheckResult,
                       app: AppTarget, secrets: list[str]) -> None:
    content = f"復旧後の確認 {uuid.uuid4()}\n".encode() * 64
    expected = hashlib.sha256(content).hexdigest()
    upload_path = app.upload_path or ""
    response = client.post(upload_path, headers=auth,
                           files={"file": ("recovery-check.txt", content, "text/plain")})
    sha, missing = json_field(response, "sha256") if response.status_code == 201 else (None, "")
    if not result.add("upload", sha == expected, f"HTTP {response.status_code}",
                      expected=f"HTTP 201 from {upload_path} with sha256 {expected[:12]}...",
                      seen="; ".join(filter(None, (missing, describe(response, secrets))))):
        return
    document, _ = json_field(response, "id")
    back = client.get((app.download_path or "").format(id=document), headers=auth)
    got = hashlib.sha256(back.content).hexdigest()
    result.add("download", back.status_code == 200 and got == expected,
               f"HTTP {back.status_code}, {len(back.content)} bytes",
               expected=f"HTTP 200 and the {len(content)} bytes uploaded (sha256 {expected[:12]}...)",
               seen=f"HTTP {back.status_code}, {len(back.content)} bytes (sha256 {got[:12]}...)")


POST_CHECKS_TITLE = "復旧後の確認手順 (機能テスト)"
POST_CHECKS_PLAN = tuple((name, POST_CHECKS_TITLE, what) for name, what in (
    ("health", "GET the health path: 200, and what a healthy answer says"),
    ("login", "log in with the user's password"),
    ("projects", "the listing answers, with entries"),
    ("upload", "upload a document; its sha256 comes back"),
    ("download", "the uploaded document reads back the same"),
))
UPLOAD_STEPS = ("upload", "download")


def _plan_post_checks(journal: Journal, target: Target, *args: object, **kwargs: object) -> None:
    """The checks that will run: no upload steps for an app without an upload endpoint."""
    upload = bool(target.app.upload_path and target.app.download_path)
    for name, title, what in POST_CHECKS_PLAN:
        if upload or name not in UPLOAD_STEPS:
            journal.plan(name, title, what=what)


@action("post-checks", POST_CHECKS_TITLE, plan=_plan_post_checks, cli="post-checks",
        options=(option("--username", default="admin"),
                 option("--password-file", required=True, metavar="FILE", keyword="password",
                        convert=secret_file,
                        help="a file holding the user's password (never on the command line)")))
def run_post_checks(journal: Journal, target: Target, username: str | None = None,
                    password: str | None = None) -> None:
    """post_checks as an action: one step per check; it fails when one of them failed."""
    if password:
        journal.secrets.append(password)
    result = post_checks(target, username, password)
    for check in result.checks:
        try:
            with journal.step(check.name, POST_CHECKS_TITLE) as step:
                step.note("detail", check.detail)
                if not check.ok:
                    raise RecoveryError(f"check {check.name} failed (see its detail)")
        except RecoveryError:
            continue  # every check gets its step; the verdict comes after the last
    if not result.ok:
        raise RecoveryError("checks failed: " + "; ".join(f"{c.name}: {c.detail}" for c in result.failures()))


@dataclass
class Timing:
    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass
class PerformanceResult:
    url: str
    timings: list[Timing]
    seconds: float
    truncated: bool  # the time cap ended the burst early
    limits_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        for t in self.timings:
            if t.failures or t.requests == 0:
                return False
            limit = self.limits_ms.get(t.name)
            if limit is not None and t.p95_ms > limit:
                return False
        return True


def performance(target: Target, username: str | None = None, password: str | None = None, *,
                requests: int = 50, max_seconds: float = 20.0, url: str | None = None,
                p95_limits_ms: dict[str, float] | None = None) -> PerformanceResult:
    """p50/p95 of health and of the projects list over a bounded burst (the runbook's `time curl`)."""
    username, password = credentials(username, password)
    started = time.monotonic()
    deadline = started + max_seconds
    truncated = False
    timings: list[Timing] = []
    with http_client(target, url) as client:
        _, token, _ = login(client, target.app, username, password)
        auth = auth_headers(target.app, token)
        paths = (("health", target.health_path, {}), ("projects", target.app.listing_path, auth))
        for name, path, headers in paths:
            samples: list[float] = []
            failures = 0
            for _ in range(requests):
                if time.monotonic() > deadline:
                    truncated = True
                    break
                t0 = time.perf_counter()
                try:
                    ok = client.get(path, headers=headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                samples.append((time.perf_counter() - t0) * 1000)
                failures += not ok
            timings.append(_timing(name, samples, failures))
        base = str(client.base_url)
    return PerformanceResult(base, timings, round(time.monotonic() - started, 3), truncated,
                             dict(p95_limits_ms or {}))


def _timing(name: str, samples: list[float], failures: int) -> Timing:
    if not samples:
        return Timing(name, 0, failures, 0.0, 0.0, 0.0)
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return Timing(name, len(samples), failures, round(statistics.median(ordered), 2), round(p95, 2),
                  round(ordered[-1], 2))
