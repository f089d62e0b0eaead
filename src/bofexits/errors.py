"""Exception types: every user-facing failure says what is wrong and what to do."""

from __future__ import annotations

__all__ = [
    "BofexitsError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputError",
    "TargetUnreachableError",
]


class BofexitsError(Exception):
    """Base class; the CLI prints these as one line instead of a traceback."""


class DataError(BofexitsError):
    """A dataset is missing, corrupt or in an unexpected format."""


class InputError(BofexitsError, ValueError):
    """A tensor handed to the library has the wrong shape, dtype or non-finite values."""


class ConfigError(BofexitsError, ValueError):
    """An option has an unknown or impossible value."""


class CheckpointError(BofexitsError):
    """A checkpoint is corrupt, incomplete or belongs to another architecture."""


class TargetUnreachableError(BofexitsError):
    """A tuning target (accuracy drop, compute or latency budget) cannot be met."""
