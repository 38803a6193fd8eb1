"""SAM's prompt encoder as the MLCD-Seg reference extends it: clicks, a box, a mask and text together.

Parameter names follow segment-anything's `PromptEncoder` (`model.sam.prompt_encoder.*`). The
reference (`llava/model/sam/modeling/prompt_encoder.py` of deepglint/unicom) concatenates the sparse
embeddings in the order: points (plus one padding point when there is no box), the box's two
corners, then the projected `[SEG]` text embeddings. Coordinates are in SAM's input frame: pixels
of the resized image inside the padded `input_size` square (see `refine.sam_frame_coords`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .sam_encoder import LayerNorm2d

PADDING_LABEL = -1  # the label of the padding point: not_a_point_embed, no position
NEGATIVE_LABEL = 0  # point_embeddings[0]
POSITIVE_LABEL = 1  # point_embeddings[1]
BOX_CORNER_EMBEDDINGS = (2, 3)  # point_embeddings of the top-left and bottom-right corners


class RandomFourierPositions(nn.Module):
    """SAM's positional encoding by random spatial frequencies, of a grid or of coordinates."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.zeros(2, features))

    def forward(self, size: int) -> torch.Tensor:
        """The encoding of a size × size grid of cell centres → (1, 2*features, size, size)."""
        matrix = self.positional_encoding_gaussian_matrix
        centres = (torch.arange(size, device=matrix.device, dtype=matrix.dtype) + 0.5) / size
        coords = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)  # (y, x, [x, y])
        return self._encode(coords).permute(2, 0, 1).unsqueeze(0)

    def with_coords(self, coords: torch.Tensor, frame: int) -> torch.Tensor:
        """Coordinates (..., 2) as (x, y) in a frame × frame square → (..., 2*features) float32."""
        return self._encode(coords.float() / frame)

    def _encode(self, unit_coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) in [0, 1] → (..., 2*features): sin and cos of 2π (2c − 1) · matrix, in its dtype."""
        matrix = self.positional_encoding_gaussian_matrix
        angles = 2 * math.pi * ((2 * unit_coords - 1).to(matrix.dtype) @ matrix)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PromptEncoder(nn.Module):
    """Sparse (points, box, text) and dense (mask) prompt embeddings for SAM's mask decoder.

    width: the prompt width (256); input_size: the side of SAM's square input (1024), the frame
    of point and box coordinates.
    """

    def __init__(self, width: int, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.pe_layer = RandomFourierPositions(width // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, width) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, width)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, 4, 2, 2), LayerNorm2d(4), nn.GELU(), nn.Conv2d(4, 16, 2, 2), LayerNorm2d(16), nn.GELU(), nn.Conv2d(16, width, 1)
        )
        self.no_mask_embed = nn.Embedding(1, width)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Points (B, N, 2) (x, y) in the input frame, labels (B, N) of 1/0 → (B, N + pad, width).

        Shifted by half a pixel to the pixel centre; with `pad`, one point of label -1 is appended
        whose embedding is `not_a_point_embed` alone (segment-anything pads when there is no box).
        """
        coords = coords.float() + 0.5
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PADDING_LABEL)], dim=1)
        positions = self.pe_layer.with_coords(coords, self.input_size)
        labels = labels.unsqueeze(-1)
        label_embedding = torch.where(
            labels == POSITIVE_LABEL, self.point_embeddings[POSITIVE_LABEL].weight, self.point_embeddings[NEGATIVE_LABEL].weight
        )
        return torch.where(labels == PADDING_LABEL, self.not_a_point_embed.weight, positions + label_embedding)

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (B, 4) (x0, y0, x1, y1) in the input frame → their corners (B, 2, width)."""
        corners = self.pe_layer.with_coords(boxes.float().reshape(-1, 2, 2) + 0.5, self.input_size)
        first, second = (self.point_embeddings[index].weight for index in BOX_CORNER_EMBEDDINGS)
        return corners + torch.cat([first, second]).unsqueeze(0)

    def embed_masks(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, 1, 4g, 4g) → dense embeddings (B, width, g, g)."""
        return self.mask_downscaling(mask_logits)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_logits: torch.Tensor | None,
        text_embeds: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's prompt encoding → (sparse (B, T, width), dense).

        points: (coords (B, N, 2), labels (B, N)); boxes: (B, 4); mask_logits: (B, 1, 4g, 4g);
        text_embeds: (B, K, width), already projected by text2sam. dense is
        `mask_downscaling(mask_logits)` (B, width, g, g), or `no_mask_embed` as (1, width, 1, 1),
        which the decoder broadcasts over the grid as the reference's expand does.
        """
        sparse = []
        if points is not None:
            sparse.append(self.embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if text_embeds is not None:
            sparse.append(text_embeds)
        if mask_logits is not None:
            dense = self.embed_masks(mask_logits)
        else:
            dense = self.no_mask_embed.weight.view(1, -1, 1, 1)
        if not sparse:  # a mask alone: the decoder's own tokens only, as in the reference
            batch = mask_logits.shape[0] if mask_logits is not None else 1
            return dense.new_zeros(batch, 0, dense.shape[1]), dense
        return torch.cat([part.to(dense.dtype) for part in sparse], dim=1), dense
