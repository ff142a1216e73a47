"""One health probe: GET the backend's health path, directly or through nginx over TLS.

The path lives in one place, `Target.health_path` (default `recovery.target.HEALTH_PATH`). No answer
is an observation (status None), not an exception, so that a probe can be polled by
`recovery.waiting.wait_until` as it is.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

from recovery.target import HEALTH_PATH, Target
from recovery.waiting import WaitTimeout, wait_until


@dataclass(frozen=True)
class Health:
    url: str
    status: int | None  # None: no HTTP answer at all
    detail: str  # "<url>: <status> <body>" or "<url>: <error type>: <error>"

    @property
    def ok(self) -> bool:
        return self.status == 200

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.detail


def probe(client: httpx.Client, path: str = HEALTH_PATH, **request: object) -> Health:
    """One GET of the health path with the client (relative to its base URL)."""
    url = f"{str(client.base_url).rstrip('/')}{path}"
    try:
        response = client.get(path, **request)  # type: ignore[arg-type]
    except (httpx.HTTPError, OSError) as exc:
        return Health(url, None, f"{url}: {type(exc).__name__}: {exc}")
    return Health(url, response.status_code, f"{url}: {response.status_code} {response.text[:200]}")


def probe_url(base_url: str, path: str = HEALTH_PATH, *, verify: ssl.SSLContext | bool = True,
              timeout: float = 5.0) -> Health:
    """One health GET below base_url, on a connection of its own."""
    with httpx.Client(base_url=base_url, verify=verify, timeout=timeout) as client:
        return probe(client, path)


def tls_context(target: Target) -> ssl.SSLContext:
    """The context that verifies the target's public URL (against its CA file when it has one)."""
    if target.ca_file:
        return ssl.create_default_context(cafile=target.ca_file)
    return ssl.create_default_context()


def backend(target: Target, timeout: float = 5.0) -> Health:
    """The backend itself, at backend_url (the runbook's `curl http://localhost:5100/...`)."""
    return probe_url(target.backend_url, target.health_path, timeout=timeout)


def public(target: Target, timeout: float = 5.0) -> Health:
    """Through nginx over TLS, verified: what a user reaches."""
    return probe_url(target.public_url, target.health_path, verify=tls_context(target), timeout=timeout)


def wait_healthy(target: Target, timeout: float, *, through_nginx: bool = False,
                 interval: float | None = None) -> Health:
    """Health 200 within timeout, or WaitTimeout whose `last` is the last answer."""
    check = public if through_nginx else backend
    where = target.public_url if through_nginx else target.backend_url
    return wait_until(f"health 200 at {where}", lambda: check(target), timeout=timeout,
                      interval=0.5 if interval is None else interval, error=WaitTimeout)


__all__ = ["Health", "WaitTimeout", "backend", "probe", "probe_url", "public", "tls_context", "wait_healthy"]
