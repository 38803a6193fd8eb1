"""Which engine load_model runs (MLCDSEG_ENGINE / --engine), and what it says when it cannot."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from mlcdseg.errors import ModelLoadError
from mlcdseg.model.loading import NATIVE_VERSION_SUFFIX, load_model
from tests.test_engine_loading import CHECKPOINT, SAMPLE, copy_checkpoint, tensors  # noqa: F401 (fixture)

IMAGES = CHECKPOINT.parent / "images"


def test_the_native_engine_serves_a_checkpoint_it_can_reproduce_and_says_so_in_the_version():
    segmenter = load_model(str(CHECKPOINT), device="cpu", engine="native")
    assert segmenter.engine.name == "native"
    assert segmenter.model_version.endswith(NATIVE_VERSION_SUFFIX)
    image = Image.open(next(IMAGES.iterdir())).convert("RGB")
    many = segmenter.predict_many(image, ["the dog", "a cat on the left"], force_seg=True)
    single = segmenter.predict(image, "a cat on the left", force_seg=True)
    assert many[1].mask.shape == (image.height, image.width)
    assert np.array_equal(many[1].mask, single.mask)
    assert len(segmenter.engine.engine.cache) == 1  # the second call found the encoded image


def test_auto_prefers_the_native_engine():
    assert load_model(str(CHECKPOINT), device="cpu", engine="auto").engine.name == "native"


def test_native_on_a_checkpoint_with_a_missing_tensor_names_it_in_one_error(tmp_path, tensors):
    broken = copy_checkpoint(tmp_path / "broken", {name: value for name, value in tensors.items() if name != SAMPLE})
    with pytest.raises(ModelLoadError, match=f"native engine cannot load broken: .*missing: {SAMPLE}"):
        load_model(str(broken), device="cpu", engine="native")


def test_auto_on_a_checkpoint_the_native_engine_refuses_warns_why_and_takes_the_official_path(
    tmp_path, tensors, caplog
):
    broken = copy_checkpoint(tmp_path / "broken", {name: value for name, value in tensors.items() if name != SAMPLE})
    with caplog.at_level(logging.WARNING, logger="mlcdseg.model.loading"), pytest.raises(ModelLoadError) as raised:
        load_model(str(broken), device="cpu", engine="auto")
    warning = next(record.getMessage() for record in caplog.records if "falling back" in record.getMessage())
    assert SAMPLE in warning and "official seg() path" in warning
    # the official path then runs the checkpoint's remote code, which this test checkpoint has not
    assert "cannot load" in str(raised.value)


def test_the_stand_in_under_auto_takes_the_official_path_without_a_warning(stand_in_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="mlcdseg.model.loading"):
        segmenter = load_model(str(stand_in_model_dir), device="cpu", engine="auto")
    assert segmenter.engine.name == "official"
    assert not [record for record in caplog.records if "falling back" in record.getMessage()]


def test_an_unknown_engine_is_refused():
    with pytest.raises(ModelLoadError, match="unknown engine 'fast'"):
        load_model(str(CHECKPOINT), device="cpu", engine="fast")


@pytest.fixture
def torch_2_4_attention(monkeypatch):
    """scaled_dot_product_attention as torch 2.4 has it: no enable_gqa argument."""
    import mlcdseg.engine.llm as llm

    real = llm.F.scaled_dot_product_attention

    def without_enable_gqa(*args, **kwargs):
        if "enable_gqa" in kwargs:
            raise TypeError("scaled_dot_product_attention() got an unexpected keyword argument 'enable_gqa'")
        return real(*args, **kwargs)

    monkeypatch.setattr(llm.F, "scaled_dot_product_attention", without_enable_gqa)


def test_native_whose_first_forward_fails_is_refused_with_the_reason(torch_2_4_attention):
    with pytest.raises(ModelLoadError, match="native engine cannot load .*first forward failed: TypeError: .*enable_gqa"):
        load_model(str(CHECKPOINT), device="cpu", engine="native")


def test_auto_whose_native_forward_fails_warns_why_and_never_serves_it(torch_2_4_attention, caplog):
    with caplog.at_level(logging.WARNING, logger="mlcdseg.model.loading"), pytest.raises(ModelLoadError):
        load_model(str(CHECKPOINT), device="cpu", engine="auto")
    warning = next(record.getMessage() for record in caplog.records if "falling back" in record.getMessage())
    assert "first forward failed" in warning and "enable_gqa" in warning
