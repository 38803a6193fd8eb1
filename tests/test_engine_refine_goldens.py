"""Refinement with clicks, boxes, previous masks and text reproduces the authors' reference.

The goldens were written by `tools/make_engine_goldens.py --refine-only`: the reference SAM prompt
encoder and mask decoder (deepglint/unicom, `llava/model/sam`) on the tiny checkpoint in
tests/fixtures/engine, with clicks and boxes mapped as segment-anything's `SamPredictor` does.
The engine encodes each image itself, so these cover its SAM image encoder as well.

Clicks and boxes without text are also checked against segment-anything's `SamPredictor`: a SAM
of the fixture's shape (segment-anything's `_build_sam`: encoder 32 wide, 2 blocks, one global)
filled with the checkpoint's `model.sam.*` tensors; `set_torch_image` encodes the image resized
by PIL's bilinear filter (what `ResizeLongestSide.apply_image` does through torchvision), and
`predict` takes the same pixel clicks, box and previous logits as the engine.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mlcdseg.engine import load_native_engine
from mlcdseg.engine.refine import refine, sam_frame_coords
from mlcdseg.errors import RefinePromptError

FIXTURE = Path(__file__).parent / "fixtures" / "engine"
TOLERANCE = 1e-4
LOGIT_RTOL = 1e-4  # as tests/test_engine_goldens.py: SAM decoder float32 rounding on logits of ~3
DECIDED = 1e-3  # masks must agree wherever the golden logit is at least this far from 0
TINY_SAM_ENCODER = (32, 2, 2, [1])  # the fixture's SAM image encoder: width, depth, heads, global blocks


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    return {case["name"]: case for case in json.loads((FIXTURE / "refine_manifest.json").read_text())["cases"]}


@pytest.fixture(scope="module")
def goldens() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "refine_goldens.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def engine():
    return load_native_engine(FIXTURE / "checkpoint", cache_size=4)


def case_image(case: dict) -> Image.Image:
    return Image.open(FIXTURE / "images" / f"image{case['image']}.png")


def case_prompts(case: dict, goldens: dict[str, np.ndarray]) -> dict:
    """A case's clicks, labels, box (numpy, pixels), and text embedding and previous logits from the goldens."""
    text = goldens.get(f"{case['name']}_text_embedding")
    previous = goldens.get(f"{case['mask_from']}_low_res") if case.get("mask_from") else None
    return {
        "points": np.array(case["points"], dtype=np.float64) if "points" in case else None,
        "labels": np.array(case["labels"]) if "labels" in case else None,
        "box": np.array(case["box"], dtype=np.float64) if "box" in case else None,
        "text_embedding": None if text is None else torch.from_numpy(text),
        "mask_logits": None if previous is None else torch.from_numpy(previous),
    }


def run_case(engine, case: dict, goldens: dict[str, np.ndarray]):
    """The engine's refine on a case's image and prompts."""
    network = engine.network
    encoded = engine.encode_image(case_image(case))
    image_pe = network.prompt_encoder.pe_layer(network.config.sam.grid)
    return refine(network.prompt_encoder, network.mask_decoder, encoded.sam_embedding, image_pe, encoded.size, **case_prompts(case, goldens))


def assert_logits_match(result, logits: np.ndarray, iou: np.ndarray, name: str) -> None:
    """Logits and IoU within TOLERANCE + LOGIT_RTOL·|value|, masks identical where decided."""
    assert result.masks.shape == logits.shape and result.masks.dtype == bool
    np.testing.assert_allclose(result.mask_logits.numpy(), logits, atol=TOLERANCE, rtol=LOGIT_RTOL, err_msg=name)
    decided = np.abs(logits) > DECIDED
    assert np.array_equal(result.masks[decided], (logits > 0)[decided]), name
    np.testing.assert_allclose(result.iou_predictions.numpy(), iou, atol=TOLERANCE, rtol=LOGIT_RTOL, err_msg=name)


CASES = [
    "one_click",
    "clicks",
    "box",
    "box_clicks",
    "text",
    "text_clicks",
    "text_box",
    "second_round",
    "landscape_clicks",
    "landscape_one_click",
    "portrait_clicks",
    "portrait_box",
]


