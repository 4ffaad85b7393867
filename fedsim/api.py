"""The Python API: cycle times, training runs and their records as pandas DataFrames.

Three functions, re-exported by :mod:`fedsim` (``import fedsim`` stays light:
they are imported on first use):

- :func:`cycle_times` -- the simulated cycle time of every topology x strategy
  x delay profile (what ``fedsim cycle-time`` prints);
- :func:`run` -- train on Flower's Simulation Engine exactly as ``fedsim run``
  does (same validation, same run folder);
- :func:`load_run` -- read a run folder back (rounds, config, summary).

The command line is built on the same functions: ``fedsim cycle-time`` calls
:func:`cycle_times`, :func:`run` prepares its run folder with the
very function ``fedsim run`` uses.

Examples
--------
>>> import fedsim
>>> df = fedsim.cycle_times(topologies="gaia", strategies=["ring", "mst"], profiles="femnist")
>>> df[["topology", "strategy", "profile", "cycle_time_ms"]].round(1)
  topology strategy  profile  cycle_time_ms
0     gaia     ring  femnist           57.2
1     gaia      mst  femnist           77.2
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.errors import FedsimError, check_int_at_least, check_positive

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["RunResult", "cycle_times", "load_run", "run", "CYCLE_COLUMNS"]

#: Columns of :func:`cycle_times`, in order.
CYCLE_COLUMNS = ("topology", "strategy", "profile", "cycle_time_ms", "silos", "detail")


def _names(value, kind: str, valid: Iterable[str] | None = None) -> tuple:
    """A comma string, one name or a list of names -> tuple; ``"all"`` -> ``valid``."""
    if isinstance(value, str):
        if value == "all" and valid is not None:
            return tuple(valid)
        items = tuple(x.strip() for x in value.split(",") if x.strip())
    elif value is None:
        items = ()
    else:
        items = tuple(value)
    if not items:
        extra = f"; valid: all, {', '.join(valid)}" if valid is not None else ""
        raise FedsimError(f"no {kind} given{extra}")
    return items


def cycle_times(
    topologies: str | Iterable[str] = "gaia",
    strategies: str | Iterable[str] = "all",
    profiles: str | Iterable = "femnist",
    *,
    upload_bps: float | None = None,
    download_bps: float | None = None,
    core_bps: float | None = None,
    local_steps: int | None = None,
    local_ms: float | None = None,
    round_trips: float | None = None,
    t: int = 5,
    budget: float = 0.5,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
    ray_address: str | None = None,
    stragglers: str | None = None,
    compute_ms_file: str | None = None,
) -> pd.DataFrame:
    """Simulated cycle time of every topology x strategy x delay profile.

    Parameters
    ----------
    topologies : str or list of str
        Networks: built-in names (``gaia nws geant exodus ebone``), ``zoo:NAME``
        or ``.gml`` paths; a comma string or a list.
    strategies : str or list of str
        Wirings (``star ring mst dmbst matcha matcha_plus multigraph``) or ``"all"``.
    profiles : str, DelayProfile or list of them
        Delay profiles by name (``femnist inaturalist sent140 shakespeare
        synthetic`` and one per task, e.g. ``digits``), or
        :class:`~fedsim.topologies.delay.DelayProfile` objects (e.g. the
        profile stored in a run's ``config.json``).
    upload_bps, download_bps, core_bps : float, optional
        Access up/down and core link capacities (bit/s); default: the
        published setting (1e10, 1e10, 1e9).
    local_steps : int, optional
        Local steps per round (default: the profile's, 1).
    local_ms, round_trips : float, optional
        Calibration to a deployment (see :mod:`fedsim.timing.calibration`):
        the measured local round time and the round trips per round.
    t, budget, seed : multigraph maximum multiplicity, MATCHA budget, MATCHA seed.
    workers : int
        Parallel Ray workers (1: sequential, no Ray).
    progress : bool
        Show a progress bar.
    stragglers : str, optional
        ``"lognormal:SIGMA"``: each silo's step time is the profile's times a
        seeded draw of ``exp(N(0, SIGMA^2))`` (``seed``).
    compute_ms_file : str, optional
        A CSV of per-silo ``compute_ms`` / ``upload_bps`` / ``download_bps``
        (column ``silo``: index or name), see :mod:`fedsim.topologies.stragglers`.
    ray_address : str, optional
        ``HOST:PORT`` of a Ray cluster's head, or ``"auto"``: one task per
        (topology, profile) on that existing cluster (``workers`` is then unused).

    Returns
    -------
    pandas.DataFrame
        One row per (profile, topology, strategy), in that nesting order, with
        columns ``topology strategy profile cycle_time_ms silos detail``.

    Raises
    ------
    FedsimError
        A bad name or number (one line saying what is accepted).

    Examples
    --------
    >>> import fedsim
    >>> df = fedsim.cycle_times("gaia", ["star", "multigraph"], "femnist")
    >>> df.set_index("strategy")["cycle_time_ms"].round(1).to_dict()
    {'star': 289.8, 'multigraph': 15.7}
    >>> df.dtypes["cycle_time_ms"], df.dtypes["silos"]
    (dtype('float64'), dtype('int64'))
    """
    import pandas as pd

    from fedsim.clients import get_profile
    from fedsim.errors import unknown_name
    from fedsim.timing.calibration import deployment_profile
    from fedsim.timing.sweep import SweepConfig, run_sweep
    from fedsim.topologies import TOPOLOGIES
    from fedsim.topologies.delay import DelayProfile
    from fedsim.topologies.networks import BUILTIN_NETWORKS, load_network

    workers = check_int_at_least("workers", workers, 1)
    networks = _names(topologies, "topology (network)", BUILTIN_NETWORKS)
    wirings = _names(strategies, "strategy", TOPOLOGIES)
    for s in wirings:
        if s not in TOPOLOGIES:
            raise unknown_name("strategy", s, TOPOLOGIES)
    if isinstance(profiles, DelayProfile):
        profiles = [profiles]
    profs = _names(profiles, "profile")
    overrides = {}
    for name, v in (("upload_bps", upload_bps), ("download_bps", download_bps), ("core_bps", core_bps)):
        if v is not None:
            overrides[name] = check_positive(name, v)
    if local_steps is not None:
        overrides["local_steps"] = check_int_at_least("local_steps", local_steps, 1)
    if local_ms is not None:
        check_positive("local_ms", local_ms)
    if round_trips is not None:
        check_positive("round_trips", round_trips)
    check_int_at_least("t", t, 1)
    check_positive("budget", budget)
    resolved = []
    for p in profs:  # resolved here (a task profile is measured once) and shipped to the workers
        prof = p.with_overrides(**overrides) if isinstance(p, DelayProfile) else get_profile(p, **overrides)
        if local_ms is not None or round_trips is not None:
            prof = deployment_profile(prof, prof.tc if local_ms is None else local_ms,
                                      1.0 if round_trips is None else round_trips)
        resolved.append((p.name if isinstance(p, DelayProfile) else p, prof))
    if stragglers is not None:
        from fedsim.topologies.stragglers import parse_stragglers

        parse_stragglers(stragglers)
    for n in networks:
        net = load_network(n)  # a bad network or silo file fails before anything is computed
        if compute_ms_file is not None:
            from fedsim.topologies.stragglers import read_silo_file

            read_silo_file(compute_ms_file, list(net.silos))
    configs = [SweepConfig(n, label, tuple(sorted(overrides.items())), t, budget, seed, resolved=prof,
                           stragglers=stragglers, compute_file=compute_ms_file)
               for label, prof in resolved for n in networks]
    rows = run_sweep(configs, wirings, workers=workers, progress=progress, ray_address=ray_address)
    df = pd.DataFrame([(r.network, r.topology, r.profile, r.cycle_time_ms, r.silos, r.detail) for r in rows],
                      columns=list(CYCLE_COLUMNS))
    return df.astype({"cycle_time_ms": "float64", "silos": "int64"})


def markdown_table(df: pd.DataFrame) -> str:
    """One line per (profile, topology), one column per strategy (ms), as ``fedsim cycle-time`` prints.

    Examples
    --------
    >>> import fedsim
    >>> print(markdown_table(fedsim.cycle_times("gaia", "ring,mst", "femnist")))
    | profile | network | ring | mst |
    |---|---|---:|---:|
    | femnist | gaia | 57.2 | 77.2 |
    """
    strategies = list(dict.fromkeys(df["strategy"]))
    lines = ["| profile | network | " + " | ".join(strategies) + " |", "|---|---|" + "---:|" * len(strategies)]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for prof, net, strat, ms in zip(df["profile"], df["topology"], df["strategy"], df["cycle_time_ms"]):
        cells.setdefault((prof, net), {})[strat] = ms
    for (prof, net), vals in cells.items():
        lines.append(f"| {prof} | {net} | " + " | ".join(f"{vals[s]:.1f}" for s in strategies) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- runs
@dataclass
class RunResult:
    """A run folder read back.

    Attributes
    ----------
    dir : pathlib.Path
        The run folder.
    rounds : pandas.DataFrame
        ``rounds.csv``: one row per completed round (row 0: the initial
        model); ``round`` is int64, ``failed`` a string column (missing: no
        silo failed), every other column float64.
    config : dict
        ``config.json``: the resolved :class:`~fedsim.apps.config.RunConfig`.
    summary : dict or None
        ``summary.json`` (absent while a run is unfinished).
    """

    dir: Path
    rounds: pd.DataFrame
    config: dict
    summary: dict | None = None

    @property
    def metric(self) -> str:
        """Name of the task's headline metric (``eval_metric`` holds its silo mean)."""
        if self.summary and self.summary.get("metric"):
            return str(self.summary["metric"])
        from fedsim.clients import get_task

        return get_task(self.config["task"], self.config.get("task_options") or {}).metric

    def __repr__(self) -> str:
        return f"RunResult(dir={str(self.dir)!r}, rounds={len(self.rounds)} rows, strategy={self.config.get('strategy')!r})"


def load_run(dir: str | Path) -> RunResult:
    """Read a run folder written by ``fedsim run`` (or :func:`run`, ``fedsim deploy``).

    Parameters
    ----------
    dir : str or path
        The run folder; it must hold ``config.json`` and ``rounds.csv``.

    Returns
    -------
    RunResult
        ``.rounds`` (DataFrame of ``rounds.csv``), ``.config``, ``.summary``.
        A last row cut short by a kill mid-write is dropped, as on resume.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text(json.dumps({"strategy": "ring", "task": "digits"}))
    >>> _ = (d / "rounds.csv").write_text(
    ...     "round,sim_round_ms,sim_cum_ms,eval_metric,failed\\n0,0,0,0.1,\\n1,45.5,45.5,0.3,\\n2,45.5,91,0.42,3\\n")
    >>> r = load_run(d)
    >>> r.rounds[["round", "sim_cum_ms", "eval_metric"]]
       round  sim_cum_ms  eval_metric
    0      0         0.0         0.10
    1      1        45.5         0.30
    2      2        91.0         0.42
    >>> r.rounds.dtypes["round"], r.rounds["failed"].isna().tolist(), r.summary
    (dtype('int64'), [True, True, False], None)
    """
    import pandas as pd

    from fedsim.apps.records import read_rounds

    d = Path(dir)
    if not (d / "config.json").is_file():
        raise FedsimError(f"{d} is not a run folder: no config.json there (expected config.json and rounds.csv)")
    if not (d / "rounds.csv").is_file():
        raise FedsimError(f"{d} is not a run folder: no rounds.csv there (expected config.json and rounds.csv)")
    try:
        config = json.loads((d / "config.json").read_text())
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else None
    except ValueError as exc:
        raise FedsimError(f"{d}: unreadable JSON ({exc})") from None
    with open(d / "rounds.csv", newline="") as fh:
        text = fh.read()
    header = next(csv.reader(text.splitlines()[:1]), [])
    complete = max(0, text.count("\n") - 1)  # a last line without its newline was cut short by a kill
    rows = read_rounds(d)[:complete]
    df = pd.DataFrame(rows, columns=header)
    types = {c: ("int64" if c == "round" else "string" if c == "failed" else "float64") for c in header}
    for c in header:  # an empty ``failed`` cell is "no failure": missing
        if types[c] == "string":
            df[c] = df[c].replace("", None)
    return RunResult(d, df.astype(types), config, summary)


def run(
    topology: str = "gaia",
    strategy: str = "multigraph",
    task: str = "digits",
    rounds: int = 20,
    seed: int = 0,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    silos: int | None = None,
    progress: bool = False,
    task_options: dict | None = None,
    **options: Any,
) -> RunResult:
    """Train on Flower's Simulation Engine (Ray, in-process), as ``fedsim run`` does.

    Parameters
    ----------
    topology : str
        The network (built-in name, ``zoo:NAME`` or a ``.gml`` path).
    strategy : str
        ``fedavg fedprox star ring mst dmbst matcha matcha_plus multigraph``.
    task : str
        ``digits cdl sac cfor gcd``.
    rounds, seed : int
    out : str or path, optional
        Run folder (default ``runs/NETWORK-STRATEGY-TASK-sSEED``); one that
        already holds a run is refused unless ``overwrite=True``.
    silos : int, optional
        Use the first N silos of the network, fully connected.
    progress : bool
        Show the progress bar.
    task_options : dict, optional
        Task options (``fedsim run --task-option KEY=VALUE``).
    **options
        Any other ``fedsim run`` flag, spelt with underscores: ``local_steps``,
        ``t``, ``base``, ``budget``, ``mu``, ``alpha``, ``lr``,
        ``checkpoint_every``, ``compute_ms``, ``workers``,
        ``max_failed_rounds``, ``round_timeout``, ``data_plane``,
        ``sync_every``, ``peer_timeout``...: the fields of
        :class:`~fedsim.apps.config.RunConfig`, with its defaults.

    Returns
    -------
    RunResult
        The run folder read back (:func:`load_run`).

    Examples
    --------
    Starts Ray and trains (about 20 s; ``tests/test_api.py`` runs it):

    >>> res = fedsim.run("gaia", "ring", "digits", rounds=3, out="runs/api-demo")  # doctest: +SKIP
    >>> res.rounds[["round", "sim_cum_ms", "eval_metric"]].tail(1)  # doctest: +SKIP
       round  sim_cum_ms  eval_metric
    3      3     136.4...       0.2...
    """
    from fedsim.apps.config import RunConfig
    from fedsim.apps.rundir import new_run
    from fedsim.apps.simulation import run_simulation

    valid = sorted(f.name for f in fields(RunConfig) if f.name not in RUN_FIELDS_FIXED) + ["alpha", "lr"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise FedsimError(f"unknown option {unknown[0]!r}; valid: {', '.join(valid)}")
    task_options = dict(task_options or {})
    for key in ("alpha", "lr"):  # fedsim run's --alpha/--lr are task options
        if options.get(key) is not None:
            task_options[key] = options.pop(key)
    cfg = RunConfig(network=str(topology), strategy=strategy, task=task, rounds=rounds, seed=seed,
                    task_options=task_options, **options)
    cfg, run_dir = new_run(cfg, out, overwrite, silos, cfg.workers)  # the same checks and folder as ``fedsim run``
    run_simulation(cfg, run_dir, progress=progress)
    return load_run(run_dir)


RUN_FIELDS_FIXED = {"network", "strategy", "task", "rounds", "seed", "task_options", "profile"}
