"""Command line: ``python -m recovery --target FILE ACTION [--dry-run] [--json]`` (also ``mks-recovery``).

Every procedure of the runbook is an action; the database ones (restore, PITR, post checks) live in
modules of their own and are imported only when asked for. Each step is printed with its outcome,
then a verdict. Exit status: 0 ok (or planned, with --dry-run), 1 the recovery failed, 2 usage or
target error (including an action whose module is not available).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recovery import levels
from recovery.errors import RecoveryError
from recovery.journal import ActionFailed, Journal
from recovery.target import Target, TargetError, load_target

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Action:
    name: str
    help: str
    function: str  # "module:function", imported when the action runs
    options: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()
    optional: bool = False  # implemented in another module that may not exist yet


def _opt(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


BACKUP = _opt("--backup", metavar="PATH", help="this archive instead of the newest valid one")
FULL_OPTIONS = (
    _opt("--level", default="RTO-24", choices=levels.NAMES),
    _opt("--health-timeout", type=float, default=60.0, help="seconds to wait for health after the restore"),
    _opt("--username", default="admin", help="the login of the post checks"),
    _opt("--login-password-file", metavar="FILE",
         help="the post checks' password (else $MKS_CHECK_PASSWORD; never on the command line)"),
)
ACTIONS = (
    Action("service-auto-recover", "自動復旧: restart until health answers 200 (bounded, with backoff)",
           "recovery.services:auto_recover",
           (_opt("--max-attempts", type=int, default=3), _opt("--backoff", type=float, default=2.0,
            help="first pause in seconds, doubled after each failed attempt"),
            _opt("--settle", type=float, default=30.0, help="seconds to wait for health after a restart"))),
    Action("service-manual-recover", "手動復旧: stop, free the port, start, wait for health",
           "recovery.services:manual_recover"),
    Action("service-check-config", "設定確認: program definition, config.yml, check-config, port",
           "recovery.services:check_service_config"),
    Action("nginx-test", "Nginx設定テスト (nginx -t)", "recovery.webserver:nginx_check"),
    Action("nginx-reload", "Nginx再読み込み, only after nginx -t passes", "recovery.webserver:reload_nginx"),
    Action("cert-check", "SSL証明書確認: days left of the served certificate, renew when too few",
           "recovery.webserver:check_certificate",
           (_opt("--min-days", type=float, default=30.0), _opt("--no-renew", action="store_true"))),
    Action("uploads-backup", "アップロードファイルのバックアップ", "recovery.uploads:backup_uploads"),
    Action("uploads-restore", "アップロードファイル復旧", "recovery.uploads:restore_uploads", (BACKUP,)),
    Action("config-backup", "設定ファイルのバックアップ (config.yml, nginx site)",
           "recovery.config_files:backup_config"),
    Action("config-restore", "設定ファイル復旧 (手動バックアップから)",
           "recovery.config_files:restore_config", (BACKUP,)),
    Action("config-git-restore", "設定ファイル復旧 (Gitから)", "recovery.config_files:restore_from_git",
           (_opt("--revision", default="HEAD"), _opt("--file", action="append", dest="files", metavar="PATH",
            help="relative to the backend checkout (repeatable; default: production.yml, alembic.ini)"))),
    Action("db-restore", "データベースバックアップからの復旧", "recovery.database:restore_database",
           (BACKUP, _opt("--level", default="RTO-24", choices=levels.NAMES)), optional=True),
    Action("pitr", "ポイントインタイムリカバリ", "recovery.pitr:point_in_time_restore",
           (_opt("--target-time", required=True, type=lambda text: _when(text),
                 help="with a time zone, e.g. '2024-01-09 10:00:00+09'"),), optional=True),
    Action("post-checks", "復旧後の確認手順 (機能テスト)", "recovery.integrity:post_checks",
           (_opt("--username", default="admin"),
            _opt("--password-file", required=True, metavar="FILE",
                 help="a file holding the user's password (never on the command line)")), optional=True),
    Action("full-recovery", "完全システム復旧: verify backups, PostgreSQL up, restore config, db, uploads",
           "recovery.full_system:full_recovery", FULL_OPTIONS),
    Action("migrate", "新規サーバーへの移行復旧: the old server's backups onto this (new) target",
           "recovery.full_system:migrate_from_target_file",
           (_opt("--old-target", metavar="FILE", help="the old server's target file (its backups are read)"),
            *FULL_OPTIONS)),
)


def _when(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date and time: {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (write +09 or +00)")
    return when


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mks-recovery",
                                     description="The MKS recovery runbook (15_復旧手順).")
    parser.add_argument("--target", required=True, metavar="FILE", help="the target file (YAML)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; touch nothing")
    parser.add_argument("--json", action="store_true", help="print the journal as JSON")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ACTIONS:
        sub = actions.add_parser(action.name, help=action.help, description=action.help)
        # the global flags are also accepted after the action
        sub.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        for flags, kwargs in action.options:
            sub.add_argument(*flags, **kwargs)
    return parser


def _arguments(action: Action, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for flags, options in action.options:
        dest = options.get("dest") or flags[0].lstrip("-").replace("-", "_")
        value = getattr(args, dest)
        if dest == "no_renew":
            kwargs["renew"] = not value
        elif dest == "password_file":
            kwargs["password"] = _read_secret(value)
        elif value is not None:
            kwargs[dest] = value
    return kwargs


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TargetError(f"{path}: {exc.strerror}") from None


def _resolve(action: Action) -> Callable[..., Any]:
    module_name, function_name = action.function.split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, function_name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"action {action.name} is not available: {action.function} cannot be imported "
                          f"({exc})") from None


def _accepted(function: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs, []
    return {k: v for k, v in kwargs.items() if k in parameters}, [k for k in kwargs if k not in parameters]


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_journal(journal: Journal, out: Any) -> None:
    print(f"== {journal.action}: {journal.title} (target {journal.target})", file=out)
    for number, step in enumerate(journal.steps, 1):
        timing = f" {step.seconds:.2f}s" if step.status != "planned" else ""
        print(f"[{step.status:>7}] {number}. {step.name} — {step.title}{timing}", file=out)
        for command in step.commands:
            print(f"            $ {_short(' '.join(command.argv), 200)} -> {command.returncode}", file=out)
        for key, value in step.details.items():
            print(f"            {key}: {_short(value)}", file=out)
        if step.error:
            print(f"            error: {_short(step.error, 400)}", file=out)


def _verdict(journal: Journal, out: Any) -> int:
    words = {"succeeded": "成功 (succeeded)", "planned": "計画のみ (dry run, nothing touched)",
             "failed": "失敗 (failed)"}
    print(f"RESULT: {journal.action} {words.get(journal.status, journal.status)}", file=out)
    return EXIT_OK if journal.status in ("succeeded", "planned") else EXIT_FAILED


def run_action(action: Action, target: Target, args: argparse.Namespace) -> tuple[Journal | None, int, str]:
    """Run one action: (its journal, exit status, message for stderr)."""
    try:
        function = _resolve(action)
    except LookupError as exc:
        return None, EXIT_USAGE, str(exc)
    try:
        kwargs, ignored = _accepted(function, _arguments(action, args))
    except TargetError as exc:
        return None, EXIT_USAGE, str(exc)
    secrets = [kwargs["password"]] if kwargs.get("password") else []
    if ignored:
        return None, EXIT_USAGE, f"{action.function} does not take {', '.join(ignored)}"
    if args.dry_run:
        if "dry_run" not in inspect.signature(function).parameters:
            journal = Journal(action.name, action.help, target.name, dry_run=True)
            journal.plan(action.name, action.help, what=f"call {action.function}", arguments=kwargs)
            return journal.finish(), EXIT_OK, ""
        kwargs["dry_run"] = True
    try:
        result = function(target, **kwargs)
    except ActionFailed as exc:
        return exc.journal, EXIT_FAILED, str(exc)
    except RecoveryError as exc:
        return None, EXIT_FAILED, f"{action.name} failed: {exc}"
    if isinstance(result, Journal):
        return result, EXIT_OK, ""
    return _as_journal(action, target, result, secrets)


def _as_journal(action: Action, target: Target, result: Any, secrets: list[str]) -> tuple[Journal, int, str]:
    """A result that is not a journal (post checks' CheckResult): one step per check it carries."""
    journal = Journal(action.name, action.help, target.name, secrets=secrets)
    checks = getattr(result, "checks", None)
    items = checks if isinstance(checks, list) else [result]
    for item in items:
        name = str(getattr(item, "name", action.name))
        try:
            with journal.step(name, action.help) as step:
                step.note("detail", str(getattr(item, "detail", repr(item))))
                if getattr(item, "ok", True) is False:
                    raise RecoveryError(f"check {name} failed")
        except RecoveryError:
            continue
    journal.finish()
    failed = journal.status == "failed"
    return journal, EXIT_FAILED if failed else EXIT_OK, f"{action.name}: checks failed" if failed else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="  .. %(message)s", stream=sys.stderr)
    try:
        target = load_target(args.target)
    except TargetError as exc:
        print(f"mks-recovery: target error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    action = next(a for a in ACTIONS if a.name == args.action)
    journal, status, message = run_action(action, target, args)
    if journal is not None:
        if args.json:
            print(journal.to_json())
        else:
            print_journal(journal, sys.stdout)
            status = max(status, _verdict(journal, sys.stdout))
    if message:
        print(f"mks-recovery: {message}", file=sys.stderr)
    if journal is None and status == EXIT_FAILED and not args.json:
        print(f"RESULT: {action.name} 失敗 (failed)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
