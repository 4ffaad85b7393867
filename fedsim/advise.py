"""The topology advisor: which wiring reaches a target metric first on a given network.

Predicted wall-clock time to a target = cycle time x rounds to reach the target:

- the *cycle time* is the simulated clock of the task's delay profile on the
  network for that wiring (:func:`fedsim.cycle_times`);
- the *rounds to reach the target* come from a metric curve (mean test metric
  after each round) of a short pilot run or of an earlier run: the first
  round at which the observed curve reaches the target, else an
  extrapolation of a least-squares fit of the metric against the logarithm
  of the round, ``m(k) = a + b ln(1 + k)`` over every recorded round
  ``k = 0..K`` (round 0: the initial model). A fit that does not move towards
  the target, or that reaches it only after ``max_rounds``, is "not reached".

Everything here is pure (numbers in, numbers out): the pilots and the
command line are in :mod:`fedsim.cli.advise`.

Examples
--------
>>> import numpy as np
>>> curves = {"ring": ([0, 1, 2, 3], [0.1, 0.5, 0.7, 0.8]),
...           "star": ([0, 1, 2, 3], [0.1, 0.7, 0.85, 0.9])}
>>> table = rank({"ring": 50.0, "star": 300.0}, curves, target=0.8)
>>> table[["strategy", "rounds_to_target", "time_to_target_ms", "rank"]]
  strategy  rounds_to_target  time_to_target_ms  rank
0     ring               3.0              150.0     1
1     star               2.0              600.0     2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedsim.errors import FedsimError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of :func:`rank`'s table, in order.
COLUMNS = ("strategy", "cycle_ms", "rounds_to_target", "time_to_target_ms", "rank", "method", "final_metric",
           "pilot_rounds")

#: Beyond this many rounds an extrapolated target counts as not reached.
MAX_ROUNDS = 100_000


@dataclass(frozen=True)
class Target:
    """A target value of a metric: ``name`` as the user typed it, the ``column`` of rounds.csv."""

    name: str
    value: float
    column: str
    higher_is_better: bool

    def reached(self, v: float) -> bool:
        return v >= self.value if self.higher_is_better else v <= self.value

    def __str__(self) -> str:
        return f"{self.name} {'>=' if self.higher_is_better else '<='} {self.value:g}"


def parse_target(text: str, metric: str, higher_is_better: bool = True) -> Target:
    """``METRIC=VALUE`` for a task whose headline metric is ``metric``.

    Accepted metrics: the task's headline metric (``metric``, e.g. ``accuracy``;
    also spelt ``metric``), its test-split-weighted mean ``pooled``, and the
    test ``loss`` (lower is better).

    Examples
    --------
    >>> parse_target("accuracy=0.8", "accuracy")
    Target(name='accuracy', value=0.8, column='eval_metric', higher_is_better=True)
    >>> str(parse_target("loss=0.5", "accuracy"))
    'loss <= 0.5'
    >>> parse_target("f1=0.5", "accuracy")
    Traceback (most recent call last):
    ...
    fedsim.errors.FedsimError: --target: unknown metric 'f1' for this task; valid: accuracy, pooled, loss
    """
    name, sep, value = str(text).partition("=")
    name = name.strip()
    if not sep or not name:
        raise FedsimError(f"--target expects METRIC=VALUE (e.g. {metric}=0.8), got {text!r}")
    columns = {metric: ("eval_metric", higher_is_better), "metric": ("eval_metric", higher_is_better),
               "pooled": ("eval_metric_pooled", higher_is_better), "loss": ("eval_loss", False)}
    if name not in columns:
        raise FedsimError(f"--target: unknown metric {name!r} for this task; valid: {metric}, pooled, loss")
    try:
        v = float(value)
    except ValueError:
        raise FedsimError(f"--target {name}=VALUE expects a number, got {value!r}") from None
    if not math.isfinite(v):
        raise FedsimError(f"--target {name}=VALUE expects a finite number, got {value!r}")
    column, higher = columns[name]
    return Target(metric if name == "metric" else name, v, column, higher)


def log_fit(rounds: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``value = a + b ln(1 + round)``.

    Examples
    --------
    >>> a, b = log_fit([0, 1, 3], [0.2, 0.2 + np.log(2), 0.2 + np.log(4)])
    >>> round(a, 6), round(b, 6)
    (0.2, 1.0)
    """
    x = np.log1p(np.asarray(rounds, float))
    y = np.asarray(values, float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise FedsimError("a metric curve needs at least two different rounds to extrapolate")
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def rounds_to_target(rounds: Sequence[float], values: Sequence[float], target: Target | float,
                     higher_is_better: bool = True, max_rounds: int = MAX_ROUNDS) -> tuple[float | None, str]:
    """Rounds a curve needs to reach ``target``, and how that was found.

    Returns ``(rounds, method)``: ``method`` is ``"observed"`` (the first
    recorded round at the target), ``"extrapolated"`` (the log fit of the
    module docstring, rounded up to a whole round) or ``"not reached"``
    (``rounds`` is None).

    Examples
    --------
    >>> rounds_to_target([0, 1, 2], [0.1, 0.4, 0.6], 0.5)
    (2.0, 'observed')
    >>> rounds_to_target([0, 1, 3], [0.0, np.log(2), np.log(4)], np.log(8))  # a + b ln(1+k): a=0, b=1 -> k=7
    (7.0, 'extrapolated')
    >>> rounds_to_target([0, 1, 2], [0.5, 0.4, 0.3], 0.9)  # moving away from the target
    (None, 'not reached')
    """
    if isinstance(target, Target):
        higher_is_better, target = target.higher_is_better, target.value
    r = np.asarray(rounds, float)
    v = np.asarray(values, float)
    ok = np.isfinite(r) & np.isfinite(v)
    r, v = r[ok], v[ok]
    if len(r) == 0:
        return None, "not reached"
    order = np.argsort(r, kind="stable")
    r, v = r[order], v[order]
    hit = v >= target if higher_is_better else v <= target
    if hit.any():
        return float(r[np.argmax(hit)]), "observed"
    if len(np.unique(r)) < 2:
        return None, "not reached"
    a, b = log_fit(r, v)
    if (b <= 0) if higher_is_better else (b >= 0):
        return None, "not reached"
    x = (target - a) / b  # ln(1 + k)
    if x > math.log1p(max_rounds):
        return None, "not reached"
    k = max(math.ceil(math.expm1(x) - 1e-9), int(r[-1]) + 1)  # beyond the last round: it was not reached there
    return float(k), "extrapolated"


def rank(cycle_ms: Mapping[str, float], curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
         target: Target | float, higher_is_better: bool = True, max_rounds: int = MAX_ROUNDS) -> pd.DataFrame:
    """Rank strategies by predicted time to ``target`` = cycle time x rounds to the target.

    Parameters
    ----------
    cycle_ms : mapping
        Strategy -> simulated cycle time (ms).
    curves : mapping
        Strategy -> ``(rounds, metric values)``: its metric curve.
    target : Target or float
        The target (a float with ``higher_is_better``).
    max_rounds : int
        Extrapolations beyond this many rounds count as not reached.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, sorted by time to the target (not reached
        last, with ``rounds_to_target``, ``time_to_target_ms`` and ``rank``
        missing); ties share the smaller rank.

    Examples
    --------
    A strategy that never improves is "not reached" and ranked last:

    >>> t = rank({"a": 10.0, "b": 5.0}, {"a": ([0, 1], [0.2, 0.6]), "b": ([0, 1], [0.2, 0.1])}, 0.5)
    >>> t[["strategy", "method", "rank"]]
      strategy       method  rank
    0        a     observed     1
    1        b  not reached  <NA>
    """
    import pandas as pd

    missing = sorted(set(curves) - set(cycle_ms))
    if missing:
        raise FedsimError(f"no cycle time for strategy {missing[0]!r}; have: {', '.join(cycle_ms)}")
    if not curves:
        raise FedsimError("no metric curves to rank")
    rows = []
    for s, (rr, vv) in curves.items():
        ct = float(cycle_ms[s])
        k, method = rounds_to_target(rr, vv, target, higher_is_better, max_rounds)
        finite = [float(x) for x in vv if np.isfinite(x)]
        rows.append({"strategy": s, "cycle_ms": ct, "rounds_to_target": np.nan if k is None else k,
                     "time_to_target_ms": np.nan if k is None else k * ct, "method": method,
                     "final_metric": finite[-1] if finite else np.nan,
                     "pilot_rounds": int(max(rr)) if len(rr) else 0})
    df = pd.DataFrame(rows)
    df = df.sort_values(["time_to_target_ms", "cycle_ms"], na_position="last", kind="stable").reset_index(drop=True)
    df["rank"] = df["time_to_target_ms"].rank(method="min").astype("Int64")
    return df[list(COLUMNS)]


def text_table(df: pd.DataFrame, metric: str = "metric") -> str:
    """The advisor's table as ``fedsim advise`` prints it.

    Examples
    --------
    >>> t = rank({"ring": 50.0, "star": 300.0}, {"ring": ([0, 1], [0.1, 0.8]), "star": ([0, 1], [0.1, 0.1])}, 0.8)
    >>> print(text_table(t, "accuracy"))
    rank  strategy     cycle ms  est. rounds to target  est. time to target  method        accuracy at end of curve
       1  ring             50.0                      1              0.050 s  observed      0.8000
       -  star            300.0            not reached          not reached  not reached   0.1000
    """
    head = (f"{'rank':>4}  {'strategy':<11} {'cycle ms':>9}  {'est. rounds to target':>21}  "
            f"{'est. time to target':>19}  {'method':<13} {metric} at end of curve")
    lines = [head]
    for r in df.itertuples(index=False):
        reached = not pd_isna(r.rounds_to_target)
        lines.append(f"{(str(int(r.rank)) if reached else '-'):>4}  {r.strategy:<11} {r.cycle_ms:>9.1f}  "
                     f"{(f'{r.rounds_to_target:.0f}' if reached else 'not reached'):>21}  "
                     f"{(_seconds(r.time_to_target_ms) if reached else 'not reached'):>19}  {r.method:<13} "
                     f"{r.final_metric:.4f}")
    return "\n".join(lines)


def pd_isna(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or str(x) in ("<NA>", "nan")


def _seconds(ms: float) -> str:
    s = ms / 1e3
    return f"{s:.3f} s" if s < 100 else f"{s:.0f} s" if s < 1e5 else f"{s / 3600:.1f} h"


def kendall_tau(a: Sequence[str], b: Sequence[str]) -> float:
    """Kendall's tau-a between two orderings of the same items (1: same order, -1: reversed).

    Examples
    --------
    >>> kendall_tau(["x", "y", "z"], ["x", "y", "z"]), kendall_tau(["x", "y", "z"], ["z", "y", "x"])
    (1.0, -1.0)
    >>> round(kendall_tau(["x", "y", "z"], ["y", "x", "z"]), 4)
    0.3333
    """
    if sorted(a) != sorted(b):
        raise ValueError("kendall_tau needs two orderings of the same items")
    pos = {x: i for i, x in enumerate(b)}
    n = len(a)
    if n < 2:
        return 1.0
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            s += 1 if pos[a[i]] < pos[a[j]] else -1
    return s / (n * (n - 1) / 2)


def plot(df: pd.DataFrame, path, title: str = "") -> None:
    """Horizontal bars of the predicted time to the target, fastest on top; not-reached strategies are
    listed without a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedsim.io import atomic_write

    labels = list(df["strategy"])
    secs = [0.0 if pd_isna(v) else v / 1e3 for v in df["time_to_target_ms"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    y = np.arange(len(labels))
    ax.barh(y, secs, color="tab:blue")
    for yi, s, v in zip(y, secs, df["time_to_target_ms"]):
        ax.annotate("not reached" if pd_isna(v) else _seconds(v), (s, yi), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("predicted simulated time to target (s)")
    if title:
        ax.set_title(title, fontsize=10)
    fmt = str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format=fmt))
    finally:
        plt.close(fig)
