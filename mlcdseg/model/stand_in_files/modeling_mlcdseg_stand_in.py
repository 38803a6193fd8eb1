"""The offline stand-in model: MLCD-Seg's `seg` interface around a colour rule, NOT MLCD-Seg.

It exists so the whole pipeline (from_pretrained with trust_remote_code, the slow tokenizer,
`seg`, masks, Label Studio) runs offline and on CPU in tests and demos. Its masks say nothing
about MLCD-Seg's quality.
"""

import time

import numpy as np
import torch
from transformers import PreTrainedModel

from .colour_rule import colour_rule_mask
from .configuration_mlcdseg_stand_in import MlcdsegStandInConfig


class MlcdsegStandInModel(PreTrainedModel):
    """Offline stand-in, NOT MLCD-Seg: `seg` returns the pixels of the first colour in the prompt.

    Its one weight, `max_colour_distance` (saved in model.safetensors), is the colour tolerance;
    it starts as NaN, so a model whose weights did not load finds no target at all.
    """

    config_class = MlcdsegStandInConfig

    def __init__(self, config: MlcdsegStandInConfig):
        super().__init__(config)
        self.max_colour_distance = torch.nn.Parameter(
            torch.tensor(float("nan")), requires_grad=False
        )
        self.post_init()

    def _init_weights(self, module):
        """Leave the weight alone: its only meaningful value comes from model.safetensors."""

    def extra_repr(self) -> str:
        return "offline stand-in for tests and demos, NOT MLCD-Seg"

    def seg(self, image, prompt: str, tokenizer, force_seg: bool = False) -> torch.Tensor:
        """Masks uint8 0/1 of shape (N, H, W) at the image's size, on the model's device.

        image: PIL image (RGB). N is 1 when the first colour named in the prompt is present;
        otherwise 0, or 1 all-zero mask when `force_seg` is True (MLCD-Seg's benchmark mode).
        The prompt goes through the tokenizer (encode then decode) like a real model's input.
        The call takes at least `config.latency_ms` (a set cost, 0 by default).
        """
        if self.config.latency_ms > 0:
            time.sleep(self.config.latency_ms / 1000)
        text = tokenizer.decode(tokenizer.encode(prompt, add_special_tokens=False))
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        height, width = rgb.shape[:2]
        mask = colour_rule_mask(rgb, text, max_distance=float(self.max_colour_distance))
        if mask is None:
            count = 1 if force_seg else 0
            return torch.zeros((count, height, width), dtype=torch.uint8, device=self.device)
        return torch.from_numpy(mask).to(device=self.device, dtype=torch.uint8).unsqueeze(0)
