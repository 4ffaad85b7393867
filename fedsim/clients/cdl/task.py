"""CDL: federated steering regression with a contrastive divergence loss.

Each silo trains a Siamese pair of DroNet-style ResNet-8 branches on grayscale
road images: a **backbone**, which is exchanged and mixed with the other silos
like any model, and a **sub-network**, which never leaves the silo and acts as
a memory of what the silo itself learned. Inference uses the backbone only.

Model
-----
A ResNet-8 branch (DroNet) is a 5×5/2 convolution, a 3×3/2 max-pool, three
pre-activation residual blocks (BN-ReLU-3×3/2 conv, BN-ReLU-3×3 conv, plus a
1×1/2 projection shortcut), then ReLU → dropout(0.5) → linear → one steering
value. ``size="paper"`` is the published branch (1×200×200 input, widths
32/32/64/128, 314,657 parameters); ``size="small"`` (default) is the CPU
version (1×64×64, widths 8/8/16/32, 19,817 parameters). Unlike the released
code, the two branches do not share the stem: the write-up describes two
distinct networks, and a fully separate sub-network is exactly a local copy
that only the silo's own gradient moves.

Loss
----
With ``b`` and ``s`` the steering outputs of the backbone and the sub-network
on the same batch and ``y`` the labels::

    L     = L_lr + β·L_cd+ + (1-β)·L_cd-
    L_lr  = mean |b - y|                                      (L1, backbone only)
    L_cd+ = H(b ‖ sg(s)) ,  L_cd- = H(s ‖ sg(b))
    H(u ‖ v) = mean over the batch of KL( Bern(σ(u)) ‖ Bern(σ(v)) )
             = σ(u)·log(σ(u)/σ(v)) + (1-σ(u))·log((1-σ(u))/(1-σ(v)))

``sg`` stops the gradient, so the backbone is trained on ``L_lr + β·L_cd+`` and
the sub-network on ``(1-β)·L_cd-`` only, as in the write-up. ``L_lr`` is the
write-up's MAE (the released code uses MSE).

Why a Bernoulli KL: the write-up defines ``H(ŷ, y) = Σ f(ŷ) log(f(ŷ)/f(y))``,
a KL divergence between output *distributions*, but a branch outputs one
scalar. The released code squashes each output with a sigmoid; reading
``f(u) = (σ(u), 1-σ(u))`` (a softmax over the two logits ``(u, 0)``) makes ``H`` a
true KL, cheap and exactly zero when the branches agree. A Gaussian
with fixed variance would instead give the symmetric ``(u-v)²/2σ²``, which
makes ``β`` a mere gradient split; the Bernoulli KL is asymmetric, so ``β``
weighs two different divergences, as in the paper. For nearby outputs
``H(u‖v) ≈ σ'(u)·(u-v)²/2`` (``≈ (u-v)²/8`` at ``u ≈ 0``): a soft pull in output space,
whose gradient ``σ'(u)·(u-v)`` is small next to the L1 gradient (±1) for steering-sized
differences. ``kl_temperature`` τ (default 1, the released code's sigmoid) compares
``σ(u/τ)`` and ``σ(v/τ)`` instead, scaling the pull by about ``1/τ²``.
Both branches see the same dropout mask, so the divergence measures the
branches' weights rather than two dropout draws (and is 0 right after the copy).

The sub-network is a copy of the backbone the first time a silo trains (when
the silo has no local state yet, the received backbone is copied). A buffer
``sub_ready`` records that the copy was made; like the sub-network it stays on
the silo. ``variant="resnet8"`` is the plain DroNet-style baseline: the
backbone alone, trained on ``L_lr``, so CDL can be compared under any strategy.
Optimiser: Adam, lr 1e-3, weight decay 1e-5, batch 32 (the paper's); like
every fedsim task it is rebuilt each round, so its moments do not carry over
between rounds.

Data
----
``data="synthetic"`` (default) renders seeded road scenes (:func:`render_roads`):
the road bends with the curvature ``κ`` and is shifted by the car's lateral
offset ``o``; the label is the steering that follows the bend and drives back
to the lane centre, ``y = κ - 0.3·o`` in [-1, 1]. Silos differ (non-IID) in
their steering distribution (turn-biased, mostly straight, or bimodal, as the
per-vehicle Carla histograms) and in their look (illumination, texture,
road width, horizon, lane marks, sensor noise). ``label_shift`` and
``style_shift`` in [0, 1] blend each silo towards the pooled mixture of all
silos (0: IID). A silo holds ``total/n_silos × scale`` images (``dataset``
sets the published total: udacity 38,586, gazebo 66,806, carla 73,235;
``scale`` defaults to 0.05, e.g. 175 per silo on Gaia's 11), varied ±40 %
across silos.
``data=<folder>`` reads Udacity-style folders (:func:`load_steering_folder`).

Metrics (each silo's test split): ``rmse`` (headline, lower is better),
``mae``, ``mse`` (for pooling: pooled RMSE = sqrt(Σ n·mse / Σ n)), ``loss``
(= the L1 regression loss) and ``n``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedsim.clients.base import SiloData, Task, minibatch_steps
from fedsim.clients.cdl.data import _folder_silos, silo_sizes, synthetic_silo, to_float
from fedsim.clients.cdl.model import CDLNet, cdl_loss
from fedsim.clients.cdl.options import DATASET_TOTALS, CDLOptions
from fedsim.errors import FedsimError


# ---------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------
class CDLTask(Task):
    """Federated steering with the contrastive divergence loss (or its ResNet-8 baseline).

    Config keys (defaults): ``variant`` ("cdl" | "resnet8"), ``size``
    ("small" | "paper"), ``image_size`` and ``widths`` (override the size),
    ``dropout`` (0.5), ``beta`` (0.5), ``kl_temperature`` (1.0), ``optimizer`` ("adam" | "sgd"), ``lr``
    (1e-3), ``weight_decay`` (1e-5), ``batch_size`` (32), ``data``
    ("synthetic" or a folder), ``dataset`` ("udacity" | "gazebo" | "carla",
    sets the total image count), ``scale`` (0.05), ``n_per_silo`` (overrides the
    sizes), ``label_shift`` (1.0), ``style_shift`` (1.0), ``test_fraction``
    (0.2), ``steering_scale`` (1.0, folders only).

    With a folder, sub-folders that hold a CSV are the natural silos
    (sub-folder ``j`` goes to silo ``j mod n_silos``); with fewer sub-folders
    than silos, or none, all images are pooled and split into contiguous
    chunks of the order of ``label_shift·z(y) + (1-label_shift)·ε``, ``z`` the
    standardised steering and ``ε ~ N(0, 1)`` (1: sorted by steering, 0: random).
    """

    name = "cdl"
    Options = CDLOptions
    reference_step_ms = 19.2  # CPU ms of one local step, default options (see Task.profile)
    metric = "rmse"
    higher_is_better = False

    def __init__(self, config: dict | CDLOptions | None = None) -> None:
        super().__init__(config)
        o = self.options
        self.variant = o.variant
        self.image_size = o.resolved_image_size
        self.widths = tuple(o.resolved_widths)
        self.beta = o.beta
        self.temperature = o.kl_temperature
        self.optimizer = o.optimizer
        self.dataset = o.dataset

    # -- model ---------------------------------------------------------------
    def model(self) -> CDLNet:
        return CDLNet(self.image_size, self.widths, self.options.dropout,
                      siamese=self.variant == "cdl")

    def exchanged_keys(self, model: nn.Module) -> list[str]:
        """The backbone's parameters and BN running statistics; never ``sub.*``.

        ``num_batches_tracked`` (an integer counter BN ignores with a fixed
        momentum) and ``sub_ready`` stay local too.
        """
        return [k for k, v in model.state_dict().items()
                if k.startswith("backbone.") and v.is_floating_point()]

    # -- data ----------------------------------------------------------------
    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        o = self.options
        data = o.data
        if data == "synthetic":
            if o.n_per_silo is not None:
                n = o.n_per_silo
            else:
                n = int(silo_sizes(n_silos, seed, DATASET_TOTALS[self.dataset], o.scale)[silo])
            x, y = synthetic_silo(silo, n_silos, seed, n, self.image_size, o.label_shift, o.style_shift)
        else:
            x, y = self._folder_partition(data, silo, n_silos, seed)
        idx = np.random.default_rng([seed, silo]).permutation(len(y))
        n_test = min(len(y) - 1, max(1, int(round(len(y) * o.test_fraction))))
        te, tr = idx[:n_test], idx[n_test:]
        t = torch.from_numpy
        return SiloData(t(x[tr]), t(y[tr]), t(x[te]), t(y[te]))

    def _folder_partition(self, root: str, silo: int, n_silos: int, seed: int):
        groups = _folder_silos(root, self.image_size, self.options.steering_scale)
        if len(groups) >= n_silos:
            mine = [g for j, g in enumerate(groups) if j % n_silos == silo]
            return np.concatenate([g[0] for g in mine]), np.concatenate([g[1] for g in mine])
        x = np.concatenate([g[0] for g in groups])
        y = np.concatenate([g[1] for g in groups])
        if len(y) < 2 * n_silos:
            raise FedsimError(f"data folder {root!r} has {len(y)} images; {n_silos} silos need >= {2 * n_silos}")
        lam = self.options.label_shift
        z = (y - y.mean()) / (y.std() + 1e-8)
        key = lam * z + (1 - lam) * np.random.default_rng([seed, 505]).standard_normal(len(y))
        part = np.array_split(np.argsort(key, kind="stable"), n_silos)[silo]
        return x[part], y[part]

    # -- learning ------------------------------------------------------------
    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        lr, wd = self.options.lr, self.options.weight_decay
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd,
                               momentum=self.options.momentum)

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        """``steps`` mini-batch steps of the CDL objective (or L1 for ``resnet8``).

        Returns the mean objective ``loss`` (= ``L``) and its parts ``l1``,
        ``cd_plus``, ``cd_minus``. A FedProx term, if any, acts on the backbone
        only (the exchanged part).
        """
        model.ensure_sub()
        bs = min(self.options.batch_size, data.n_train)
        p = model.backbone.dropout
        backbone_anchor = None
        if prox_mu and anchor is not None:
            named = [(n, a) for (n, _), a in zip(model.named_parameters(), anchor) if n.startswith("backbone.")]
            backbone_anchor = [a for _, a in named]

        def batch_loss(idx):
            x, y = to_float(data.x_train[idx]), data.y_train[idx]
            # One dropout mask drawn from the run's generator: deterministic, shared by both branches.
            mask = (torch.rand((bs, model.backbone.n_features), generator=generator) >= p).float() / (1 - p) \
                if p > 0 else None
            b = model.backbone(x, mask)
            if model.sub is not None:
                return cdl_loss(b, model.sub(x, mask), y, self.beta, self.temperature)
            objective = (b - y).abs().mean()
            return objective, {"l1": float(objective.detach()), "cd_plus": 0.0, "cd_minus": 0.0}

        return minibatch_steps(model, data, steps, generator, self._optimizer(model), bs,
                               prox_mu=prox_mu if backbone_anchor is not None else 0.0, anchor=backbone_anchor,
                               batch_loss=batch_loss, prox_model=model.backbone)

    @torch.no_grad()
    def evaluate(self, model, data):
        """RMSE, MAE, MSE and the L1 ``loss`` of the backbone on the test split."""
        model.eval()
        preds = torch.cat([model.backbone(to_float(chunk)) for chunk in torch.split(data.x_test, 256)])
        err = (preds - data.y_test).double()
        mse = float((err**2).mean())
        mae = float(err.abs().mean())
        return {"loss": mae, "rmse": math.sqrt(mse), "mae": mae, "mse": mse, "n": float(len(err))}
