"""What an app nobody here wrote needs of the harness, without a stack (unit tests; fakes say so):
the post-checks plan, the gate's skipped checks, the broken-config fault on any config format."""

from __future__ import annotations

import grp
import re
from pathlib import Path

import pytest
import yaml

from fixtures.apps.__main__ import main as apps_main
from fixtures.apps.environment import app_python, venv_key
from fixtures.apps.profile import (
    REFERENCE_PROFILE,
    TEMPLATE_VALUES,
    ProfileError,
    account_values,
    load_profile,
)
from fixtures.apps.seeding import users_with_admin
from fixtures.engine.faults import _unparsable, config_kind, parse_problem
from gate.drilled import check_line
from recovery.commands import RunAs
from recovery.integrity import run_post_checks
from recovery.target import AppTarget, Target, load_target
from reports.model import CheckResult


def planned(app: AppTarget) -> list[str]:
    return [step.name for step in run_post_checks(Target(name="t", app=app), dry_run=True).steps]


def test_the_post_checks_dry_run_lists_no_upload_steps_for_an_app_without_an_upload_endpoint():
    assert planned(AppTarget(upload_path=None)) == ["health", "login", "projects"]
    assert planned(AppTarget(upload_path="/up", download_path="/d/{id}")) == [
        "health", "login", "projects", "upload", "download"]


def test_the_gate_shows_a_check_that_does_not_apply_as_skipped():
    skipped = CheckResult("upload", False, "the app has no upload endpoint", skipped=True)
    assert check_line(skipped) == "upload: skipped (the app has no upload endpoint)"
    assert check_line(CheckResult("login", False, "HTTP 500")) == "login: FAILED (HTTP 500)"
    assert check_line(CheckResult("login", True, "HTTP 200")) == "login: ok (HTTP 200)"


