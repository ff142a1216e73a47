"""docker/compose.yaml, started and stopped by pytest-docker: the stack an operator's `compose up` gives.

pytest-docker's fixtures are given this project's compose command, file, setup and cleanup:
`docker_services` runs `<compose> build` and `<compose> up -d` before the first test that asks for it
and `<compose> down -v` at the end of the session. The compose command is podman-compose (PyPI,
the `containers` extra) where the podman CLI works, else the engine's own `docker compose`; with
neither every test here is skipped with the reason. The ports, the secrets and the base image come
from the environment the compose file reads (MKS_*), so the operator's run differs only in values.

After `down -v` the project must leave no container and no volume: `compose_project`'s teardown
(it is set up before `docker_services`, so it is torn down after it) checks that and fails the
session's last test otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo
from werkzeug.security import generate_password_hash

from fixtures.apps.reference.seeding import PASSWORD_METHOD, SeedPlan, seed
from fixtures.stack import tls
from fixtures.stack.composed import StackSecrets, reference_profile
from fixtures.stack.container_compose import ComposePorts, ComposeStack
from fixtures.stack.container_engine import DEFAULT_BASE, DOCKER_DIR
from fixtures.stack.local import StackSettings
from fixtures.stack.plugin import setting
from fixtures.stack.ports import PortLease
from fixtures.stack.sandbox import Sandbox, create_sandbox, remove_sandbox
from recovery import health
from recovery.commands import run
from recovery.waiting import Observation, wait_until
from scenarios.drills import BACKEND_MASTER, BACKEND_WORKERS, DB_RESTORE

HEALTH = reference_profile().http.health.path  # compose.yaml builds the reference backend

pytestmark = pytest.mark.stack

COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
PROJECT_LABEL = "com.docker.compose.project"  # set by docker compose and by podman-compose


@dataclass(frozen=True)
class ComposeTool:
    command: list[str]  # the compose command without -f/-p
    engine_cli: str  # the CLI of the engine the compose command drives (podman | docker)


def find_compose() -> ComposeTool | str:
    """podman-compose with a working podman, else `docker compose`; else the reason there is none."""
    reasons = []
    podman_compose = shutil.which("podman-compose") or str(Path(sys.executable).with_name("podman-compose"))
    if Path(podman_compose).is_file() and shutil.which("podman"):
        probe = run(["podman", "info", "--format", "{{.Host.OS}}"], timeout=60, check=False)
        if probe.returncode == 0:
            # no pod: the services use the host's network; builds too (apt and pip reach their mirrors)
            return ComposeTool([podman_compose, "--in-pod=false", "--podman-build-args=--network=host"],
                               "podman")
        reasons.append(f"podman info failed: {(probe.stderr or probe.stdout).strip()[:200]}")
    else:
        reasons.append("no podman-compose with a podman CLI (pip install podman-compose: containers extra)")
    if shutil.which("docker"):
        probe = run(["docker", "compose", "version"], timeout=30, check=False)
        if probe.returncode == 0:
            return ComposeTool(["docker", "compose"], "docker")
        reasons.append("`docker compose` is not installed")
    return "compose stack: no compose command works here: " + "; ".join(reasons)


@dataclass(frozen=True)
class ComposeProject:
    name: str
    tool: ComposeTool
    env: dict[str, str]  # what compose.yaml reads
    sandbox: Sandbox  # the secrets, the CA, the backups and the uploads folder
    ca_file: Path
    ports: ComposePorts
    secrets: StackSecrets

    @property
    def pg_port(self) -> int:
        return self.ports.pg

    @property
    def https_port(self) -> int:
        return self.ports.https

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def leftovers(self) -> list[str]:
        found = []
        for kind in ("ps -a", "volume ls"):
            label = f"label={PROJECT_LABEL}={self.name}"
            argv = [self.tool.engine_cli, *kind.split(), "-q", "--filter", label]
            out = run(argv, timeout=60, check=False).stdout
            found += [f"{kind.split()[0]} {line}" for line in out.split()]
        return found


def _write_secrets(folder: Path, pg_port: int, stack_secrets: StackSecrets, live_dir: Path) -> None:
    """The files compose.yaml mounts from $MKS_SECRETS (README.md: the operator writes the same)."""
    folder.mkdir(mode=0o700)
    (folder / "pg-superuser").write_text(stack_secrets.superuser_password + "\n")
    (folder / "pg-app").write_text(stack_secrets.app_password + "\n")
    config = {"database": {"host": "127.0.0.1", "port": pg_port, "name": "mks_db", "user": "mks_user",
                           "password": stack_secrets.app_password},
              "uploads": {"dir": "/opt/mks/uploads"},
              "auth": {"jwt_secret": stack_secrets.jwt_secret, "token_ttl_seconds": 3600}}
    (folder / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "tls").mkdir(mode=0o700)
    for name in ("fullchain.pem", "privkey.pem"):
        shutil.copyfile(live_dir / name, folder / "tls" / name)
    for path in folder.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


@pytest.fixture(scope="session")
def compose_project(pytestconfig: pytest.Config, stack_settings: StackSettings) -> Iterator[ComposeProject]:
    from fixtures.stack.container_engine import EngineUnavailable, find_engine

    tool = find_compose()
    if isinstance(tool, str):
        pytest.skip(tool)
    try:
        find_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"compose stack: {exc.reason}")
    base = setting(pytestconfig, "drill_container_base") or DEFAULT_BASE
    if run([tool.engine_cli, "image", "exists", base], timeout=60, check=False).returncode != 0:
        # no registry here: the base image is made locally (scripts/container-engine.sh) and named
        pytest.skip(f"compose stack: the base image {base} is not in the engine (--drill-container-base)")
    sandbox = create_sandbox(stack_settings.base_dir, "compose", stack_settings.service_account())
    lease = PortLease(stack_settings.base_dir)
    try:
        pg_port, backend_port, https_port = (lease.take() for _ in range(3))
        tls.create_ca(sandbox)
        paths = tls.issue_server_cert(sandbox)
        stack_secrets = StackSecrets.generate()
        folder = sandbox.path("/etc/mks-compose")
        _write_secrets(folder, pg_port, stack_secrets, paths.live_dir)
        env = {"MKS_BASE": base,
               "MKS_SECRETS": str(folder), "MKS_UPLOADS": str(sandbox.path("/opt/mks/uploads")),
               "MKS_PG_PORT": str(pg_port), "MKS_BACKEND_PORT": str(backend_port),
               "MKS_HTTPS_PORT": str(https_port)}
        ports = ComposePorts(pg_port, backend_port, https_port)
        project = ComposeProject(f"mks-compose-{sandbox.root.name}".lower(), tool, env, sandbox,
                                 paths.ca_cert, ports, stack_secrets)
        yield project
        left = project.leftovers()
        assert not left, f"compose down -v left {left}"
    finally:
        lease.release()
        remove_sandbox(sandbox.root)


# ---- pytest-docker's fixtures, for this project ---------------------------------------------------

@pytest.fixture(scope="session")
def docker_compose_command(compose_project: ComposeProject) -> str:
    env = " ".join(f"{key}={shlex.quote(value)}" for key, value in compose_project.env.items())
    return f"env {env} " + shlex.join(compose_project.tool.command)


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name(compose_project: ComposeProject) -> str:
    return compose_project.name


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["build", "up -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v"]


@pytest.fixture(scope="session")
def compose_stack(compose_project: ComposeProject, docker_services: object) -> ComposeProject:
    """The project up: health 200 through nginx over TLS (the backend migrates the schema first)."""
    context = ssl.create_default_context(cafile=str(compose_project.ca_file))
    with httpx.Client(base_url=compose_project.https_url, verify=context, timeout=3) as client:
        wait_until("the compose stack's health through nginx to be 200", lambda: health.probe(client, HEALTH),
                   timeout=180, interval=0.5)
    _create_admin(compose_project)
    return compose_project


def _client(project: ComposeProject) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(project.ca_file))
    return httpx.Client(base_url=project.https_url, verify=context, timeout=10)


def _create_admin(project: ComposeProject) -> None:
    conninfo = make_conninfo(host="127.0.0.1", port=project.pg_port, dbname="mks_db", user="mks_user",
                             password=project.secrets.app_password, connect_timeout=5)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO users (username, password_hash, display_name, role) "
                     "VALUES ('admin', %s, 'admin', 'admin')",
                     (generate_password_hash(project.secrets.admin_password, method=PASSWORD_METHOD),))


def test_compose_stack_serves_health_tls_and_login(compose_stack: ComposeProject) -> None:
    project = compose_stack
    with _client(project) as client:
        answer = health.probe(client, HEALTH)
        assert answer.status == 200, answer
        # TLS: the certificate is the stack's own (trusted only through its CA), for 127.0.0.1
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{project.https_url}{HEALTH}", verify=ssl.create_default_context(), timeout=5)
        login = client.post("/api/v1/auth/login",
                            json={"username": "admin", "password": project.secrets.admin_password})
        assert login.status_code == 200, login.text[:200]
        token = login.json()["token"]
        wrong = client.post("/api/v1/auth/login",
                            json={"username": "admin", "password": "not-" + project.secrets.admin_password})
        assert wrong.status_code in (401, 403), wrong.text[:200]
        me = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text[:200]
    # the superuser's password is the secret's, and PostgreSQL listens on loopback only
    conninfo = make_conninfo(host="127.0.0.1", port=project.pg_port, dbname="postgres", user="postgres",
                             password=project.secrets.superuser_password, connect_timeout=5)
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def test_compose_backend_restarts_after_its_master_dies(compose_stack: ComposeProject) -> None:
    """restart: always is the runbook's Restart=always: a killed master is replaced by the engine."""
    project = compose_stack
    name = run([project.tool.engine_cli, "ps", "-q", "--filter", f"label={PROJECT_LABEL}={project.name}",
                "--filter", "label=com.docker.compose.service=backend"], timeout=60).stdout.split()
    assert len(name) == 1, name
    inspect = [project.tool.engine_cli, "inspect", "--format", "{{.State.Pid}}", name[0]]
    before = run(inspect, timeout=60).stdout
    # the master's death from outside, as the weekly drill does (an engine `kill` counts as a stop by
    # the user, which no restart policy undoes)
    os.kill(int(before), signal.SIGKILL)

    def restarted() -> Observation:
        pid = run(inspect, timeout=60, check=False).stdout.strip()
        return Observation(pid not in ("", "0", before.strip()), f"pid {pid}")

    wait_until("the engine to restart the backend", restarted, timeout=60, interval=0.2)
    with _client(project) as client:
        wait_until("health 200 after the restart", lambda: health.probe(client, HEALTH), timeout=60,
                   interval=0.2)


