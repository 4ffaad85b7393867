"""FedProx (Li et al., 2020): FedAvg whose silos add ``mu/2 ||w − w_received||²``."""

from __future__ import annotations

from fedsim.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    """The proximal term is applied by the ClientApp with ``prox-mu`` from the config."""

    name = "fedprox"

    def __init__(self, *args, mu: float = 0.01, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mu = float(mu)

    def train_config(self, server_round):
        return {"prox-mu": self.mu}
