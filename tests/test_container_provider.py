"""The container provider: the skip without an engine, and (with one) a stack's containers as services.

The engine tests skip with the reason when no Docker-API engine answers (DOCKER_HOST, or
--drill-engine-url, else /var/run/docker.sock); CI's container stage runs them against podman.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import yaml

from fixtures.stack.container_engine import DOCKER_DIR, EngineUnavailable, find_engine
from fixtures.stack.local import StackSettings
from fixtures.stack.plugin import setting
from recovery.commands import run
from recovery.services import auto_recover
from recovery.waiting import Observation, wait_until

NOWHERE = "unix:///nonexistent/mks-drill/docker.sock"


def test_no_engine_is_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    with pytest.raises(EngineUnavailable) as caught:
        find_engine()
    assert "no Docker-API engine" in caught.value.reason
    assert NOWHERE in caught.value.reason and "DOCKER_HOST" in caught.value.reason


def test_drills_skip_when_docker_host_points_nowhere(tmp_path: Path) -> None:
    """A whole session with --drill-provider=docker and no engine: skipped with the reason, not failed."""
    (tmp_path / "test_child.py").write_text(
        "def test_needs_a_stack(stack):\n    raise AssertionError('must not run without an engine')\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DOCKER_HOST": NOWHERE, "PYTHONPATH": str(root)}
    result = run([sys.executable, "-m", "pytest", "-p", "fixtures.stack.plugin", "-p", "no:cacheprovider",
                  "-rs", "-q", "--rootdir", str(tmp_path), "-c", os.devnull, "--drill-provider=docker",
                  f"--drill-reports={tmp_path / 'reports'}", f"--drill-base-dir={tmp_path / 'base'}",
                  str(tmp_path / "test_child.py")], timeout=120, env=env, cwd=tmp_path, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 skipped" in out and "passed" not in out and "failed" not in out, out
    assert "container provider: no Docker-API engine" in out and NOWHERE in out, out


def test_no_compose_command_is_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_compose_stack import find_compose

    monkeypatch.setenv("PATH", "/nonexistent")  # neither podman nor docker can be found
    reason = find_compose()
    assert isinstance(reason, str) and reason.startswith("compose stack: no compose command"), reason


def test_compose_file_matches_the_images() -> None:
    compose = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgresql", "backend", "nginx"}
    for name, service in services.items():
        build = service["build"]
        assert (DOCKER_DIR / build["context"]).resolve().is_relative_to(DOCKER_DIR.parent)
        assert (DOCKER_DIR / build["context"] / build["dockerfile"]).is_file(), name
        assert "BASE" in build["args"]
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert services["backend"]["restart"] == "always"  # systemd's Restart=always
    assert "password" not in (DOCKER_DIR / "compose.yaml").read_text().lower().replace("_password_file", "")


# ---- with an engine --------------------------------------------------------------------------

@pytest.fixture
def container_stack(pytestconfig: pytest.Config, stack_settings: StackSettings):
    from fixtures.stack.container import ContainerProvider, ContainerSettings

    provider = ContainerProvider(stack_settings, ContainerSettings(
        base_image=setting(pytestconfig, "drill_container_base") or "debian:bookworm-slim",
        engine_url=setting(pytestconfig, "drill_engine_url")))
    try:
        stack = provider.stack("containers")
    except EngineUnavailable as exc:
        pytest.skip(f"container provider: {exc.reason}")
    stack.up()
    label = f"mks-drill.stack={stack.root.name}"
    yield stack
    stack.down()
    client = provider.engine().client()
    assert not client.containers.list(all=True, filters={"label": label}), "containers left after down()"
    assert not client.volumes.list(filters={"label": label}), "volume left after down()"


@pytest.mark.stack
def test_container_stack_services(container_stack) -> None:
    from fixtures.stack.container_services import ContainerServiceManager

    stack = container_stack
    with stack.client() as client:
        assert stack.health(client) == 200
        assert stack.login(client)
    manager = stack.target().service_manager()
    assert isinstance(manager, ContainerServiceManager)
    for name in ("postgresql", "mks-backend", "nginx"):
        assert manager.is_active(name), manager.status(name)
    # the backend's master is the container's main process, seen from the host
    master = manager.main_pid("mks-backend")
    assert master and "gunicorn" in Path(f"/proc/{master}/cmdline").read_bytes().decode(errors="replace")
    os.kill(master, signal.SIGKILL)  # Restart=always: the engine's restart policy brings it back
    wait_until("the engine to restart mks-backend",
               lambda: Observation(manager.is_active("mks-backend")
                                   and manager.main_pid("mks-backend") not in (None, master),
                                   str(manager.status("mks-backend"))), timeout=30, interval=0.1)
    stack.wait_healthy(timeout=30)
    # a check made while the engine's restart still loads sees it activating and waits for it:
    # one crash, one restart (without the start period the auto recovery restarted it once more)
    restarts = manager._container("mks-backend").attrs["RestartCount"]
    os.kill(manager.main_pid("mks-backend"), signal.SIGKILL)
    wait_until("the engine's restart to be loading",  # gunicorn loads the app for about a second
               lambda: Observation(manager.status("mks-backend").active_state == "activating",
                                   str(manager.status("mks-backend"))), timeout=30, interval=0.02)
    journal = auto_recover(stack.target(), settle=30)
    assert [step.name for step in journal.steps] == ["check", "wait-restart"], journal.steps
    assert manager._container("mks-backend").attrs["RestartCount"] == restarts + 1
    # PostgreSQL has no restart policy (as Debian's unit): stopped stays stopped until started
    manager.stop("postgresql")
    assert manager.status("postgresql").active_state == "inactive"
    manager.start("postgresql")
    manager.reload("nginx")
    manager.restart("mks-backend")
    stack.wait_healthy(timeout=30)
    # PostgreSQL logs to its own file (as on Debian); the manager's tail shows it after the container's
    assert "ready to accept connections" in manager.log_tail("postgresql", 50), manager.log_tail("postgresql")
    secrets = stack.secrets.values()
    assert not any(s in manager.log_tail(name, 200) for name in manager.containers for s in secrets)


# ---- the container-only drills can fail --------------------------------------------------------

def test_a_container_fault_does_not_bite_another_provider() -> None:
    from fixtures.engine.faults import FaultDidNotBite
    from fixtures.stack.container_faults import KillPostgresContainer, LosePostgresData

    class SupervisedStack:  # a stand-in: only its services' type matters to these faults
        services = object()

    for fault in (KillPostgresContainer(), LosePostgresData()):
        with pytest.raises(FaultDidNotBite, match="needs the container provider"):
            fault.inject(SupervisedStack())  # type: ignore[arg-type]


def test_pgpass_password_reads_escapes(tmp_path: Path) -> None:
    from fixtures.stack.container_faults import pgpass_password

    passfile = tmp_path / "pgpass"
    passfile.write_text("# comment\n127.0.0.1:5432:*:mks_user:app\n127.0.0.1:5432:*:postgres:a\\:b\\\\c\n")
    assert pgpass_password(passfile, "postgres") == "a:b\\c"
    assert pgpass_password(passfile, "mks_user") == "app"
    assert pgpass_password(passfile, "nobody") is None


@pytest.fixture
def docker_stack(pytestconfig: pytest.Config, request: pytest.FixtureRequest):
    provider = setting(pytestconfig, "drill_provider") or "local"
    if provider != "docker":
        pytest.skip(f"container-only drill: needs --drill-provider=docker (this run's is {provider})")
    return request.getfixturevalue("stack")


def _failed(drill_runner, drill, stack) -> str:
    from fixtures.engine.drill import DrillFailed

    with pytest.raises(DrillFailed) as caught:
        drill_runner(drill, stack)
    assert caught.value.record.verdict == "failed"
    return caught.value.record.failure_reason


@pytest.mark.stack
def test_a_restore_without_a_new_cluster_fails_the_volume_drill(docker_stack, drill_runner) -> None:
    from recovery import full_system
    from scenarios.drills import PG_VOLUME_LOST, sabotaged

    def restore_only(run) -> None:  # the full recovery straight away: no cluster to restore into
        run.action(full_system.full_recovery, run.target, level=run.record.level, checks=False)

    reason = _failed(drill_runner, sabotaged(PG_VOLUME_LOST, recover=restore_only), docker_stack)
    assert reason.startswith("recovery failed: full_recovery failed at step postgresql"), reason


@pytest.mark.stack
def test_no_restart_fails_the_container_kill_drill(docker_stack, drill_runner) -> None:
    from scenarios.drills import PG_CONTAINER_KILL, sabotaged

    def backend_only(run) -> None:  # the backend's auto recovery, PostgreSQL left dead
        run.action(auto_recover, run.target, settle=5.0)

    reason = _failed(drill_runner, sabotaged(PG_CONTAINER_KILL, recover=backend_only), docker_stack)
    assert "mks-backend not healthy" in reason and "database" in reason, reason
