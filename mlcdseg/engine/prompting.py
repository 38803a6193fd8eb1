"""CHATML prompts as token ids: a shared prefix up to the image, one suffix per expression.

The image is spliced as `IMAGE_TOKEN_INDEX` by tokenizing the text on each side of `<image>`
separately, as the reference's `tokenizer_image_token` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

from mlcdseg.errors import UnsupportedCheckpointError

IMAGE_TOKEN_INDEX = -200
SEG_TOKEN = "[SEG]"
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
DEFAULT_ANSWER = "It is [SEG]."


class PromptCodec(Protocol):
    """What the engine needs from prompts: ids on each side of the image, and answer decoding."""

    seg_id: int
    stop_ids: frozenset[int]

    def prefix_ids(self) -> list[int]:
        """Tokens before the image (system turn and the user turn's opening)."""

    def suffix_ids(self, question: str, answer: str | None) -> list[int]:
        """Tokens after the image: the question, the assistant opening, the forced answer if any."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids."""


class ChatmlPrompts:
    """CHATML (`qwen_1_5`): system turn, user turn "<image>\\n" + question, assistant turn."""

    def __init__(self, tokenizer: Any, system_prompt: str) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.seg_id = self._single_id(SEG_TOKEN)
        self.stop_ids = frozenset(self._single_id(token) for token in STOP_TOKENS)

    def _single_id(self, token: str) -> int:
        ids = self.tokenizer(token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise UnsupportedCheckpointError(f"tokenizer ids of {token!r}", ids, "exactly one id (an added token)")
        return ids[0]

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text).input_ids)

    def prefix_ids(self) -> list[int]:
        return self._ids(f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n<|im_start|>user\n")

    def suffix_ids(self, question: str, answer: str | None) -> list[int]:
        text = f"\n{question}<|im_end|>\n<|im_start|>assistant\n"
        if answer is not None:
            text += answer + "<|im_end|>\n"
        return self._ids(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(model_dir: Path) -> Any:
    """The checkpoint's slow tokenizer (`[SEG]` is one of its added tokens)."""
    from transformers import AutoTokenizer  # imported here: the engine package must not need it to import

    return AutoTokenizer.from_pretrained(str(model_dir), use_fast=False)
