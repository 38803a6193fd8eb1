"""Multimodal projector and the `spatial_unpad` merge of anyres tile features into image tokens."""

from __future__ import annotations

import torch
from torch import nn

from .preprocessing import unpadded_extent


class GeluMlp(nn.Sequential):
    """`mlp{N}x_gelu`: Linear, then (GELU, Linear) × (N − 1). Also the 2-layer text2sam projection."""

    def __init__(self, in_width: int, out_width: int, depth: int) -> None:
        layers: list[nn.Module] = [nn.Linear(in_width, out_width)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_width, out_width)]
        super().__init__(*layers)


def merge_tile_features(
    features: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int], newline: torch.Tensor
) -> torch.Tensor:
    """Projected tile features → the image's token embeddings (`spatial_unpad`).

    features: (1 + cols*rows, p*p, hidden), base tile first; grid: (cols, rows);
    image_size: (width, height) of the original image; newline: (hidden,).
    Returns (p*p + kept_rows*(kept_cols + 1), hidden): base tile tokens, then the grid's
    feature map without letterbox rows/columns, one `newline` closing each row.
    """
    cols, rows = grid
    side = round(features.shape[1] ** 0.5)
    base, tiles = features[0], features[1:]
    hidden = features.shape[-1]
    feature_map = tiles.view(rows, cols, side, side, hidden).permute(0, 2, 1, 3, 4).reshape(rows * side, cols * side, hidden)
    row_slice, col_slice = unpadded_extent(rows * side, cols * side, image_size)
    feature_map = feature_map[row_slice, col_slice]
    newlines = newline.to(feature_map.dtype).expand(feature_map.shape[0], 1, hidden)
    return torch.cat([base, torch.cat([feature_map, newlines], dim=1).reshape(-1, hidden)], dim=0)
