"""Reading one JSON object of a manifest a typed field at a time, every error naming the field.

`bofexits.deploy.manifest` builds its entries with `Fields`: ``f.text("score", SCORES)``,
``f.numbers("thresholds", n, "early exit")``, ``f.obj("policy")``... each refuses a missing
key, a value of the wrong JSON type or a list of the wrong length with a `ManifestError` that
names the file and the field's path (``policy.thresholds``, ``graphs[2].inputs[0].shape``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from .errors import ManifestError

__all__ = ["REEXPORT", "Fields", "as_float", "show"]

REEXPORT = "re-export the model (`bofexits export`)"

_T = TypeVar("_T")
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def show(value: Any) -> str:
    """A JSON value for an error message: short, with its JSON type."""
    text = repr(value)
    kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


def as_float(value: Any) -> float | None:
    """A JSON number, or "inf" / "-inf" (how strict JSON stores infinite thresholds); None if neither or NaN."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or value in ("inf", "-inf")):
        return None
    number = float(value)
    return None if number != number else number


class Fields:
    """One JSON object of a manifest, read a typed field at a time; every error names the field.

    `path` is where the object sits ("" for the top level, "policy", "graphs[2]", ...) and
    `source` the file, both for messages.
    """

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, dict):
            where = f"field {path!r}" if path else "the manifest"
            raise ManifestError(f"{source}: {where} must be a JSON object, got {show(data)}; {REEXPORT}")
        self.data, self.path, self.source = data, path, source

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.source}: field {self.at(key)!r} {problem}; {REEXPORT}")

    def raw(self, key: str) -> Any:
        if key not in self.data:
            raise ManifestError(
                f"{self.source} lacks [{self.at(key)!r}]; it is truncated or hand-edited: {REEXPORT}"
            )
        return self.data[key]

    def optional(self, key: str, read: Callable[[str], _T]) -> _T | None:
        """`read(key)`, or None when the key is absent or null."""
        return None if self.data.get(key) is None else read(key)

    def text(self, key: str, choices: Sequence[str] = ()) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {show(value)}")
        if choices and value not in choices:
            raise self.error(key, f"is {value!r}; this runner knows {', '.join(choices)}")
        return value

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self.raw(key)
        if type(value) is not int or value < minimum:
            raise self.error(key, f"must be an integer >= {minimum}, got {show(value)}")
        return value

    def number(self, key: str) -> float:
        return self._numbers(key, [self.raw(key)], "")[0]

    def items(self, key: str, length: int | None = None, per: str = "") -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {show(value)}")
        if length is not None and len(value) != length:
            raise self.error(key, f"has {len(value)} entries, expected {length} (one per {per})")
        return value

    def numbers(self, key: str, length: int | None = None, per: str = "") -> tuple[float, ...]:
        return self._numbers(key, self.items(key, length, per), "entry {} ")

    def texts(self, key: str, length: int | None = None, per: str = "") -> tuple[str, ...]:
        values = self.items(key, length, per)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(key, f"entry {i} must be a string, got {show(v)}")
        return tuple(values)

    def table(self, key: str, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
        """A (rows, cols) table of numbers: the calibration's quantile tables."""
        value = self.raw(key)
        if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
            raise self.error(key, f"must be a list of lists of numbers, got {show(value)}")
        if len(value) != rows or any(len(r) != cols for r in value):
            got = (len(value), *sorted({len(r) for r in value}))
            raise self.error(key, f"has calibration shape {got}; {rows} early exits need ({rows}, {cols})")
        return tuple(self._numbers(key, row, f"entry [{i}][{{}}] ") for i, row in enumerate(value))

    def _numbers(self, key: str, values: list[Any], where: str) -> tuple[float, ...]:
        out = [as_float(v) for v in values]
        if None in out:
            i = out.index(None)
            raise self.error(key, f"{where.format(i)}must be a number, got {show(values[i])}")
        return cast(tuple[float, ...], tuple(out))

    def obj(self, key: str) -> Fields:
        return Fields(self.raw(key), self.at(key), self.source)

    def objs(self, key: str, length: int | None = None, per: str = "") -> list[Fields]:
        items = self.items(key, length, per)
        return [Fields(v, f"{self.at(key)}[{i}]", self.source) for i, v in enumerate(items)]