CONFIGS = {
    "settings.yml": "database:\n  host: 127.0.0.1\n",
    "settings.py": "DEBUG = False\nALLOWED_HOSTS = ['*']\n",
    "settings.json": '{"debug": false}\n',
    "app.ini": "[db]\nhost = 127.0.0.1\n",
    "pyproject.toml": "[tool.app]\ndebug = false\n",
    ".env": "DB_HOST=127.0.0.1\nexport SECRET_KEY='x'\n",
    "app.env": "DB_HOST=127.0.0.1\n\n# a comment\n",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_broken_config_fault_breaks_a_config_in_its_own_format(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_text(CONFIGS[name])
    kind = config_kind(path)
    assert kind == {".yml": "yaml", ".py": "python", ".json": "json", ".ini": "ini", ".toml": "toml"}.get(
        path.suffix, "env")
    assert parse_problem(kind, path) is None, "the file as it was parses"
    path.write_text(_unparsable(kind, CONFIGS[name]))
    assert parse_problem(kind, path), "the fault's file does not"


# ---- the users file from a record template (issue 29 item 3) ----------------------------------
KIROKU_PROFILE = REFERENCE_PROFILE.parent.parent / "kiroku" / "profile.yml"


def kiroku_with(tmp_path: Path, **admin: object) -> Path:
    data = yaml.safe_load(KIROKU_PROFILE.read_text(encoding="utf-8"))
    data["source"] = str(KIROKU_PROFILE.parent / data["source"])
    data["config"]["template"] = str(KIROKU_PROFILE.parent / data["config"]["template"])
    data["seed"]["admin"].update(admin)
    path = tmp_path / "profile.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_the_admin_s_users_file_entry_is_made_from_the_profile_s_record_template(tmp_path: Path):
    record = {"id": "$uuid", "username": "$username", "password_hash": "$password_hash", "roles": ["$role"],
              "active": True, "created": "$now"}
    profile = load_profile(kiroku_with(tmp_path, record=record))
    others = [{"id": "1", "username": "reader", "roles": ["reader"]},
              {"id": "2", "username": "admin", "roles": ["stale"]}]
    users = users_with_admin(profile.seed.admin, others, "admin", "$2b$12$hash")
    assert users[0] == others[0] and len(users) == 2, "the admin's old entry replaced, the others kept"
    admin = users[1]
    assert admin["username"] == "admin" and admin["password_hash"] == "$2b$12$hash"
    assert admin["roles"] == ["admin"] and admin["active"] is True and len(admin["id"]) == 36
    assert admin["created"].startswith("20")
    default = users_with_admin(load_profile(KIROKU_PROFILE).seed.admin, [], "admin", "h")
    assert default == [{"username": "admin", "password_hash": "h", "role": "admin"}], "no template: as before"


@pytest.mark.parametrize(("record", "message"), [
    ({"username": "$username", "pw": "$password"}, "unknown placeholder $password"),
    ({"name": "admin", "password_hash": "$password_hash"}, 'one top-level value must be "$username"'),
])
def test_a_bad_record_template_is_refused_with_its_key(tmp_path: Path, record: dict, message: str):
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(kiroku_with(tmp_path, record=record))


# ---- environment.packages and the service account in templates (item 4) ----------------------
def test_extra_packages_go_into_the_app_s_venv_and_its_key(tmp_path: Path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    path = kiroku_with(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["environment"] = {"requirements": "backend/requirements.txt", "packages": ["gevent==24.2.1"],
                           "wheelhouse": str(wheels)}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    profile = load_profile(path)
    assert profile.environment.packages == ["gevent==24.2.1"]
    requirements = profile.source_dir / "backend/requirements.txt"
    plain = load_profile(KIROKU_PROFILE)
    assert venv_key(profile, requirements) != venv_key(plain, requirements), "another package, another venv"
    with pytest.raises(ProfileError, match=r"is not in the wheelhouse"):  # offline: nothing is in it
        app_python(profile, tmp_path / "base")
    data["environment"] = {"python": "/usr/bin/python3", "packages": ["gevent"]}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ProfileError, match="python excludes requirements and packages"):
        load_profile(path)


def test_a_config_template_can_name_the_service_account_and_the_public_url():
    assert {"service_user", "service_group", "backend_port", "public_url"} <= set(TEMPLATE_VALUES)
    account = RunAs.current()
    values = account_values(account)
    assert values["service_user"] == account.name
    assert values["service_group"] == grp.getgrgid(account.gid).gr_name


# ---- the target file's app section from a profile (item 6) ------------------------------------
@pytest.mark.parametrize("profile_file", [REFERENCE_PROFILE, KIROKU_PROFILE])
def test_the_target_file_s_app_section_is_written_from_a_profile_and_loads_back(tmp_path: Path,
                                                                                 profile_file: Path, capsys):
    target_file = tmp_path / "target.yml"
    target_file.write_text("name: production\nservice_user: www-data\npaths:\n  backup_dir: /srv/backup\n",
                           encoding="utf-8")
    assert apps_main(["target-from-profile", str(profile_file), "--into", str(target_file)]) == 0
    loaded = load_target(target_file)
    profile = load_profile(profile_file)
    assert loaded.app == profile.to_app_target() and loaded.health_path == profile.http.health.path
    assert loaded.service_user == "www-data" and loaded.paths.backup_dir == "/srv/backup", "the rest kept"
    assert apps_main(["target-from-profile", str(profile_file)]) == 0
    printed = tmp_path / "printed.yml"
    printed.write_text(capsys.readouterr().out.split("\n", 1)[1], encoding="utf-8")
    assert load_target(printed).app == profile.to_app_target()


def test_a_target_file_the_loader_would_refuse_is_never_written(tmp_path: Path, capsys):
    target_file = tmp_path / "target.yml"
    target_file.write_text("name: production\ncolour: blue\n", encoding="utf-8")
    assert apps_main(["target-from-profile", str(REFERENCE_PROFILE), "--into", str(target_file)]) == 2
    assert "unknown key colour" in capsys.readouterr().err
    assert target_file.read_text(encoding="utf-8") == "name: production\ncolour: blue\n"
    assert [p.name for p in tmp_path.iterdir()] == ["target.yml"], "nothing left aside"
