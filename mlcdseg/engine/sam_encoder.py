"""SAM ViT image encoder: windowed and global attention with decomposed relative positions.

Parameter names follow segment-anything's `ImageEncoderViT` (`model.sam.image_encoder.*`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SamEncoderConfig


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - mean) / torch.sqrt(var + self.eps)) + self.bias[:, None, None]


def _relative_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """(2*size-1, dim) table → (size, size, dim) rows indexed by query minus key offset."""
    offsets = torch.arange(size, device=table.device)[:, None] - torch.arange(size, device=table.device)[None, :]
    return table[offsets + size - 1]


class SamAttention(nn.Module):
    def __init__(self, width: int, heads: int, size: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, width // heads))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, width // heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, width) → (B, H, W, width); relative positions enter as an additive bias."""
        batch, height, width_, channels = x.shape
        qkv = self.qkv(x).view(batch, height * width_, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, HW, dim)
        grid_q = q.reshape(batch, self.heads, height, width_, -1)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, _relative_table(height, self.rel_pos_h))
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, _relative_table(width_, self.rel_pos_w))
        bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(batch, self.heads, height * width_, height * width_)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(batch, height, width_, channels))


class SamMlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(width, hidden)
        self.lin2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


class SamBlock(nn.Module):
    def __init__(self, config: SamEncoderConfig, window: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(config.width, eps=1e-6)
        self.attn = SamAttention(config.width, config.heads, window or config.grid)
        self.norm2 = nn.LayerNorm(config.width, eps=1e-6)
        self.mlp = SamMlp(config.width, config.mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, width) → same."""
        attended = self.norm1(x)
        if self.window:
            attended = self._windowed(attended)
        else:
            attended = self.attn(attended)
        x = x + attended
        return x + self.mlp(self.norm2(x))

    def _windowed(self, x: torch.Tensor) -> torch.Tensor:
        """Attention within non-overlapping windows, the map zero-padded to whole windows."""
        batch, height, width, channels = x.shape
        size = self.window
        pad_h, pad_w = (-height) % size, (-width) % size
        padded = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // size, (width + pad_w) // size
        windows = padded.view(batch, rows, size, cols, size, channels).permute(0, 1, 3, 2, 4, 5).reshape(-1, size, size, channels)
        windows = self.attn(windows)
        merged = windows.view(batch, rows, cols, size, size, channels).permute(0, 1, 3, 2, 4, 5).reshape(batch, rows * size, cols * size, channels)
        return merged[:, :height, :width]


class PatchEmbed(nn.Module):
    def __init__(self, config: SamEncoderConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.width, config.patch_size, config.patch_size)


class SamImageEncoder(nn.Module):
    """Normalised padded image (B, 3, S, S) → embedding (B, out_channels, S/patch, S/patch)."""

    def __init__(self, config: SamEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid, config.grid, config.width))
        self.blocks = nn.ModuleList(
            SamBlock(config, 0 if index in config.global_layers else config.window_size) for index in range(config.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(config.width, config.out_channels, 1, bias=False),
            LayerNorm2d(config.out_channels),
            nn.Conv2d(config.out_channels, config.out_channels, 3, padding=1, bias=False),
            LayerNorm2d(config.out_channels),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(pixels.to(self.pos_embed.dtype)).permute(0, 2, 3, 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
