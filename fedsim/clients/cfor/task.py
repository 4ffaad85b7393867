"""CFOR: ontology-driven local multitask attribute learning with MCC thresholds.

A small, CPU-trainable version of the coarse-to-fine object retrieval (CFOR)
learning stack:

- **Object ontology as data** (:class:`Ontology`, loaded from a TOML or JSON
  file, default ``fedsim/clients/cfor/ontology.toml``): regions →
  categories → attribute groups (color, texture, fabric, shape, part, style).
- **One classification model per ontology stage** over a shared convolutional
  backbone: a region classifier and one category classifier per region
  (trained only on that region's samples), predicted coarse to fine.
- **Local multitask attribute learning**: one multitask head per attribute
  group (its own hidden layer shared by the group's attributes, then one
  sigmoid output per attribute), binary cross-entropy per group. The layout
  is an option (``"local"``, ``"single"`` = one head for all attributes,
  ``"single_task"`` = one head per attribute) so the three can be compared.
- **Imbalanced-data solver**: per-attribute decision thresholds chosen to
  maximise the Matthews correlation coefficient (MCC) on a validation split;
  the model and the loss are unchanged (:func:`mcc_thresholds`).
- **Data**: a seeded generator of composited garment images whose category,
  color, texture, fabric, shape, parts and style are known attributes with
  long-tailed frequencies, and per-silo category and attribute priors
  (non-IID); or DeepFashion-style attribute files (:func:`load_deepfashion`).

Retrieval (faiss indexes per ontology leaf, coarse-to-fine search, query
expansion, MAP@k) lives in :mod:`fedsim.clients.cfor.retrieval`.

Labels are stored as one int64 tensor per split, ``y[:, 0]`` the region,
``y[:, 1]`` the category (global index, ontology order) and ``y[:, 2:]`` the
0/1 attribute vector (ontology order).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedsim.clients.base import Task, dirichlet_partition, minibatch_steps
from fedsim.clients.cfor.data import CFORSiloData, _deepfashion, check_drawable, generate, load_images, silo_generator
from fedsim.clients.cfor.metrics import _nanmean, attribute_metrics, evaluate_retrieval, mcc_thresholds, rarest
from fedsim.clients.cfor.model import CFORNet, CFOROutput, cfor_loss
from fedsim.clients.cfor.ontology import Ontology, load_ontology, predict_stages
from fedsim.clients.cfor.options import CFOROptions
from fedsim.errors import FedsimError


class CFORTask(Task):
    """Ontology-driven attribute multitask learning with MCC thresholds.

    Config keys (defaults): ``ontology`` (packaged TOML), ``deepfashion_root``
    (None: synthetic images), ``samples_per_silo`` (600; with DeepFashion a cap,
    0 = all), ``test_fraction`` (0.25), ``val_fraction`` (0.2), ``alpha``
    (Dirichlet category skew, 0.5), ``attr_concentration`` (κ of the per-silo
    attribute priors, 10), ``image_size`` (32), ``lr`` (Adam, 0.003),
    ``batch_size`` (32), ``width`` (16), ``feature_dim`` (64), ``head_hidden``
    (16), ``layout`` (``local``), ``rare_fraction`` (0.4).

    :meth:`evaluate` picks per-attribute MCC thresholds on the silo's
    validation split with the received model, then reports on the test split:
    ``mcc``, ``recall``, ``precision`` (means over attributes at the MCC
    thresholds), the same at 0.5 (``*_05``), ``rare_recall`` / ``rare_recall_05``
    (mean recall over the rarest ``rare_fraction`` of attributes by training
    frequency), ``region_acc`` and ``category_acc`` (coarse-to-fine), ``map10``
    (retrieval MAP@10 of test queries against the silo's training images, see
    :mod:`fedsim.clients.cfor.retrieval`), ``loss`` and ``n``. Headline: ``mcc``.
    """

    name = "cfor"
    Options = CFOROptions
    reference_step_ms = 18.7  # CPU ms of one local step, default options (see Task.profile)
    metric = "mcc"
    higher_is_better = True

    def __init__(self, config: dict | CFOROptions | None = None) -> None:
        super().__init__(config)
        self.ontology = self._load_ontology()

    def _load_ontology(self) -> Ontology:
        root = self.options.deepfashion_root
        if root:
            return _deepfashion(str(root)).ontology
        onto = load_ontology(self.options.ontology)
        check_drawable(onto)
        return onto

    # -- model --------------------------------------------------------------
    def model(self) -> CFORNet:
        o = self.ontology
        return CFORNet(o.n_regions, [len(c) for c in o.categories], [len(g.attributes) for g in o.groups],
                       width=self.options.width, feature_dim=self.options.feature_dim,
                       head_hidden=self.options.head_hidden, layout=self.options.layout)

    # -- data -----------------------------------------------------------------
    def _split(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> CFORSiloData:
        n = len(y)
        idx = rng.permutation(n)
        n_test = max(1, int(round(n * self.options.test_fraction)))
        n_val = max(1, int(round(n * self.options.val_fraction)))
        te, va, tr = idx[:n_test], idx[n_test:n_test + n_val], idx[n_test + n_val:]
        t = torch.from_numpy
        return CFORSiloData(t(x[tr]), t(y[tr]), t(x[te]), t(y[te]), t(x[va]), t(y[va]))

    def partition(self, silo: int, n_silos: int, seed: int) -> CFORSiloData:
        if not 0 <= silo < n_silos:
            raise FedsimError(f"silo must be in 0..{n_silos - 1}, got {silo}")
        root = self.options.deepfashion_root
        if root:
            return self._deepfashion_partition(str(root), silo, n_silos, seed)
        n = self.options.samples_per_silo
        rng, cat_p, priors, bg = silo_generator(self.ontology, silo, n_silos, seed, self.options.alpha,
                                                self.options.attr_concentration)
        x, y = generate(self.ontology, n, rng, cat_p, priors, self.options.image_size, bg)
        return self._split(x, y, rng)

    def _deepfashion_partition(self, root: str, silo: int, n_silos: int, seed: int) -> CFORSiloData:
        ann = _deepfashion(root)
        parts = dirichlet_partition(ann.labels[:, 1], n_silos, self.options.alpha, seed, min_size=1)
        idx = parts[silo]
        cap = self.options.samples_per_silo
        rng = np.random.default_rng(np.random.SeedSequence([seed, silo, n_silos, 0xDF]))
        if cap and len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        x = load_images(ann.root, [ann.images[i] for i in idx], self.options.image_size)
        y, split = ann.labels[idx], ann.split[idx]
        if not ((split == "val").any() and (split == "test").any() and (split == "train").any()):
            return self._split(x, y, rng)  # no usable partition file: random split
        t = torch.from_numpy
        sel = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
        return CFORSiloData(t(x[sel["train"]]), t(y[sel["train"]]), t(x[sel["test"]]), t(y[sel["test"]]),
                            t(x[sel["val"]]), t(y[sel["val"]]))

    # -- learning -------------------------------------------------------------
    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        opt = torch.optim.Adam(model.parameters(), lr=self.options.lr)
        return minibatch_steps(model, data, steps, generator, opt, self.options.batch_size,
                               lambda out, y: cfor_loss(out, y, self.ontology), prox_mu, anchor)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> tuple[CFOROutput, np.ndarray]:
        """Model outputs for ``x`` (in batches) and the attribute probabilities σ(z)."""
        model.eval()
        outs = [model(x[a:a + batch_size]) for a in range(0, len(x), batch_size)]
        out = CFOROutput(torch.cat([o.feature for o in outs]), torch.cat([o.region for o in outs]),
                         [torch.cat([o.category[r] for o in outs]) for r in range(len(outs[0].category))],
                         torch.cat([o.attributes for o in outs]))
        return out, torch.sigmoid(out.attributes).numpy()

    def thresholds(self, model: nn.Module, data: CFORSiloData) -> np.ndarray:
        """MCC-optimal per-attribute thresholds on the validation split."""
        _, p = self.predict(model, data.x_val)
        return mcc_thresholds(p, data.y_val[:, 2:].numpy())

    @torch.no_grad()
    def evaluate(self, model, data):
        onto = self.ontology
        thr = self.thresholds(model, data)
        out, p = self.predict(model, data.x_test)
        y = data.y_test[:, 2:].numpy()
        loss = float(cfor_loss(out, data.y_test, onto))
        region, category = predict_stages(out, onto)
        m_mcc, m_half = attribute_metrics(p, y, thr), attribute_metrics(p, y, 0.5)
        rare = rarest(data.y_train[:, 2:].float().mean(0).numpy(), self.options.rare_fraction)
        res = {"loss": loss, "mcc": _nanmean(m_mcc["mcc"]), "mcc_05": _nanmean(m_half["mcc"]),
               "recall": _nanmean(m_mcc["recall"]), "recall_05": _nanmean(m_half["recall"]),
               "precision": _nanmean(m_mcc["precision"]), "precision_05": _nanmean(m_half["precision"]),
               "rare_recall": _nanmean(m_mcc["recall"][rare]), "rare_recall_05": _nanmean(m_half["recall"][rare]),
               "region_acc": float((region == data.y_test[:, 0]).float().mean()),
               "category_acc": float((category == data.y_test[:, 1]).float().mean())}
        res["map10"] = float(evaluate_retrieval(self, model, data.x_train, data.y_train, data.x_test,
                                                data.y_test, k=10, thresholds=thr)[-1])
        res["n"] = float(len(data.y_test))
        return res
