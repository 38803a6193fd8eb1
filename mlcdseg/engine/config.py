"""Engine configuration read from a LLaVA-style checkpoint: `config.json` plus tensor shapes.

Values the checkpoint's `config.json` carries (anyres grids, select layer, merge type, projector,
LLM dimensions) are read from it; dimensions it lacks (vision tower and SAM image encoder) are
derived from the shapes of the checkpoint's tensors. Anything this engine does not implement is
refused with `UnsupportedCheckpointError` naming the key and value.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlcdseg.errors import UnsupportedCheckpointError

logger = logging.getLogger(__name__)

TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
SAM_ENCODER_PREFIX = "model.sam.image_encoder."
SAM_DECODER_PREFIX = "model.sam.mask_decoder."

# Names for which the reference's `build_vision_tower` builds a Hugging Face CLIP vision tower.
_CLIP_TOWER_MARKERS = ("clip", "mlcd", "unicom", "ShareGPT4V")
_CLIP_TOWER_PREFIXES = ("openai", "laion", "DeepGlint")
# CLIP's own pixel statistics, used when the checkpoint ships no preprocessor_config.json.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
CHATML_TEMPLATES = ("qwen_1_5", "qwen_2")
CHATML_SYSTEM = "You are a helpful assistant."
SAM_DECODER_HEADS = 8  # SAM's mask decoder is fixed-size; its head count is not in any shape.


@dataclass(frozen=True)
class TowerConfig:
    """CLIP vision tower (pre-LN ViT, class token, learned absolute positions)."""

    width: int
    depth: int
    heads: int
    mlp_width: int
    patch_size: int
    image_size: int
    select_layer: int  # index into hidden_states (length depth + 1), may be negative
    activation: str  # "quick_gelu" or "gelu"
    layer_norm_eps: float
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @property
    def layers_to_run(self) -> int:
        """Encoder layers needed to reach the selected hidden state (later ones are unused)."""
        return self.select_layer % (self.depth + 1)

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class LlmConfig:
    """Qwen2 decoder."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class SamEncoderConfig:
    """SAM ViT image encoder with windowed and global attention layers."""

    width: int
    depth: int
    heads: int
    mlp_width: int
    patch_size: int
    image_size: int
    window_size: int
    global_layers: tuple[int, ...]
    out_channels: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to build its modules and prompts."""

    tower: TowerConfig
    llm: LlmConfig
    sam: SamEncoderConfig
    projector_depth: int  # `mlp{N}x_gelu`
    grid_pinpoints: tuple[tuple[int, int], ...]  # (width, height) canvases in pixels
    prompt_dim: int  # SAM prompt width (text2sam output)
    decoder_depth: int
    decoder_mlp_width: int
    system_prompt: str  # of the CHATML turns, the only conversation template the engine builds


def read_safetensors_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape for every tensor of the checkpoint, read from file headers only."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in checkpoint_files(model_dir):
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
        for name, info in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(info["shape"])
    return shapes


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The checkpoint's safetensors files: the shards of the index, or the single file."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    return files


def read_engine_config(model_dir: Path, shapes: Mapping[str, tuple[int, ...]]) -> EngineConfig:
    """Build the engine configuration of the checkpoint in `model_dir`."""
    config = json.loads((model_dir / "config.json").read_text())
    preprocessor_path = model_dir / "preprocessor_config.json"
    preprocessor = json.loads(preprocessor_path.read_text()) if preprocessor_path.exists() else {}
    _check_supported(config)
    _check_chat_template(config)
    if SAM_ENCODER_PREFIX + "patch_embed.proj.weight" not in shapes:
        raise UnsupportedCheckpointError("model.sam.*", "absent", "a segmentation checkpoint with its SAM weights")
    return EngineConfig(
        tower=_tower_config(config, preprocessor, shapes),
        llm=_llm_config(config),
        sam=_sam_config(shapes),
        projector_depth=int(re.match(r"^mlp(\d+)x_gelu$", config["mm_projector_type"]).group(1)),
        grid_pinpoints=_grid_pinpoints(config, _tile_size(shapes)),
        prompt_dim=shapes[SAM_DECODER_PREFIX + "iou_token.weight"][1],
        decoder_depth=_count_indexed(shapes, SAM_DECODER_PREFIX + "transformer.layers."),
        decoder_mlp_width=shapes[SAM_DECODER_PREFIX + "transformer.layers.0.mlp.lin1.weight"][0],
        system_prompt=CHATML_SYSTEM,
    )


def _check_supported(config: Mapping[str, Any]) -> None:
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not ("qwen" in model_type or "mlcd" in model_type):
        raise UnsupportedCheckpointError("model_type", model_type, "a Qwen2-based LLaVA model, e.g. llava_qwen")
    tower = config.get("mm_vision_tower", config.get("vision_tower"))
    if not isinstance(tower, str) or not (
        any(marker in tower for marker in _CLIP_TOWER_MARKERS) or tower.startswith(_CLIP_TOWER_PREFIXES)
    ):
        raise UnsupportedCheckpointError("mm_vision_tower", tower, "a CLIP/MLCD tower name")
    if config.get("mm_resampler_type") is not None:
        raise UnsupportedCheckpointError("mm_resampler_type", config["mm_resampler_type"], "none")
    if config.get("s2", False):
        raise UnsupportedCheckpointError("s2", config["s2"], "false")
    checks = {
        "mm_projector_type": (config.get("mm_projector_type", "linear"), r"^mlp\d+x_gelu$"),
        "mm_patch_merge_type": (config.get("mm_patch_merge_type", "flat"), r"^spatial_unpad$"),
        "image_aspect_ratio": (config.get("image_aspect_ratio", "square"), r"^anyres$"),
        "mm_vision_select_feature": (config.get("mm_vision_select_feature", "patch"), r"^patch$"),
    }
    for key, (value, pattern) in checks.items():
        if not isinstance(value, str) or not re.match(pattern, value):
            raise UnsupportedCheckpointError(key, value, pattern.strip("^$"))
    if config.get("rope_scaling") not in (None, {}):
        logger.info("ignoring rope_scaling=%r: the reference model sets it to None", config["rope_scaling"])
    if config.get("mm_use_im_start_end", False):
        raise UnsupportedCheckpointError("mm_use_im_start_end", config["mm_use_im_start_end"], "false")


def _tile_size(shapes: Mapping[str, tuple[int, ...]]) -> int:
    patch = shapes[TOWER_PREFIX + "embeddings.patch_embedding.weight"][-1]
    positions = shapes[TOWER_PREFIX + "embeddings.position_embedding.weight"][0]
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise UnsupportedCheckpointError("vision tower positions", positions, "1 + a square number")
    return side * patch


def _tower_config(
    config: Mapping[str, Any], preprocessor: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
) -> TowerConfig:
    vision = config.get("vision_config") or {}
    width = shapes[TOWER_PREFIX + "embeddings.class_embedding"][0]
    depth = _count_indexed(shapes, TOWER_PREFIX + "encoder.layers.")
    heads = int(vision.get("num_attention_heads", width // 64))  # CLIP towers use 64-wide heads
    activation = vision.get("hidden_act", "quick_gelu")
    if activation not in ("quick_gelu", "gelu"):
        raise UnsupportedCheckpointError("vision_config.hidden_act", activation, "quick_gelu, gelu")
    select_layer = int(config.get("mm_vision_select_layer", -2))
    if not -(depth + 1) <= select_layer <= depth or select_layer % (depth + 1) == 0:
        raise UnsupportedCheckpointError("mm_vision_select_layer", select_layer, f"1..{depth} or -1..-{depth}")
    return TowerConfig(
        width=width,
        depth=depth,
        heads=heads,
        mlp_width=shapes[TOWER_PREFIX + "encoder.layers.0.mlp.fc1.weight"][0],
        patch_size=shapes[TOWER_PREFIX + "embeddings.patch_embedding.weight"][-1],
        image_size=_tile_size(shapes),
        select_layer=select_layer,
        activation=activation,
        layer_norm_eps=float(vision.get("layer_norm_eps", 1e-5)),
        image_mean=tuple(preprocessor.get("image_mean", CLIP_IMAGE_MEAN)),
        image_std=tuple(preprocessor.get("image_std", CLIP_IMAGE_STD)),
    )


def _llm_config(config: Mapping[str, Any]) -> LlmConfig:
    heads = int(config["num_attention_heads"])
    return LlmConfig(
        hidden=int(config["hidden_size"]),
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads", heads)),
        intermediate=int(config["intermediate_size"]),
        vocab=int(config["vocab_size"]),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def _sam_config(shapes: Mapping[str, tuple[int, ...]]) -> SamEncoderConfig:
    patch_weight = shapes[SAM_ENCODER_PREFIX + "patch_embed.proj.weight"]
    width, patch_size = patch_weight[0], patch_weight[-1]
    grid = shapes[SAM_ENCODER_PREFIX + "pos_embed"][1]
    depth = _count_indexed(shapes, SAM_ENCODER_PREFIX + "blocks.")
    rel_sizes = [shapes[f"{SAM_ENCODER_PREFIX}blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
    global_layers = tuple(i for i, size in enumerate(rel_sizes) if size[0] == 2 * grid - 1)
    windowed = {size[0] for size in rel_sizes if size[0] != 2 * grid - 1}
    if len(windowed) > 1:
        raise UnsupportedCheckpointError("SAM encoder window sizes", sorted(windowed), "one window size")
    window = (windowed.pop() + 1) // 2 if windowed else 0
    return SamEncoderConfig(
        width=width,
        depth=depth,
        heads=width // rel_sizes[0][1],
        mlp_width=shapes[SAM_ENCODER_PREFIX + "blocks.0.mlp.lin1.weight"][0],
        patch_size=patch_size,
        image_size=grid * patch_size,
        window_size=window,
        global_layers=global_layers,
        out_channels=shapes[SAM_ENCODER_PREFIX + "neck.0.weight"][0],
    )


def _grid_pinpoints(config: Mapping[str, Any], tile: int) -> tuple[tuple[int, int], ...]:
    """Anyres canvases (width, height); the `(AxB),...,(CxD)` range form counts tiles."""
    raw = config.get("image_grid_pinpoints")
    if isinstance(raw, str) and "x" in raw:
        ranges = [tuple(map(int, m)) for m in re.findall(r"\((\d+)x(\d+)\)", raw)]
        (w0, h0), (w1, h1) = ranges[0], ranges[-1]
        return tuple((w * tile, h * tile) for w in range(w0, w1 + 1) for h in range(h0, h1 + 1))
    if isinstance(raw, str):
        raw = ast.literal_eval(raw)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise UnsupportedCheckpointError("image_grid_pinpoints", raw, "a list of [width, height]")
    for width, height in raw:
        if width % tile or height % tile:
            raise UnsupportedCheckpointError("image_grid_pinpoints", raw, f"multiples of the tile size {tile}")
    return tuple((int(w), int(h)) for w, h in raw)


def _check_chat_template(config: Mapping[str, Any]) -> None:
    """Refuse a conversation template other than CHATML (mlcdseg.engine.prompting builds only that);
    none named is CHATML, what the seg recipe trains a llava_qwen model with."""
    for key in ("conv_mode", "conv_template", "version"):
        if key in config and config[key] not in CHATML_TEMPLATES:
            raise UnsupportedCheckpointError(key, config[key], ", ".join(CHATML_TEMPLATES))


def _count_indexed(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> int:
    indices = {int(name[len(prefix):].split(".", 1)[0]) for name in shapes if name.startswith(prefix)}
    if indices != set(range(len(indices))):
        raise UnsupportedCheckpointError(prefix + "*", sorted(indices), "consecutive layer indices from 0")
    return len(indices)
