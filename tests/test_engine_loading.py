"""Loading reads the configuration from the checkpoint and refuses anything it cannot reproduce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mlcdseg.engine import load_native_engine
from mlcdseg.engine.config import read_engine_config, read_safetensors_shapes
from mlcdseg.errors import CheckpointMismatchError, UnsupportedCheckpointError

CHECKPOINT = Path(__file__).parent / "fixtures" / "engine" / "checkpoint"
SAMPLE = "model.layers.1.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(str(CHECKPOINT / "model.safetensors"))


def copy_checkpoint(target: Path, tensors: dict[str, torch.Tensor] | None = None, **config_changes) -> Path:
    shutil.copytree(CHECKPOINT, target, ignore=shutil.ignore_patterns("*.safetensors"))
    if tensors is not None:
        save_file(tensors, str(target / "model.safetensors"))
    else:
        shutil.copy(CHECKPOINT / "model.safetensors", target / "model.safetensors")
    config = json.loads((target / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_dimensions_come_from_config_and_tensor_shapes():
    config = read_engine_config(CHECKPOINT, read_safetensors_shapes(CHECKPOINT))
    assert (config.tower.width, config.tower.depth, config.tower.heads) == (128, 3, 2)
    assert (config.tower.patch_size, config.tower.image_size, config.tower.layers_to_run) == (14, 70, 2)
    assert (config.llm.hidden, config.llm.layers, config.llm.heads, config.llm.kv_heads) == (64, 2, 4, 2)
    assert (config.sam.width, config.sam.depth, config.sam.heads) == (32, 2, 2)
    assert (config.sam.global_layers, config.sam.window_size, config.sam.image_size) == ((1,), 14, 1024)
    assert config.grid_pinpoints[0] == (70, 70) and len(config.grid_pinpoints) == 10
    assert (config.projector_depth, config.prompt_dim, config.decoder_depth) == (2, 256, 2)


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path, tensors):
    target = copy_checkpoint(tmp_path / "sharded", tensors={})
    (target / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_file({name: tensors[name] for name in shard_names}, str(target / shard))
    index = {"weight_map": {name: shard for shard, shard_names in shards.items() for name in shard_names}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    engine = load_native_engine(target)
    assert torch.equal(engine.network.llm.layers[1].mlp.up_proj.weight, tensors[SAMPLE].float())


def test_missing_tensor_is_refused_by_name(tmp_path, tensors):
    broken = {name: tensor for name, tensor in tensors.items() if name != SAMPLE}
    with pytest.raises(CheckpointMismatchError, match=r"1 missing: model\.layers\.1\.mlp\.up_proj\.weight") as caught:
        load_native_engine(copy_checkpoint(tmp_path / "c", broken))
    assert caught.value.missing == [SAMPLE]


def test_unexpected_tensor_is_refused_by_name(tmp_path, tensors):
    extra = dict(tensors, **{"model.sam.extra_head.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected: model\.sam\.extra_head\.weight"):
        load_native_engine(copy_checkpoint(tmp_path / "c", extra))


def test_wrong_shape_is_refused_by_name(tmp_path, tensors):
    wrong = dict(tensors, **{SAMPLE: torch.zeros(3, 3, dtype=torch.float16)})
    with pytest.raises(CheckpointMismatchError, match=r"1 wrong shape: model\.layers\.1\.mlp\.up_proj\.weight \(3, 3\)"):
        load_native_engine(copy_checkpoint(tmp_path / "c", wrong))


def test_missing_tensor_that_sizes_a_part_is_refused_by_name(tmp_path, tensors):
    name = "model.vision_tower.vision_tower.vision_model.embeddings.class_embedding"
    broken = {key: tensor for key, tensor in tensors.items() if key != name}
    with pytest.raises(CheckpointMismatchError, match=name.replace(".", r"\.")):
        load_native_engine(copy_checkpoint(tmp_path / "c", broken))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mm_vision_tower", "google/siglip-so400m-patch14-384"),
        ("mm_projector_type", "linear"),
        ("mm_patch_merge_type", "flat"),
        ("image_aspect_ratio", "pad"),
        ("mm_vision_select_feature", "cls_patch"),
        ("model_type", "llava_llama"),
        ("mm_resampler_type", "perceiver"),
        ("conv_mode", "vicuna_v1"),
    ],
)
def test_unsupported_configuration_is_refused_naming_key_and_value(tmp_path, key, value):
    with pytest.raises(UnsupportedCheckpointError) as caught:
        load_native_engine(copy_checkpoint(tmp_path / "c", **{key: value}))
    assert key in str(caught.value) and repr(value) in str(caught.value)
    assert (caught.value.key, caught.value.value) == (key, value)


def test_checkpoint_without_sam_weights_is_refused_as_unsupported(tmp_path, tensors):
    chat_only = {name: tensor for name, tensor in tensors.items() if not name.startswith("model.sam.")}
    with pytest.raises(UnsupportedCheckpointError, match=r"model\.sam\.\*='absent'"):
        load_native_engine(copy_checkpoint(tmp_path / "c", chat_only))
