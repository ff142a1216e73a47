"""Configuration loading of the reference MKS backend (fixtures/apps/reference/backend), without a database.

Also covers the pieces whose safety does not need PostgreSQL: the upload file-name sanitiser, the
password hash format shared with the seeder, tokens, and the app's behaviour when the database is down.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

BACKEND_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "apps" / "reference" / "backend"
sys.path.insert(0, str(BACKEND_DIR))

from mks_backend.auth import InvalidToken, decode_token, hash_password, issue_token, verify_password  # noqa: E402
from mks_backend.config import (  # noqa: E402
    DEFAULT_APP_CONFIG_PATH,
    ConfigError,
    load_app_settings,
    load_instance_config,
    load_settings,
)
from mks_backend.database import is_auth_failure  # noqa: E402
from mks_backend.storage import resolve_stored, safe_component  # noqa: E402

PASSWORD = "pw-Zx81-do-not-echo"
APP_YAML = "app:\n  max_upload_bytes: 104857600\n  log_level: INFO\n"


def instance_yaml(uploads: Path, *, port: object = 54321, password: object = f'"{PASSWORD}"') -> str:
    return (
        f"database: {{host: 127.0.0.1, port: {port}, name: mks_db, user: mks_user, password: {password}}}\n"
        f"uploads: {{dir: {uploads}}}\n"
        'auth: {jwt_secret: "jwt-secret-for-tests-0123456789abcdef", token_ttl_seconds: 3600}\n'
    )


@pytest.fixture()
def etc(tmp_path: Path) -> Path:
    (tmp_path / "uploads").mkdir()
    (tmp_path / "config.yml").write_text(instance_yaml(tmp_path / "uploads"), encoding="utf-8")
    (tmp_path / "production.yml").write_text(APP_YAML, encoding="utf-8")
    return tmp_path


def config_error(path: Path, text: str, loader: Callable[[Path], object] = load_instance_config) -> str:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        loader(path)
    return str(info.value)


# --- loading good configuration ---------------------------------------------------------------------


def test_good_config_loads_typed_values(etc: Path) -> None:
    settings = load_settings(etc / "config.yml", etc / "production.yml")
    assert settings.database.host == "127.0.0.1"
    assert settings.database.port == 54321
    assert settings.database.name == "mks_db"
    assert settings.database.user == "mks_user"
    assert settings.database.password == PASSWORD
    assert settings.uploads.dir == etc / "uploads"
    assert settings.auth.token_ttl_seconds == 3600
    assert settings.app.max_upload_bytes == 104857600
    assert settings.app.log_level == "INFO"
    assert PASSWORD not in repr(settings)
    assert "jwt-secret" not in repr(settings)


def test_config_path_comes_from_env_and_shipped_production_yml_is_valid(
    etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MKS_CONFIG", str(etc / "config.yml"))
    settings = load_settings()
    assert settings.instance.path == etc / "config.yml"
    assert settings.app.path == DEFAULT_APP_CONFIG_PATH
    assert DEFAULT_APP_CONFIG_PATH == BACKEND_DIR / "config" / "production.yml"
    assert settings.app.max_upload_bytes == 104857600


def test_unset_env_var_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MKS_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="MKS_CONFIG is not set"):
        load_settings()


# --- YAML syntax errors name file, line and column --------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    message = config_error(path, "database:\n  host: 127.0.0.1\n  port: 1\n  name: mks_db: x\n")
    assert message == f"{path}:4:15: mapping values are not allowed here"


def test_yaml_syntax_error_in_production_yml(tmp_path: Path) -> None:
    path = tmp_path / "production.yml"
    message = config_error(path, "app:\n  max_upload_bytes: [1, 2\n  log_level: INFO\n", load_app_settings)
    assert message.startswith(f"{path}:3:")


def test_tab_indentation_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    message = config_error(path, "database:\n\thost: 127.0.0.1\n")
    assert message.startswith(f"{path}:2:")


# --- missing or wrongly typed keys name file and key ------------------------------------------------


def test_missing_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    text = instance_yaml(tmp_path).replace(f', password: "{PASSWORD}"', "")
    assert config_error(path, text) == f"{path}: missing key database.password"


def test_missing_section_names_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    text = "".join(line for line in instance_yaml(tmp_path).splitlines(True) if not line.startswith("auth"))
    assert config_error(path, text) == f"{path}: missing key auth"


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("port: 54321", "port: abc", "database.port"),
        ("port: 54321", "port: 70000", "database.port"),
        ("port: 54321", "port: true", "database.port"),
        ("name: mks_db", "name: ''", "database.name"),
        ("token_ttl_seconds: 3600", "token_ttl_seconds: 0", "auth.token_ttl_seconds"),
        ("uploads: {dir: ", "uploads: {dir: relative/", "uploads.dir"),
        ("uploads: {dir: ", "uploads: [", "uploads"),
        ('jwt_secret: "jwt-secret-for-tests-0123456789abcdef"', 'jwt_secret: "short"', "auth.jwt_secret"),
    ],
)
def test_bad_value_names_file_and_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = tmp_path / "config.yml"
    text = instance_yaml(tmp_path / "uploads")
    assert old in text
    text = text.replace(old, new)
    if new == "uploads: [":
        text = text.replace(f"{tmp_path / 'uploads'}}}", f"{tmp_path / 'uploads'}]")
    message = config_error(path, text)
    assert message.startswith(f"{path}: ")
    assert key in message


def test_wrongly_typed_password_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    message = config_error(path, instance_yaml(tmp_path, password="918273645"))
    assert message == f"{path}: database.password must be a string, got an integer (quote the value)"


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    text = instance_yaml(tmp_path).replace("user: mks_user", "user: mks_user, pasword: x")
    assert "unknown key database.pasword" in config_error(path, text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("app:\n  max_upload_bytes: 100\n  log_level: LOUD\n", "app.log_level"),
        ("app:\n  max_upload_bytes: '100'\n  log_level: INFO\n", "app.max_upload_bytes"),
        ("app:\n  log_level: INFO\n", "app.max_upload_bytes"),
    ],
)
def test_bad_production_yml_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "production.yml"
    message = config_error(path, text, load_app_settings)
    assert message.startswith(f"{path}: ")
    assert key in message


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "production.yml"
    path.write_text("app: {max_upload_bytes: 10, log_level: debug}\n", encoding="utf-8")
    assert load_app_settings(path).log_level == "DEBUG"


# --- missing or unreadable files --------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "mks" / "config.yml"
    with pytest.raises(ConfigError) as info:
        load_instance_config(path)
    assert str(info.value) == f"{path}: file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_instance_config(tmp_path)


def test_empty_file_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    assert config_error(path, "") == f"{path}: the file must be a mapping, got nothing (null)"


# --- the entry points turn a ConfigError into one line and exit status 3 ----------------------------


def run_backend(args: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MKS_CONFIG": str(config), "PYTHONPATH": str(BACKEND_DIR)}
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=BACKEND_DIR, capture_output=True, text=True, timeout=60
    )


def test_wsgi_import_exits_3_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("database:\n  host: 127.0.0.1\n  port: 1\n  name: mks_db: x\n", encoding="utf-8")
    result = run_backend(["-c", "import mks_backend.wsgi"], config)
    assert result.returncode == 3
    assert result.stderr == (
        f"mks-backend: configuration error: {config}:4:15: mapping values are not allowed here\n"
    )


def test_check_config_exits_3_on_missing_file(tmp_path: Path) -> None:
    result = run_backend(["-m", "mks_backend", "check-config"], tmp_path / "absent.yml")
    assert result.returncode == 3
    assert (
        result.stderr.strip()
        == f"mks-backend: configuration error: {tmp_path / 'absent.yml'}: file not found"
    )


# --- without a database: start-up continues and health says 503 -------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_database_starts_and_reports_503(etc: Path) -> None:
    from mks_backend.app import create_app

    (etc / "config.yml").write_text(instance_yaml(etc / "uploads", port=closed_port()), encoding="utf-8")
    app = create_app(load_settings(etc / "config.yml", etc / "production.yml"))
    client = app.test_client()

    health = client.get("/api/v1/health")
    assert health.status_code == 503
    body = health.get_json()
    assert body["status"] == "unhealthy"
    assert body["database"].startswith("error: ")
    assert body["uploads"] == "ok"

    login = client.post("/api/v1/auth/login", json={"username": "a", "password": "b"})
    assert login.status_code == 503
    assert login.get_json()["error"].startswith("database unavailable")
    assert client.get("/api/v1/projects").status_code == 401
    assert client.post("/api/v1/auth/login", data="not json").status_code == 400


# --- pieces shared with other parts of the drill ------------------------------------------------------


def test_password_hash_format_matches_the_seeder() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("pbkdf2:sha256:20000$")
    assert verify_password(hashed, "s3cret")
    assert not verify_password(hashed, "wrong")
    assert not verify_password("not-a-hash", "s3cret")


def test_tokens_round_trip_and_expire(etc: Path) -> None:
    auth = load_instance_config(etc / "config.yml").auth
    assert decode_token(issue_token(42, auth), auth) == 42
    expired = issue_token(42, auth, now=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(InvalidToken):
        decode_token(expired, auth)
    with pytest.raises(InvalidToken):
        decode_token(issue_token(42, auth) + "x", auth)


def test_auth_failure_is_recognised_from_libpq_text() -> None:
    assert is_auth_failure(Exception('FATAL:  password authentication failed for user "mks_user"'))
    assert not is_auth_failure(Exception("connection refused"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("設計図 第1版.pdf", "設計図_第1版.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\報告書.docx", "報告書.docx"),
        ("..", "file"),
        (".bashrc", "bashrc"),
        ("a\x00b\u202egnp.exe", "abgnp.exe"),
        ('what?<is>"this"|.txt', "what__is__this__.txt"),
    ],
)
def test_upload_names_are_safe_and_keep_japanese(raw: str, expected: str) -> None:
    assert safe_component(raw) == expected


def test_long_names_fit_the_filesystem_and_keep_the_extension() -> None:
    name = safe_component("あ" * 300 + ".pdf")
    assert len(name.encode("utf-8")) <= 200
    assert name.endswith(".pdf")


def test_stored_names_cannot_escape_the_uploads_dir(tmp_path: Path) -> None:
    assert resolve_stored(tmp_path, "1/x.pdf") == tmp_path.resolve() / "1" / "x.pdf"
    for bad in ("../x", "/etc/passwd", "1/../../x", "."):
        with pytest.raises(ValueError):
            resolve_stored(tmp_path, bad)
