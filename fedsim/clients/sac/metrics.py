"""SAC evaluation: the mixed prediction and top-k hits."""

from __future__ import annotations

import torch


def mix_probabilities(logits1: torch.Tensor, logits2: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``P = α·softmax(z1) + (1 − α)·softmax(z2)``; ``softmax(z1)`` without a second classifier."""
    p1 = torch.softmax(logits1, dim=-1)
    if logits2 is None:
        return p1
    return alpha * p1 + (1.0 - alpha) * torch.softmax(logits2, dim=-1)


def topk_hits(p: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """1 where the true class is among the ``k`` most probable, per sample."""
    return (p.topk(k, dim=1).indices == y[:, None]).any(1)
