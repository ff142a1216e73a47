"""Command line: ``python -m recovery --target FILE ACTION [--dry-run] [--json]`` (also ``mks-recovery``).

Every procedure of the runbook is an action declared with `recovery.actions.action`; the command
line offers each registered one with its options. Each step is printed with its outcome, then a
verdict. Exit status: 0 ok (or planned, with --dry-run), 1 the recovery failed, 2 usage or target
error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recovery import (
    actions,
    config_files,
    database,
    full_system,
    integrity,
    pitr,
    restore_checks,
    safety_copies,
    services,
    stamps,
    uploads,
    webserver,
)
from recovery.actions import Action
from recovery.errors import RecoveryError
from recovery.journal import ActionFailed, Journal
from recovery.target import Target, TargetError, load_target

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# the command line lists the actions in the runbook's order: these modules, each in its own order
SECTIONS = (services, webserver, uploads, config_files, database, restore_checks, pitr, integrity,
            full_system, safety_copies)
ACTIONS: tuple[Action, ...] = tuple(a for module in SECTIONS for a in actions.registered(module.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mks-recovery",
                                     description="The MKS recovery runbook (15_復旧手順).")
    parser.add_argument("--target", required=True, metavar="FILE", help="the target file (YAML)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; touch nothing")
    parser.add_argument("--json", action="store_true", help="print the journal as JSON")
    parser.add_argument("--stamp-key", metavar="FILE", default=None,
                        help="Ed25519 private key (PEM) that signs the <backup>.verified.json a succeeded "
                             "db-restore or uploads-restore writes (default: a key made for that stamp)")
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ACTIONS:
        sub = commands.add_parser(action.cli, help=action.help, description=action.help)
        # the global flags are also accepted after the action
        sub.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        for option in action.options:
            sub.add_argument(*option.flags, **option.argparse)
    return parser


def _arguments(action: Action, args: argparse.Namespace) -> dict[str, Any]:
    """The action's keyword arguments from its options; an option not given keeps the default."""
    kwargs: dict[str, Any] = {}
    for option in action.options:
        value = getattr(args, option.dest)
        if value is not None:
            kwargs[option.keyword] = option.convert(value) if option.convert else value
    return kwargs


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
        kwargs = _arguments(action, args)
    except RecoveryError as exc:
        return None, EXIT_USAGE, str(exc)
    try:
        journal = action(target, dry_run=args.dry_run, **kwargs)
    except ActionFailed as exc:
        return exc.journal, EXIT_FAILED, str(exc)
    return journal, EXIT_FAILED if journal.status == "failed" else EXIT_OK, ""


def _stamp(journal: Journal, key: Any) -> str:
    """The proven backup's stamp, as a note of the journal; a stamp that cannot be written is said so
    (the restore itself is done)."""
    try:
        path = stamps.stamp_journal(journal, key=key)
    except (RecoveryError, OSError) as exc:
        return f"warning: the backup was restored but not stamped: {exc}"
    if path is not None and journal.steps:
        journal.steps[-1].details["verified_stamp"] = str(path)
    return ""


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
    action = next(a for a in ACTIONS if a.cli == args.action)
    try:
        key = stamps.load_key(Path(args.stamp_key)) if args.stamp_key else None
    except RecoveryError as exc:
        print(f"mks-recovery: {exc}", file=sys.stderr)
        return EXIT_USAGE
    journal, status, message = run_action(action, target, args)
    if journal is not None and status == EXIT_OK and not args.dry_run:
        message = _stamp(journal, key) or message
    if journal is not None:
        if args.json:
            print(journal.to_json())
        else:
            print_journal(journal, sys.stdout)
            status = max(status, _verdict(journal, sys.stdout))
    if message:
        print(f"mks-recovery: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