def test_fixture_covers_every_kind_of_prompt_and_both_orientations(cases):
    assert set(cases) == set(CASES)
    sizes = {case["image"]: case_image(case).size for case in cases.values()}
    assert any(width > 2 * height for width, height in sizes.values())  # landscape
    assert any(height > 2 * width for width, height in sizes.values())  # portrait
    assert {"text_clicks", "text_box"} <= {name for name, case in cases.items() if case.get("text") and case.get("mask_from") == "text"}
    assert cases["second_round"]["mask_from"] == "clicks"
    assert [name for name, case in cases.items() if case["multimask"]] == ["one_click", "landscape_one_click"]


@pytest.mark.parametrize("name", CASES)
def test_refine_reproduces_the_reference(engine, cases, goldens, name):
    result = run_case(engine, cases[name], goldens)
    assert_logits_match(result, goldens[f"{name}_logits"], goldens[f"{name}_iou"], name)
    assert result.low_res_logits.shape == (1, 256, 256)
    if f"{name}_low_res" in goldens:
        np.testing.assert_allclose(result.low_res_logits.numpy(), goldens[f"{name}_low_res"], atol=TOLERANCE, rtol=LOGIT_RTOL, err_msg=name)


def import_segment_anything():
    """segment_anything, imported with torchvision stand-ins when torchvision is not installed.

    segment-anything imports torchvision at module level for `apply_image` and the automatic mask
    generator alone, neither used here; the stand-ins are in place for the import only.
    """
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("segment_anything")
    attributes = {"torchvision.transforms.functional": ("resize", "to_pil_image"), "torchvision.ops.boxes": ("batched_nms", "box_area")}
    stand_ins = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms", "torchvision.ops", *attributes)}
    for name, names in attributes.items():
        for attribute in names:
            setattr(stand_ins[name], attribute, None)
    for name, module in stand_ins.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stand_ins[parent], child, module)
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("segment_anything")
    finally:
        for name in stand_ins:
            sys.modules.pop(name)


@pytest.fixture(scope="module")
def predictor_of():
    if importlib.util.find_spec("segment_anything") is None:
        pytest.skip("segment-anything (requirements-dev.txt) is not installed")
    segment_anything = import_segment_anything()
    sam = importlib.import_module("segment_anything.build_sam")._build_sam(*TINY_SAM_ENCODER)
    prefix = "model.sam."
    state = load_file(str(FIXTURE / "checkpoint" / "model.safetensors"))
    sam.load_state_dict({name[len(prefix):]: tensor.float() for name, tensor in state.items() if name.startswith(prefix)}, strict=True)
    sam.eval()
    predictors = {}

    def predictor_of(image: Image.Image):
        if image.size not in predictors:
            predictor = segment_anything.SamPredictor(sam)
            height, width = predictor.transform.get_preprocess_shape(image.height, image.width, 1024)
            resized = np.array(image.convert("RGB").resize((width, height), Image.BILINEAR))
            with torch.inference_mode():
                predictor.set_torch_image(torch.from_numpy(resized).permute(2, 0, 1)[None].float(), (image.height, image.width))
            predictors[image.size] = predictor
        return predictors[image.size]

    return predictor_of


@pytest.fixture(scope="module")
def predictor_of():
    if importlib.util.find_spec("segment_anything") is None:
        pytest.skip("segment-anything (requirements-dev.txt) is not installed")
    segment_anything = import_segment_anything()
    sam = importlib.import_module("segment_anything.build_sam")._build_sam(*TINY_SAM_ENCODER)
    prefix = "model.sam."
    state = load_file(str(FIXTURE / "checkpoint" / "model.safetensors"))
    sam.load_state_dict({name[len(prefix):]: tensor.float() for name, tensor in state.items() if name.startswith(prefix)}, strict=True)
    sam.eval()
    predictors = {}

    def predictor_of(image: Image.Image):
        if image.size not in predictors:
            predictor = segment_anything.SamPredictor(sam)
            height, width = predictor.transform.get_preprocess_shape(image.height, image.width, 1024)
            resized = np.array(image.convert("RGB").resize((width, height), Image.BILINEAR))
            with torch.inference_mode():
                predictor.set_torch_image(torch.from_numpy(resized).permute(2, 0, 1)[None].float(), (image.height, image.width))
            predictors[image.size] = predictor
        return predictors[image.size]

    return predictor_of


