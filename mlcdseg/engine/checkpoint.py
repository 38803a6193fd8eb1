"""Reading a checkpoint's safetensors into the network, one to one by the reference's names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open

from mlcdseg.errors import CheckpointMismatchError

from .config import checkpoint_files
from .network import MlcdSegNetwork

logger = logging.getLogger(__name__)


def check_names(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse unless `found` has exactly the names of `expected`, each with the same shape."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(
        f"{name} {tuple(found[name])} != {tuple(expected[name])}"
        for name in set(expected) & set(found)
        if tuple(found[name]) != tuple(expected[name])
    )
    if missing or unexpected or wrong_shape:
        raise CheckpointMismatchError(missing, unexpected, wrong_shape)


def load_weights(network: MlcdSegNetwork, model_dir: Path, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Fill every parameter and buffer of `network` from the checkpoint, cast to its dtype."""
    targets = network.named_tensors()
    check_names({name: tuple(tensor.shape) for name, tensor in targets.items()}, shapes)
    with torch.no_grad():
        for path in checkpoint_files(model_dir):
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    target = targets[name]
                    target.copy_(handle.get_tensor(name).to(device=target.device, dtype=target.dtype))
    logger.info("loaded %d tensors from %s", len(targets), model_dir)

