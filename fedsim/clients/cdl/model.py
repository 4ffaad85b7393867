"""The CDL model: DroNet-style ResNet-8 branches, the Siamese pair and the contrastive divergence loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------
def _halved(side: int, times: int) -> int:
    """Spatial side after ``times`` 'same'-padded stride-2 layers: ceil(side / 2) each."""
    for _ in range(times):
        side = (side + 1) // 2
    return side


class ResBlock(nn.Module):
    """Pre-activation block: ``conv3(relu(bn(conv3/2(relu(bn(x)))))) + conv1/2(x)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(x)


class ResNet8(nn.Module):
    """DroNet-style ResNet-8 steering regressor (one output).

    Parameters
    ----------
    image_size : int
        Side of the square grayscale input.
    widths : tuple of 4 ints
        Stem width and the three blocks' widths.
    dropout : float
        Dropout before the linear head.

    Examples
    --------
    >>> sum(p.numel() for p in ResNet8(200, (32, 32, 64, 128)).parameters())
    314657
    >>> ResNet8(64, (8, 8, 16, 32)).n_features  # 32 channels × 2 × 2
    128
    """

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (8, 8, 16, 32),
                 dropout: float = 0.5) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Conv2d(1, w0, 5, stride=2, padding=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.blocks = nn.Sequential(ResBlock(w0, w1), ResBlock(w1, w2), ResBlock(w2, w3))
        self.n_features = w3 * _halved(image_size, 5) ** 2
        self.dropout = dropout
        self.head = nn.Linear(self.n_features, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Steering, shape ``(B,)``. ``mask``: a scaled dropout mask ``(B, n_features)``."""
        h = F.relu(self.blocks(self.pool(self.stem(x))).flatten(1))
        if mask is not None:
            h = h * mask
        elif self.training and self.dropout > 0:
            h = F.dropout(h, self.dropout)
        return self.head(h).squeeze(1)


class CDLNet(nn.Module):
    """Backbone ResNet-8, plus (``siamese=True``) a local sub-network of the same shape.

    ``forward`` is the backbone only (the sub-network is dropped at inference).
    """

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (8, 8, 16, 32),
                 dropout: float = 0.5, siamese: bool = True) -> None:
        super().__init__()
        self.backbone = ResNet8(image_size, widths, dropout)
        self.sub = ResNet8(image_size, widths, dropout) if siamese else None
        if siamese:
            # 0 until the sub-network has been initialised from a received backbone.
            self.register_buffer("sub_ready", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def ensure_sub(self) -> bool:
        """Copy the backbone into the sub-network once; True if it copied now."""
        if self.sub is None or bool(self.sub_ready):
            return False
        self.sub.load_state_dict(self.backbone.state_dict())
        self.sub_ready.fill_(1.0)
        return True


# ---------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------
def bernoulli_kl(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``KL(Bern(σ(u)) ‖ Bern(σ(v)))`` computed from the logits.

    ``KL = p·(log p - log q) + (1-p)·(log(1-p) - log(1-q))`` with ``p = σ(u)``,
    ``q = σ(v)``, using ``log σ(z)`` and ``log(1-σ(z)) = log σ(-z)`` for stability.

    Examples
    --------
    >>> import math
    >>> round(float(bernoulli_kl(torch.tensor([0.0]), torch.tensor([math.log(3.0)]))), 6)
    0.143841
    """
    p = torch.sigmoid(u)
    return (p * (F.logsigmoid(u) - F.logsigmoid(v))
            + (1 - p) * (F.logsigmoid(-u) - F.logsigmoid(-v))).mean()


def cdl_loss(b: torch.Tensor, s: torch.Tensor, y: torch.Tensor, beta: float = 0.5,
             temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The CDL objective ``L_lr + β·H(b‖sg(s)) + (1-β)·H(s‖sg(b))``.

    Parameters
    ----------
    b, s : Tensor (B,)
        Backbone and sub-network steering outputs on the same batch.
    y : Tensor (B,)
        Steering labels.
    beta : float
        Weight of the positive term ``L_cd+`` (and ``1-β`` of ``L_cd-``).
    temperature : float
        ``τ`` in ``H(u‖v) = KL(Bern(σ(u/τ)) ‖ Bern(σ(v/τ)))``; 1 is the
        released code's plain sigmoid, a smaller ``τ`` strengthens the pull.

    Returns
    -------
    objective : Tensor
        One scalar whose gradient is ``∇(L_lr + β·L_cd+)`` for the backbone and
        ``∇((1-β)·L_cd-)`` for the sub-network (each branch's output is detached
        inside the other branch's term); its value is ``L``.
    parts : dict
        ``l1``, ``cd_plus``, ``cd_minus`` as floats.

    Examples
    --------
    >>> obj, parts = cdl_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.5]))
    >>> float(obj), parts["cd_plus"]
    (0.5, 0.0)
    """
    l1 = (b - y).abs().mean()
    bt, st = b / temperature, s / temperature
    cd_plus = bernoulli_kl(bt, st.detach())
    cd_minus = bernoulli_kl(st, bt.detach())
    objective = l1 + beta * cd_plus + (1.0 - beta) * cd_minus
    return objective, {"l1": float(l1.detach()), "cd_plus": float(cd_plus.detach()),
                       "cd_minus": float(cd_minus.detach())}
