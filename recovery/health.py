"""One health probe: GET the backend's health path, directly or through nginx over TLS.

The path lives in one place, `Target.health_path`, and what a healthy answer must also say in
`Target.app.health_expect` (dotted JSON paths and their values): an app whose health answers 200 in
a degraded mode is healthy only when its answer says so. No answer is an observation (status None),
not an exception, so that a probe can be polled by `recovery.waiting.wait_until` as it is.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from recovery.errors import RecoveryError
from recovery.service_manager import ServiceStatus
from recovery.target import Target, TargetError
from recovery.waiting import Observation, WaitTimeout, wait_until


@dataclass(frozen=True)
class Health:
    url: str
    status: int | None  # None: no HTTP answer at all
    detail: str  # "<url>: <status> <body>" or "<url>: <error type>: <error>"
    unmet: str | None = None  # a 200 whose body lacks what a healthy answer says: "mode is 'fallback'"
    seconds: float | None = None  # start_backend's: from the start until this answer

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.unmet is None

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.detail


def json_path(data: Any, dotted: str) -> Any:
    """data["a"]["b"] for "a.b"; None when a part is missing (an empty path is data itself)."""
    for part in filter(None, dotted.split(".")):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def unmet(body: str, expect: Mapping[str, str]) -> str | None:
    """Why a 200 answer is not healthy by `expect` (None: it is)."""
    if not expect:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return "the answer is not JSON"
    for dotted, wanted in expect.items():
        seen = json_path(data, dotted)
        if str(seen) != str(wanted):
            return f"{dotted} is {seen!r}, not {wanted!r}"
    return None


def probe(client: httpx.Client, path: str, expect: Mapping[str, str] | None = None,
          **request: object) -> Health:
    """One GET of the health path with the client (relative to its base URL)."""
    url = f"{str(client.base_url).rstrip('/')}{path}"
    try:
        response = client.get(path, **request)  # type: ignore[arg-type]
    except (httpx.HTTPError, OSError) as exc:
        return Health(url, None, f"{url}: {type(exc).__name__}: {exc}")
    why = unmet(response.text, expect or {}) if response.status_code == 200 else None
    detail = f"{url}: {response.status_code} {response.text[:200]}" + (f" ({why})" if why else "")
    return Health(url, response.status_code, detail, why)


def probe_url(base_url: str, path: str, *, verify: ssl.SSLContext | bool = True, timeout: float = 5.0,
              expect: Mapping[str, str] | None = None) -> Health:
    """One health GET below base_url, on a connection of its own."""
    with httpx.Client(base_url=base_url, verify=verify, timeout=timeout) as client:
        return probe(client, path, expect)


def tls_context(target: Target) -> ssl.SSLContext:
    """The context that verifies the target's public URL (against its CA file when it has one)."""
    if target.ca_file:
        return ssl.create_default_context(cafile=target.ca_file)
    return ssl.create_default_context()


def _path(target: Target) -> str:
    if not target.health_path:
        raise TargetError(f"target {target.name}: health_path is not set (the app's health URL path)")
    return target.health_path


def backend(target: Target, timeout: float = 5.0) -> Health:
    """The backend itself, at backend_url (the runbook's `curl http://localhost:5100/...`)."""
    _path(target)
    return probe_url(target.backend_url, target.health_path, timeout=timeout, expect=target.app.health_expect)


def public(target: Target, timeout: float = 5.0) -> Health:
    """Through nginx over TLS, verified: what a user reaches."""
    _path(target)
    return probe_url(target.public_url, target.health_path, verify=tls_context(target), timeout=timeout,
                     expect=target.app.health_expect)


def wait_healthy(target: Target, timeout: float, *, through_nginx: bool = False,
                 interval: float | None = None) -> Health:
    """Health 200 within timeout, or WaitTimeout whose `last` is the last answer."""
    check = public if through_nginx else backend
    where = target.public_url if through_nginx else target.backend_url
    return wait_until(f"health 200 at {where}", lambda: check(target), timeout=timeout,
                      interval=0.5 if interval is None else interval, error=WaitTimeout)


def start_backend(target: Target, timeout: float, interval: float = 0.05) -> Health:
    """Start the backend and wait until its health answers 200, then until the service manager counts
    it as started (a check of the services right after must not find it still "activating").

    Spawned without the manager's own wait (supervisord's startsecs is a timer), and polled often:
    the backend's downtime ends when it answers, not at the next tick of a coarse poll. A service that
    fails, or is respawned after an exit, while it is awaited is a RecoveryError with its log.
    """
    manager, name = target.service_manager(), target.services.backend
    manager.start_nowait(name)
    first = manager.status(name).pid

    def checked() -> ServiceStatus:
        status = manager.status(name)
        respawned = first is not None and status.pid is not None and status.pid != first
        if status.active_state == "failed" or status.manager_state == "BACKOFF" or respawned:
            raise RecoveryError(f"{name} did not start ({status.detail})\n--- {name} log ---\n"
                                f"{manager.log_tail(name)}")
        return status

    def answers() -> Health | bool:
        return checked().active_state in ("active", "activating") and backend(target)

    def started() -> Observation:
        status = checked()
        return Observation(status.is_active, status.detail)

    began = time.monotonic()
    answer = wait_until(f"health 200 at {target.backend_url}", answers, timeout=timeout, interval=interval,
                        error=WaitTimeout)
    assert isinstance(answer, Health)
    answer = dataclasses.replace(answer, seconds=round(time.monotonic() - began, 3))
    wait_until(f"{name} to count as started", started, timeout=timeout, interval=interval, error=WaitTimeout)
    return answer


__all__ = ["Health", "WaitTimeout", "backend", "json_path", "probe", "probe_url", "public", "start_backend",
           "tls_context", "wait_healthy"]
