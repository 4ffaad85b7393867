"""Digits data: scikit-learn's bundled 8×8 images and each silo's Dirichlet share of them."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fedsim.clients.base import SiloData, dirichlet_partition


@lru_cache(maxsize=1)
def load() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images ``(N, 1, 8, 8)`` scaled to [0, 1] and their labels (read once per process).

    The very file ``sklearn.datasets.load_digits`` reads (its 64 pixel
    columns and the label), found without importing ``sklearn.datasets``:
    that import costs ~1.2 s of CPU in every process that trains (each
    ClientApp actor), the read 20 ms.
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the digits task needs scikit-learn (its package ships the digits data)")
    table = np.loadtxt(os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz"),
                       delimiter=",")
    images = table[:, :-1].reshape(-1, 8, 8)
    return (images / 16.0).astype(np.float32)[:, None], table[:, -1].astype(np.int64)


def silo_split(silo: int, n_silos: int, seed: int, alpha: float, test_fraction: float,
               min_size: int = 4) -> SiloData:
    """Silo ``silo``'s Dirichlet(α) share of the digits, ``test_fraction`` of it held out.

    Examples
    --------
    >>> d = silo_split(0, 400, seed=0, alpha=0.5, test_fraction=0.2)
    >>> d.n_train + len(d.y_test) >= 4
    True
    """
    x, _ = load()
    idx = np.random.default_rng([seed, silo]).permutation(_parts(n_silos, seed, alpha, min_size)[silo])
    n_test = max(1, int(round(len(idx) * test_fraction)))
    te, tr = idx[:n_test], idx[n_test:]
    y = load()[1]
    t = torch.from_numpy
    return SiloData(t(x[tr]), t(y[tr]), t(x[te]), t(y[te]))


@lru_cache(maxsize=4)
def _parts(n_silos: int, seed: int, alpha: float, min_size: int) -> tuple[np.ndarray, ...]:
    """The split of all silos, computed once per process (every silo of a simulation asks for it)."""
    return tuple(dirichlet_partition(load()[1], n_silos, alpha, seed, min_size=min_size))
