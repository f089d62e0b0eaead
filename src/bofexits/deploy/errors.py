"""The deployment runner's errors, inside the package a branch of the library's one error family.

Inside `bofexits` they subclass `bofexits.errors` (`ManifestError` is a `CheckpointError`,
`RunnerInputError` an `InputError`), so a caller catches one family; in the standalone copy an
export ships (`bofexits_deploy/errors.py`, where `bofexits` may be absent) they have bases of
their own with the same names and meanings.
"""

from __future__ import annotations

try:  # inside the package: the library's error types, so `bofexits` callers catch one family
    from bofexits.errors import BofexitsError as _Base
    from bofexits.errors import CheckpointError as _BadFile
    from bofexits.errors import InputError as _BadInput
except ImportError:  # the standalone copy in an export directory

    class _Base(Exception):  # type: ignore[no-redef]
        """Base class of every error raised here."""

    class _BadFile(_Base):  # type: ignore[no-redef]
        """A file is missing, corrupt or inconsistent."""

    class _BadInput(_Base, ValueError):  # type: ignore[no-redef]
        """An array has the wrong shape, dtype or non-finite values."""


__all__ = ["DeployError", "ManifestError", "MissingDependencyError", "RunnerInputError"]


class DeployError(_Base):
    """Base class of the runner's errors."""


class ManifestError(DeployError, _BadFile):
    """The export directory is incomplete, corrupt or its manifest does not match its graphs."""


class RunnerInputError(DeployError, _BadInput):
    """An input array has the wrong type, shape or dtype, or holds NaN/inf."""


class MissingDependencyError(DeployError, ImportError):
    """onnxruntime is not installed."""
