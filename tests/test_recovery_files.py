"""アップロードファイル復旧 and 設定ファイル復旧: bad inputs on a bare folder, round trips on a live stack."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import yaml

from recovery.archives import FORMAT, MANIFEST_NAME, create_archive, listing, verify_archive
from recovery.config_files import backup_config, restore_config, restore_from_git, target_root
from recovery.journal import ActionFailed
from recovery.target import PathsTarget, Target
from recovery.uploads import backup_uploads, restore_uploads


def bare_target(root: Path) -> Target:
    """A target whose production paths live under root (no services: the file actions need none)."""
    paths = PathsTarget(**{name: str(root) + value for name, value in vars(PathsTarget()).items()})
    for folder in (paths.uploads_dir, paths.backup_dir, paths.scratch_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    return Target(name="bare", paths=paths)


def noted(journal, key):
    return next(s.details[key] for s in reversed(journal.steps) if key in s.details)


def _evil_archive(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    """An uploads archive whose manifest vouches for one hostile member."""
    entry = {"path": name, "mode": "0644", "type": "symlink" if kind == tarfile.SYMTYPE else "file",
             "target": link, "size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}
    raw = json.dumps({"format": FORMAT, "root": "uploads", "created": "x", "entries": [entry]}).encode()
    with tarfile.open(path, "w:gz") as tar:
        head = tarfile.TarInfo(MANIFEST_NAME)
        head.size = len(raw)
        tar.addfile(head, io.BytesIO(raw))
        member = tarfile.TarInfo(name)
        member.type, member.linkname = kind, link
        if kind == tarfile.REGTYPE:
            member.size = 1
            tar.addfile(member, io.BytesIO(b"x"))
        else:
            tar.addfile(member)
    return path


def _truncated(path: Path, source: Path) -> Path:
    create_archive(source, path, root="uploads")
    path.write_bytes(path.read_bytes()[:-200])
    return path


NAME = "uploads_20240101_000000.tar.gz"
BAD = {
    "truncated tar.gz": (lambda b, src: _truncated(b / NAME, src), "truncated|readable"),
    "dot-dot entry": (lambda b, _: _evil_archive(b / NAME, "../../etc/evil"), r"'\.\.'"),
    "absolute path": (lambda b, _: _evil_archive(b / NAME, "/etc/evil"), "absolute"),
    "escaping symlink": (lambda b, _: _evil_archive(b / NAME, "up", tarfile.SYMTYPE, "../../../etc"),
                         "points outside"),
    "no backup at all": (lambda b, _: None, "no backup"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_restore_uploads_refuses_bad_input_and_leaves_the_live_folder_alone(tmp_path, case):
    target = bare_target(tmp_path / "root")
    uploads, backup_dir = Path(target.paths.uploads_dir), Path(target.paths.backup_dir)
    (uploads / "2024").mkdir()
    (uploads / "2024/a.pdf").write_bytes(b"%PDF live data")
    (uploads / ".keep").write_text("hidden")
    source = tmp_path / "other/uploads"
    source.mkdir(parents=True)
    (source / "x").write_text("x")
    make, reason = BAD[case]
    make(backup_dir, source)
    before = listing(uploads)
    with pytest.raises(ActionFailed, match=reason) as failure:
        restore_uploads(target)
    assert listing(uploads) == before
    assert failure.value.journal.status == "failed"
    assert failure.value.journal.failed_step().name == "select"
    assert not (tmp_path / "etc").exists() and not Path(target.paths.uploads_dir).with_name("up").exists()
    assert not any(p.name.startswith(".uploads.") for p in uploads.parent.iterdir()), "staging left behind"


def test_restore_config_refuses_files_that_are_not_configuration(tmp_path):
    target = bare_target(tmp_path / "root")
    root = target_root(target)
    assert root == tmp_path / "root"
    config = Path(target.paths.config_file)
    config.parent.mkdir(parents=True)
    config.write_text("database: {}\n")
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/cron.d/job").write_text("* * * * * root evil\n")
    archive = Path(target.paths.backup_dir) / "config_20240101_000000.tar.gz"
    create_archive(root, archive, root="/", include=["etc/mks/config.yml", "etc/cron.d/job"])
    with pytest.raises(ActionFailed, match="not configuration files"):
        restore_config(target)
    assert config.read_text() == "database: {}\n"


# ---- on a live stack -------------------------------------------------------------------------
def _modes_and_owner(directory: Path) -> set[tuple[str, int, int]]:
    found = set()
    for dirpath, dirs, files in os.walk(directory):
        for name in dirs + files + ["."]:
            info = (Path(dirpath) / name).lstat()
            kind = "d" if stat.S_ISDIR(info.st_mode) else "f"
            found.add((kind, stat.S_IMODE(info.st_mode), info.st_uid))
    return found


@pytest.mark.stack
def test_uploads_backup_and_restore_on_a_live_stack(stack):
    target = stack.target()
    uploads = stack.uploads_dir
    with stack.client() as client:
        token = stack.login(client)
        response = client.post("/api/v1/upload", headers={"Authorization": f"Bearer {token}"},
                               files={"file": ("図面.pdf", b"%PDF-1.7 drawing" * 100, "application/pdf")})
        assert response.status_code == 201, response.text
    stack.sandbox.write_text(uploads / ".index", "hidden file of the uploads folder")
    backed_up = listing(uploads)
    journal = backup_uploads(target)
    archive = Path(noted(journal, "archive"))
    assert archive.parent == Path(target.paths.backup_dir) and archive.name.startswith("uploads_2")
    assert len(verify_archive(archive, "uploads").files) == noted(journal, "files") >= 2

    # the damage: a lost file, a changed one, a stray one, and an executable bit
    victims = sorted(p for p in uploads.rglob("*") if p.is_file() and p.name != ".index")
    victims[0].unlink()
    victims[1].write_bytes(b"corrupted")
    (uploads / "stray.tmp").write_text("not in the backup")
    (uploads / ".index").chmod(0o755)
    damaged = listing(uploads)

    restored = restore_uploads(target, safety_archive=True)
    assert restored.status == "succeeded"
    assert listing(uploads) == backed_up
    account = stack.sandbox.service_account
    assert {(kind, mode, uid) for kind, mode, uid in _modes_and_owner(uploads)} <= {
        ("d", 0o755, account.uid), ("f", 0o644, account.uid)}
    assert not [p for p in uploads.parent.iterdir() if p.name.startswith(".uploads.")]
    stack.wait_healthy(timeout=10)

    safety = Path(noted(restored, "safety_copy"))
    assert safety.name.startswith("uploads_pre_restore_")
    restore_uploads(target, backup=safety)
    assert listing(uploads) == {**damaged, ".index": damaged[".index"].replace("0755", "0644")}
    assert stack.sandbox.contains(safety)


@pytest.mark.stack
def test_config_restore_from_tarball_and_from_git_on_a_live_stack(stack):
    target = stack.target()
    config, site = stack.config_file, stack.nginx.site_config
    original_config, original_site = config.read_bytes(), site.read_bytes()
    journal = backup_config(target)
    archive = Path(noted(journal, "archive"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == MANIFEST_NAME
    assert set(names[1:]) == {"etc/mks/config.yml", "etc/nginx/sites-available/mks"}, "relative to the root"

    # an older config backup must not win over the newest one (the runbook only looks for today's)
    older = archive.with_name("config_20000101_000000.tar.gz")
    config.write_text("database: {broken: [\n")
    create_archive(target_root(target), older, root="/", include=["etc/mks/config.yml"])
    site.write_text("this is not nginx configuration\n")
    restored = restore_config(target)
    assert noted(restored, "archive") == str(archive)
    assert config.read_bytes() == original_config and site.read_bytes() == original_site
    assert stat.S_IMODE(config.stat().st_mode) == 0o640, "the database password stays private"
    assert config.stat().st_uid == stack.sandbox.service_account.uid
    assert yaml.safe_load(config.read_text())["database"]["port"] == target.database.port
    stack.nginx.test_config()

    with pytest.raises(ActionFailed, match="not valid YAML"):
        restore_config(target, backup=older)
    assert config.read_bytes() == original_config, "a broken config.yml never goes live"
    for text in (json.dumps(j.to_dict()) for j in (journal, restored)):
        assert all(secret not in text for secret in stack.secrets.values())

    # from git: local edits thrown away, but kept in the scratch folder first
    production = stack.backend_dir / "config/production.yml"
    committed = production.read_bytes()
    production.write_text("edited: by hand\n")
    (stack.backend_dir / "alembic.ini").write_text("[alembic]\n")
    git = restore_from_git(target)
    assert git.status == "succeeded"
    assert production.read_bytes() == committed
    kept = Path(noted(git, "safety_copy"))
    assert (kept / "config/production.yml").read_text() == "edited: by hand\n"
    assert stack.sandbox.contains(kept)
    assert stack.git("status", "--porcelain").strip() == ""
    with pytest.raises(ActionFailed, match="does not exist"):
        restore_from_git(target, revision="no-such-revision")
    with pytest.raises(ActionFailed, match="inside"):
        restore_from_git(target, files=["../../etc/passwd"])
