"""The one exception base of the recovery package."""

from __future__ import annotations


class RecoveryError(Exception):
    """Base of every error raised by the recovery package."""


class CommandError(RecoveryError):
    """An external command failed, timed out or could not be started."""

    def __init__(self, argv: list[str], returncode: int | None, stdout: str, stderr: str, reason: str):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason
        tail = (stderr or stdout).strip().splitlines()[-5:]
        detail = "\n    ".join(tail)
        message = f"{reason}: {' '.join(argv)}"
        if detail:
            message += f"\n    {detail}"
        super().__init__(message)
