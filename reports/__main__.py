"""python -m reports: verify a run's manifest and signature, make a signing key, or render drill
records into REC reports.

python -m reports verify DIR... [--public-key FILE]  # a run folder, a MANIFEST.sha256, a reports folder
python -m reports keygen FILE                        # FILE (private, 0600) and FILE.pub
python -m reports render RECORD.json... [--reports DIR] [--lang en] [--runbook FILE]
python -m reports verify-backup FILE... [--public-key FILE]  # a backup's .verified.json stamp
python -m reports backup-metrics DIR [--history FILE]      # Prometheus text per backup set
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports import backup_stamps, manifest, signing
from reports.i18n import LANGS
from reports.numbering import ReportError
from reports.session import RECORDS_DIR, RunOptions, finish_run, new_run_id, render_one


def verify(locations: list[Path], public_key: Path | None = None) -> int:
    """Every hash, then the signature: exit 1 on a changed or missing file, a changed manifest, a wrong
    key, or an unsigned run when a key is pinned (an unsigned run is said so either way)."""
    pinned = signing.load_public(public_key) if public_key else None
    failed = False
    for location in locations:
        found = manifest.find(location)
        if not found:
            print(f"{location}: no {manifest.MANIFEST} found", file=sys.stderr)
            failed = True
        for path in found:
            result = manifest.verify(path)
            lines = result.lines()
            check = signing.check(path, pinned)
            lines.insert(-1, f"  {check.state.upper()}  {check.detail}")
            bad = not check.ok and (check.state != "unsigned" or pinned is not None)
            if bad and result.ok:
                lines[-1] = "  FAILED"
            print("\n".join(lines))
            failed |= not result.ok or bad
    return 1 if failed else 0


def verify_backup(files: list[Path], public_key: Path | None = None) -> int:
    """Exit 0 when every file's stamp is present, whole, signed (by the pinned key) and its own."""
    pinned = signing.load_public(public_key) if public_key else None
    failed = False
    for path in files:
        result = backup_stamps.check(path, pinned)
        print(f"{result.state.upper():>8}  {result.detail}", file=sys.stdout if result.ok else sys.stderr)
        failed |= not result.ok
    return 1 if failed else 0


def keygen(path: Path) -> int:
    private, public = signing.keygen(path)
    key = signing.load_private(private)
    print(f"private key: {private} (mode 0600: keep it out of the reports folder; CI: a secret)")
    print(f"public key:  {public}\nfingerprint: {key.fingerprint}")
    return 0


def default_reports(record: Path) -> Path:
    parent = record.resolve().parent
    return parent.parent if parent.name == RECORDS_DIR else Path("reports/out").resolve()


def render(
    records: list[Path],
    reports: Path | None,
    lang: str,
    runbook: str | None,
    index: bool,
    key: Path | None = None,
) -> int:
    run_id = new_run_id()
    rec_ids, findings = [], 0
    for record in records:
        folder = reports or default_reports(record)
        summary = render_one(record, folder, lang=lang, run_id=run_id, runbook=runbook)
        findings += summary["scan_findings"]
        rec_ids.append((folder, summary["rec_id"]))
        for form, path in summary["files"].items():
            print(f"{summary['rec_id']} {form}: {folder / path}")
    if index and rec_ids:
        folder = rec_ids[0][0]
        # records named by hand: an ad hoc run, which claims a schedule only if all its drills are here
        options = RunOptions(ad_hoc=True, signing_key=signing.load_private(key, folder) if key else None)
        result = finish_run(
            folder,
            run_id,
            [r for f, r in rec_ids if f == folder],
            lang=lang,
            earlier_findings=findings,
            options=options,
        )
        findings += len(result.findings)
        print(f"index: {result.index[-1]}\nmanifest: {result.manifest}")
    if findings:
        print(f"secret-like findings: {findings} (see the log)", file=sys.stderr)
    return 1 if findings else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "verify", help="check every file of a manifest against its SHA-256, and its signature"
    )
    check.add_argument("locations", nargs="+", type=Path)
    check.add_argument("--public-key", type=Path, default=None, help="pin the signer's public key (PEM)")
    make_key = sub.add_parser("keygen", help="make an Ed25519 signing key: FILE (0600) and FILE.pub")
    make_key.add_argument("file", type=Path)
    stamp = sub.add_parser("verify-backup", help="check a backup's verified stamp (<backup>.verified.json)")
    stamp.add_argument("files", nargs="+", type=Path, help="backups or their .verified.json stamps")
    stamp.add_argument("--public-key", type=Path, default=None, help="pin the signer's public key (PEM)")
    metrics = sub.add_parser("backup-metrics", help="Prometheus text per backup set of a backup folder")
    metrics.add_argument("folder", type=Path)
    metrics.add_argument("--history", type=Path, default=None, help="the drill history (history.sqlite)")
    metrics.add_argument("--public-key", type=Path, default=None, help="count only stamps of this key")
    make = sub.add_parser("render", help="render drill records (JSON) into REC reports")
    make.add_argument("records", nargs="+", type=Path)
    make.add_argument("--reports", type=Path, default=None, help="reports folder (default: beside records/)")
    make.add_argument("--lang", choices=LANGS, default="ja")
    make.add_argument("--runbook", default=None, help="the runbook file (revision and SHA-256)")
    make.add_argument("--index", action="store_true", help="also write a compliance index and manifest")
    make.add_argument("--signing-key", type=Path, default=None, help="sign the manifest (with --index)")
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            return verify(args.locations, args.public_key)
        if args.command == "verify-backup":
            return verify_backup(args.files, args.public_key)
        if args.command == "backup-metrics":
            pinned = signing.load_public(args.public_key) if args.public_key else None
            sys.stdout.write(backup_stamps.metrics_text(args.folder, args.history, pinned=pinned))
            return 0
        if args.command == "keygen":
            return keygen(args.file)
        return render(args.records, args.reports, args.lang, args.runbook, args.index, args.signing_key)
    except (ReportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
