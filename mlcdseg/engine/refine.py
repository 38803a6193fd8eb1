"""Refine a mask with clicks, a box, a text embedding and previous logits, on a cached SAM embedding.

Only SAM's prompt encoder and mask decoder run: never the language model nor the image encoder.
Prompts follow segment-anything's `SamPredictor.predict`: clicks and boxes in pixels of the original
image, mapped to SAM's input frame as `ResizeLongestSide.apply_coords` does; labels 1 (positive) and
0 (negative); previous logits at the decoder's low resolution (256 × 256 for SAM's 1024 input). The
text embedding is the expression's `[SEG]` state after `text2sam`, which the reference prompt
encoder takes as `text_embeds` after the points and the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlcdseg.errors import RefinePromptError

from .preprocessing import postprocess_masks, sam_resized_size
from .prompt_encoder import NEGATIVE_LABEL, POSITIVE_LABEL, PromptEncoder
from .sam_decoder import MaskDecoder


@dataclass(frozen=True)
class Refinement:
    """The one mask a refinement keeps.

    masks: bool (1, H, W) at the original image's size, logits > 0;
    mask_logits: float32 (1, H, W), the logits `masks` thresholds (unbounded, 0 is the boundary);
    low_res_logits: float32 (1, 4g, 4g) (1, 256, 256 for SAM), the decoder's logits before
    upscaling, to pass back as `mask_logits` of the next round;
    iou_predictions: float32 (1,), the decoder's predicted IoU of the mask kept (unbounded;
    MLCD-Seg never trained this head, so it ranks multimask outputs but measures nothing).
    All on the CPU.
    """

    masks: np.ndarray
    mask_logits: torch.Tensor
    low_res_logits: torch.Tensor
    iou_predictions: torch.Tensor


def sam_frame_coords(coords: np.ndarray, original_size: tuple[int, int], long_side: int) -> np.ndarray:
    """(x, y) pixels of the original image (..., 2) → float64 (..., 2) in SAM's input frame.

    As `ResizeLongestSide.apply_coords`: x times new_width/width, y times new_height/height, where
    the new size is the longest side resized to `long_side`, rounded half up.
    """
    height, width = original_size
    new_height, new_width = sam_resized_size(height, width, long_side)
    scaled = np.array(coords, dtype=np.float64)
    scaled[..., 0] *= new_width / width
    scaled[..., 1] *= new_height / height
    return scaled


def uses_multimask(points: np.ndarray | None, box: np.ndarray | None, text_embedding: torch.Tensor | None, mask_logits: torch.Tensor | None) -> bool:
    """segment-anything's convention: three candidate masks only for one click with nothing else."""
    return points is not None and len(points) == 1 and box is None and text_embedding is None and mask_logits is None


@torch.inference_mode()
def refine(
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    original_size: tuple[int, int],
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    text_embedding: torch.Tensor | None = None,
    mask_logits: torch.Tensor | None = None,
) -> Refinement:
    """One refined mask of an encoded image; raises `RefinePromptError` for unusable prompts.

    image_embedding: (1, C, g, g), SAM's image encoder output, on the modules' device and dtype;
    image_pe: (1, C, g, g), `prompt_encoder.pe_layer(g)`; original_size: (height, width) pixels;
    points: (N, 2) float (x, y) pixels of the original image, any finite value (outside the image
    too, as SAM takes them); labels: (N,) int, 1 positive, 0 negative; box: (4,) float
    (x0, y0, x1, y1) pixels; text_embedding: (C,) the `[SEG]` embedding after text2sam;
    mask_logits: (4g, 4g) or (1, 4g, 4g) float logits of a previous mask, e.g. a previous
    `low_res_logits`. At least one of points, box, text_embedding.
    With a single click and nothing else the decoder's three masks are made and the one of
    highest predicted IoU is kept; otherwise its single-mask output.
    """
    points = _checked_points(points, labels)
    labels = _checked_labels(points, labels)
    box = _checked_box(box)
    width = prompt_encoder.no_mask_embed.weight.shape[1]
    if text_embedding is not None and tuple(text_embedding.shape) != (width,):
        raise RefinePromptError(f"the text embedding must have shape ({width},) (the [SEG] state after text2sam), not {tuple(text_embedding.shape)}")
    low_res = 4 * image_embedding.shape[-1]
    if mask_logits is not None and tuple(mask_logits.shape) not in ((low_res, low_res), (1, low_res, low_res)):
        raise RefinePromptError(f"previous mask logits must be {low_res}x{low_res} (the decoder's low resolution), not {tuple(mask_logits.shape)}")
    if points is None and box is None and text_embedding is None:
        raise RefinePromptError("a refinement needs clicks, a box or an expression's [SEG] embedding")
    multimask = uses_multimask(points, box, text_embedding, mask_logits)

    device, dtype, long_side = image_embedding.device, image_embedding.dtype, prompt_encoder.input_size
    point_prompt = None
    if points is not None:
        coords = torch.as_tensor(sam_frame_coords(points, original_size, long_side), dtype=torch.float32, device=device)
        point_prompt = (coords.unsqueeze(0), torch.as_tensor(labels, dtype=torch.int64, device=device).unsqueeze(0))
    boxes = None
    if box is not None:
        corners = sam_frame_coords(box.reshape(2, 2), original_size, long_side).reshape(1, 4)
        boxes = torch.as_tensor(corners, dtype=torch.float32, device=device)
    text = None if text_embedding is None else text_embedding.to(device, dtype).view(1, 1, width)
    dense_input = None if mask_logits is None else mask_logits.to(device, dtype).view(1, 1, low_res, low_res)

    sparse, dense = prompt_encoder(point_prompt, boxes, dense_input, text)
    candidates, iou = mask_decoder.predict(image_embedding, image_pe, dense, sparse, multimask)
    best = int(iou[0].argmax())
    kept_logits, kept_iou = candidates[:, best : best + 1], iou[:, best]
    resized = sam_resized_size(*original_size, long_side)
    logits = postprocess_masks(kept_logits, long_side, resized, original_size).float().cpu()
    return Refinement((logits > 0).numpy(), logits, kept_logits[:, 0].float().cpu(), kept_iou.float().cpu())


def _checked_points(points: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray | None:
    if points is None:
        if labels is not None:
            raise RefinePromptError("click labels were given without clicks")
        return None
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise RefinePromptError(f"clicks must be an (N, 2) array of (x, y) pixels with N ≥ 1, not shape {points.shape}")
    if not np.isfinite(points).all():
        raise RefinePromptError("click coordinates must be finite numbers (NaN or infinity given)")
    return points


def _checked_labels(points: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray | None:
    if points is None:
        return None
    if labels is None:
        raise RefinePromptError("clicks need labels: 1 for a positive click, 0 for a negative one")
    labels = np.asarray(labels)
    if labels.shape != (len(points),):
        raise RefinePromptError(f"one label per click: {len(points)} clicks, labels of shape {labels.shape}")
    if not np.isin(labels, (NEGATIVE_LABEL, POSITIVE_LABEL)).all():
        raise RefinePromptError(f"click labels must be {POSITIVE_LABEL} (positive) or {NEGATIVE_LABEL} (negative), not {sorted(set(labels.tolist()))}")
    return labels


def _checked_box(box: np.ndarray | None) -> np.ndarray | None:
    if box is None:
        return None
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (4,):
        raise RefinePromptError(f"a box must be 4 numbers (x0, y0, x1, y1) in pixels, not shape {box.shape}")
    if not np.isfinite(box).all():
        raise RefinePromptError("box coordinates must be finite numbers (NaN or infinity given)")
    return box
