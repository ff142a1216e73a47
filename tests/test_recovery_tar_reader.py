"""recovery.tar_reader: the fast reader gives what tarfile gives for every archive mks writes, and
leaves what it does not read to tarfile (the tar-fed staging reads such an archive again).

Archives are written here by the harness (GNU format) and by tarfile in the pax and ustar formats;
headers it must not read are built byte by byte. The streams are read from memory, in pieces of
random sizes so that every header and member crosses the reader's buffer edges.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.archives import ArchiveError, create_archive, decompressed
from recovery.tar_extract import gnu_tar, stage_with_tar
from recovery.tar_reader import TarReader, Truncated, UnusualHeader
from recovery.tar_stream import TarfileMembers
from tests.test_recovery_archives import _info, hostile, make_source


class Dribble:
    """A reader that returns fewer bytes than asked for, at random (a pipe's short reads, and every
    buffer edge crossed)."""

    def __init__(self, data: bytes, seed: int):
        self.stream, self.random = io.BytesIO(data), random.Random(seed)

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(self.random.randint(1, 1500) if size != 0 else 0)


def members_of(reader: TarReader | TarfileMembers) -> list[tuple[str, bytes, int, int, str, str]]:
    seen = []
    while (member := reader.next()) is not None:
        digest = reader.data_sha256() if member.isreg() else ""
        seen.append((member.name, member.type, member.mode, member.size, member.linkname, digest))
    reader.read_to_end()
    return seen


def both_readers(raw: bytes, seed: int = 0) -> tuple[list, list]:
    return members_of(TarReader(Dribble(raw, seed))), members_of(TarfileMembers(io.BytesIO(raw)))


def tar_bytes(fmt: int, files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in files.items():
            tar.addfile(_info(name, size=len(data)), io.BytesIO(data))
            tar.addfile(_info(name + ".d", tarfile.DIRTYPE))
        for name, target in (links or {}).items():
            tar.addfile(_info(name, tarfile.SYMTYPE, link=target))
    return out.getvalue()


LONG = "深い/" * 30 + "設計書_" + "x" * 120 + ".txt"  # over 100 bytes: an L or a pax header


def test_the_harness_archive_reads_the_same_as_with_tarfile(tmp_path):
    source = make_source(tmp_path)
    (source / LONG).parent.mkdir(parents=True)
    (source / LONG).write_bytes(b"long name\n" * 100)
    (source / "long-link").symlink_to(LONG)
    (source / "block.bin").write_bytes(bytes(512))  # data that looks like the end of the archive
    archive = create_archive(source, tmp_path / "a.tar.gz", root="uploads") and tmp_path / "a.tar.gz"
    with decompressed(archive) as stream:
        raw = stream.read()
    fast, slow = both_readers(raw)
    assert fast == slow
    assert {m[0] for m in fast} >= {LONG, "long-link", ".hidden", "latest", "2024/01"}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])
def test_pax_ustar_and_gnu_archives_read_the_same_as_with_tarfile(fmt):
    # ustar splits a long name into prefix and name (its names must stay under 256 bytes)
    name = "p/" * 60 + "f.txt" if fmt == tarfile.USTAR_FORMAT else LONG
    files = {name: b"x" * 1000, "empty": b"", "exact": b"y" * 512, "日本語.txt": "本文".encode()}
    link = "p/f.txt" if fmt == tarfile.USTAR_FORMAT else name
    fast, slow = both_readers(tar_bytes(fmt, files, {"to-long": link}))
    assert fast == slow and len(fast) == 9


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.dictionaries(st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1,
                                     max_size=140).filter(lambda n: n not in (".", "..")),
                             st.binary(max_size=3000), min_size=1, max_size=8),
       fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]), seed=st.integers(0, 1000))
def test_any_names_and_sizes_read_the_same_as_with_tarfile(files, fmt, seed):
    fast, slow = both_readers(tar_bytes(fmt, files), seed)
    assert fast == slow


def _header(name: bytes, kind: bytes = b"0", size: int = 0, magic: bytes = b"ustar  \x00",
            prefix: bytes = b"", size_field: bytes | None = None, signed: bool = False) -> bytes:
    """One 512-byte header, its checksum right (the unsigned sum, or the signed one)."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b"0000644\x00"
    block[124:136] = size_field or b"%011o\x00" % size
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[257:265] = magic
    block[345:345 + len(prefix)] = prefix
    if signed:
        block[500] = 0x80  # a byte that the two sums count differently
        total = sum(b - 256 if b > 127 else b for b in block)
    else:
        total = sum(block)
    block[148:156] = b"%06o\x00 " % (total & 0o777777)
    return bytes(block)


