"""Plain multi-head attention with separate q/k/v/out projections, as CLIP's tower and SAM's mask
decoder both name them (`q_proj`, `k_proj`, `v_proj`, `out_proj`, all with biases)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Full (non-causal) multi-head attention whose inner width is `width // downsample`."""

    def __init__(self, width: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = width // downsample
        self.heads = heads
        self.q_proj = nn.Linear(width, inner)
        self.k_proj = nn.Linear(width, inner)
        self.v_proj = nn.Linear(width, inner)
        self.out_proj = nn.Linear(inner, width)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Tq, width), k and v (B, Tk, width) → (B, Tq, width)."""
        heads = [self._split_heads(proj(x)) for proj, x in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v))]
        out = F.scaled_dot_product_attention(*heads)
        return self.out_proj(out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1))
