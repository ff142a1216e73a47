"""REC numbers: REC-YYYY-NNN, unique in a reports folder across runs and concurrent processes.

One lock file guards a per-year counter and a ledger of what each number was given to. The ledger
makes numbering idempotent (the same record rendered twice keeps its number) and the counter never
goes back, even when the counter file is lost: the highest number already on disk wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REC_DIR = "rec"
COUNTER_FILE = ".rec-counter.json"
LOCK_FILE = ".rec.lock"
LEDGER_FILE = "ledger.jsonl"
REC_ID = re.compile(r"^REC-(\d{4})-(\d{3,})$")


class ReportError(Exception):
    """Base of every error raised by the reports package."""


@dataclass
class LedgerEntry:
    rec_id: str
    record_sha256: str
    drill_id: str
    run_id: str
    record_path: str  # relative to the reports folder


def rec_folder(reports_dir: Path) -> Path:
    return reports_dir / REC_DIR


@contextlib.contextmanager
def locked(reports_dir: Path) -> Iterator[Path]:
    """Hold the REC folder's lock (an exclusive fcntl lock: processes, also on other xdist workers)."""
    folder = rec_folder(reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_ledger(reports_dir: Path) -> list[LedgerEntry]:
    path = rec_folder(reports_dir) / LEDGER_FILE
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(LedgerEntry(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line being appended by another process right now, read without the lock
    return entries


def _highest_on_disk(folder: Path, year: int) -> int:
    highest = 0
    for path in folder.glob(f"REC-{year}-*"):
        match = REC_ID.match(path.name.split(".")[0])
        if match:
            highest = max(highest, int(match.group(2)))
    return highest


def allocate(
    reports_dir: Path, year: int, record_sha256: str, drill_id: str, run_id: str, record_path: str
) -> tuple[str, bool]:
    """The REC id for this record: its existing one, or the next of the year. (id, newly allocated)."""
    with locked(reports_dir) as folder:
        for entry in read_ledger(reports_dir):
            if entry.record_sha256 == record_sha256:
                return entry.rec_id, False
        counter_path = folder / COUNTER_FILE
        try:
            counters = json.loads(counter_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            counters = {}
        number = max(int(counters.get(str(year), 0)), _highest_on_disk(folder, year)) + 1
        counters[str(year)] = number
        rec_id = f"REC-{year}-{number:03d}"
        tmp = counter_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(counters, sort_keys=True), encoding="utf-8")
        os.replace(tmp, counter_path)
        entry = LedgerEntry(rec_id, record_sha256, drill_id, run_id, record_path)
        with open(folder / LEDGER_FILE, "a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())
        return rec_id, True


def year_of(iso_time: str, fallback: int) -> int:
    match = re.match(r"^(\d{4})-", iso_time or "")
    return int(match.group(1)) if match else fallback
