"""load_model / Segmenter through the real transformers path, with the offline stand-in model."""

import io
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcdseg.errors import (
    LIBRARY_REASON_CHARS,
    ExpressionError,
    GpuOutOfMemoryError,
    ModelLoadError,
    ModelNotFoundError,
    ModelOutputError,
    PromptTemplateError,
    library_reason,
)
from mlcdseg.masks.images import load_image
from mlcdseg.model.loading import load_model
from mlcdseg.model.prompts import DEFAULT_PROMPT_TEMPLATE, build_prompt, is_full_prompt
from mlcdseg.model.segmenter import union_of_masks
from mlcdseg.model.stand_in import STAND_IN_MODEL_TYPE, colour_rule_mask, write_stand_in_model

GREY = (128, 128, 128)


def _scene(size=(48, 32)) -> Image.Image:
    """Grey background, a red square, a blue bar and a white dot."""
    image = Image.new("RGB", size, GREY)
    image.paste((250, 10, 5), (4, 4, 16, 16))
    image.paste((0, 0, 255), (20, 24, 44, 28))
    image.paste((255, 255, 255), (40, 2, 42, 4))
    return image


def _expected(image: Image.Image, prompt: str) -> np.ndarray:
    """The colour rule's answer as a bool (H, W) mask (all False for no target)."""
    mask = colour_rule_mask(np.asarray(load_image(image)), prompt)
    return np.zeros((image.height, image.width), dtype=bool) if mask is None else mask


# --- prompts -------------------------------------------------------------------------------


def test_bare_expression_is_wrapped_in_the_model_card_template():
    assert build_prompt("man in the red shirt") == (
        "Could you provide a segmentation mask for the man in the red shirt in this image?"
    )
    assert build_prompt("  The dog on the left. ") == (
        "Could you provide a segmentation mask for the dog on the left in this image?"
    )
    assert build_prompt("can on the left") == (
        "Could you provide a segmentation mask for the can on the left in this image?"
    )
    assert build_prompt("the dog", "Segment {expression}.") == "Segment the dog."


@pytest.mark.parametrize(
    "text",
    [
        "Where is the red car?",
        "Segment the dog on the left",
        "segment: cat",
        "Please find the cup",
        "Could you segment the man?",
        "can you show the bus",
        "Would you mask the tree",
    ],
)
def test_full_questions_and_instructions_pass_through_unchanged(text):
    assert is_full_prompt(text)
    assert build_prompt(f"  {text} ") == text


def test_bad_templates_and_empty_expressions_are_refused():
    with pytest.raises(PromptTemplateError, match=r"must contain '\{expression\}'"):
        build_prompt("dog", "Segment the thing")
    with pytest.raises(ExpressionError, match="empty"):
        build_prompt("  . ")
    with pytest.raises(ModelLoadError, match=r"\{expression\}"):
        load_model("/nonexistent", prompt_template="no placeholder")


# --- the stand-in and its loading ----------------------------------------------------------


def test_colour_rule_takes_the_first_colour_word_within_distance_60():
    rgb = np.array([[[195, 0, 0], [194, 0, 0], [0, 0, 255], [128, 128, 128]]], dtype=np.uint8)
    assert colour_rule_mask(rgb, "the RED or blue thing").tolist() == [[True, False, False, False]]
    assert colour_rule_mask(rgb, "blue, then red").tolist() == [[False, False, True, False]]
    assert colour_rule_mask(rgb, "gray").tolist() == [[False, False, False, True]]
    assert colour_rule_mask(rgb, "reddish bluish thing") is None  # whole words only
    assert colour_rule_mask(rgb, "the green one") is None  # no such pixel


