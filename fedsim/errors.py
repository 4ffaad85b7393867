"""User-facing errors.

Anything a user can get wrong (a name, a file, a number) raises
:class:`FedsimError` with a one-line message that says what was wrong and what
is accepted. The CLI prints the message and exits with code 2; it never shows
a traceback for these.
"""

from __future__ import annotations

from collections.abc import Iterable


class FedsimError(ValueError):
    """A user mistake, reported as one line."""


def unknown_name(kind: str, value: str, valid: Iterable[str]) -> FedsimError:
    """Error for an unknown registry name, listing the accepted names.

    Examples
    --------
    >>> str(unknown_name("network", "gaya", ["gaia", "nws"]))
    "unknown network 'gaya'; valid: gaia, nws"
    """
    return FedsimError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def check_positive(name: str, value: float) -> float:
    """Return ``value`` if it is a finite number > 0, else raise FedsimError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FedsimError(f"{name} must be a positive number, got {value!r}") from None
    if not v > 0 or v == float("inf"):
        raise FedsimError(f"{name} must be a positive number, got {value!r}")
    return v


def check_int_at_least(name: str, value: int, low: int) -> int:
    """Return ``value`` if it is an integer >= ``low``, else raise FedsimError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FedsimError(f"{name} must be an integer >= {low}, got {value!r}")
    return value
