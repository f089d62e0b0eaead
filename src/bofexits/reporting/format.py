"""How numbers read in every table and sentence: percentages, percentage points, ratios.

One module so that "92.84%" in the report, the CLI, the claims and the README all come from
the same line of code.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["fractions", "met", "pct", "pct_value", "pp", "times"]


def pct_value(x: float, digits: int = 2) -> str:
    """A fraction as a percentage number without the sign (for cells under a "%" header).

    >>> pct_value(0.92844), pct_value(0.5, 1)
    ('92.84', '50.0')
    """
    return f"{100 * x:.{digits}f}"


def pct(x: float, digits: int = 2) -> str:
    """A fraction as a percentage.

    >>> pct(0.92844), pct(0.253, 1)
    ('92.84%', '25.3%')
    """
    return pct_value(x, digits) + "%"


def pp(difference: float, digits: int = 2, *, signed: bool = True) -> str:
    """A difference of two fractions in percentage points (signed unless `signed` is off).

    >>> pp(-0.01), pp(0.00051), pp(0.005, 1, signed=False)
    ('-1.00 pp', '+0.05 pp', '0.5 pp')
    """
    return f"{100 * difference:{'+' if signed else ''}.{digits}f} pp"


def times(ratio: float, digits: int = 2) -> str:
    """A ratio such as a speedup (`nan` when not measured).

    >>> times(1.5), times(float("nan"))
    ('1.50x', 'nanx')
    """
    return f"{ratio:.{digits}f}x"


def times_interval(ratio: float, low: float | None, high: float | None, digits: int = 2) -> str:
    """A measured speedup with its interval, when it has one.

    >>> times_interval(1.612, 1.52, 1.7), times_interval(1.5, None, None)
    ('1.61x (1.52-1.70)', '1.50x')
    """
    if low is None or high is None or low != low or high != high:
        return times(ratio, digits)
    return f"{times(ratio, digits)} ({low:.{digits}f}-{high:.{digits}f})"


def fractions(values: Sequence[float], digits: int = 2, sep: str = " / ") -> str:
    """Exit fractions (or any shares) side by side.

    >>> fractions([0.5, 0.25, 0.25])
    '0.50 / 0.25 / 0.25'
    """
    return sep.join(f"{v:.{digits}f}" for v in values)


def met(value: bool | None, *, emphasis: bool = True) -> str:
    """A check's outcome: yes, no (bold in markdown unless `emphasis` is off) or n/a.

    >>> met(True), met(False), met(None), met(False, emphasis=False)
    ('yes', '**no**', 'n/a', 'no')
    """
    if value is None:
        return "n/a"
    if value:
        return "yes"
    return "**no**" if emphasis else "no"
