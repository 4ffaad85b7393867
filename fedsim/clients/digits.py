"""Digits: a small CNN on scikit-learn's bundled 8×8 handwritten digits.

1,797 images ship inside the scikit-learn wheel (no download). Silos get a
Dirichlet(α) label skew; each silo holds out ``test_fraction`` of its samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedsim.clients.base import SiloData, Task, dirichlet_partition, minibatch_steps


class DigitsCNN(nn.Module):
    """conv(1→8) → pool → conv(8→16) → pool → linear(64→10); 1,898 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class DigitsTask(Task):
    """Config keys: ``alpha`` (Dirichlet, default 0.5), ``lr`` (SGD, 0.05),
    ``batch_size`` (32), ``test_fraction`` (0.2)."""

    name = "digits"
    reference_step_ms = 1.1  # CPU ms of one local step, default options (see Task.profile)
    metric = "accuracy"

    def _cfg(self, key: str, default):
        return type(default)(self.config.get(key, default))

    def model(self) -> nn.Module:
        return DigitsCNN()

    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]
        y = d.target.astype(np.int64)
        parts = dirichlet_partition(y, n_silos, self._cfg("alpha", 0.5), seed)
        idx = np.random.default_rng([seed, silo]).permutation(parts[silo])
        n_test = max(1, int(round(len(idx) * self._cfg("test_fraction", 0.2))))
        te, tr = idx[:n_test], idx[n_test:]
        t = torch.from_numpy
        return SiloData(t(x[tr]), t(y[tr]), t(x[te]), t(y[te]))

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        opt = torch.optim.SGD(model.parameters(), lr=self._cfg("lr", 0.05))
        return minibatch_steps(model, data, steps, generator, opt, self._cfg("batch_size", 32),
                               nn.functional.cross_entropy, prox_mu, anchor)

    @torch.no_grad()
    def evaluate(self, model, data):
        model.eval()
        logits = model(data.x_test)
        loss = nn.functional.cross_entropy(logits, data.y_test)
        acc = (logits.argmax(1) == data.y_test).float().mean()
        return {"loss": float(loss), "accuracy": float(acc), "n": float(len(data.y_test))}