def test_stand_in_directory_loads_through_trust_remote_code(stand_in_model_dir):
    config = json.loads((stand_in_model_dir / "config.json").read_text())
    assert config["model_type"] == STAND_IN_MODEL_TYPE
    assert config["auto_map"]["AutoModel"].startswith("modeling_mlcdseg_stand_in.")
    assert "NOT MLCD-Seg" in config["description"]
    assert "NOT MLCD-Seg" in (stand_in_model_dir / "README.md").read_text()
    assert (stand_in_model_dir / "model.safetensors").stat().st_size > 0
    tokenizer_config = json.loads((stand_in_model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "Qwen2Tokenizer"


def test_stand_in_segmenter_says_what_it_is(stand_in_segmenter):
    assert stand_in_segmenter.is_stand_in
    assert stand_in_segmenter.model_version.startswith("stand-in:stand-in@local-")
    assert stand_in_segmenter.device == "cpu"
    assert stand_in_segmenter.dtype == "float32"
    assert type(stand_in_segmenter.engine.tokenizer).__name__ == "Qwen2Tokenizer"
    assert "NOT MLCD-Seg" in repr(stand_in_segmenter.engine.model)
    # The colour tolerance comes from model.safetensors (it starts as NaN when not loaded).
    assert stand_in_segmenter.engine.model.max_colour_distance.item() == 60.0
    assert not stand_in_segmenter.engine.model.training


def test_stand_in_seg_reads_the_prompt_through_the_tokenizer(stand_in_segmenter):
    class SaysBlue:
        def encode(self, text, add_special_tokens=False):
            return [0]

        def decode(self, ids):
            return "blue"

    masks = stand_in_segmenter.engine.model.seg(_scene(), "the red square", SaysBlue())
    assert masks.dtype == torch.uint8 and masks.shape == (1, 32, 48)
    assert np.array_equal(masks[0].numpy().astype(bool), _expected(_scene(), "blue"))


def test_model_version_pins_revision_and_follows_directory_content(stand_in_model_dir, tmp_path):
    pinned = load_model(str(stand_in_model_dir), revision="v1", device="cpu")
    assert pinned.model_version == "stand-in:stand-in@v1"
    copy = tmp_path / "stand-in"
    shutil.copytree(stand_in_model_dir, copy)
    same = load_model(str(copy), device="cpu").model_version
    (copy / "README.md").write_text("edited")
    edited = load_model(str(copy), device="cpu").model_version
    assert same == load_model(str(stand_in_model_dir), device="cpu").model_version
    assert edited != same and edited.startswith("stand-in:stand-in@local-")


def test_cached_hub_model_loads_without_network_and_reports_its_commit(
    stand_in_model_dir, monkeypatch
):
    from huggingface_hub import constants
    from transformers import AutoModel

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(constants.HF_HUB_CACHE) / "models--mlcdseg-tests--cached-stand-in"
    shutil.copytree(stand_in_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    seen_options = []
    real_from_pretrained = AutoModel.from_pretrained

    def spy(*arguments, **options):
        seen_options.append(options)
        return real_from_pretrained(*arguments, **options)

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    for revision in (None, commit):
        segmenter = load_model("mlcdseg-tests/cached-stand-in", revision=revision, device="cpu")
        assert segmenter.model_version == f"stand-in:mlcdseg-tests/cached-stand-in@{commit}"
    assert [options["local_files_only"] for options in seen_options] == [True, True]
    assert segmenter.predict(_scene(), "red").mask.sum() == 144


def test_stand_in_writer_refuses_other_directories_but_rewrites_its_own(tmp_path):
    other = tmp_path / "real-model"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(FileExistsError, match="not a stand-in"):
        write_stand_in_model(other)
    assert sorted(path.name for path in other.iterdir()) == ["config.json"]
    fresh = write_stand_in_model(tmp_path / "nested" / "stand-in")
    assert write_stand_in_model(fresh) == fresh
    assert not [path for path in fresh.parent.iterdir() if path.name.startswith(".")]


# --- predict ----------------------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["red square", "the blue bar", "white dot"])
def test_predict_gives_exactly_the_colour_rule_mask(stand_in_segmenter, expression):
    image = _scene()
    prediction = stand_in_segmenter.predict(image, expression)
    assert prediction.prompt == build_prompt(expression, DEFAULT_PROMPT_TEMPLATE)
    assert prediction.has_target
    assert prediction.mask.dtype == bool and prediction.mask.shape == (32, 48)
    assert np.array_equal(prediction.mask, _expected(image, expression))
    assert prediction.mask.any()


@pytest.mark.parametrize("expression", ["the dog", "green thing"])
def test_no_target_gives_an_empty_mask_of_the_image_size(stand_in_segmenter, expression):
    prediction = stand_in_segmenter.predict(_scene(), expression)
    assert not prediction.has_target
    assert prediction.mask.shape == (32, 48) and not prediction.mask.any()


def test_force_seg_always_returns_a_mask(stand_in_segmenter, stand_in_model_dir):
    forced = stand_in_segmenter.predict(_scene(), "the dog", force_seg=True)
    assert forced.has_target and not forced.mask.any() and forced.mask.shape == (32, 48)
    always = load_model(str(stand_in_model_dir), device="cpu", force_seg=True)
    assert always.predict(_scene(), "green thing").has_target
    assert not always.predict(_scene(), "green thing", force_seg=False).has_target


def test_full_question_reaches_the_model_unchanged(stand_in_segmenter):
    prediction = stand_in_segmenter.predict(_scene(), "Segment the white dot")
    assert prediction.prompt == "Segment the white dot"
    assert np.array_equal(prediction.mask, _expected(_scene(), "white"))


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_gives_a_mask_at_the_rotated_size(
    stand_in_segmenter, tmp_path, orientation
):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    _scene().save(path, quality=95, exif=exif.tobytes())
    prediction = stand_in_segmenter.predict(path, "red square")
    shown = load_image(path)
    assert shown.size == (32, 48) and prediction.mask.shape == (48, 32)
    assert np.array_equal(prediction.mask, _expected(shown, "red"))
    rows, columns = np.nonzero(prediction.mask)
    # The red square sits top-left as stored: top-right after 90° clockwise (6),
    # bottom-left after 90° counter-clockwise (8).
    if orientation == 6:
        assert rows.mean() < 24 and columns.mean() > 16
    else:
        assert rows.mean() > 24 and columns.mean() < 16


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=image_format, **options)
    return stream.getvalue()


def test_predict_accepts_every_image_mode(stand_in_segmenter):
    rgba = Image.new("RGBA", (8, 4), (0, 0, 0, 0))  # transparent shows white, not black
    rgba.paste((255, 0, 0, 255), (0, 0, 2, 2))
    assert stand_in_segmenter.predict(rgba, "red").mask.sum() == 4
    assert stand_in_segmenter.predict(rgba, "white").mask.sum() == 28
    assert not stand_in_segmenter.predict(rgba, "black").has_target

    grey = Image.new("L", (8, 4), 0)
    grey.paste(255, (0, 0, 3, 1))
    assert stand_in_segmenter.predict(_encoded(grey, "PNG"), "white").mask.sum() == 3

    palette = Image.new("P", (8, 4), 0)
    palette.putpalette([128, 128, 128, 0, 255, 0] + [0] * 762)
    palette.paste(1, (0, 0, 4, 4))
    assert stand_in_segmenter.predict(_encoded(palette, "PNG"), "green").mask.sum() == 16

    cmyk = Image.new("CMYK", (8, 4), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (0, 0, 1, 4))
    assert stand_in_segmenter.predict(_encoded(cmyk, "TIFF"), "red").mask.sum() == 4

    sixteen_bit = np.zeros((4, 8), dtype=np.uint16)
    sixteen_bit[:, :2] = 65535
    png16 = _encoded(Image.fromarray(sixteen_bit), "PNG")
    assert stand_in_segmenter.predict(png16, "white").mask[:, :2].all()
    assert stand_in_segmenter.predict(png16, "white").mask.sum() == 8


def test_concurrent_predictions_from_eight_threads_are_each_correct(stand_in_segmenter):
    rng = np.random.default_rng(7)
    cases = []
    for index in range(32):
        pixels = np.full((24 + index % 5, 40 + index % 7, 3), 128, dtype=np.uint8)
        top, left = rng.integers(0, 12, 2)
        pixels[top : top + 8, left : left + 8] = (255, 0, 0)
        pixels[-4:, -6:] = (0, 0, 255)
        expression = ["red patch", "blue corner", "yellow thing"][index % 3]
        cases.append((Image.fromarray(pixels), expression))

    def run(case):
        image, expression = case
        return stand_in_segmenter.predict(image, expression)

    with ThreadPoolExecutor(max_workers=8) as pool:
        predictions = list(pool.map(run, cases))
    for (image, expression), prediction in zip(cases, predictions):
        assert np.array_equal(prediction.mask, _expected(image, expression))
        assert prediction.has_target == (expression != "yellow thing")


def test_out_of_memory_is_reported_and_the_next_prediction_works(stand_in_model_dir, monkeypatch):
    segmenter = load_model(str(stand_in_model_dir), device="cpu")
    real_seg = segmenter.engine.model.seg
    calls = {"seg": 0, "empty_cache": 0}

    def seg_that_runs_out_of_memory_once(*arguments, **options):
        calls["seg"] += 1
        if calls["seg"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_seg(*arguments, **options)

    monkeypatch.setattr(segmenter.engine.model, "seg", seg_that_runs_out_of_memory_once)
    monkeypatch.setattr(
        torch.cuda,
        "empty_cache",
        lambda: calls.__setitem__("empty_cache", calls["empty_cache"] + 1),
    )
    with pytest.raises(GpuOutOfMemoryError, match="ran out of memory.*48×32"):
        segmenter.predict(_scene(), "red square")
    assert calls["empty_cache"] == 1
    after = segmenter.predict(_scene(), "red square")
    assert np.array_equal(after.mask, _expected(_scene(), "red"))


def test_union_of_several_masks_and_shape_checks():
    masks = np.zeros((2, 2, 3), dtype=bool)
    masks[0, 0, 0] = masks[1, 1, 2] = True
    union, has_target = union_of_masks(masks, 2, 3)
    assert has_target and union.tolist() == [[True, False, False], [False, False, True]]
    empty, has_target = union_of_masks(np.zeros((0, 2, 3), dtype=bool), 2, 3)
    assert not has_target and empty.shape == (2, 3) and not empty.any()
    with pytest.raises(ModelOutputError, match=r"expected \(N, 3, 2\)"):
        union_of_masks(masks, 3, 2)


# --- loading errors and settings --------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["/nonexistent/mlcd-seg", "./models/mlcd-seg", "~/no-such-model-dir", "a/b/c"]
)
def test_missing_local_directory_is_model_not_found(model):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(model, device="cpu")


def test_existing_parent_makes_a_string_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model("weights/MLCD-Seg-7B", device="cpu")


def test_unreachable_hub_id_says_how_to_download_it():
    with pytest.raises(ModelNotFoundError) as raised:
        load_model("DeepGlint-AI/MLCD-Seg-7B", revision="0123abc", device="cpu")
    message = str(raised.value)
    assert "huggingface-cli download DeepGlint-AI/MLCD-Seg-7B --revision 0123abc" in message
    assert "HF_HOME" in message and "local model directory" in message
    assert "\n" not in message


def test_directory_without_a_model_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path), device="cpu")
    file_path = tmp_path / "model.bin"
    file_path.write_bytes(b"0")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        load_model(str(file_path), device="cpu")


