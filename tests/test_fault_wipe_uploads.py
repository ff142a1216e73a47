"""The uploads wipe bites while the app keeps making and removing its own temp files there.

Found by the 20-run flake check: the reference backend's health probe makes and removes a
`.health-*` file in the uploads folder, and the wipe met one between listing the folder and removing
it. The stack here is a stand-in with just the two folders the fault reads (said so: the fault
only touches files); the churn is a real thread doing what the health probe does.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from fixtures.engine.faults import WipeUploads


@dataclass
class FolderStack:
    root: Path
    uploads_dir: Path


def test_the_wipe_and_its_confirmation_ignore_the_apps_own_temp_files(tmp_path):
    stack = FolderStack(tmp_path, tmp_path / "opt/mks/uploads")
    stop = threading.Event()

    def health_probe_churn() -> None:
        while not stop.is_set():
            fd, probe = tempfile.mkstemp(dir=stack.uploads_dir, prefix=".health-")
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):  # the wipe may have removed it first
                os.unlink(probe)

    for round_ in range(200):
        (stack.uploads_dir / "2026/01").mkdir(parents=True, exist_ok=True)
        for n in range(5):
            (stack.uploads_dir / f"doc-{n}.pdf").write_bytes(b"%PDF" * n)
            (stack.uploads_dir / "2026/01" / f"scan-{n}.png").write_bytes(b"png")
        churn = threading.Thread(target=health_probe_churn)
        churn.start()
        try:
            details = WipeUploads().inject(stack)  # type: ignore[arg-type]
            assert "none left" in WipeUploads().confirm(stack, details)  # type: ignore[arg-type]
        finally:
            stop.set()
            churn.join()
            stop.clear()
        assert details["removed_files"] >= 10, (round_, details)


def test_a_file_the_wipe_missed_is_still_found(tmp_path):
    stack = FolderStack(tmp_path, tmp_path / "uploads")
    stack.uploads_dir.mkdir()
    (stack.uploads_dir / "a.pdf").write_bytes(b"%PDF")
    details = WipeUploads().inject(stack)  # type: ignore[arg-type]
    missed = stack.uploads_dir / "missed.pdf"
    missed.write_bytes(b"%PDF")
    os.utime(missed, (details["wiped_at"] - 60, details["wiped_at"] - 60))  # as old as the seeded files
    try:
        WipeUploads().confirm(stack, details)  # type: ignore[arg-type]
    except Exception as exc:
        assert "1 left" in str(exc)
    else:
        raise AssertionError("a file older than the wipe was not reported as left")
