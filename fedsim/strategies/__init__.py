"""Flower strategies, one module each; every round carries its simulated time.

``STRATEGIES`` lists the names users type with ``--strategy``.
"""

from __future__ import annotations

from fedsim.strategies.decentralized import Decentralized
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedprox import FedProx
from fedsim.strategies.star import Star

CENTRALIZED = {"fedavg": FedAvg, "fedprox": FedProx, "star": Star}
DECENTRALIZED = ("ring", "mst", "dmbst", "matcha", "matcha_plus", "multigraph")
STRATEGIES: tuple[str, ...] = (*CENTRALIZED, *DECENTRALIZED)

__all__ = ["STRATEGIES", "CENTRALIZED", "DECENTRALIZED", "Decentralized", "FedAvg", "FedProx", "Star"]
