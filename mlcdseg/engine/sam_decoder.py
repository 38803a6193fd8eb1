"""SAM's mask decoder (two-way transformer, hypernetwork mask heads, IoU head).

Parameter names follow segment-anything's `MaskDecoder` (`model.sam.mask_decoder.*`). `forward`
is the seg model's single-mask output; `predict` also gives the three multimask outputs and the
predicted IoUs, for refining with clicks and boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .sam_encoder import LayerNorm2d


class ReluMlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(width, hidden)
        self.lin2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """Tokens attend to themselves and to the image; the image attends back to the tokens."""

    def __init__(self, width: int, heads: int, mlp_width: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.self_attn = MultiHeadAttention(width, heads)
        self.norm1 = nn.LayerNorm(width)
        self.cross_attn_token_to_image = MultiHeadAttention(width, heads, 2)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = ReluMlp(width, mlp_width)
        self.norm3 = nn.LayerNorm(width)
        self.norm4 = nn.LayerNorm(width)
        self.cross_attn_image_to_token = MultiHeadAttention(width, heads, 2)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:  # the first block replaces the tokens, positions not added
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            query = tokens + token_pe
            tokens = tokens + self.self_attn(query, query, tokens)
        tokens = self.norm1(tokens)
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image + image_pe, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(image + image_pe, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, mlp_width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(width, heads, mlp_width, index == 0) for index in range(depth))
        self.final_attn_token_to_image = MultiHeadAttention(width, heads, 2)
        self.norm_final_attn = nn.LayerNorm(width)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe (B, C, h, w); tokens (B, T, C) → tokens (B, T, C), image (B, h*w, C)."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        tokens = tokens + self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens), image


class HeadMlp(nn.Module):
    """ReLU MLP with `layers.{i}` names (SAM's hypernetworks and IoU head)."""

    def __init__(self, width: int, hidden: int, out: int, depth: int) -> None:
        super().__init__()
        sizes = [width] + [hidden] * (depth - 1) + [out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, mlp_width: int, mask_tokens: int = 4) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(width, depth, heads, mlp_width)
        self.iou_token = nn.Embedding(1, width)
        self.mask_tokens = nn.Embedding(mask_tokens, width)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(width, width // 4, 2, 2), LayerNorm2d(width // 4), nn.GELU(), nn.ConvTranspose2d(width // 4, width // 8, 2, 2), nn.GELU()
        )
        self.output_hypernetworks_mlps = nn.ModuleList(HeadMlp(width, width, width // 8, 3) for _ in range(mask_tokens))
        self.iou_prediction_head = HeadMlp(width, 256, mask_tokens, 3)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """One mask per prompt (the single-mask output).

        image_embedding, image_pe: (1, C, h, w); dense: (1, C, 1, 1) broadcast, or (N, C, h, w);
        sparse: (N, T, C). Returns low-resolution mask logits (N, 1, 4h, 4w).
        """
        tokens, upscaled = self._run(image_embedding, image_pe, dense, sparse)
        hyper = self.output_hypernetworks_mlps[0](tokens[:, 1])  # first mask token: single-mask output
        return (hyper.unsqueeze(1) @ upscaled.flatten(2)).view(sparse.shape[0], 1, *upscaled.shape[2:])

    def predict(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks and predicted IoUs, as segment-anything's `MaskDecoder.forward`.

        Inputs as `forward`. Returns (low-resolution logits (N, K, 4h, 4w), IoUs (N, K)) with
        K = 3 (mask tokens 1-3) when `multimask`, else K = 1 (mask token 0).
        """
        tokens, upscaled = self._run(image_embedding, image_pe, dense, sparse)
        chosen = range(1, len(self.output_hypernetworks_mlps)) if multimask else range(1)
        hyper = torch.stack([self.output_hypernetworks_mlps[index](tokens[:, 1 + index]) for index in chosen], dim=1)
        logits = (hyper @ upscaled.flatten(2)).view(sparse.shape[0], len(chosen), *upscaled.shape[2:])
        iou = self.iou_prediction_head(tokens[:, 0])[:, chosen.start : chosen.stop]
        return logits, iou

    def _run(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer and the upscaling → (tokens (N, 1 + masks + T, C), upscaled (N, C/8, 4h, 4w))."""
        count = sparse.shape[0]
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).unsqueeze(0).expand(count, -1, -1)
        tokens = torch.cat([tokens, sparse], dim=1)
        image = (image_embedding + dense).expand(count, -1, -1, -1)
        _, channels, height, width = image.shape
        tokens, image = self.transformer(image, image_pe.expand(count, -1, -1, -1), tokens)
        return tokens, self.output_upscaling(image.transpose(1, 2).reshape(count, channels, height, width))
