"""A REC report opened in a real browser (Debian's chromium, headless): the page renders, is not
blank, and shows the key fields; the compliance index renders too.

Chromium gets a fresh profile and HOME inside the test's temp folder, no network, no sync, no
component updates. Skipped, with the reason, only when chromium is not installed (scripts/setup.sh
installs it).
"""

from __future__ import annotations

import html
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import pytest

from recovery.commands import run
from reports import session
from reports.i18n import duration
from reports.rec import when
from tests.test_reports import sample_record, write_record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; scripts/setup.sh does)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-dev-shm-usage",
]


def chromium(tmp: Path, *args: str) -> str:
    profile = tmp / "chromium"
    (profile / "home").mkdir(parents=True, exist_ok=True)
    # chromium's singleton socket path must stay short (a Unix socket name): its TMPDIR is a short one
    with tempfile.TemporaryDirectory(prefix="rec-chr-") as short:
        env = {
            "HOME": str(profile / "home"),
            "XDG_CONFIG_HOME": str(profile / "config"),
            "XDG_CACHE_HOME": str(profile / "cache"),
            "TMPDIR": short,
        }
        result = run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile / 'data'}", *args], timeout=120, env=env, cwd=tmp
        )
    return result.stdout


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the raw (filtered) scanlines of a PNG: enough to tell a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_the_rec_report_renders_in_chromium(tmp_path):
    record = sample_record(
        data_loss_rows=3,
        data_loss_seconds=0.4,
        verdict="failed",
        failure_reason="data loss: 3 committed canary rows lost",
    )
    summary = session.render_one(write_record(tmp_path, record), tmp_path, lang="ja", run_id="browser")
    page = tmp_path / summary["files"]["html"]
    result = session.finish_run(tmp_path, "browser", [summary["rec_id"]])

    dom = html.unescape(chromium(tmp_path, "--dump-dom", page.as_uri()))
    assert "<svg" in dom and 'id="timeline"' in dom
    for text in (
        f"復旧レポート: {summary['rec_id']}",
        "判定: 不合格",
        "障害概要",
        "復旧手順",
        "改善点",
        when(record.fault_at, "ja"),
        when(record.recovered_at, "ja"),
        duration(record.recovery_seconds, "ja"),
        "3 行, 0.40秒分のデータ",
        record.scenario,
        "復旧実行 (1/3)",
        "承認",
    ):
        assert text in dom, text

    shot = tmp_path / "rec.png"
    chromium(tmp_path, "--window-size=1000,1400", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri())
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1000, 1400)
    # a blank page is one colour: a rendered report has text, tables, badges and the timeline's colours
    assert len(set(pixels)) > 100 and pixels.count(pixels[1]) < 0.9 * len(pixels)

    index = html.unescape(chromium(tmp_path, "--dump-dom", result.index[1].as_uri()))
    assert summary["rec_id"] in index and "是正が必要" in index and "sha256sum -c MANIFEST.sha256" in index