def test_half_precision_on_cpu_falls_back_to_float32_with_a_warning(stand_in_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="mlcdseg.model.loading"):
        segmenter = load_model(str(stand_in_model_dir), device="cpu", dtype="bfloat16")
    assert segmenter.dtype == "float32"
    assert segmenter.engine.model.max_colour_distance.dtype == torch.float32
    assert "bfloat16" in caplog.text and "float32" in caplog.text
    assert "OFFLINE STAND-IN" in caplog.text and "NOT MLCD-Seg" in caplog.text


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dtype": "float64"}, "unknown dtype 'float64'"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"device": "cuda:7"}, "cuda"),
    ],
)
def test_bad_device_or_dtype_is_a_clear_load_error(stand_in_model_dir, options, message):
    if options.get("device") == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(stand_in_model_dir), **options)


def test_predict_many_equals_one_predict_per_expression_in_order(stand_in_segmenter):
    image = _scene()
    expressions = ["the red square", "something blue", "the green one", "a purple thing"]
    many = stand_in_segmenter.predict_many(image, expressions)
    assert [prediction.prompt for prediction in many] == [build_prompt(e) for e in expressions]
    for expression, prediction in zip(expressions, many):
        single = stand_in_segmenter.predict(image, expression)
        assert np.array_equal(prediction.mask, single.mask)
        assert prediction.has_target == single.has_target
    assert many[0].mask.any() and not many[3].has_target


