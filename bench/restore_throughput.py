"""Restore of about 1 GB of database and 1 GB of uploads: the harness's procedure against the bare tools.

One stack is seeded with a custom SeedPlan, backed up once (backup_database, backup_uploads), and then,
alternating in each run, the same backups are restored by:

- database, harness: recovery.database.restore_database with its defaults (backup verified, free
  space, restore beside the live database with pg_restore -j (the core count), verification, swap,
  backend restart; the renamed old database is the safety copy); `_dump`: also the safety dump of
  the renamed database (--safety-dump, after health); `_j1`: a single pg_restore job; `_to_health`:
  the journal's seconds until health answered again (the backend's start noted healthy_after_s)
- database, bare: createdb + `pg_restore -d <fresh>`; and `pg_restore -j 2` (parallel jobs)
- uploads, harness: recovery.uploads.restore_uploads with its defaults (free space, one pass
  checking every member against the manifest while extracting into staging, swap, count; the
  renamed old folder is the safety copy); `_archive`: also the safety archive of the renamed folder
  and its removal (--safety-archive); `_to_live`: until the swapped folder checked out
- uploads, bare: `tar -xzf` of the same archive into a fresh folder
- `db_cli`, `up_cli`: the same default restores run by the command line (`python -m recovery
  --target FILE db-restore / uploads-restore --backup ...`) in a process of their own, for the peak
  resident memory of the harness process as an operator runs it (`cli_peak_rss_mb`: its ru_maxrss)
- backups: backup_database against bare `pg_dump -Fc`, backup_uploads against bare `tar -czf`

`--file-kb 1000` makes the uploads ~1 GB of 1 MB files (1,000 of them) instead of 100,000 files of
~10 kB; the database is the same. `--tables 4` adds four filler tables of `--table-mb` MB each after
the seed: the seed's data is one large table, one COPY stream whatever pg_restore -j says; spread
over tables it is what parallel jobs can split (with `--scale 0.05` the filler is most of it).

Medians, the ratios harness / bare, the harness's journal steps (seconds) and the harness process's
peak resident memory during each restore (`peak_rss_mb`: VmHWM, reset through /proc/self/clear_refs
before each side; `peak_rss_growth_mb`: that less its size at the side's start, which keeps what the
sides before it left; the child processes, pg_restore and pigz, are not in it) are printed and written as
JSON. Whatever each side leaves (the renamed old database, safety copies, the extracted folders) is
removed between runs, outside the timed span, and `sync` runs before each side.

    PYTHONPATH=. .venv/bin/python bench/restore_throughput.py --runs 3 [--scale 0.02] [--file-kb 1000]
        [--tables 4 [--table-mb 220]] [--sides up_bare,up_harness,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixtures.apps.reference.seeding import SeedPlan, seed
from fixtures.engine.calibration import PAD_BYTES, PAD_TABLE, pad_database
from fixtures.stack.local import LocalStack, StackSettings
from fixtures.stack.sandbox import default_base_dir
from recovery.archives import verify_archive
from recovery.commands import run
from recovery.database import backup_database, restore_database
from recovery.integrity import connect
from recovery.journal import Journal
from recovery.removal import remove_tree
from recovery.target import Target
from recovery.uploads import ROOT, backup_uploads, restore_uploads

# about 1 GB each: projects rows of ~1.2 kB (600..1800 bytes of description, under the TOAST threshold
# so they are stored as written), 100k files of ~10 kB (half random, half text)
PLAN = SeedPlan(
    users=1000, projects=750_000, documents=100_000, mean_file_bytes=10_000, description_bytes=1200
)
BARE_DB = "bench_bare_restore"


def scaled(plan: SeedPlan, scale: float) -> SeedPlan:
    """The plan with fewer rows and files of the same sizes (the per-row and per-file costs stay)."""
    if scale == 1.0:
        return plan
    return dataclasses.replace(plan, users=max(10, int(plan.users * scale)),
                               projects=max(10, int(plan.projects * scale)),
                               documents=max(10, int(plan.documents * scale)))


def database_bytes(target: Target, name: str | None = None) -> int:
    with connect(target) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (name or target.database.name,)).fetchone()
    return int(row[0]) if row else 0


def tree_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def bare_pg_restore(target: Target, dump: Path, jobs: int) -> float:
    db = target.database
    with connect(target) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BARE_DB} WITH (FORCE)")
    started = time.monotonic()
    with connect(target) as conn:
        conn.execute(f"CREATE DATABASE {BARE_DB} OWNER {db.user}")
    argv = [db.tool("pg_restore"), "-U", db.superuser, "-d", BARE_DB, "--exit-on-error", str(dump)]
    if jobs > 1:
        argv[1:1] = ["-j", str(jobs)]
    run(argv, timeout=3600, run_as=target.service_account(), env=db.env())
    seconds = time.monotonic() - started
    with connect(target) as conn:
        conn.execute(f"DROP DATABASE {BARE_DB} WITH (FORCE)")
    return seconds


def reset_peak_rss() -> bool:
    """Start this process's peak resident size (VmHWM) again from its current size (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb(field: str = "VmHWM") -> float:
    """This process's peak resident size since the last reset (or its current one: field VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def harness_database(target: Target, dump: Path, safety_dump: bool = False,
                     jobs: int | None = None) -> tuple[float, Journal]:
    started = time.monotonic()
    journal = restore_database(target, backup=dump, safety_dump=safety_dump, jobs=jobs)
    seconds = time.monotonic() - started
    drop_safety_copies(target)
    return seconds, journal


def drop_safety_copies(target: Target) -> None:
    """What a restore kept (the renamed old database, a second 1 GB copy per run; its dump; the
    renamed uploads folder; its archive), removed outside the timed span."""
    live = target.database.name
    with connect(target) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{live}_pre_%",))
        for (old,) in rows.fetchall():
            conn.execute(f"DROP DATABASE {old} WITH (FORCE)")
    for safety in Path(target.paths.backup_dir).glob("*pre_restore_*"):
        safety.unlink()
    uploads = Path(target.paths.uploads_dir)
    for kept in uploads.parent.glob(f".{uploads.name}.old-*"):
        remove_tree(kept)


def cli_restore(target_file: Path, action: str, backup: Path, target: Target) -> tuple[float, float]:
    """The restore run by the command line in a process of its own: (seconds, its peak RSS in MB)."""
    argv = [sys.executable, "-m", "recovery", "--target", str(target_file), action, "--backup", str(backup)]
    started = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read() if child.stderr else b""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}: {stderr.decode()[-2000:]}")
    drop_safety_copies(target)
    return seconds, round(usage.ru_maxrss / 1024, 1)


def bare_tar(archive: Path, scratch: Path) -> float:
    dest = Path(tempfile.mkdtemp(prefix="tar-", dir=scratch))
    started = time.monotonic()
    run(["tar", "-xzf", str(archive), "-C", str(dest)], timeout=3600)
    seconds = time.monotonic() - started
    remove_tree(dest)
    return seconds


def harness_uploads(target: Target, archive: Path, safety_archive: bool = False) -> tuple[float, Journal]:
    started = time.monotonic()
    journal = restore_uploads(target, archive, safety_archive=safety_archive)
    seconds = time.monotonic() - started
    drop_safety_copies(target)
    return seconds, journal


def bare_pg_dump(target: Target) -> float:
    db = target.database
    dest = Path(target.paths.backup_dir) / "bench_bare.dump"  # a folder the service account writes
    started = time.monotonic()
    run([db.tool("pg_dump"), "-Fc", "-U", db.user, "-d", db.name, "-f", str(dest)], timeout=3600,
        run_as=target.service_account(), env=db.env())
    seconds = time.monotonic() - started
    dest.unlink()
    return seconds


def harness_backup_database(target: Target) -> float:
    started = time.monotonic()
    journal = backup_database(target)
    seconds = time.monotonic() - started
    dump = Path(journal.steps[0].details["path"])
    for path in (dump, dump.with_name(dump.name + ".sha256"), dump.with_name(dump.name + ".json")):
        path.unlink()
    return seconds


def bare_tar_czf(target: Target, scratch: Path) -> float:
    dest = scratch / "bare.tar.gz"
    uploads = Path(target.paths.uploads_dir)
    started = time.monotonic()
    run(["tar", "-czf", str(dest), "-C", str(uploads.parent), uploads.name], timeout=3600)
    seconds = time.monotonic() - started
    dest.unlink()
    return seconds


def harness_backup_uploads(target: Target) -> float:
    started = time.monotonic()
    journal = backup_uploads(target)
    seconds = time.monotonic() - started
    Path(journal.steps[0].details["archive"]).unlink()
    return seconds


def to_live(journal: Journal) -> float:
    """The restore's seconds until the restored data is live (database: health answered again;
    uploads: the swapped folder checked), without the safety copy made after it."""
    seconds = 0.0
    for step in journal.steps:
        if step.name in ("safety_copy", "safety-copy"):
            continue
        healthy = step.details.get("healthy_after_s") if step.name == "start_backend" else None
        seconds += healthy if isinstance(healthy, int | float) else step.seconds
    return seconds


def steps(journal: Journal) -> dict[str, float]:
    return {s.name: s.seconds for s in journal.steps}


def median_steps(journals: list[dict[str, float]]) -> dict[str, float]:
    names = list(journals[0]) if journals else []
    return {n: round(statistics.median(j.get(n, 0.0) for j in journals), 2) for n in names}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="a fraction of the ~1 GB plan (0.02: ~20 MB of each, for a shared machine)")
    parser.add_argument("--file-kb", type=int, default=10,
                        help="the uploads' mean file size in kB; their count keeps ~1 GB (x scale)")
    parser.add_argument("--budget", type=float, default=1800, help="start no run after this many seconds")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tables", type=int, default=0, help="filler tables added after the seed")
    parser.add_argument("--table-mb", type=float, default=220, help="the size of each filler table")
    parser.add_argument("--sides", default="", help="only these sides, comma-separated (default: all)")
    args = parser.parse_args()
    base = default_base_dir()
    base.mkdir(parents=True, exist_ok=True, mode=0o711)
    began = time.monotonic()
    files = PLAN.documents * PLAN.mean_file_bytes // (args.file_kb * 1000)
    plan = scaled(dataclasses.replace(PLAN, documents=files, mean_file_bytes=args.file_kb * 1000), args.scale)
    out: dict[str, Any] = {"plan": plan.__dict__, "scale": args.scale, "raw": {}, "journals": {}}
    order = ["db_bare", "db_harness", "db_bare_j2", "db_harness_j1", "db_harness_dump", "db_cli", "up_bare",
             "up_harness", "up_harness_archive", "up_cli", "dump_bare", "dump_harness", "tar_czf_bare",
             "backup_uploads_harness"]
    live_key = {"db_harness": "db_harness_to_health", "db_harness_j1": "db_harness_j1_to_health",
                "db_harness_dump": "db_harness_dump_to_health", "up_harness": "up_harness_to_live",
                "up_harness_archive": "up_harness_archive_to_live"}
    raw: dict[str, list[float]] = {k: [] for k in [*order, *live_key.values()]}
    journals: dict[str, list[dict[str, float]]] = {k: [] for k in live_key}
    peaks: dict[str, list[float]] = {}
    growth: dict[str, list[float]] = {}  # the peak less the size at the side's start
    cli_peaks: dict[str, list[float]] = {}
    out["peak_rss_reset"] = reset_peak_rss()
    stack = LocalStack(StackSettings(), "restore-bench")
    scratch = Path(tempfile.mkdtemp(prefix="restore-bench-", dir=base))
    try:
        stack.up()
        target = stack.target()
        target_file = scratch / "target.yml"
        target_file.write_text(target.to_yaml(), encoding="utf-8")
        report = seed(stack, plan)
        for number in range(args.tables):
            pad_database(stack, args.table_mb * 1e6 / PAD_BYTES, table=f"{PAD_TABLE}_{number}")
        out["seed_seconds"], out["filler_tables"] = round(report.seconds, 1), args.tables
        started = time.monotonic()
        backup_database(target)
        out["backup_database_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        backup_uploads(target)
        out["backup_uploads_seconds"] = round(time.monotonic() - started, 1)
        backup_dir = Path(target.paths.backup_dir)
        dump = max(backup_dir.glob("db_*.dump"))
        archive = max(backup_dir.glob("uploads_2*.tar.gz"))
        count, upload_bytes = tree_bytes(stack.uploads_dir)
        out["sizes"] = {
            "database_bytes": database_bytes(target),
            "dump_bytes": dump.stat().st_size,
            "uploads_files": count,
            "uploads_bytes": upload_bytes,
            "archive_bytes": archive.stat().st_size,
        }
        print(json.dumps(out, indent=2), flush=True)
        started = time.monotonic()
        verify_archive(archive, ROOT)  # one pass of the harness's archive check, for the profile
        out["verify_archive_seconds"] = round(time.monotonic() - started, 1)
        sides: dict[str, Callable[[], float]] = {
            "db_bare": lambda: bare_pg_restore(target, dump, 1),
            "db_bare_j2": lambda: bare_pg_restore(target, dump, 2),
            "up_bare": lambda: bare_tar(archive, scratch),
            "dump_bare": lambda: bare_pg_dump(target),
            "dump_harness": lambda: harness_backup_database(target),
            "tar_czf_bare": lambda: bare_tar_czf(target, scratch),
            "backup_uploads_harness": lambda: harness_backup_uploads(target),
        }
        restores = {
            "db_harness": lambda: harness_database(target, dump),
            "db_harness_dump": lambda: harness_database(target, dump, safety_dump=True),
            "db_harness_j1": lambda: harness_database(target, dump, jobs=1),
            "up_harness": lambda: harness_uploads(target, archive),
            "up_harness_archive": lambda: harness_uploads(target, archive, safety_archive=True),
        }
        clis = {"db_cli": ("db-restore", dump), "up_cli": ("uploads-restore", archive)}
        chosen = [s for s in args.sides.split(",") if s] or None
        for n in range(args.runs):
            if n and time.monotonic() - began > args.budget:
                print(f"budget spent: {n} runs", flush=True)
                break
            run_order = [side for side in order if chosen is None or side in chosen]
            if n % 2:
                run_order.reverse()
            for side in run_order:
                # the writeback of what the side before wrote, and the discards of what it removed (this
                # disk is mounted with `discard`), finish outside the next side's timed span: unsynced,
                # a side right after a 1 GB removal took up to 3x as long as the same side elsewhere
                os.sync()
                reset_peak_rss()
                before = peak_rss_mb("VmRSS")
                if side in restores:
                    seconds, journal = restores[side]()
                    journals[side].append(steps(journal))
                    raw[live_key[side]].append(round(to_live(journal), 2))
                elif side in clis:
                    seconds, peak = cli_restore(target_file, *clis[side], target)
                    cli_peaks.setdefault(side, []).append(peak)
                else:
                    seconds = sides[side]()
                peaks.setdefault(side, []).append(peak_rss_mb())
                growth.setdefault(side, []).append(round(peaks[side][-1] - before, 1))
                raw[side].append(round(seconds, 2))
                cli = f", the command line's {cli_peaks[side][-1]} MB" if side in clis else ""
                print(f"run {n + 1}: {side} {seconds:.1f}s, peak RSS {peaks[side][-1]} MB "
                      f"(+{growth[side][-1]}){cli}", flush=True)
    finally:
        stack.down()
        shutil.rmtree(scratch, ignore_errors=True)
    out["raw"], out["journals"] = raw, journals
    medians = {k: round(statistics.median(v), 2) for k, v in raw.items() if v}
    out["medians_s"] = medians
    pairs = (("db_harness", "db_bare"), ("db_bare_j2", "db_bare"), ("db_harness", "db_bare_j2"),
             ("db_harness_j1", "db_bare"), ("db_harness_dump", "db_bare"),
             ("db_harness_to_health", "db_bare"), ("db_harness_j1_to_health", "db_bare"),
             ("db_cli", "db_bare"),
             ("up_harness", "up_bare"), ("up_harness_archive", "up_bare"), ("up_harness_to_live", "up_bare"),
             ("up_cli", "up_bare"), ("dump_harness", "dump_bare"), ("backup_uploads_harness", "tar_czf_bare"))
    out["ratios"] = {f"{a}/{b}": round(medians[a] / medians[b], 2) for a, b in pairs
                     if a in medians and medians.get(b)}
    out["journal_step_medians_s"] = {k: median_steps(v) for k, v in journals.items() if v}
    out["peak_rss_mb"] = {k: max(v) for k, v in peaks.items()}  # the largest of the runs
    out["peak_rss_growth_mb"] = {k: max(v) for k, v in growth.items()}
    out["cli_peak_rss_mb"] = {k: max(v) for k, v in cli_peaks.items()}
    out["runs_done"] = max((len(v) for v in raw.values()), default=0)
    summary = {k: v for k, v in out.items() if k not in ("raw", "journals")}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
