"""The MKS recovery runbook (15_復旧手順) as importable, journaled Python actions."""

from recovery.errors import CommandError, RecoveryError

__all__ = ["CommandError", "RecoveryError"]
