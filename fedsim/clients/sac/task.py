"""SAC: fine-grained classification with a Self-Assessment Classifier.

A backbone CNN gives a feature map ``F`` (``d_f`` channels on an ``m × n``
grid, ``f = m·n`` cells) and a visual feature ``V``; the first (coarse)
classifier on ``V`` gives probabilities ``P1`` and the top-``k`` candidate
classes. The self-assessment branch re-reads the image with those
candidates in mind:

1. **Top-k class embedding** -- each class name is split into at most 4
   word tokens; each token is mapped to a learned embedding row through a
   deterministic hash (``1 + crc32(token) mod (B - 1)``, row 0 = padding), and
   a GRU over the tokens gives one vector ``E_j ∈ R^{d_e}`` per class. No
   pretrained word vectors are used (nothing is downloaded): the hashed table
   is trained with the rest of the model, so names that share a word share
   its embedding row.
2. **Joint embedding** -- with layer-normalised cells ``F̂_i = LN(F_i)`` and
   names ``Ê_j = LN(E_j)``, an attention map over all ``f × k`` (cell, class)
   couples, ``M = softmax_{(i,j)}(F̂_i^T T_M Ê_j)`` (one softmax over the
   ``f·k`` couples of an image), and the low-rank bilinear joint
   representation

   ``J = P^T Σ_{i,j} M_ij (tanh(U^T F̂_i) ⊙ tanh(W^T Ê_j))``

   i.e. the couple tensor ``T_u ∈ R^{d_f × d_e × d_j}`` of the method is
   factorised with rank ``R``: ``T_u[a, b, c] = Σ_r U[a, r] W[b, r] P[r, c]``
   (with tanh on the two projections, as in low-rank bilinear pooling; the
   maps ``U``, ``W``, ``P`` also carry biases).
3. **Self assessment** -- the second (fine) classifier on ``J``. As in the
   released code of the method, ``J`` is mapped back to the visual width and
   added residually to ``V``: ``P2 = softmax(C2·ReLU(V + Q·J) + c2)``
   (``residual = true``, default). With ``residual = false`` the classifier
   sees ``J`` alone, ``P2 = softmax(C2·ReLU(J) + c2)``, as the method's text
   reads; in a pilot on the ``fine`` set (one silo, 320 steps) that variant's
   ``P2`` alone reached 59 % top-1 against 84 % for ``P1``, while the
   residual one tracked ``P1`` (79 % vs 77 %). The prediction is
   ``P = α·P1 + (1 − α)·P2``.
4. **Dropping** -- during training, the cells whose attention mass
   ``a_i = Σ_j M_ij`` reaches ``θ·max_i a_i`` are erased from the input
   (set to 0, the dataset mean after standardisation; the cell mask is
   upsampled to pixels) and the erased image is trained on as well.

Training loss per batch (``λ`` = ``sac_weight``, ``ω`` = ``drop_weight``):
``L(x) = CE(z1, y) + λ·CE(z2, y)`` and ``(1 − ω)·L(x) + ω·L(drop(x))``.
With ``sac = false`` the model is the backbone and its first classifier
only, trained with ``CE(z1, y)`` and predicting ``P = P1`` -- the baseline
for measuring what SAC adds. Evaluation reports top-1 ``accuracy`` (the
headline), ``topk_accuracy`` (the true class among the ``k`` most probable),
``accuracy_coarse`` (top-1 of ``P1`` alone), ``loss = mean(-log P[y])`` and
``n``.

Data (``dataset``):

- ``digits`` -- scikit-learn's bundled 8×8 handwritten digits (1,797 images,
  in the wheel), class names "zero" ... "nine".
- ``fine`` -- a seeded generator of visually near glyph classes on a 16×16
  canvas: four outline shapes (ring, box, diamond, triangle) × three small
  details (none, a dot in the upper or the lower half), e.g. "upper dot
  ring" vs "lower dot ring" vs "plain ring"; names share their tokens. Shapes
  are jittered (position, size, rotation, stroke, contrast), with pixel noise
  and a stray dot in some images, so the detail is what separates classes.
- ``cub`` -- a CUB-200-2011-style folder ``data_dir`` with ``images/``,
  ``images.txt`` (id, relative path), ``classes.txt`` (id, name, e.g.
  ``001.Black_footed_Albatross``), ``image_class_labels.txt`` (image id,
  class id) and optionally ``train_test_split.txt`` (image id, 1 = train).
  Images are read with Pillow and resized to ``image_size``².

Silos get a Dirichlet(``alpha``) label skew of the pooled images. Each silo
holds out ``test_fraction`` of its images for testing, or, where a CUB-style
folder has ``train_test_split.txt``, keeps its images' official split.

Config keys (defaults): ``dataset`` ("digits"), ``data_dir`` (cub only),
``sac`` (true), ``k`` (3), ``sac_alpha`` α (0.5), ``sac_weight`` λ (1.0),
``drop_weight`` ω (0.5), ``drop_threshold`` θ (0.5), ``embed_dim`` (16),
``name_dim`` d_e (32), ``joint_dim`` d_j (32), ``rank`` R (32),
``hash_buckets`` (256), ``width`` (16), ``feat_dim`` d_f (32), ``grid`` (4),
``visual_dim`` d_v (64), ``residual`` (true), ``alpha`` Dirichlet (0.5), ``optimizer`` ("sgd"
or "adam"), ``lr`` (0.05), ``momentum`` (SGD: 0.9; the optimiser is new
each round), ``batch_size`` (32), ``test_fraction`` (0.2), ``image_size``
(cub: 32), ``grayscale`` (cub: false), ``n_per_class`` (fine: 150),
``data_seed`` (fine: 0). ``alpha`` is the Dirichlet skew (``fedsim run
--alpha``) as for every task; the probability mix is ``sac_alpha``. The
defaults are the small CPU version: ``k = 3`` of 10–12 classes (the method
uses ``k = 10`` of 120–200 classes, GloVe-300 words and a 1024-d GRU),
``α = 0.5`` as in the method's write-up, ``λ = 1``. Every parameter is
exchanged (backbone, both classifiers, name encoder, joint embedding).

Examples
--------
>>> from fedsim.clients.sac.data import FINE_CLASSES
>>> from fedsim.clients.sac.model import name_tokens
>>> names = [c for c in FINE_CLASSES if c.endswith("ring")]
>>> names
['plain ring', 'upper dot ring', 'lower dot ring']
>>> name_tokens("001.Black_footed_Albatross")
['black', 'footed', 'albatross']
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as tnf

from fedsim.clients.base import SiloData, Task, dirichlet_partition, minibatch_steps
from fedsim.clients.sac.data import DIGIT_CLASSES, FINE_CLASSES, Pool, cub_classes, load_cub, make_fine
from fedsim.clients.sac.metrics import mix_probabilities, topk_hits
from fedsim.clients.sac.model import SACNet, SACOutput, drop_most_attended
from fedsim.clients.sac.options import MIN_SILO_IMAGES, SACOptions
from fedsim.errors import FedsimError


# ----------------------------------------------------------------- task
class SACTask(Task):
    """Fine-grained classification with (``sac=true``) or without the SAC branch.

    See the module docstring for the model, the losses, the data and the
    config keys. Every parameter (backbone, both classifiers, name encoder,
    joint embedding) is exchanged.
    """

    name = "sac"
    Options = SACOptions
    reference_step_ms = 9.8  # CPU ms of one local step, default options (see Task.profile)
    metric = "accuracy"

    def __init__(self, config: dict | SACOptions | None = None) -> None:
        super().__init__(config)
        self._pool: Pool | None = None

    # -- data ----------------------------------------------------------------
    def classes(self) -> tuple[tuple[str, ...], int]:
        """Class names and image channels of the configured dataset (no image read)."""
        ds = self.options.dataset
        if ds == "digits":
            return DIGIT_CLASSES, 1
        if ds == "fine":
            return FINE_CLASSES, 1
        return cub_classes(self.options.data_dir), 1 if self.options.grayscale else 3

    def pool(self) -> Pool:
        """The whole dataset, built once per task object; each channel standardised
        to mean 0, std 1 over the pooled images."""
        if self._pool is None:
            ds = self.options.dataset
            if ds == "digits":
                from sklearn.datasets import load_digits

                d = load_digits()
                self._pool = Pool((d.images / 16.0).astype(np.float32)[:, None],
                                  d.target.astype(np.int64), DIGIT_CLASSES)
            elif ds == "fine":
                self._pool = make_fine(self.options.n_per_class, seed=self.options.data_seed)
            else:
                self._pool = load_cub(self.options.data_dir, self.options.image_size, self.options.grayscale)
            # per-channel standardisation with the pooled dataset's constants: unit-scale
            # inputs make the first rounds learn much faster
            x = self._pool.x
            mean = x.mean(axis=(0, 2, 3), keepdims=True)
            std = x.std(axis=(0, 2, 3), keepdims=True) + 1e-6
            self._pool.x = ((x - mean) / std).astype(np.float32)
        return self._pool

    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        pool = self.pool()
        self.check_silos(n_silos)
        parts = dirichlet_partition(pool.y, n_silos, self.options.alpha, seed, min_size=MIN_SILO_IMAGES)
        idx = np.random.default_rng([seed, silo]).permutation(parts[silo])
        if pool.is_train is not None:
            tr, te = idx[pool.is_train[idx]], idx[~pool.is_train[idx]]
            if len(tr) == 0 or len(te) == 0:
                raise FedsimError(f"silo {silo} got no {'training' if len(tr) == 0 else 'test'} images "
                                  "from train_test_split.txt; use fewer silos or a larger alpha")
        else:
            n_test = max(1, int(round(len(idx) * self.options.test_fraction)))
            te, tr = idx[:n_test], idx[n_test:]
        t = torch.from_numpy
        return SiloData(t(pool.x[tr]), t(pool.y[tr]), t(pool.x[te]), t(pool.y[te]))

    # -- model ---------------------------------------------------------------
    def model(self) -> SACNet:
        names, channels = self.classes()
        keys = ("k", "width", "feat_dim", "grid", "visual_dim", "embed_dim", "name_dim", "joint_dim",
                "rank", "hash_buckets", "residual")
        return SACNet(names, channels, sac=self.options.sac, **{key: getattr(self.options, key) for key in keys})

    # -- learning ------------------------------------------------------------
    def loss(self, out: SACOutput, y: torch.Tensor) -> torch.Tensor:
        """``CE(z1, y) + λ·CE(z2, y)`` (``CE(z1, y)`` without the SAC branch)."""
        loss = tnf.cross_entropy(out.logits1, y)
        if out.logits2 is not None:
            loss = loss + self.options.sac_weight * tnf.cross_entropy(out.logits2, y)
        return loss

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        if self.options.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=self.options.lr)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=self.options.lr, momentum=self.options.momentum)
        omega, theta = self.options.drop_weight, self.options.drop_threshold

        def batch_loss(idx):
            x, y = data.x_train[idx], data.y_train[idx]
            out = model(x)
            loss = self.loss(out, y)
            if out.attention is not None and omega > 0:
                erased = drop_most_attended(x, out.attention.detach(), model.grid, theta)
                loss = (1 - omega) * loss + omega * self.loss(model(erased, out.class_embeddings), y)
            return loss, {}

        return minibatch_steps(model, data, steps, generator, opt, self.options.batch_size, prox_mu=prox_mu,
                               anchor=anchor, batch_loss=batch_loss)

    @torch.no_grad()
    def evaluate(self, model, data):
        model.eval()
        out = model(data.x_test)
        p = mix_probabilities(out.logits1, out.logits2, self.options.sac_alpha)
        y = data.y_test
        k = min(self.options.k, p.shape[1])
        nll = -torch.log(p.gather(1, y[:, None]).clamp_min(1e-12)).mean()
        return {"loss": float(nll),
                "accuracy": float((p.argmax(1) == y).float().mean()),
                "topk_accuracy": float(topk_hits(p, y, k).float().mean()),
                "accuracy_coarse": float((out.logits1.argmax(1) == y).float().mean()),
                "n": float(len(y))}
