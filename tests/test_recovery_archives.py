"""recovery.archives without a server: round trips, and hostile archives built here, all refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import string
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery import archives
from recovery.archives import (
    FORMAT,
    MANIFEST_NAME,
    ArchiveError,
    backups,
    choose_backup,
    create_archive,
    extract_verified,
    listing,
    verify_archive,
)


def make_source(base: Path) -> Path:
    source = base / "uploads"
    (source / "2024/01").mkdir(parents=True)
    (source / ".hidden").write_bytes(b"dot file the runbook's rm -rf * would miss")
    (source / "2024/01/設計書 第1版.txt").write_text("復旧テスト\n" * 50, encoding="utf-8")
    (source / "2024/01/empty.bin").write_bytes(b"")
    script = source / "2024/run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    private = source / "private.yml"
    private.write_text("secret: x\n")
    private.chmod(0o640)
    (source / "latest").symlink_to("2024/01/empty.bin")
    return source


def test_round_trip_keeps_content_and_hidden_files_and_strips_exec_bits(tmp_path):
    source = make_source(tmp_path)
    archive = tmp_path / "uploads_20240101_000000.tar.gz"
    manifest = create_archive(source, archive, root="uploads")
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == MANIFEST_NAME
    assert verify_archive(archive, "uploads").entries == manifest.entries
    staging = tmp_path / "staging"
    extract_verified(archive, staging, "uploads")

    for entry in manifest.files:
        restored = staging / entry.path
        assert hashlib.sha256(restored.read_bytes()).hexdigest() == entry.sha256
        assert stat.S_IMODE(restored.stat().st_mode) & 0o111 == 0, entry.path
    assert (staging / ".hidden").is_file()
    assert stat.S_IMODE((staging / "2024/run.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE((staging / "private.yml").stat().st_mode) == 0o640, "never loosen a private file"
    assert stat.S_IMODE((staging / "2024/01").stat().st_mode) == 0o755
    assert os.readlink(staging / "latest") == "2024/01/empty.bin"
    expected = {k: v for k, v in listing(source).items() if not k.endswith("run.sh") and k != "private.yml"}
    got = {k: v for k, v in listing(staging).items() if k in expected}
    assert {k: v.split()[2:] for k, v in got.items()} == {k: v.split()[2:] for k, v in expected.items()}


def test_an_archive_of_something_else_is_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    create_archive(make_source(tmp_path), archive, root="uploads")
    with pytest.raises(ArchiveError, match="not of 'config'"):
        verify_archive(archive, "config")


# ---- hostile archives ------------------------------------------------------------------------
def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, link, 0o644
    return info


def hostile(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
            manifest: list[dict[str, object]] | None = None, manifest_first: bool = True) -> Path:
    """An archive with the given members and a manifest that vouches for them (so only the
    member checks can refuse it), unless a manifest is given."""
    if manifest is None:
        manifest = []
        for info, data in members:
            entry: dict[str, object] = {"path": info.name, "mode": "0644"}
            if info.issym():
                entry.update(type="symlink", target=info.linkname)
            elif info.isdir():
                entry["type"] = "dir"
            else:
                body = data or b""
                entry.update(type="file", size=len(body), sha256=hashlib.sha256(body).hexdigest())
            manifest.append(entry)
    raw = json.dumps({"format": FORMAT, "root": "uploads", "created": "x", "entries": manifest}).encode()
    head = (_info(MANIFEST_NAME, size=len(raw)), raw)
    ordered = [head, *members] if manifest_first else [*members, head]
    with tarfile.open(path, "w:gz") as tar:
        for info, data in ordered:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


HOSTILE = {
    "absolute path": ([(_info("/etc/cron.d/evil"), b"x")], "absolute path"),
    "dot-dot": ([(_info("a/../../evil"), b"x")], "'..' component"),
    "symlink to absolute": ([(_info("link", tarfile.SYMTYPE, link="/etc/passwd"), None)], "points outside"),
    "symlink climbing out": ([(_info("a/link", tarfile.SYMTYPE, link="../../x"), None)], "points outside"),
    "hardlink outside": ([(_info("h", tarfile.LNKTYPE, link="/etc/shadow"), None)], "points outside"),
    "char device": ([(_info("dev", tarfile.CHRTYPE), None)], "device or fifo"),
    "fifo": ([(_info("pipe", tarfile.FIFOTYPE), None)], "device or fifo"),
    "file below a symlink": ([(_info("d", tarfile.SYMTYPE, link="."), None), (_info("d/f"), b"x")],
                             "below a symlink"),
    "duplicate member": ([(_info("f"), b"x"), (_info("f"), b"x")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_member_is_refused_and_nothing_is_extracted(tmp_path, case):
    members, reason = HOSTILE[case]
    archive = hostile(tmp_path / "evil.tar.gz", members)
    with pytest.raises(ArchiveError, match=reason):
        verify_archive(archive, "uploads")
    with pytest.raises(ArchiveError):
        extract_verified(archive, tmp_path / "staging", "uploads")
    assert not (tmp_path / "staging").exists()


def test_members_must_match_the_manifest(tmp_path):
    body = b"real content"
    good = {"path": "f", "type": "file", "mode": "0644", "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest()}
    cases = {
        "not in the manifest": hostile(tmp_path / "1.tar.gz", [(_info("f"), body), (_info("g"), b"y")],
                                       [good]),
        "does not match": hostile(tmp_path / "2.tar.gz", [(_info("f"), b"tampered")], [good]),
        "not in the archive": hostile(tmp_path / "3.tar.gz", [(_info("f"), body)],
                                      [good, {**good, "path": "missing"}]),
        "first member is not": hostile(tmp_path / "4.tar.gz", [(_info("f"), body)], [good],
                                       manifest_first=False),
    }
    for reason, archive in cases.items():
        with pytest.raises(ArchiveError, match=reason):
            verify_archive(archive, "uploads")


def damaged_archives(tmp_path: Path, big_bytes: int) -> tuple[Path, Path]:
    """A good archive (with a random file of big_bytes) cut at two thirds, and with 64 bytes flipped
    in its middle: (truncated.tar.gz, corrupt.tar.gz)."""
    source = make_source(tmp_path)
    (source / "big.bin").write_bytes(os.urandom(big_bytes))
    archive = tmp_path / "full.tar.gz"
    create_archive(source, archive, root="uploads")
    blob = archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(blob[: len(blob) * 2 // 3])
    corrupt = tmp_path / "corrupt.tar.gz"
    middle = len(blob) // 2
    flipped = bytes(b ^ 0xFF for b in blob[middle:middle + 64])
    corrupt.write_bytes(blob[:middle] + flipped + blob[middle + 64:])
    return truncated, corrupt


def test_truncated_and_corrupt_archives_are_refused(tmp_path):
    truncated, corrupt = damaged_archives(tmp_path, 200_000)
    not_gzip = tmp_path / "plain.tar.gz"
    not_gzip.write_bytes(b"this is not an archive")
    for bad in (truncated, corrupt, not_gzip):
        with pytest.raises(ArchiveError, match=r"truncated or corrupt|not a readable|does not match"):
            verify_archive(bad, "uploads")
    with pytest.raises(ArchiveError, match="no such archive"):
        verify_archive(tmp_path / "missing.tar.gz", "uploads")


def test_gzip_of_a_valid_tar_without_manifest_is_refused(tmp_path):
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        tar.addfile(_info("f", size=1), io.BytesIO(b"x"))
    archive = tmp_path / "foreign.tar.gz"
    archive.write_bytes(gzip.compress(plain.getvalue()))
    with pytest.raises(ArchiveError, match="not an mks archive"):
        verify_archive(archive, "uploads")


def test_a_symlink_escaping_the_source_is_not_archived(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "out").symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError, match="outside"):
        create_archive(source, tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


# ---- names: any safe name survives, any climbing name is refused -----------------------------
ALPHABET = string.ascii_letters + string.digits + "._- 日本語"
SEGMENT = st.text(alphabet=ALPHABET, min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and s != MANIFEST_NAME)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(SEGMENT, min_size=1, max_size=4), climb=st.integers(min_value=0, max_value=4))
def test_names_round_trip_or_are_refused(tmp_path_factory, parts, climb):
    base = tmp_path_factory.mktemp("names")
    name = "/".join(parts)
    archive = hostile(base / "n.tar.gz", [(_info(name), b"payload")])
    assert verify_archive(archive, "uploads").files[0].path == name
    extract_verified(archive, base / "staging", "uploads")
    assert (base / "staging" / name).read_bytes() == b"payload"
    climbing = "/".join([*parts[:climb], *[".."] * (climb + 1), "escaped"])
    for evil in (climbing, "/" + name):
        with pytest.raises(ArchiveError):
            verify_archive(hostile(base / "e.tar.gz", [(_info(evil), b"x")]), "uploads")
    assert not (base / "escaped").exists()


# ---- choosing a backup -----------------------------------------------------------------------
def test_newest_valid_backup_is_chosen_and_safety_copies_are_not_candidates(tmp_path):
    source = make_source(tmp_path)
    backup_dir = tmp_path / "backup"
    older = backup_dir / "uploads_20240101_000000.tar.gz"
    create_archive(source, older, root="uploads")
    create_archive(source, backup_dir / "uploads_pre_restore_20250101_000000.tar.gz", root="uploads")
    broken = backup_dir / "uploads_20240102_000000.tar.gz"
    broken.write_bytes(older.read_bytes()[:100])
    assert backups(backup_dir, "uploads") == [broken, older]
    notes: dict[str, object] = {}
    chosen, _ = choose_backup(backup_dir, "uploads", "uploads", None, notes)
    assert chosen == older
    assert "refused_newer_backups" in notes
    with pytest.raises(ArchiveError, match="no backup"):
        choose_backup(tmp_path / "empty", "uploads", "uploads", None, {})


def test_a_file_removed_while_a_live_folder_is_scanned_is_left_out(tmp_path, monkeypatch):
    """The backend's health check creates and removes a file in the uploads folder on every request."""
    source = tmp_path / "uploads"
    source.mkdir()
    (source / "kept.txt").write_text("kept")
    (source / ".health-probe").write_text("")
    real_entry = archives._entry

    def vanishing(src, relative, path):
        if relative == ".health-probe":
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_entry(src, relative, path)

    monkeypatch.setattr(archives, "_entry", vanishing)
    assert [e.path for e in archives.scan(source, "uploads").entries] == ["kept.txt"]
    with pytest.raises(archives.ArchiveError, match="no such file"):
        archives.scan(source, "uploads", include=[".health-probe"])


