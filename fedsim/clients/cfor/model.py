"""The CFOR model: a shared backbone, the stage classifiers and the attribute heads, and their losses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from fedsim.clients.cfor.ontology import Ontology
from fedsim.clients.cfor.options import LAYOUTS
from fedsim.errors import FedsimError


def multitask_bce(logits: torch.Tensor, targets: torch.Tensor, groups: Sequence[slice]) -> torch.Tensor:
    """Local multitask loss: the sum over attribute groups of each group's mean BCE.

    ``L = Σ_g (1 / (N·|g|)) Σ_i Σ_{j∈g} −[y_ij log σ(z_ij) + (1−y_ij) log(1−σ(z_ij))]``

    Examples
    --------
    >>> z = torch.zeros(2, 3)  # σ(0) = 1/2: every term is log 2
    >>> round(float(multitask_bce(z, torch.ones(2, 3), [slice(0, 1), slice(1, 3)])), 6)  # 2·log 2
    1.386294
    """
    t = targets.to(logits.dtype)
    return sum(nn.functional.binary_cross_entropy_with_logits(logits[:, g], t[:, g]) for g in groups)


def stage_loss(region_logits: torch.Tensor, category_logits: Sequence[torch.Tensor],
               region: torch.Tensor, category_local: torch.Tensor) -> torch.Tensor:
    """Loss of the ontology's classification stages.

    ``L = CE(region) + (1/N) Σ_r Σ_{i: r_i = r} CE(category_logits[r]_i, c_i)``: every
    sample trains the region classifier and the category classifier of its own
    region (``c_i`` is the category's index within that region).
    """
    loss = nn.functional.cross_entropy(region_logits, region)
    n = region.shape[0]
    for r, logits in enumerate(category_logits):
        m = region == r
        if m.any():
            loss = loss + nn.functional.cross_entropy(logits[m], category_local[m], reduction="sum") / n
    return loss


# =============================================================== model
class CFOROutput(NamedTuple):
    feature: torch.Tensor  # (N, D) global feature (backbone, after global max pooling)
    region: torch.Tensor  # (N, R) region logits
    category: list[torch.Tensor]  # per region: (N, C_r) category logits within that region
    attributes: torch.Tensor  # (N, A) attribute logits, ontology order


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class CFORNet(nn.Module):
    """Shared CNN backbone + ontology stage classifiers + attribute heads.

    Backbone: three conv3×3 blocks (3→w→2w→D channels), each conv → GroupNorm
    (4 groups; no running statistics, so nothing silo-specific is averaged) →
    ReLU, with 2×2 max pooling after the first two, then global **max**
    pooling: the global feature (D values). Max pooling keeps small local
    evidence (a belt, a zip, buttons) that average pooling dilutes.
    Stage classifiers: ``region`` (D→R) and ``category[r]`` (D→C_r) per region.
    Attribute heads, ``layout``:

    - ``"local"``: one head per attribute group, Linear(D→h) → ReLU → Linear(h→|g|);
    - ``"single"``: one head for all attributes with ``h·G`` hidden units;
    - ``"single_task"``: one head per attribute with ``max(2, round(h·G/A))``
      hidden units,

    so the three layouts have about the same number of hidden units.
    """

    def __init__(self, n_regions: int, categories_per_region: Sequence[int], group_sizes: Sequence[int],
                 width: int = 16, feature_dim: int = 64, head_hidden: int = 16, layout: str = "local") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise FedsimError(f"unknown head layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        self.layout = layout
        norm = lambda c: nn.GroupNorm(math.gcd(4, c), c)  # noqa: E731
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), norm(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), norm(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, feature_dim, 3, padding=1), norm(feature_dim), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.region = nn.Linear(feature_dim, n_regions)
        self.category = nn.ModuleList(nn.Linear(feature_dim, c) for c in categories_per_region)
        n_groups, n_attr = len(group_sizes), int(sum(group_sizes))
        if layout == "local":
            blocks = [_mlp(feature_dim, head_hidden, s) for s in group_sizes]
        elif layout == "single":
            blocks = [_mlp(feature_dim, head_hidden * n_groups, n_attr)]
        else:
            h = max(2, round(head_hidden * n_groups / n_attr))
            blocks = [_mlp(feature_dim, h, 1) for _ in range(n_attr)]
        self.attributes = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> CFOROutput:
        f = self.backbone(x)
        attrs = torch.cat([b(f) for b in self.attributes], dim=1)
        return CFOROutput(f, self.region(f), [c(f) for c in self.category], attrs)


def cfor_loss(out: CFOROutput, y: torch.Tensor, onto: Ontology) -> torch.Tensor:
    """``stage_loss + multitask_bce`` for labels ``y = [region, category, attributes…]``."""
    offsets = torch.tensor(onto.category_offsets)
    region, category = y[:, 0], y[:, 1]
    return (stage_loss(out.region, out.category, region, category - offsets[region])
            + multitask_bce(out.attributes, y[:, 2:], onto.group_slices))
