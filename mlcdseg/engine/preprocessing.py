"""Image preprocessing: anyres tiles for the vision tower, the SAM input, and mask postprocessing.

Arrays at the boundary: PIL RGB images in; float32 tensors out, channels first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def select_canvas(image_size: tuple[int, int], canvases: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The anyres canvas (width, height) that keeps most of the image's pixels, then wastes least."""
    width, height = image_size
    best, best_effective, best_wasted = canvases[0], -1, float("inf")
    for canvas_width, canvas_height in canvases:
        scale = min(canvas_width / width, canvas_height / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = canvas_width * canvas_height - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (canvas_width, canvas_height), effective, wasted
    return best


def letterbox(image: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    """Resize keeping the aspect ratio to fill one side of `canvas`, centred on black."""
    width, height = image.size
    canvas_width, canvas_height = canvas
    if canvas_width / width < canvas_height / height:
        new_width, new_height = canvas_width, min(int(np.ceil(height * canvas_width / width)), canvas_height)
    else:
        new_width, new_height = min(int(np.ceil(width * canvas_height / height)), canvas_width), canvas_height
    out = Image.new("RGB", canvas, (0, 0, 0))
    out.paste(image.resize((new_width, new_height), Image.BICUBIC), ((canvas_width - new_width) // 2, (canvas_height - new_height) // 2))
    return out


def anyres_tiles(
    image: Image.Image,
    canvases: tuple[tuple[int, int], ...],
    tile: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Base tile (whole image squashed) then the canvas tiles, row-major.

    Returns (tiles float32 (1 + rows*cols, 3, tile, tile) normalised, grid (cols, rows)).
    """
    canvas = select_canvas(image.size, canvases)
    padded = letterbox(image, canvas)
    crops = [image.resize((tile, tile), Image.BICUBIC)]
    for top in range(0, canvas[1], tile):
        for left in range(0, canvas[0], tile):
            crops.append(padded.crop((left, top, left + tile, top + tile)))
    pixels = np.stack([np.asarray(crop, dtype=np.uint8) for crop in crops]).astype(np.float32) / np.float32(255.0)
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), (canvas[0] // tile, canvas[1] // tile)


def unpadded_extent(grid_height: int, grid_width: int, image_size: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of a (grid_height, grid_width) feature map that hold the image, not the letterbox."""
    width, height = image_size
    if width / height > grid_width / grid_height:
        kept = int(height * (grid_width / width))
        pad = (grid_height - kept) // 2
        return slice(pad, grid_height - pad), slice(0, grid_width)
    kept = int(width * (grid_height / height))
    pad = (grid_width - kept) // 2
    return slice(0, grid_height), slice(pad, grid_width - pad)


def sam_resized_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) after resizing the longest side to `long_side`, rounded half up."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sam_input(image: Image.Image, long_side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """SAM input: bilinear resize of the longest side, normalise, zero-pad bottom/right.

    Returns (float32 (1, 3, long_side, long_side), resized (height, width)).
    """
    resized_size = sam_resized_size(image.height, image.width, long_side)
    resized = np.array(image.resize(resized_size[::-1], Image.BILINEAR), dtype=np.uint8)
    pixels = torch.from_numpy(resized).permute(2, 0, 1).float()
    pixels = (pixels - torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    pixels = F.pad(pixels, (0, long_side - resized_size[1], 0, long_side - resized_size[0]))
    return pixels.unsqueeze(0), resized_size


def postprocess_masks(
    low_res_logits: torch.Tensor, long_side: int, resized_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Mask logits (N, 1, h, w) → float32 (N, H, W) at the image's own size.

    Bilinear to the square SAM input, crop the padding, bilinear to (H, W).
    """
    logits = F.interpolate(low_res_logits.float(), (long_side, long_side), mode="bilinear", align_corners=False)
    logits = logits[..., : resized_size[0], : resized_size[1]]
    return F.interpolate(logits, original_size, mode="bilinear", align_corners=False)[:, 0]
