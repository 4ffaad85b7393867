"""FedAvg (McMahan et al., 2017): every silo restarts from the sample-weighted average."""

from __future__ import annotations

import numpy as np

from fedsim.strategies.base import TopologyStrategy


class FedAvg(TopologyStrategy):
    """Each row of ``W`` is ``n_j / Σ n`` (the silos' training-set sizes)."""

    name = "fedavg"
    weights_by_examples = True

    def mixing(self, server_round, n_examples=None):
        n_examples = self.n_examples if n_examples is None else n_examples
        share = n_examples / n_examples.sum()
        return np.tile(share, (self.n, 1)), None