# ---- drills on the compose stack -----------------------------------------------------------------

@pytest.fixture(scope="session")
def compose_drill_stack(compose_stack: ComposeProject, stack_settings: StackSettings,
                        drill_scale: float) -> ComposeStack:
    from fixtures.stack.container_engine import EngineUnavailable, find_engine

    try:
        engine = find_engine()
    except EngineUnavailable as exc:  # compose runs, but the drills' service manager needs the API
        pytest.skip(f"drills on the compose stack: {exc.reason}")
    stack = ComposeStack("compose", stack_settings, compose_stack.sandbox, compose_stack.secrets,
                         compose_stack.ports, project=compose_stack.name, engine_url=engine.url,
                         ca_file=compose_stack.ca_file)
    seed(stack, SeedPlan.for_scale(drill_scale))  # as every drill stack: users, projects, documents
    return stack


@pytest.mark.parametrize("drill", [BACKEND_MASTER, BACKEND_WORKERS, DB_RESTORE], ids=lambda d: d.name)
def test_drill_on_the_compose_stack(drill, compose_drill_stack: ComposeStack, drill_runner) -> None:
    record = drill_runner(drill, compose_drill_stack)
    assert record.verdict == "passed"
    if drill is not DB_RESTORE:
        assert record.data_loss_rows == 0
