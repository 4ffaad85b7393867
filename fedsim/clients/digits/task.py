"""Digits: a small CNN on scikit-learn's bundled 8×8 handwritten digits.

1,797 images ship inside the scikit-learn wheel (no download). Silos get a
Dirichlet(α) label skew; each silo holds out ``test_fraction`` of its samples.
Every silo gets at least ``min_size`` images, so at most ``1797 // min_size``
silos (449 by default) can be served; more are refused before a run starts
(:func:`fedsim.clients.check_silos`).
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.clients.base import PlainSGD, SiloData, Task, minibatch_steps
from fedsim.clients.digits.data import silo_split
from fedsim.clients.digits.model import DigitsCNN
from fedsim.clients.digits.options import DigitsOptions


class DigitsTask(Task):
    """Options (:class:`~fedsim.clients.digits.options.DigitsOptions`): ``alpha`` (Dirichlet,
    default 0.5), ``lr`` (SGD, 0.05), ``batch_size`` (32), ``test_fraction`` (0.2), ``min_size`` (4)."""

    name = "digits"
    Options = DigitsOptions
    reference_step_ms = 1.1  # CPU ms of one local step, default options (see Task.profile)
    metric = "accuracy"

    def model(self) -> nn.Module:
        return DigitsCNN()

    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        self.check_silos(n_silos)
        o = self.options
        return silo_split(silo, n_silos, seed, o.alpha, o.test_fraction, o.min_size)

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        opt = PlainSGD(model.parameters(), lr=self.options.lr)
        return minibatch_steps(model, data, steps, generator, opt, self.options.batch_size,
                               nn.functional.cross_entropy, prox_mu, anchor)

    @torch.no_grad()
    def evaluate(self, model, data):
        model.eval()
        logits = model(data.x_test)
        loss = nn.functional.cross_entropy(logits, data.y_test)
        acc = (logits.argmax(1) == data.y_test).float().mean()
        return {"loss": float(loss), "accuracy": float(acc), "n": float(len(data.y_test))}
