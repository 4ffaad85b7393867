"""Typed task options: one frozen dataclass per task, one parser for all of them.

A task declares its options as a frozen :func:`~dataclasses.dataclass` that
subclasses :class:`TaskOptions`; each field has a type annotation (``bool``,
``int``, ``float``, ``str``, ``tuple[int, ...]``, unions of those, ``... | None``), a
default, and optionally a valid range or a list of choices given with
:func:`option`. :func:`parse` turns the ``key=value`` pairs a user typed
(``--task-option lr=0.1``; values are JSON or plain strings) into that
dataclass, or refuses with one line: an unknown key (listing the accepted
ones), a value of the wrong type, a non-finite number, a number out of range,
a name not among the choices.

This module imports neither torch nor the tasks: options are checked before
anything is built or loaded.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(TaskOptions):
...     lr: float = option(0.1, low=0.0, low_open=True)
...     layout: str = option("local", choices=("local", "single"))
>>> parse(Demo, {"lr": "0.5"}, "demo")
Demo(lr=0.5, layout='local')
>>> parse(Demo, {"lr": 0}, "demo")
Traceback (most recent call last):
...
fedsim.errors.FedsimError: demo option lr must be > 0, got 0.0
>>> parse(Demo, {"lrr": 1}, "demo")
Traceback (most recent call last):
...
fedsim.errors.FedsimError: unknown demo option 'lrr'; valid: lr, layout
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields

from fedsim.errors import FedsimError

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class TaskOptions:
    """Base of every task's options (no fields of its own)."""

    def max_silos(self) -> int | None:
        """The most silos these options can serve (``None``: no fixed limit known up front)."""
        return None

    def as_dict(self) -> dict:
        """The options as a plain dict (tuples stay tuples)."""
        return asdict(self)


def option(default, *, choices: tuple | None = None, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, doc: str = ""):
    """A dataclass field with its valid values: ``choices``, or a range ``[low, high]``
    (``low_open`` / ``high_open`` exclude the bound). For a tuple the range applies to each item."""
    meta = {"choices": choices, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "doc": doc}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return field(default=default, metadata=meta)


def names(cls: type[TaskOptions]) -> list[str]:
    """The option names of ``cls``, in declaration order."""
    return [f.name for f in fields(cls)]


def parse(cls: type[TaskOptions], mapping: Mapping | TaskOptions | None, task: str) -> TaskOptions:
    """``mapping`` (option name -> value) as an instance of ``cls``; :class:`FedsimError` if invalid."""
    if isinstance(mapping, cls):
        return mapping
    mapping = dict(mapping or {})
    valid = names(cls)
    unknown = [k for k in mapping if k not in valid]
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise FedsimError(f"unknown {task} option{s} {', '.join(repr(k) for k in unknown)}; "
                          f"valid: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name in mapping:
            values[f.name] = _check(task, f.name, _convert(task, f.name, mapping[f.name], hints[f.name]),
                                    f.metadata)
    return cls(**values)  # cross-field checks (__post_init__) raise FedsimError themselves


def describe(tp) -> str:
    """A type in the words of an error message."""
    args = typing.get_args(tp)
    if _is_union(tp):
        return " or ".join(describe(a) for a in args)
    if tp is type(None):
        return "none"
    if typing.get_origin(tp) is tuple:
        return f"a list of {describe(args[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _convert(task: str, key: str, value, tp):
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(task, key, value, arg)
            except FedsimError:
                continue
        raise _type_error(task, key, value, tp)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)) or not value:
            raise _type_error(task, key, value, tp)
        return tuple(_convert(task, key, v, item) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise _type_error(task, key, value, tp)
    if tp is int:
        if isinstance(value, bool):
            raise _type_error(task, key, value, tp)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _type_error(task, key, value, tp)
    if tp is float:
        if isinstance(value, bool):
            raise _type_error(task, key, value, tp)
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _type_error(task, key, value, tp) from None
        if not isinstance(value, (int, float)):
            raise _type_error(task, key, value, tp)
        value = float(value)
        if not math.isfinite(value):
            raise FedsimError(f"{task} option {key} must be a finite number, got {value}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _type_error(task, key, value, tp)
    raise TypeError(f"unsupported option type {tp!r} for {task} option {key}")


def _type_error(task: str, key: str, value, tp) -> FedsimError:
    return FedsimError(f"{task} option {key} expects {describe(tp)}, got {value!r}")


def _check(task: str, key: str, value, meta: Mapping):
    if value is None:
        return value
    items = value if isinstance(value, tuple) else (value,)
    choices = meta.get("choices")
    if choices is not None and any(v not in choices for v in items):
        bad = next(v for v in items if v not in choices)
        raise FedsimError(f"unknown {task} {key} {bad!r}; valid: {', '.join(map(str, choices))}")
    low, high = meta.get("low"), meta.get("high")
    for v in items:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        too_low = low is not None and (v <= low if meta.get("low_open") else v < low)
        too_high = high is not None and (v >= high if meta.get("high_open") else v > high)
        if too_low or too_high:
            raise FedsimError(f"{task} option {key} must be {_range(meta)}, got {v}")
    return value


def _range(meta: Mapping) -> str:
    low, high = meta.get("low"), meta.get("high")
    if high is None:
        return f"{'>' if meta.get('low_open') else '>='} {low:g}"
    if low is None:
        return f"{'<' if meta.get('high_open') else '<='} {high:g}"
    return (f"in {'(' if meta.get('low_open') else '['}{low:g}, {high:g}"
            f"{')' if meta.get('high_open') else ']'}")


def default_of(cls: type[TaskOptions], key: str):
    """The declared default of option ``key``."""
    for f in fields(cls):
        if f.name == key:
            return None if f.default is MISSING else f.default
    raise KeyError(key)


def check_silos(task: str, options: TaskOptions, n_silos: int) -> None:
    """Refuse, with one line naming the limit, a silo count ``options`` cannot serve."""
    if n_silos < 1:
        raise FedsimError(f"a run needs at least 1 silo, got {n_silos}")
    limit = options.max_silos()
    if limit is not None and n_silos > limit:
        extra = f" with min_size={options.min_size}" if hasattr(options, "min_size") else ""
        raise FedsimError(f"{task} can serve at most {limit} silos{extra}, got {n_silos}; use fewer silos "
                          f"or a task with per-silo data (--task cdl, cfor or gcd)")
