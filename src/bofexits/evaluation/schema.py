"""The version of every evaluation result written to JSON, and the check that reads it back.

Results outlive the code that wrote them (a run folder is rendered again months later), so
each `to_dict` writes `schema_version` and each `from_dict` refuses another version with a
message that says what to do, instead of failing later on a missing field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from bofexits.errors import ConfigError

__all__ = ["RERUN", "SCHEMA_VERSION", "check_schema", "from_fields", "require", "to_fields"]

SCHEMA_VERSION = 1
"""Bumped whenever a result's fields change meaning or name."""


RERUN = "re-run the evaluation that wrote it"


def check_schema(data: Any, kind: str, rerun: str = RERUN) -> Mapping[str, Any]:
    """`data` itself when it is a mapping holding this version's `schema_version`.

    Args:
        data: what `json.load` returned for one result.
        kind: what the result is, for the message ("sweep", "policy comparison", ...).
        rerun: what to do about it.

    Raises:
        ConfigError: not a mapping, or no or another `schema_version`; the message says to
            re-run the command that wrote the file.

    >>> check_schema({"schema_version": SCHEMA_VERSION}, "sweep")["schema_version"] == SCHEMA_VERSION
    True
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {kind} must be a JSON object, got {type(data).__name__}; {rerun}")
    found = data.get("schema_version")
    if found != SCHEMA_VERSION:
        what = "no schema_version" if found is None else f"schema_version {found!r}"
        raise ConfigError(
            f"this {kind} has {what} but this bofexits reads schema_version {SCHEMA_VERSION}: it was "
            f"written by another bofexits version; {rerun}"
        )
    return data


def require(data: Mapping[str, Any], kind: str, *names: str, rerun: str = RERUN) -> None:
    """Raise a ConfigError naming the first of `names` that `data` lacks.

    >>> require({"a": 1}, "point", "a")
    """
    for name in names:
        if name not in data:
            raise ConfigError(f"this {kind} lacks the field {name!r}; {rerun}")


T = TypeVar("T")


def to_fields(obj: Any) -> dict[str, Any]:
    """A flat dataclass as a dict of its fields (values as they are).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class A:
    ...     x: int
    >>> to_fields(A(1))
    {'x': 1}
    """
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def from_fields(cls: type[T], data: Mapping[str, Any], kind: str, rerun: str = RERUN) -> T:
    """A flat dataclass from a dict of its fields (extra keys ignored, defaults filled in).

    Checks `schema_version` when the class has that field, and that every field without a
    default is there.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class A:
    ...     x: int
    ...     y: int = 0
    >>> from_fields(A, {"x": 1, "derived": 2}, "a")
    A(x=1, y=0)
    """
    every = [f for f in fields(cls)]  # type: ignore[arg-type]
    if any(f.name == "schema_version" for f in every):
        check_schema(data, kind, rerun)
    needed = [f.name for f in every if f.default is MISSING and f.default_factory is MISSING]
    require(data, kind, *needed, rerun=rerun)
    return cls(**{f.name: data[f.name] for f in every if f.name in data and f.name != "schema_version"})
