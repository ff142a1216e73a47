"""Long steps show signs of life: plain lines in the log when not on a terminal (a journal, CI), from
a thread that reads how far the work is (an archive's read offset, pg_restore's TOC entries)."""

from __future__ import annotations

import io
import logging
import os

import pytest

from recovery import progress
from recovery.archives import create_archive
from recovery.commands import run
from recovery.database import RESTORED
from recovery.progress import Counter, Progress, plain_line
from recovery.uploads import restore_uploads
from recovery.waiting import wait_until
from tests.test_recovery_files import bare_target

LOGGER = "recovery.progress"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_long_step_logs_a_plain_line_every_interval_when_not_on_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    done = Counter()
    done.add(50)  # before the thread's first look, however late this thread runs again
    not_a_terminal = io.StringIO()
    with Progress("pg_restore db.dump: TOC entries", done, total=200, unit="entries", stream=not_a_terminal,
                  interval=0.01):
        wait_until("two progress lines", lambda: len(lines(caplog)) >= 2, timeout=10, interval=0.01)
        done.add(50)
    found = lines(caplog)
    assert found[0].startswith("pg_restore db.dump: TOC entries: 50 entries of 200 entries (25%)"), found
    assert found[-1].startswith("pg_restore db.dump: TOC entries: 100 entries of 200 entries (50%)")
    assert found[-1].endswith("(done)")
    assert not_a_terminal.getvalue() == "", "no bar drawn where nobody watches"


def test_the_line_gives_the_rate_and_the_time_left():
    line = plain_line("uploads.tar.gz read", 2_000_000_000, 20_000_000_000, "B", 100.0)
    assert line == "uploads.tar.gz read: 2.0 GB of 20.0 GB (10%), 20.0 MB/s, 15m00s left (1m40s so far)"
    assert plain_line("x", 5, None, "members", 0.0) == "x: 5 members (0m00s so far)"


def test_an_uploads_restore_says_how_far_it_read_the_archive(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    target = bare_target(tmp_path / "root")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(200_000))
    archive = tmp_path / "root/backup/mks/uploads_20240101_000000.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    create_archive(source, archive, root="uploads")
    assert restore_uploads(target, backup=archive).status == "succeeded"
    size = archive.stat().st_size
    read = [line for line in lines(caplog) if line.startswith(f"{archive.name} read: ")]
    assert read and read[-1].endswith("(done)"), lines(caplog)
    assert f"of {size / 1000:.1f} kB (100%)" in read[-1]


def test_pg_restore_s_verbose_lines_count_its_toc_entries():
    seen: list[str] = []
    run(["sh", "-c", "echo out; for i in 1 2 3; do echo \"pg_restore: creating TABLE t$i\" >&2; done"],
        timeout=10, stderr_line=seen.append)
    assert seen == [f"pg_restore: creating TABLE t{n}" for n in (1, 2, 3)]
    verbose = ['pg_restore: connecting to database for restore', 'pg_restore: creating TABLE "public.users"',
               'pg_restore: processing data for table "public.users"',
               "pg_restore: finished item 3345 TABLE DATA users",
               "pg_restore: launching item 3345 TABLE DATA"]
    assert [bool(RESTORED.match(line)) for line in verbose] == [False, True, True, True, False]


def test_a_command_watched_line_by_line_still_times_out():
    from recovery.errors import CommandError

    with pytest.raises(CommandError, match="timed out"):
        run(["sleep", "5"], timeout=0.2, stderr_line=lambda line: None)


def test_the_interval_is_a_module_setting():
    assert progress.INTERVAL == 30.0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_is_drawn_and_no_line_is_logged(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    screen = Terminal()
    done = Counter()
    with Progress("uploads.tar.gz read", done, total=1000, stream=screen):
        done.add(1000)
        wait_until("the bar drawn", lambda: "uploads.tar.gz read" in screen.getvalue(), timeout=10,
                   interval=0.05)
    assert lines(caplog) == []
