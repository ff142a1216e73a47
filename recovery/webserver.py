"""Webサーバー復旧: `nginx -t` before any reload, a reload that drops no request, and the certificate.

Where this differs from the runbook, and why:
- `systemctl reload nginx` runs even when the configuration is broken (the reload then fails
  quietly and the old config keeps serving, or a later restart takes the site down); here the
  reload is refused unless `nginx -t` passes, and the site is checked over HTTPS afterwards.
- `openssl x509 -in .../cert.pem` reads a file, which may not be the certificate nginx serves
  (not reloaded since renewal, another path in the site config); here the expiry is read from the
  certificate the public URL actually presents, and after a renewal the served certificate must
  have changed and be good for at least the minimum number of days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from recovery import health
from recovery.actions import action, option
from recovery.errors import RecoveryError
from recovery.journal import Journal, Step
from recovery.target import Target
from recovery.waiting import Observation, WaitTimeout, wait_until

DEFAULT_MIN_DAYS = 30


class WebServerError(RecoveryError):
    """nginx's configuration, reload or certificate is not as it must be."""


@dataclass(frozen=True)
class ServedCertificate:
    subject: str
    serial: int
    not_after: dt.datetime
    sha256: str

    @property
    def days_left(self) -> float:
        return (self.not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400

    def describe(self) -> dict[str, object]:
        return {"subject": self.subject, "serial": f"{self.serial:x}",
                "not_after": self.not_after.isoformat(), "days_left": round(self.days_left, 2),
                "sha256": self.sha256}


def served_certificate(target: Target, timeout: float = 10.0) -> ServedCertificate:
    """The leaf certificate presented at target.public_url (verified against target.ca_file)."""
    parts = urlsplit(target.public_url)
    host, port = parts.hostname or "localhost", parts.port or 443
    context = health.tls_context(target)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise WebServerError(f"cannot read the certificate served at {host}:{port}: {exc}") from None
    if not der:
        raise WebServerError(f"{host}:{port} presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    return ServedCertificate(cert.subject.rfc4514_string(), cert.serial_number, cert.not_valid_after_utc,
                             hashlib.sha256(der).hexdigest())


def nginx_test(target: Target, step: Step) -> None:
    """`nginx -t` as the service account; a failure is a WebServerError carrying nginx's words."""
    argv = [target.nginx_binary, *target.nginx_args, "-t"]
    result = step.run(argv, timeout=30, run_as=target.service_account(), check=False)
    words = (result.stderr or result.stdout).strip()
    step.note("nginx_t", words.splitlines()[-3:])
    if not result.ok:
        last = words.splitlines()[-1] if words else f"exit status {result.returncode}"
        raise WebServerError(f"nginx -t failed; not reloading: {last}")


def _reload(target: Target, step: Step, timeout: float = 15.0) -> None:
    manager = target.service_manager()
    before = manager.status(target.services.web)
    manager.reload(target.services.web)
    try:
        answer: health.Health | None = health.wait_healthy(target, timeout, through_nginx=True, interval=0.2)
    except WaitTimeout as exc:
        answer = exc.result  # type: ignore[assignment]
    code = answer.status if answer is not None else None
    after = manager.status(target.services.web)
    step.note("master_pid", f"{before.pid} -> {after.pid}")
    step.note("public_health", code)
    if code != 200:
        raise WebServerError(f"after reload {target.public_url} answers {code}, not 200")


def _plan_nginx_test(journal: Journal, target: Target) -> None:
    journal.plan("nginx-t", "Nginx設定テスト", argv=[target.nginx_binary, *target.nginx_args, "-t"])


@action("nginx-test", "Nginx設定テスト", plan=_plan_nginx_test, cli="nginx-test",
        help="Nginx設定テスト (nginx -t)")
def nginx_check(journal: Journal, target: Target) -> None:
    """Nginx設定テスト (`nginx -t`) only."""
    with journal.step("nginx-t", "Nginx設定テスト") as step:
        nginx_test(target, step)


RELOAD_PLAN = (
    ("nginx-t", "Nginx設定テスト", "nginx -t as the service account; stop if it fails"),
    ("reload", "Nginx再読み込み", "graceful reload (HUP), then health 200 over HTTPS"),
)


@action("nginx-reload", "Nginx再読み込み", plan=RELOAD_PLAN, cli="nginx-reload",
        help="Nginx再読み込み, only after nginx -t passes")
def reload_nginx(journal: Journal, target: Target) -> None:
    """`nginx -t`, and only if it passes, a graceful reload; then HTTPS health 200."""
    with journal.step("nginx-t", "Nginx設定テスト") as step:
        nginx_test(target, step)
    with journal.step("reload", "Nginx再読み込み") as step:
        _reload(target, step)


def _plan_certificate(journal: Journal, target: Target, min_days: float = DEFAULT_MIN_DAYS,
                      renew: bool = True) -> None:
    journal.plan("served", "証明書期限確認", what=f"certificate served at {target.public_url}",
                 min_days=min_days)
    journal.plan("renew", "証明書更新", what="only when fewer days remain", argv=target.renew_command)
    journal.plan("nginx-t", "Nginx設定テスト", what="nginx -t")
    journal.plan("reload", "Nginx再読み込み", what="graceful reload")
    journal.plan("verify", "証明書確認", what="the served certificate changed and has enough days left")


@action("cert-check", "SSL証明書確認", plan=_plan_certificate, cli="cert-check",
        help="SSL証明書確認: days left of the served certificate, renew when too few",
        options=(option("--min-days", type=float, default=30.0),
                 option("--no-renew", action="store_false", dest="renew")))
def check_certificate(journal: Journal, target: Target, min_days: float = DEFAULT_MIN_DAYS,
                      renew: bool = True) -> None:
    """SSL証明書確認: days left of the served certificate; renew, test, reload when too few remain."""
    with journal.step("served", "証明書期限確認") as step:
        before = served_certificate(target)
        step.note("certificate", before.describe())
    if before.days_left >= min_days:
        journal.steps[-1].details["verdict"] = f"{before.days_left:.1f} days left (>= {min_days})"
        return
    if not renew:
        raise WebServerError(f"the served certificate expires in {before.days_left:.1f} days")
    with journal.step("renew", "証明書更新") as step:
        step.run(target.renew_command, timeout=300)
    with journal.step("nginx-t", "Nginx設定テスト") as step:
        nginx_test(target, step)
    with journal.step("reload", "Nginx再読み込み") as step:
        _reload(target, step)
    with journal.step("verify", "証明書確認") as step:
        after = _wait_new_certificate(target, before)
        step.note("certificate", after.describe())
        if after.days_left < min_days:
            raise WebServerError(f"the renewed certificate has only {after.days_left:.1f} days left")


def _wait_new_certificate(target: Target, before: ServedCertificate,
                          timeout: float = 15.0) -> ServedCertificate:
    """The new certificate, once several connections in a row get it (old workers finish first)."""
    streak = 0
    master = target.service_manager().main_pid(target.services.web)

    # an old worker still shutting down may take a connection from the shared socket and hand out
    # the old certificate: done means the new one, several times in a row, and no old worker left
    def settled() -> ServedCertificate | Observation:
        nonlocal streak
        current = served_certificate(target)
        streak = streak + 1 if current.sha256 != before.sha256 else 0
        old_workers = bool(master) and _workers_shutting_down(master)
        if streak >= 5 and not old_workers:
            return current
        return Observation(False, f"the new certificate {streak} time(s) in a row; "
                                  f"old workers left: {'yes' if old_workers else 'no'}")

    found = wait_until("nginx to serve only the renewed certificate (5 connections in a row, no old worker)",
                       settled, timeout=timeout, interval=lambda _: 0.0 if streak else 0.2,
                       error=WebServerError)
    assert isinstance(found, ServedCertificate)
    return found


def _workers_shutting_down(master: int) -> bool:
    """Whether the nginx master still has workers of the previous configuration."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == master and "shutting down" in title:
            return True
    return False
