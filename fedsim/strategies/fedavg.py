"""FedAvg (McMahan et al., 2017): every silo restarts from the sample-weighted average."""

from __future__ import annotations

import numpy as np

from fedsim.strategies.base import TopologyStrategy


class FedAvg(TopologyStrategy):
    """Each row of ``W`` is ``n_j / Σ n`` (the silos' training-set sizes)."""

    name = "fedavg"

    def mixing(self, server_round):
        share = self.n_examples / self.n_examples.sum()
        return np.tile(share, (self.n, 1)), None
