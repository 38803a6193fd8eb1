"""Qwen2 decoder in plain torch with a key/value cache under the engine's control.

RMSNorm, rotary positions (the config's theta), grouped-query attention with biased q/k/v.
Parameter names follow Hugging Face's `Qwen2ForCausalLM` (`model.*` and `lm_head`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import LlmConfig


class RmsNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


@dataclass(eq=False)
class KvCache:
    """Per-layer keys and values, (batch, kv_heads, capacity, head_dim) each; `length` columns filled.

    Compared and hashed by identity: a cache is a buffer, not a value (mlcdseg.engine.suffix_graph
    keys an image's graphs by its prefix cache).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @classmethod
    def allocate(
        cls, layers: int, shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype
    ) -> "KvCache":
        """An empty cache of `layers` layers, each tensor of `shape` (batch, kv_heads, capacity, head_dim)."""
        return cls(
            [torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)],
            [torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)],
        )

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def expanded(self, batch: int, extra: int) -> "KvCache":
        """A new cache of `batch` rows and `extra` free columns, each row starting with this 1-row cache."""
        _, kv_heads, _, head_dim = self.keys[0].shape
        like = self.keys[0]
        out = KvCache.allocate(len(self.keys), (batch, kv_heads, self.length + extra, head_dim), like.device, like.dtype)
        for mine, theirs in zip(self.keys + self.values, out.keys + out.values):
            theirs[:, :, : self.length] = mine[:, :, : self.length]
        out.length = self.length
        return out


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, T) → cos, sin (B, 1, T, head_dim), computed in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat([freqs, freqs], dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class Qwen2Attention(nn.Module):
    def __init__(self, config: LlmConfig) -> None:
        super().__init__()
        self.config = config
        head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden, config.heads * head_dim)
        self.k_proj = nn.Linear(config.hidden, config.kv_heads * head_dim)
        self.v_proj = nn.Linear(config.hidden, config.kv_heads * head_dim)
        self.o_proj = nn.Linear(config.heads * head_dim, config.hidden, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        cache: KvCache,
        layer: int,
        start: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x (B, T, hidden) written at cache columns [start, start+T); attends to columns [0, start+T).

        mask: bool (B, 1, T, start+T), True = may attend; None = plain causal over the new tokens
        (only valid when start == 0).
        """
        batch, tokens, _ = x.shape
        head_dim = self.config.head_dim
        q = self.q_proj(x).view(batch, tokens, -1, head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, tokens, -1, head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, tokens, -1, head_dim).transpose(1, 2)
        q, k = _rotate(q, *cos_sin), _rotate(k, *cos_sin)
        end = start + tokens
        cache.keys[layer][:, :, start:end] = k
        cache.values[layer][:, :, start:end] = v
        keys, values = cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=mask is None, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class Qwen2Mlp(nn.Module):
    def __init__(self, config: LlmConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden, config.intermediate, bias=False)
        self.up_proj = nn.Linear(config.hidden, config.intermediate, bias=False)
        self.down_proj = nn.Linear(config.intermediate, config.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2Layer(nn.Module):
    def __init__(self, config: LlmConfig) -> None:
        super().__init__()
        self.input_layernorm = RmsNorm(config.hidden, config.rms_norm_eps)
        self.self_attn = Qwen2Attention(config)
        self.post_attention_layernorm = RmsNorm(config.hidden, config.rms_norm_eps)
        self.mlp = Qwen2Mlp(config)


class Qwen2Decoder(nn.Module):
    """Embeddings, decoder layers, final norm and the LM head."""

    def __init__(self, config: LlmConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab, config.hidden)
        self.layers = nn.ModuleList(Qwen2Layer(config) for _ in range(config.layers))
        self.norm = RmsNorm(config.hidden, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden, config.vocab, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self, embeds: torch.Tensor, positions: torch.Tensor, cache: KvCache, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run `embeds` (B, T, hidden) at `positions` (B, T), appending to `cache`.

        mask: see `Qwen2Attention.forward`. Returns the last layer's hidden states after the
        final norm, (B, T, hidden).
        """
        start = cache.length
        cos_sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, embeds.dtype)
        hidden = embeds
        for index, layer in enumerate(self.layers):
            hidden = hidden + layer.self_attn(layer.input_layernorm(hidden), cos_sin, cache, index, start, mask)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        cache.length = start + embeds.shape[1]
        return self.norm(hidden)