def test_predict_many_checks_every_expression_before_the_model_runs(stand_in_segmenter, monkeypatch):
    calls = []
    monkeypatch.setattr(stand_in_segmenter.engine.model, "seg", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(ExpressionError):
        stand_in_segmenter.predict_many(_scene(), ["the red square", "..."])
    assert calls == []


GATED_REPO_MESSAGE = """You are trying to access a gated repo.
Make sure to have access to it at https://huggingface.co/DeepGlint-AI/MLCD-Seg-7B.
401 Client Error. (Request ID: Root=1-6748a2f1-0a1b2c3d4e5f60718293a4b5;5f0c2a7e-8d1b-4c3e-9f2a-1b2c3d4e5f60)

Cannot access gated repo for url https://huggingface.co/DeepGlint-AI/MLCD-Seg-7B/resolve/main/config.json.
Access to model DeepGlint-AI/MLCD-Seg-7B is restricted. You must have access to it and be authenticated to access it. Please log in."""


def test_a_library_message_of_many_lines_is_shortened_to_its_first_lines_on_one_line():
    reason = library_reason(OSError(GATED_REPO_MESSAGE))

    assert "\n" not in reason and len(reason) <= LIBRARY_REASON_CHARS
    assert reason.startswith("You are trying to access a gated repo. Make sure to have access to it at https://")
    assert library_reason(OSError("x" * 1000)) == "x" * (LIBRARY_REASON_CHARS - 1) + "…"
    assert library_reason(OSError("")) == "OSError"


def test_a_model_loading_error_quotes_the_library_within_its_limit(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise OSError(GATED_REPO_MESSAGE)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    with pytest.raises(ModelNotFoundError) as raised:
        load_model("DeepGlint-AI/MLCD-Seg-7B", device="cpu")
    message = str(raised.value)
    assert "\n" not in message and "gated repo" in message and "huggingface-cli download" in message
    assert "Please log in" not in message and len(message) <= LIBRARY_REASON_CHARS + 300
