"""The whole MLCD-Seg network as one module tree, and its mapping to checkpoint names."""

from __future__ import annotations

import torch
from torch import nn

from .config import EngineConfig, SAM_DECODER_HEADS
from .llm import Qwen2Decoder
from .projector import GeluMlp
from .prompt_encoder import PromptEncoder
from .sam_decoder import MaskDecoder
from .sam_encoder import SamImageEncoder
from .vision_tower import ClipVisionTower

# (engine prefix, checkpoint prefix), most specific first.
CHECKPOINT_PREFIXES = (
    ("tower.", "model.vision_tower.vision_tower.vision_model."),
    ("projector.", "model.mm_projector."),
    ("image_newline", "model.image_newline"),
    ("sam_encoder.", "model.sam.image_encoder."),
    ("prompt_encoder.", "model.sam.prompt_encoder."),
    ("mask_decoder.", "model.sam.mask_decoder."),
    ("text2sam.", "model.text2sam_projection."),
    ("llm.lm_head.", "lm_head."),
    ("llm.", "model."),
)


def checkpoint_name(engine_name: str) -> str:
    """The checkpoint's name for an engine parameter or buffer."""
    for engine_prefix, checkpoint_prefix in CHECKPOINT_PREFIXES:
        if engine_name.startswith(engine_prefix):
            return checkpoint_prefix + engine_name[len(engine_prefix):]
    raise KeyError(engine_name)


class MlcdSegNetwork(nn.Module):
    """Vision tower, projector, Qwen2, SAM encoder, prompt encoder, mask decoder, text2sam."""

    def __init__(self, config: EngineConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.llm.hidden
        self.tower = ClipVisionTower(config.tower)
        self.projector = GeluMlp(config.tower.width, hidden, config.projector_depth)
        self.image_newline = nn.Parameter(torch.zeros(hidden))
        self.llm = Qwen2Decoder(config.llm)
        self.sam_encoder = SamImageEncoder(config.sam)
        self.prompt_encoder = PromptEncoder(config.prompt_dim, config.sam.image_size)
        self.mask_decoder = MaskDecoder(config.prompt_dim, config.decoder_depth, SAM_DECODER_HEADS, config.decoder_mlp_width)
        self.text2sam = GeluMlp(hidden, config.prompt_dim, 2)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and persistent buffer by checkpoint name (a tied LM head once)."""
        tensors = {checkpoint_name(name): tensor for name, tensor in self.state_dict(keep_vars=True).items()}
        if self.config.llm.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)
        return tensors