def test_a_file_removed_between_scan_and_archive_makes_it_scan_again(tmp_path, monkeypatch):
    source = tmp_path / "uploads"
    source.mkdir()
    (source / "a.txt").write_text("a")
    real_add = archives._add
    calls = {"n": 0}

    def flaky_add(tar, src, entry):
        calls["n"] += 1
        if calls["n"] == 1:
            raise FileNotFoundError(2, "No such file or directory", str(src / entry.path))
        return real_add(tar, src, entry)

    monkeypatch.setattr(archives, "_add", flaky_add)
    manifest = archives.create_archive(source, tmp_path / "u.tar.gz")
    assert [e.path for e in manifest.entries] == ["a.txt"]
    assert archives.verify_archive(tmp_path / "u.tar.gz", "uploads").files


def _manifest(entries: int) -> archives.Manifest:
    made = archives.Manifest(root="uploads", created="2026-12-06T00:00:00+00:00")
    made.entries.append(archives.Entry("2024", "dir", 0o755))
    for n in range(entries):
        made.entries.append(archives.Entry(f"2024/図面 {n}.pdf", "file", 0o644, n, f"{n:064x}"))
    return made


@pytest.mark.parametrize("entries", [0, 1, 3, 4500])  # 4500: across the batches of lines parsed at once
def test_the_manifest_is_read_line_by_line_as_written_and_the_older_indented_layout_still_loads(entries):
    made = _manifest(entries)
    assert archives.Manifest.read(io.BytesIO(made.to_json())) == made
    older = json.dumps({"format": archives.FORMAT, "root": made.root, "created": made.created,
                        "entries": [e.to_dict() for e in made.entries]}, ensure_ascii=False, indent=1)
    assert archives.Manifest.read(io.BytesIO(older.encode())) == made


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw.replace(b'"mode": "0644"', b'"mode": "0x"', 1), "malformed"),
    (lambda raw: raw.replace(b'"size": 1,', b'"size": 1', 1), "line 4 is not JSON"),
    (lambda raw: raw.replace(b'{"path": "2024/', b'["2024/', 1), "line 3 is not JSON"),
    (lambda raw: raw.replace(b'{"path": "2024",', b'"a string", {"path": "2024",', 1), "line 2 is not JSON"),
    (lambda raw: raw.replace(b'{"path": "2024", "type": "dir", "mode": "0755"}', b'"2024"', 1),
     "line 2 is not an entry"),
    (lambda raw: raw.rsplit(b"]}", 1)[0], "ends before its entry list"),
    (lambda raw: raw + b'{"path": "extra"}\n', "data after its end"),
    (lambda raw: raw.replace(b'mks-archive/1', b'mks-archive/9', 1), "format is not"),
    (lambda raw: b"[]\n", "format is not"),
])
def test_a_damaged_manifest_is_refused_with_what_is_wrong(damage, message):
    raw = damage(_manifest(3).to_json())
    with pytest.raises(ArchiveError, match=message):
        archives.Manifest.read(io.BytesIO(raw))
