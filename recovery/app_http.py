"""The app's HTTP contract as the post checks use it: a client, the login (JSON token or a form with
a CSRF cookie), the listing's count, and answers described with their secrets masked."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any

import httpx

from recovery.errors import RecoveryError
from recovery.target import AppTarget, Target

BODY_SHOWN = 160  # characters of an answer's body quoted in a failed check
_JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_SECRET_FIELD = re.compile(r'("(?:[\w-]*token|password|secret|api[_-]?key)"\s*:\s*)"[^"]*"', re.IGNORECASE)


def mask_secrets(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """The text with the given secrets, bearer tokens and secret-named JSON values replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET_FIELD.sub(r'\1"***"', _JWT.sub("***", text))


def describe(response: httpx.Response, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """What came back, for a failed check: status, content type and the first bytes of the body."""
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    body = response.content[:BODY_SHOWN].decode("utf-8", "replace")
    more = "..." if len(response.content) > BODY_SHOWN else ""
    shown = mask_secrets(body, secrets).replace("\n", " ").strip()
    return f"HTTP {response.status_code} ({kind}), body {shown!r}{more}" if shown else \
        f"HTTP {response.status_code} ({kind}), empty body"


def json_field(response: httpx.Response, path: str) -> tuple[Any, str]:
    """The value at a dotted path of a JSON answer, or None and why it is not there."""
    try:
        value: Any = response.json()
    except ValueError:
        return None, "the body is not JSON"
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            fields = ", ".join(sorted(value)[:8]) if isinstance(value, dict) else type(value).__name__
            return None, f"no field {path!r} (has: {fields or 'nothing'})"
        value = value[key]
    return value, ""


def http_client(target: Target, url: str | None = None, timeout: float = 10.0) -> httpx.Client:
    """A client for the backend (the runbook's localhost:5100) or, over TLS, the public URL."""
    base = url or target.backend_url
    verify: ssl.SSLContext | bool = True
    if base.startswith("https://") and target.ca_file:
        verify = ssl.create_default_context(cafile=target.ca_file)
    return httpx.Client(base_url=base, verify=verify, timeout=timeout)


def credentials(username: str | None, password: str | None,
                password_file: str | Path | None = None) -> tuple[str, str]:
    """Explicit credentials, else the first line of password_file, else MKS_CHECK_PASSWORD.

    There is no default password; a missing one is an error.
    """
    username = username or os.environ.get("MKS_CHECK_USER", "admin")
    if not password and password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError):
            raise RecoveryError(f"cannot read a password from {password_file}") from None
    password = password or os.environ.get("MKS_CHECK_PASSWORD")
    if not password:
        raise RecoveryError("post checks need the login's password: a password file or MKS_CHECK_PASSWORD")
    return username, password


def login(client: httpx.Client, app: AppTarget, username: str,
          password: str) -> tuple[httpx.Response, str | None, str]:
    """Log in by the app's contract: the answer, the token (None: not logged in), and why there is
    none when the answer looked like a success. A JSON login POSTs the fields and finds the token at
    token_path; a form login GETs the form (its CSRF cookie), POSTs it back with that token and the
    page as Referer, and its token is the session cookie the client keeps for the next requests."""
    if app.login_kind == "form":
        return _form_login(client, app, username, password)
    response = client.post(app.login_path, json={app.username_field: username, app.password_field: password})
    if response.status_code != 200:
        return response, None, ""
    token, missing = json_field(response, app.token_path)
    return response, str(token) if token else None, missing


def _form_login(client: httpx.Client, app: AppTarget, username: str,
                password: str) -> tuple[httpx.Response, str | None, str]:
    form = client.get(app.login_path)
    csrf = client.cookies.get(app.csrf_cookie)
    if form.status_code != 200 or not csrf:
        return form, None, (f"the login form set no {app.csrf_cookie} cookie" if form.status_code == 200
                            else "")
    fields = {app.username_field: username, app.password_field: password, app.csrf_field: csrf}
    response = client.post(app.login_path, data=fields,
                           headers={"Referer": str(client.base_url.join(app.login_path))})
    session = client.cookies.get(app.session_cookie)
    if response.status_code not in (200, 302, 303) or not session:
        sent_back = response.status_code < 400
        return response, None, (f"no {app.session_cookie} cookie after the form was sent back" if sent_back
                                else "")
    return response, session, ""


def auth_headers(app: AppTarget, token: str | None) -> dict[str, str]:
    """What a request after the login carries: the bearer token (a form login: the client's cookie)."""
    return {"Authorization": f"Bearer {token or ''}"} if app.login_kind == "json" else {}


def listing_count(response: httpx.Response, app: AppTarget) -> tuple[int, str]:
    """The listing's count (a number at count_path, or the length of the list there) and, for a
    200 without one, why."""
    if response.status_code != 200:
        return 0, ""
    found, missing = json_field(response, app.count_path)
    if isinstance(found, list):
        return len(found), ""
    if isinstance(found, int) and not isinstance(found, bool):
        return found, ""
    return 0, missing or f"{app.count_path!r} is {type(found).__name__}, not a count or a list"
