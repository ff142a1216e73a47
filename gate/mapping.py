"""One runbook command -> what runs in the sandbox instead, or why it cannot run there.

The mapping works on the command text before bash sees it:
- absolute production paths -> the same path under the sandbox root (`/backup/mks/x` -> `$ROOT/backup/mks/x`),
  including a bare `/` argument (`tar -C /`);
- PostgreSQL paths of another major version -> the server's major, noted as a defect of the runbook;
- `localhost:5100` (and the port alone, as in `grep 5100`) -> the sandbox backend;
- `tail -f` -> `tail -n 50` (a gate must not follow a log forever);
- `certbot renew` -> the sandbox CA's renewal; `scp old-server:PATH` -> a copy from the old server's root;
- the account `mks` (chown mks:mks) -> the sandbox's service account.
What has no sandbox equivalent (packages, network clones, placeholders such as `<PID>`) is reported as
not executable with the reason; a command marked `# gate: skip 理由` is documentation only.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

MAPPED_ROOTS = ("etc", "opt", "backup", "var", "tmp", "run", "srv", "home", "root")
PATH_RE = re.compile(r"(?<![\w.~/$-])/(?:" + "|".join(MAPPED_ROOTS) + r")(?=/|\b)")
BARE_ROOT_RE = re.compile(r"(?<=\s)/(?=\s|$|;)")
PG_VERSION_RE = re.compile(r"(postgresql[/-])(\d{1,2})([/-]main)")
PLACEHOLDER_RE = re.compile(r"(?<![<\w])<([A-Z][A-Z0-9_]*|[a-z][a-z0-9_-]*)>(?!>)")
SCP_RE = re.compile(r"^\s*scp\s+(?:-\w+\s+)*(?P<src>(?:'[^']*'|\"[^\"]*\"|\S+:\S+))\s+(?P<dest>\S+)\s*$")
PACKAGE_RE = re.compile(r"^\s*(?:sudo\s+)?(?:apt|apt-get|yum|dnf|snap)\s+(?:update|upgrade|install|-y)")
PIP_RE = re.compile(r"^\s*(?:sudo\s+)?(?:pip3?|python3?\s+-m\s+pip)\s+install\b")
CLONE_RE = re.compile(r"^\s*(?:sudo\s+)?git\s+clone\s+(\S+)")
UNIT_FILE_RE = re.compile(r"/(?:etc|lib|usr/lib)/systemd/system/")
CERTBOT_RE = re.compile(r"^\s*(?:sudo\s+)?certbot\s+renew\b.*$")
TAIL_F_RE = re.compile(r"\btail\s+(-[a-zA-Z]*)?f\b")
LITERAL_PASSWORD_RE = re.compile(r'"password"\s*:\s*"(?!\s*[\'"]?\$)[^"]+"')
CHOWN_MKS_RE = re.compile(r"(\bchown\s+(?:-\w+\s+)*)mks(?::mks)?(?=\s)")


@dataclass(frozen=True)
class SandboxInfo:
    """What the mapping needs to know about a sandbox (kept apart from the stack for unit tests)."""

    root: Path
    backend_port: int
    pg_major: int
    service_account: str
    renew_command: str = ""
    old_root: Path | None = None  # a second stack standing for the old server (scp)


@dataclass
class Mapped:
    original: str
    text: str | None  # what bash runs; None when the command cannot run in a sandbox
    reason: str | None = None  # why not, when text is None
    declared: bool = False  # the runbook itself marked it (gate: skip)
    notes: list[str] = field(default_factory=list)  # how it was mapped
    defects: list[str] = field(default_factory=list)  # what the mapping found wrong in the command

    @property
    def executable(self) -> bool:
        return self.text is not None


def map_command(text: str, info: SandboxInfo, skip_reason: str | None = None) -> Mapped:
    if skip_reason is not None:
        return Mapped(text, None, f"documented only (gate: skip): {skip_reason}", declared=True)
    reason = not_executable(text, info)
    if reason:
        return Mapped(text, None, reason)
    result = Mapped(text, text)
    if LITERAL_PASSWORD_RE.search(text):
        result.defects.append("a literal password in the runbook: no account has it (and none may); "
                              "the login fails and what follows runs without a token")
    scp = SCP_RE.match(text) if "\n" not in text else None
    if scp:  # the result already holds sandbox paths: no further path mapping
        result.text = _map_scp(scp.group("src"), scp.group("dest"), info, result)
        return result
    if CERTBOT_RE.match(text) and info.renew_command:
        result.text = info.renew_command
        result.notes.append("certbot renew -> the sandbox CA's renewal")
        return result
    result.text = _map_versions(result.text, info, result)
    result.text = map_paths(result.text, info.root)
    if "localhost:5100" in result.text or re.search(r"\b5100\b", result.text):
        result.text = re.sub(r"\blocalhost:5100\b", f"127.0.0.1:{info.backend_port}", result.text)
        result.text = re.sub(r"\b5100\b", str(info.backend_port), result.text)
        result.notes.append(f"localhost:5100 -> the sandbox backend 127.0.0.1:{info.backend_port}")
    if TAIL_F_RE.search(result.text):
        result.text = TAIL_F_RE.sub("tail -n 50", result.text)
        result.notes.append("tail -f -> tail -n 50 (the gate does not follow logs)")
    if CHOWN_MKS_RE.search(result.text):
        result.text = CHOWN_MKS_RE.sub(rf"\g<1>{info.service_account}:{info.service_account}", result.text)
        result.notes.append(f"account mks -> the sandbox service account {info.service_account}")
    return result


def not_executable(text: str, info: SandboxInfo) -> str | None:
    """Why this command has no sandbox equivalent, or None."""
    stripped = _without_heredocs(text)
    placeholder = PLACEHOLDER_RE.search(_strip_comment(stripped))
    if placeholder:
        return f"placeholder {placeholder.group(0)}: the operator must fill it in before it can run"
    if PACKAGE_RE.match(stripped):
        return "installs or updates system packages on the host (a sandbox never changes the host)"
    if PIP_RE.match(stripped):
        return "installs Python packages from the network into the host's environment"
    clone = CLONE_RE.match(stripped)
    if clone:
        url = clone.group(1)
        why = "a placeholder URL" if re.search(r"your-org|example\.(com|org)", url) else "the network"
        return f"clones {url} from {why}; the sandbox deploys the reference backend itself"
    if UNIT_FILE_RE.search(stripped):
        return "reads a systemd unit file; the sandbox runs its services under supervisord (no unit files)"
    if re.match(r"^\s*scp\b", stripped) and info.old_root is None:
        return "copies from another server; no old server stands beside this sandbox"
    if re.match(r"^\s*(?:sudo\s+)?(?:ssh|rsync)\b", stripped):
        return "talks to another host over SSH"
    if re.match(r"^\s*(?:sudo\s+)?(?:reboot|shutdown|hostnamectl|useradd|adduser)\b", stripped):
        return "changes the host itself"
    return None


def map_paths(text: str, root: Path) -> str:
    """Absolute production paths -> the sandbox root, in one pass (the root itself is never remapped)."""
    prefix = str(root).rstrip("/")
    text = PATH_RE.sub(lambda m: prefix + m.group(0), text)
    return BARE_ROOT_RE.sub(prefix + "/", text)


def _map_versions(text: str, info: SandboxInfo, result: Mapped) -> str:
    def fix(match: re.Match[str]) -> str:
        version = int(match.group(2))
        if version != info.pg_major:
            defect = (f"names PostgreSQL {version} ({match.group(0)}); the server is {info.pg_major}: "
                      "the path does not exist")
            if defect not in result.defects:
                result.defects.append(defect)
            return f"{match.group(1)}{info.pg_major}{match.group(3)}"
        return match.group(0)

    return PG_VERSION_RE.sub(fix, text)


def _map_scp(source: str, dest: str, info: SandboxInfo, result: Mapped) -> str:
    assert info.old_root is not None
    remote = shlex.split(source)[0]
    host, _, path = remote.partition(":")
    result.notes.append(f"scp from {host} -> a copy from the old server's sandbox")
    old = map_paths(" " + path, info.old_root).strip()
    return f"cp -p {old} {map_paths(' ' + dest, info.root).strip()}"


def _without_heredocs(text: str) -> str:
    """The command line(s) without here-document bodies (their content is data, not commands)."""
    lines = text.splitlines()
    if not lines:
        return text
    match = re.search(r"<<-?\s*['\"]?(\w+)", lines[0])
    if not match:
        return text
    return lines[0]


def _strip_comment(text: str) -> str:
    out = []
    for line in text.splitlines():
        quote = None
        for i, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1].isspace()):
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)
