"""Ed25519 signatures of a run's manifest (the `cryptography` package).

`python -m reports keygen FILE` writes the private key (PKCS#8 PEM, mode 0600, never overwritten)
and FILE.pub (SubjectPublicKeyInfo PEM). A run signed with `--drill-signing-key FILE` gets
MANIFEST.sha256.sig beside its manifest: the public key, its fingerprint and the signature of the
manifest's bytes. The private key is refused inside the reports folder, and its text is handed to
the secret scan as a known secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from reports.numbering import ReportError

SIGNATURE_SUFFIX = ".sig"
ALGORITHM = "ed25519"


class SigningError(ReportError):
    """A key cannot be made, read or used."""


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA256:<base64> of the raw public key, the form `ssh-keygen -l` shows."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def keygen(path: Path) -> tuple[Path, Path]:
    """A new key pair: path (private, 0600) and path.pub. Existing files are never overwritten."""
    public = path.with_name(path.name + ".pub")
    for existing in (path, public):
        if existing.exists():
            raise SigningError(f"{existing} exists already; not overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SigningError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(path, 0o600)  # whatever the umask
    public.write_text(public_pem(key.public_key()), encoding="ascii")
    return path, public


@dataclass(frozen=True)
class SigningKey:
    path: Path
    key: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def secrets(self) -> list[str]:
        """The private key's text as the scan knows secrets: its PEM body lines and raw forms."""
        text = self.path.read_text(encoding="ascii", errors="replace")
        lines = [line for line in text.splitlines() if line and not line.startswith("-----")]
        raw = self.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return [*lines, "".join(lines), raw.hex(), base64.b64encode(raw).decode()]


def load_private(path: Path, reports_dir: Path | None = None) -> SigningKey:
    resolved = path.resolve()
    if reports_dir is not None and resolved.is_relative_to(reports_dir.resolve()):
        raise SigningError(f"the signing key {path} is inside the reports folder {reports_dir}: move it out")
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the signing key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} is a {type(key).__name__}, not an Ed25519 key")
    return SigningKey(resolved, key)


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SigningError(f"cannot read the public key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SigningError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path} is not an Ed25519 public key")
    return key


def signature_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + SIGNATURE_SUFFIX)


def sign(manifest: Path, key: SigningKey) -> Path:
    signature = key.key.sign(manifest.read_bytes())
    document = {
        "algorithm": ALGORITHM,
        "signed": manifest.name,
        "public_key": public_pem(key.public),
        "fingerprint": key.fingerprint,
        "signature": base64.b64encode(signature).decode(),
    }
    target = signature_path(manifest)
    target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return target


@dataclass
class SignatureCheck:
    state: str  # valid | unsigned | invalid
    detail: str
    fingerprint: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "valid"


def check(manifest: Path, pinned: Ed25519PublicKey | None = None) -> SignatureCheck:
    """The manifest's signature: valid (by the pinned key when one is given), invalid, or absent."""
    path = signature_path(manifest)
    if not path.is_file():
        return SignatureCheck(
            "unsigned",
            f"{manifest.name}: UNSIGNED (no {path.name}): the hashes prove "
            "only that nothing changed since the manifest was written",
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        embedded = serialization.load_pem_public_key(document["public_key"].encode())
        signature = base64.b64decode(document["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return SignatureCheck("invalid", f"{path.name}: unreadable signature ({exc})")
    if not isinstance(embedded, Ed25519PublicKey):
        return SignatureCheck("invalid", f"{path.name}: not an Ed25519 signature")
    key = pinned or embedded
    shown = fingerprint(key)
    if pinned is not None and fingerprint(embedded) != shown:
        return SignatureCheck(
            "invalid",
            f"{path.name}: signed by {fingerprint(embedded)}, not by the pinned key {shown} (wrong key)",
            shown,
        )
    try:
        key.verify(signature, manifest.read_bytes())
    except InvalidSignature:
        return SignatureCheck(
            "invalid",
            f"{manifest.name}: signature does not match ({path.name}): the "
            "manifest changed after it was signed, or another key signed it",
            shown,
        )
    pin = " (pinned)" if pinned is not None else " (key embedded in the signature: pin it with --public-key)"
    return SignatureCheck("valid", f"{manifest.name}: signature valid, key {shown}{pin}", shown)
