"""STAR: server-based FedAvg with equal weights, timed as the STAR overlay.

The exact uniform average of all silos (the ``centralized`` architecture of
Marfoq et al.); its round time is the STAR cycle time of the network, with
the server at the silo of highest load centrality.
"""

from __future__ import annotations

import numpy as np

from fedsim.strategies.base import TopologyStrategy


class Star(TopologyStrategy):
    name = "star"

    def mixing(self, server_round):
        return np.full((self.n, self.n), 1.0 / self.n), None
