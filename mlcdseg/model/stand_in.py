"""The offline stand-in model, NOT MLCD-Seg: write its model directory; its colour rule without torch.

`write_stand_in_model` writes a small model directory that loads through the same
``AutoModel.from_pretrained(..., trust_remote_code=True)`` and ``AutoTokenizer(use_fast=False)``
path as MLCD-Seg and answers the same ``seg(image, prompt, tokenizer, force_seg)`` call with a
transparent rule: the pixels of the first colour named in the prompt (see `colour_rule_mask`).
It is for tests and offline demos; its masks say nothing about MLCD-Seg.

The rule is written once, in ``mlcdseg/model/stand_in_files/colour_rule.py`` (the directory whose
files the stand-in's model directory gets), and re-exported here.
"""

import json
import logging
import os
import tempfile
from pathlib import Path

from mlcdseg.model.stand_in_files.colour_rule import (
    COLOURS,
    MAX_COLOUR_DISTANCE,
    colour_rule_mask,
    first_colour_word,
)

__all__ = [
    "COLOURS",
    "MAX_COLOUR_DISTANCE",
    "STAND_IN_MODEL_TYPE",
    "colour_rule_mask",
    "first_colour_word",
    "is_stand_in_directory",
    "write_stand_in_model",
]

logger = logging.getLogger(__name__)

#: ``model_type`` in the stand-in's config.json; how a loaded model is recognised as the stand-in.
STAND_IN_MODEL_TYPE = "mlcdseg_stand_in"

_README = f"""\
# Offline stand-in model — NOT MLCD-Seg

Written by `mlcdseg stand-in-model` for tests and offline demos. It loads like MLCD-Seg
(`AutoModel.from_pretrained(dir, trust_remote_code=True)`, `AutoTokenizer.from_pretrained(dir,
use_fast=False)`) and answers `model.seg(image, prompt, tokenizer, force_seg)`, but its "model" is
a colour rule: the pixels within Euclidean RGB distance {MAX_COLOUR_DISTANCE:g} of the first colour
named in the prompt ({", ".join(COLOURS)}). No colour word, or no pixel of that colour, means
"no target".
"""


def write_stand_in_model(directory: str | os.PathLike, latency_ms: float = 0.0) -> Path:
    """Write the offline stand-in's model directory and return its absolute path.

    `latency_ms` is stored in config.json: each `seg` call then sleeps that long, a set cost
    per expression for tests and benchmarks.

    The directory gets config.json (with ``auto_map``), the remote-code modules, model.safetensors,
    a slow Qwen2 tokenizer with a byte-level vocabulary, and a README saying it is not MLCD-Seg.
    Files are staged next to the target and moved in one by one with os.replace. Raises
    FileExistsError when the directory holds something other than a stand-in model.
    """
    target = Path(directory).expanduser().resolve()
    _refuse_to_overwrite_other_files(target)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as staging:
        staging_dir = Path(staging)
        _save_model(staging_dir, latency_ms)
        _save_tokenizer(staging_dir)
        (staging_dir / "README.md").write_text(_README, encoding="utf-8")
        for staged_file in sorted(staging_dir.iterdir()):
            os.replace(staged_file, target / staged_file.name)
    logger.info("wrote the offline stand-in model (NOT MLCD-Seg) to %s", target)
    return target


def is_stand_in_directory(location: str | os.PathLike) -> bool:
    """True when `location` is a model directory whose config.json declares the offline stand-in."""
    try:
        config = json.loads((Path(location) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == STAND_IN_MODEL_TYPE


def _refuse_to_overwrite_other_files(target: Path) -> None:
    """Raise FileExistsError unless `target` is absent, empty, or already a stand-in directory."""
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not is_stand_in_directory(target):
        raise FileExistsError(
            f"refusing to write the stand-in model into {target}: the directory is not empty "
            "and is not a stand-in model directory; choose a new or empty directory"
        )


def _save_model(directory: Path, latency_ms: float) -> None:
    """Save config.json, the remote-code modules and model.safetensors into `directory`."""
    import torch

    from mlcdseg.model.stand_in_files.configuration_mlcdseg_stand_in import MlcdsegStandInConfig
    from mlcdseg.model.stand_in_files.modeling_mlcdseg_stand_in import MlcdsegStandInModel

    # Registering makes save_pretrained write auto_map and copy the modules (and their relative
    # imports) next to the weights: the layout trust_remote_code loads.
    MlcdsegStandInConfig.register_for_auto_class()
    MlcdsegStandInModel.register_for_auto_class("AutoModel")
    if not latency_ms >= 0:
        raise ValueError(f"latency_ms={latency_ms} must be 0 or more")
    model = MlcdsegStandInModel(MlcdsegStandInConfig(latency_ms=latency_ms))
    with torch.no_grad():
        model.max_colour_distance.fill_(MAX_COLOUR_DISTANCE)
    model.save_pretrained(directory, safe_serialization=True)


def _save_tokenizer(directory: Path) -> None:
    """Save a slow Qwen2Tokenizer (MLCD-Seg's LLM family) whose vocabulary is the 256 byte symbols."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import bytes_to_unicode

    byte_symbols = bytes_to_unicode()
    vocabulary = {byte_symbols[byte]: byte for byte in range(256)}
    vocab_file = directory / "vocab.json"
    merges_file = directory / "merges.txt"
    vocab_file.write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    Qwen2Tokenizer(vocab_file=str(vocab_file), merges_file=str(merges_file)).save_pretrained(
        directory
    )
