"""The host provider: profile errors before any build, the skip without an engine, and (with one) a
host shaped like production: systemd as PID 1, Debian's postgresql@15-main, the app's unit with its
declared environment only, a failing unit's status and journal in the error, nothing left behind.

The engine tests skip with the reason when no Docker-API engine answers; CI's container stage runs
them against podman (scripts/container-engine.sh).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixtures.apps.profile import REFERENCE_PROFILE, ProfileError, load_profile
from fixtures.stack.container_engine import EngineUnavailable
from fixtures.stack.local import StackSettings
from fixtures.stack.plugin import setting
from fixtures.stack.sandbox import remove_sandbox
from recovery.commands import run
from recovery.service_manager import ServiceError
from recovery.waiting import Observation, wait_until

NOWHERE = "unix:///nonexistent/mks-drill/docker.sock"
LEAK = "MKS_DRILL_HARNESS_ONLY"  # set in the harness's process: no service may see it


def _profile_with(tmp_path: Path, **host: object) -> Path:
    """A copy of the reference profile with a host section (its source and template by absolute path)."""
    data = yaml.safe_load(REFERENCE_PROFILE.read_text())
    folder = REFERENCE_PROFILE.parent
    data["source"] = str(folder / data["source"])
    data["config"]["template"] = str(folder / data["config"]["template"])
    data["host"] = host
    path = tmp_path / "profile.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize(("host", "key"), [
    ({"unit": "deploy/mks-backend.service"}, "host.unit"),
    ({"packages": ["libpq5", "Not A Package"]}, "host.packages[1]"),
    ({"user": "Bad User"}, "host.user"),
])
def test_a_profile_naming_what_does_not_exist_is_an_error_naming_the_key(tmp_path, host, key) -> None:
    from fixtures.stack.host_image import check_profile

    profile = load_profile(_profile_with(tmp_path, **host))
    with pytest.raises(ProfileError) as caught:
        check_profile(profile)
    assert key in str(caught.value), caught.value


def test_an_interpreter_of_this_machine_cannot_be_a_hosts(tmp_path) -> None:
    from fixtures.stack.host_image import check_profile

    data = yaml.safe_load(_profile_with(tmp_path).read_text())
    data["environment"] = {"python": sys.executable}
    (tmp_path / "profile.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r"environment\.python"):
        check_profile(load_profile(tmp_path / "profile.yml"))


def test_the_image_hash_follows_the_requirements_and_the_account(tmp_path) -> None:
    from fixtures.stack.host_image import content_hash
    from recovery.commands import RunAs

    reference = load_profile(REFERENCE_PROFILE)
    kiroku = load_profile(REFERENCE_PROFILE.parents[1] / "kiroku/profile.yml")
    account = RunAs("postgres", 101, 104, "/var/lib/postgresql")
    other = RunAs("postgres", 102, 104, "/var/lib/postgresql")
    base = "localhost/debian-base:bookworm"
    assert content_hash(base, reference, account) == content_hash(base, reference, account)
    assert content_hash(base, reference, account) != content_hash(base, kiroku, account)
    assert content_hash(base, reference, account) != content_hash(base, reference, other)


def test_drills_skip_when_docker_host_points_nowhere(tmp_path: Path) -> None:
    (tmp_path / "test_child.py").write_text(
        "def test_needs_a_stack(stack):\n    raise AssertionError('must not run without an engine')\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DOCKER_HOST": NOWHERE, "PYTHONPATH": str(root)}
    result = run([sys.executable, "-m", "pytest", "-p", "fixtures.stack.plugin", "-p", "no:cacheprovider",
                  "-rs", "-q", "--rootdir", str(tmp_path), "-c", os.devnull, "--drill-provider=host",
                  f"--drill-reports={tmp_path / 'reports'}", f"--drill-base-dir={tmp_path / 'base'}",
                  str(tmp_path / "test_child.py")], timeout=120, env=env, cwd=tmp_path, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 skipped" in out and "passed" not in out and "failed" not in out, out
    assert "host provider: no Docker-API engine" in out and NOWHERE in out, out


# ---- with an engine --------------------------------------------------------------------------

def _provider(pytestconfig: pytest.Config, settings: StackSettings):
    from fixtures.stack.container import ContainerSettings
    from fixtures.stack.host import HostProvider

    return HostProvider(settings, ContainerSettings(
        base_image=setting(pytestconfig, "drill_container_base") or "debian:bookworm-slim",
        engine_url=setting(pytestconfig, "drill_engine_url")))


@pytest.fixture
def host_stack(pytestconfig: pytest.Config, stack_settings: StackSettings, monkeypatch: pytest.MonkeyPatch):
    provider = _provider(pytestconfig, stack_settings)
    monkeypatch.setenv(LEAK, "the harness's own")
    try:
        stack = provider.stack("host")
    except EngineUnavailable as exc:
        pytest.skip(f"host provider: {exc.reason}")
    stack.up()
    label = f"mks-drill.stack={stack.root.name}"
    yield stack
    stack.down()
    client = provider.engine().client()
    assert not client.containers.list(all=True, filters={"label": label}), "containers left after down()"


def _in_host(stack, *argv: str) -> str:
    code, out = stack.services.run(*argv)
    assert code == 0, f"{argv}: exit {code}: {out}"
    return out


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.stack
def test_a_host_shaped_like_production(host_stack) -> None:
    from fixtures.stack.host_services import HostServiceManager

    stack = host_stack
    manager = stack.target().service_manager()
    assert isinstance(manager, HostServiceManager)
    with stack.client() as client:
        assert stack.health(client) == 200
        assert stack.login(client)
    assert _in_host(stack, "cat", "/proc/1/comm").strip() == "systemd"
    # Debian's PostgreSQL: the cluster's own unit, pg_ctlcluster's cluster, Debian's paths
    assert "postgresql@15-main.service: active (running)" in manager.status("postgresql").detail
    clusters = _in_host(stack, "pg_lsclusters", "--no-header")
    assert clusters.split()[:4] == ["15", "main", str(stack.pg_port), "online"], clusters
    assert "/var/log/postgresql/postgresql-15-main.log" in clusters
    _in_host(stack, "test", "-s", "/var/log/postgresql/postgresql-15-main.log")
    assert _in_host(stack, "sudo", "-u", "postgres", "psql", "-p", str(stack.pg_port), "-Atc",
                    "SELECT 1").strip() == "1"
    conf = _in_host(stack, "cat", "/etc/postgresql/15/main/postgresql.conf")
    assert "/backup/mks/wal/%f" in conf.rsplit("archive_command", 1)[1].splitlines()[0]
    # the app as production deploys it
    unit = _in_host(stack, "cat", "/etc/systemd/system/mks-backend.service")
    for line in ("Restart=always", "User=", "EnvironmentFile=/etc/default/mks-backend",
                 "WorkingDirectory=/opt/mks/backend"):
        assert line in unit, unit
    _in_host(stack, "test", "-f", "/opt/mks/backend/mks_backend/__init__.py")
    _in_host(stack, "test", "-f", "/etc/mks/config.yml")
    _in_host(stack, "test", "-L", "/etc/nginx/sites-enabled/mks")
    _in_host(stack, "test", "-f", "/etc/letsencrypt/live/example.com/fullchain.pem")
    assert _in_host(stack, "systemctl", "is-enabled", "mks-backend").strip() == "enabled"
    # the declared environment only: the unit's, never the harness's
    for name in ("mks-backend", "postgresql", "nginx"):
        pid = manager.main_pid(name)
        assert pid, manager.status(name)
        env = _environ(pid)
        assert LEAK not in env, f"{name} sees the harness's {LEAK}"
        assert "PYTEST_CURRENT_TEST" not in env, name
    backend = _environ(manager.main_pid("mks-backend"))
    assert backend["MKS_CONFIG"] == "/etc/mks/config.yml" and backend["LANG"] == "C.UTF-8", backend
    # the faults of the other providers act on the host's processes, seen from this machine
    master = manager.main_pid("mks-backend")
    assert "gunicorn" in Path(f"/proc/{master}/cmdline").read_bytes().decode(errors="replace")
    os.kill(master, signal.SIGKILL)  # Restart=always
    wait_until("systemd to restart mks-backend",
               lambda: Observation(manager.is_active("mks-backend")
                                   and manager.main_pid("mks-backend") not in (None, master),
                                   manager.status("mks-backend").detail), timeout=30, interval=0.1)
    stack.wait_healthy(timeout=30)


@pytest.mark.stack
def test_a_unit_that_fails_to_start_shows_its_status_and_journal(host_stack) -> None:
    stack = host_stack
    stack.config_file.write_text("database: [this is not, the app's config\n")
    started = time.monotonic()
    with pytest.raises(ServiceError) as caught:
        stack.services.restart("mks-backend")
    message = str(caught.value)
    assert "--- systemctl status mks-backend.service ---" in message, message
    assert "--- journalctl -u mks-backend.service ---" in message, message
    assert "config" in message.lower(), message  # the app's own words about its config
    assert time.monotonic() - started < 30, "a failing unit is reported when it fails, not at a timeout"


@pytest.mark.stack
def test_a_killed_harness_leaves_no_host(pytestconfig, stack_settings, tmp_path) -> None:
    """The harness SIGKILLed with a host up: its watchdog removes the container."""
    try:
        engine = _provider(pytestconfig, stack_settings).engine()
    except EngineUnavailable as exc:
        pytest.skip(f"host provider: {exc.reason}")
    base = stack_settings.base_dir
    script = tmp_path / "child.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from fixtures.stack.composed import StackSettings\n"
        "from fixtures.stack.container import ContainerSettings\n"
        "from fixtures.stack.host import HostProvider\n"
        f"settings = StackSettings(base_dir=Path({str(base)!r}))\n"
        f"provider = HostProvider(settings, ContainerSettings(base_image={provider_base(pytestconfig)!r}, "
        f"engine_url={engine.url!r}))\n"
        "stack = provider.stack('killed').up()\n"
        f"Path({str(tmp_path / 'name')!r}).write_text(stack.runtime.name)\n"
        "time.sleep(600)\n")
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "child.out"
    from recovery.commands import spawn

    child = spawn([sys.executable, str(script)], env={"PYTHONPATH": str(root)}, cwd=root, stdout_path=out)
    try:
        named = tmp_path / "name"
        wait_until("the child's host to be up", lambda: Observation(
            named.exists() or child.poll() is not None, out.read_text()[-2000:]), timeout=120, interval=0.2)
        assert child.poll() is None, out.read_text()
        name = named.read_text()
        client = engine.client()
        assert client.containers.list(filters={"name": name}), f"{name} not running"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        wait_until(f"the watchdog to remove {name}", lambda: Observation(
            not client.containers.list(all=True, filters={"name": name}), name), timeout=30, interval=0.2)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        named = tmp_path / "name"
        if named.exists():  # the sandbox root is the next run's to reap; this test's to remove now
            remove_sandbox(base / named.read_text().removeprefix("mks-drill-"))


def provider_base(pytestconfig: pytest.Config) -> str:
    return setting(pytestconfig, "drill_container_base") or "debian:bookworm-slim"


def test_the_verbatim_runner_reads_each_commands_exit_and_names_what_it_cannot_run(tmp_path) -> None:
    """gate/host_runner.py's script and its reading, run here with bash (the host runs the same)."""
    from gate.host_runner import block_script, not_run_reason, parse_output
    from gate.parser import parse

    runbook = parse("# R\n## S\n```bash\necho one\nfalse\nkill -9 <PID>\n# gate: skip doc only\n"
                    "git clone https://github.com/your-org/app.git\nexit 3\necho never\n```\n")
    commands = runbook.sections[-1].blocks[0].commands
    reasons = [not_run_reason(c) for c in commands]
    assert reasons[:2] == [None, None] and "<PID>" in reasons[2] and reasons[3].startswith("gate: skip")
    runnable = [c for c, r in zip(commands, reasons, strict=True) if r is None]
    assert [c.text for c in runnable] == ["echo one", "false", "exit 3", "echo never"]
    result = run(["bash", "-c", block_script(runnable).replace("cd /root", f"cd {tmp_path}")], timeout=30,
                 check=False)
    parsed = parse_output(result.stdout, runnable)
    assert [status for status, _ in parsed] == [0, 1, None, None], result.stdout
    assert parsed[0][1] == "one"
