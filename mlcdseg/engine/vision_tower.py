"""CLIP vision tower (pre-LN ViT with a class token and learned absolute positions).

Parameter names follow Hugging Face's `CLIPVisionModel.vision_model`, as the checkpoint stores them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .config import TowerConfig


class ClipMlp(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        hidden = hidden * torch.sigmoid(1.702 * hidden) if self.activation == "quick_gelu" else F.gelu(hidden)
        return self.fc2(hidden)


class ClipLayer(nn.Module):
    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.self_attn = MultiHeadAttention(config.width, config.heads)
        self.layer_norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = ClipMlp(config.width, config.mlp_width, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.layer_norm1(x)
        x = x + self.self_attn(normed, normed, normed)
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(config.width))
        self.patch_embedding = nn.Conv2d(3, config.width, config.patch_size, config.patch_size, bias=False)
        self.position_embedding = nn.Embedding(config.patches_per_side**2 + 1, config.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, 1 + (S/patch)², width)."""
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class ClipEncoder(nn.Module):
    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ClipLayer(config) for _ in range(config.depth))


class ClipVisionTower(nn.Module):
    """Patch features of the selected hidden state, class token dropped."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ClipEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)  # sic: HF's name
        self.encoder = ClipEncoder(config)
        # Only feeds CLIP's pooled output, which the seg model never reads; kept to load the checkpoint.
        self.post_layernorm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised tiles (B, 3, S, S) → features (B, (S/patch)², width)."""
        hidden = self.pre_layrnorm(self.embeddings(pixels))
        for layer in self.encoder.layers[: self.config.layers_to_run]:
            hidden = layer(hidden)
        return hidden[:, 1:]