NO_TEXT_CASES = [name for name in CASES if name not in ("text", "text_clicks", "text_box")]


@pytest.mark.parametrize("name", NO_TEXT_CASES)
def test_refine_without_text_matches_sam_predictor(engine, predictor_of, cases, goldens, name):
    case = cases[name]
    assert not case.get("text")
    prompts = case_prompts(case, goldens)
    previous = prompts["mask_logits"]
    multimask = case["multimask"]
    with torch.inference_mode():
        sam_logits, sam_iou, sam_low_res = predictor_of(case_image(case)).predict(
            point_coords=prompts["points"], point_labels=prompts["labels"], box=prompts["box"],
            mask_input=None if previous is None else previous.numpy(), multimask_output=multimask, return_logits=True,
        )
    best = int(np.argmax(sam_iou))  # segment-anything's examples keep the highest predicted IoU
    result = run_case(engine, case, goldens)
    assert_logits_match(result, sam_logits[best : best + 1], sam_iou[best : best + 1], name)
    np.testing.assert_allclose(result.low_res_logits.numpy(), sam_low_res[best : best + 1], atol=TOLERANCE, rtol=LOGIT_RTOL, err_msg=name)


def test_each_prompt_changes_the_mask_it_refines(goldens):
    """The goldens test something: clicks and a box move the text mask and the first round's mask."""
    for refined, previous in (("text_clicks", "text"), ("text_box", "text"), ("second_round", "clicks"), ("box_clicks", "box")):
        changed = (goldens[f"{refined}_logits"] > 0) != (goldens[f"{previous}_logits"] > 0)
        assert changed.mean() > 0.05, (refined, previous)


def test_clicks_map_to_sams_frame_as_resize_longest_side_does():
    # A 270 x 66 image: longest side 270 → 1024, the other 66 · 1024/270 = 250.31 → 250 pixels.
    coords = sam_frame_coords(np.array([[270.0, 66.0], [135.0, 33.0]]), (66, 270), 1024)
    np.testing.assert_allclose(coords, [[1024.0, 250.0], [512.0, 125.0]])
    # Portrait 64 x 272: 272 → 1024, 64 · 1024/272 = 240.94 → 241.
    np.testing.assert_allclose(sam_frame_coords(np.array([[64.0, 272.0]]), (272, 64), 1024), [[241.0, 1024.0]])


@pytest.mark.parametrize(
    "prompts, message",
    [
        ({}, "needs clicks, a box"),
        ({"points": np.array([[1.0, 2.0]])}, "need labels"),
        ({"points": np.array([[1.0, 2.0]]), "labels": np.array([2])}, "must be 1 (positive) or 0"),
        ({"points": np.array([[np.nan, 2.0]]), "labels": np.array([1])}, "finite"),
        ({"points": np.array([1.0, 2.0]), "labels": np.array([1])}, "(N, 2)"),
        ({"points": np.array([[1.0, 2.0]]), "labels": np.array([1, 0])}, "one label per click"),
        ({"box": np.array([0.0, 0.0, np.inf, 3.0])}, "finite"),
        ({"box": np.array([0.0, 0.0, 3.0])}, "4 numbers"),
        ({"text_embedding": torch.zeros(64)}, "shape (256,)"),
        ({"box": np.array([0.0, 0.0, 3.0, 3.0]), "mask_logits": torch.zeros(64, 64)}, "256x256"),
    ],
)
def test_unusable_prompts_are_refused_with_what_to_give(engine, prompts, message):
    network = engine.network
    embedding = torch.zeros(1, 256, 64, 64)
    with pytest.raises(RefinePromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        refine(network.prompt_encoder, network.mask_decoder, embedding, embedding, (10, 10), **prompts)