def _blocks(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


END = bytes(1024)
UNUSUAL = {
    "pax global header": _header(b"g", b"g", 20) + _blocks(b"20 comment=anything\n"),
    "pax size key": _header(b"x", b"x", 11) + _blocks(b"11 size=99\n"),
    "GNU sparse member": _header(b"s", b"S"),
    "character device": _header(b"dev", b"3"),
    "base-256 size": _header(b"big", size_field=b"\x80" + bytes(10) + b"\x01"),
    "signed checksum": _header(b"f", signed=True),
    "V7 header": _header(b"f", magic=bytes(8)),
    "GNU incremental fields": _header(b"f", prefix=b"00000000000\x00"),
    "data on a folder": _header(b"d/", b"5", 1) + bytes(512),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_what_it_does_not_read_is_left_to_tarfile(case):
    reader = TarReader(io.BytesIO(UNUSUAL[case] + _header(b"after") + END))
    with pytest.raises(UnusualHeader):
        reader.next()


def test_two_headers_renaming_a_member_or_a_huge_name_are_refused_and_a_cut_stream_is_truncated():
    renamed_twice = (_header(b"L", b"L", 2) + _blocks(b"a\x00") + _header(b"x", b"x", 10)
                     + _blocks(b"10 path=b\n") + _header(b"c"))
    with pytest.raises(ArchiveError, match="two headers rename"):
        TarReader(io.BytesIO(renamed_twice + END)).next()
    with pytest.raises(ArchiveError, match="long-name or pax header of 8589934592 bytes"):
        TarReader(io.BytesIO(_header(b"L", b"L", 8 << 30) + END)).next()  # not read into memory
    good = _header(b"f", size=2000) + _blocks(b"z" * 2000) + END
    for cut in (100, 700, 1500):
        reader = TarReader(io.BytesIO(good[:cut]))
        with pytest.raises(Truncated):
            reader.next()
            reader.data_sha256()
    with pytest.raises(Truncated):
        TarReader(io.BytesIO(_header(b"L", b"L", 2) + _blocks(b"a\x00") + END)).next()


@pytest.mark.skipif(gnu_tar() is None, reason="GNU tar is not installed")
def test_the_staging_reads_an_archive_again_with_tarfile_when_the_reader_leaves_it(tmp_path, caplog):
    # a pax global header (a comment) before the members: valid, unusual, restored all the same
    body = b"restored through tarfile"
    archive = hostile(tmp_path / "g.tar.gz", [(_info("f"), body)])
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    staging = tmp_path / "staging"
    with caplog.at_level(logging.INFO, logger="recovery.tar_extract"):
        stage_with_tar(archive, staging, "uploads")
    assert (staging / "f").read_bytes() == body
    assert "checking it again with Python's tarfile" in caplog.text


def test_a_member_read_by_both_has_the_digest_of_its_data():
    data = random.Random(3).randbytes(2_500_000)  # crosses the reader's 1 MB chunks
    raw = tar_bytes(tarfile.GNU_FORMAT, {"big": data})
    fast, _ = both_readers(raw)
    reader = TarReader(io.BytesIO(raw))
    assert reader.next() is not None and reader.data_sha256() == hashlib.sha256(data).hexdigest()
    assert fast[0][5] == hashlib.sha256(data).hexdigest()

