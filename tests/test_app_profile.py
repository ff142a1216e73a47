"""The app profile: loaded into typed parts, refused with the file and key named, its venv built once.

No stack here: the profile is plain data, and the venv test installs from an empty wheelhouse offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fixtures.apps.environment import app_python
from fixtures.apps.profile import REFERENCE_PROFILE, ProfileError, load_profile, read_env_file


def write_profile(tmp_path: Path, changes: dict[str, object], drop: tuple[str, ...] = ()) -> Path:
    """The reference profile with its source copied beside it, changed at dotted keys."""
    data = yaml.safe_load(REFERENCE_PROFILE.read_text(encoding="utf-8"))
    data["source"] = str(REFERENCE_PROFILE.parent / "backend")
    data["config"]["template"] = str(REFERENCE_PROFILE.parent / data["config"]["template"])
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    for dotted in drop:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]
    path = tmp_path / "profile.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_the_reference_profile_loads_into_what_recovery_needs() -> None:
    profile = load_profile(REFERENCE_PROFILE)
    assert profile.wsgi.entry.endswith(":app") and profile.config.kind == "yaml"
    app = profile.to_app_target()
    assert app.tables and all("." in t for t in app.tables)
    assert app.upload_path and app.download_path and "{id}" in app.download_path
    assert app.git_restores and profile.http.health.expect


@pytest.mark.parametrize(("changes", "drop", "message"), [
    ({"colour": "blue"}, (), "unknown key colour"),
    ({"http.login.tokn": "x"}, (), "unknown key http.login.tokn"),
    ({"integrity.tables": "public.users"}, (), "integrity.tables must be a list"),
    ({"wsgi.options": [["--x"]]}, (), "wsgi.options[0] must be a string, not list"),
    ({"http.health.expect": ["status"]}, (), "http.health.expect must be a mapping"),
    ({"config.env_file": "yes"}, (), "config.env_file must be true or false"),
    ({"config.kind": "toml"}, (), "config.kind must be one of yaml, env"),
    ({"integrity.tables": ["users"]}, (), "integrity.tables[0]: 'users' is not schema.table"),
    ({"integrity.may_be_empty": ["audit.logs"]}, (), "'audit.logs' is not in integrity.tables"),
    ({"git_restores": ["config/missing.yml"]}, (), "git_restores[0]: config/missing.yml is not a file"),
    ({"wsgi.entry": "no_colon"}, (), "is not module:callable"),
    ({"integrity.files.dir": "opt/data"}, (), "must be an absolute (runbook) path"),
    ({}, ("http.health",), "http.health.path is required"),
    ({"environment.requirements": "nope.txt"}, (), "environment.requirements: nope.txt is not a file"),
])
def test_a_bad_profile_is_an_error_naming_the_file_and_the_key(tmp_path: Path, changes: dict[str, object],
                                                                drop: tuple[str, ...], message: str) -> None:
    path = write_profile(tmp_path, changes, drop)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_unparsable_yaml_and_a_missing_file_are_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("name: [never closed\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"broken\.yml:\d+:\d+"):
        load_profile(broken)
    with pytest.raises(ProfileError, match="app profile not found"):
        load_profile(tmp_path / "absent.yml")


def test_env_files_are_read_as_the_service_manager_reads_them(tmp_path: Path) -> None:
    env = tmp_path / "app.env"
    env.write_text("# comment\n\nDATABASE_URL='postgresql://u@h/db'\nMODE=strict\nEMPTY=\n", encoding="utf-8")
    assert read_env_file(env) == {"DATABASE_URL": "postgresql://u@h/db", "MODE": "strict", "EMPTY": ""}


def test_a_package_missing_from_the_wheelhouse_is_named(tmp_path: Path) -> None:
    source = tmp_path / "app"
    source.mkdir()
    (source / "requirements.txt").write_text("mks-drill-no-such-package==1.0\n", encoding="utf-8")
    (tmp_path / "wheels").mkdir()
    environment = {"requirements": "requirements.txt", "wheelhouse": "wheels"}
    path = write_profile(tmp_path, {"environment": environment, "source": str(source), "git_restores": []})
    profile = load_profile(path)
    missing = r"package mks-drill-no-such-package==1\.0 .* is not in the wheelhouse"
    with pytest.raises(ProfileError, match=missing):
        app_python(profile, tmp_path / "base")
    assert not any((tmp_path / "base" / "venvs").glob("*/READY")), "a failed build must not look ready"


def test_a_drill_that_does_not_apply_says_why(tmp_path: Path) -> None:
    from scenarios.drills import CONFIG_GIT, DB_RESTORE, PITR

    reference = load_profile(REFERENCE_PROFILE)
    assert PITR.does_not_apply(reference) is None and CONFIG_GIT.does_not_apply(reference) is None
    bare = load_profile(write_profile(tmp_path, {"git_restores": []}, drop=("integrity.relation",)))
    assert "integrity.relation" in (PITR.does_not_apply(bare) or "")
    assert "git_restores" in (CONFIG_GIT.does_not_apply(bare) or "")
    assert DB_RESTORE.does_not_apply(bare) is None


KIROKU_PROFILE = REFERENCE_PROFILE.parent.parent / "kiroku" / "profile.yml"


@pytest.mark.parametrize("profile_file", [REFERENCE_PROFILE, KIROKU_PROFILE])
def test_the_target_file_carries_the_apps_contract_for_a_real_host(tmp_path: Path,
                                                                   profile_file: Path) -> None:
    """What a sandbox writes as the target's app section loads back the same (mks-recovery --target)."""
    from recovery.target import Target, TargetError, load_target

    profile = load_profile(profile_file)
    target = Target(health_path=profile.http.health.path, app=profile.to_app_target())
    path = tmp_path / "target.yml"
    path.write_text(target.to_yaml(), encoding="utf-8")
    loaded = load_target(path)
    assert loaded.app == target.app and loaded.health_path == profile.http.health.path
    path.write_text(target.to_yaml().replace("token_path:", "token_paht:"), encoding="utf-8")
    with pytest.raises(TargetError, match=r"unknown key app\.token_paht"):
        load_target(path)
