"""Refinement with clicks, boxes, previous masks and text reproduces the authors' reference.

The goldens were written by `tools/make_engine_goldens.py --refine-only`: the reference SAM prompt
encoder and mask decoder (deepglint/unicom, `llava/model/sam`) on the tiny checkpoint in
tests/fixtures/engine, with clicks and boxes mapped as segment-anything's `SamPredictor` does.
The engine encodes each image itself, so these cover its SAM image encoder as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcdseg.engine import load_native_engine
from mlcdseg.engine.refine import refine, sam_frame_coords
from mlcdseg.errors import RefinePromptError

FIXTURE = Path(__file__).parent / "fixtures" / "engine"
TOLERANCE = 1e-4
LOGIT_RTOL = 1e-4  # as tests/test_engine_goldens.py: SAM decoder float32 rounding on logits of ~3
DECIDED = 1e-3  # masks must agree wherever the golden logit is at least this far from 0


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


def run_case(engine, case: dict, goldens: dict[str, np.ndarray]):
    """The engine's refine on a case's image and prompts; previous logits and text from the goldens."""
    network = engine.network
    encoded = engine.encode_image(Image.open(FIXTURE / "images" / f"image{case['image']}.png"))
    text = goldens.get(f"{case['name']}_text_embedding")
    previous = goldens.get(f"{case['mask_from']}_low_res") if case.get("mask_from") else None
    return refine(
        network.prompt_encoder,
        network.mask_decoder,
        encoded.sam_embedding,
        network.prompt_encoder.pe_layer(network.config.sam.grid),
        encoded.size,
        points=np.array(case["points"]) if "points" in case else None,
        labels=np.array(case["labels"]) if "labels" in case else None,
        box=np.array(case["box"]) if "box" in case else None,
        text_embedding=None if text is None else torch.from_numpy(text),
        mask_logits=None if previous is None else torch.from_numpy(previous),
    )


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
    sizes = {case["image"]: Image.open(FIXTURE / "images" / f"image{case['image']}.png").size for case in cases.values()}
    assert any(width > 2 * height for width, height in sizes.values())  # landscape
    assert any(height > 2 * width for width, height in sizes.values())  # portrait
    assert {"text_clicks", "text_box"} <= {name for name, case in cases.items() if case.get("text") and case.get("mask_from") == "text"}
    assert cases["second_round"]["mask_from"] == "clicks"
    assert [name for name, case in cases.items() if case["multimask"]] == ["one_click", "landscape_one_click"]


@pytest.mark.parametrize("name", CASES)
def test_refine_reproduces_the_reference(engine, cases, goldens, name):
    case = cases[name]
    result = run_case(engine, case, goldens)
    logits = goldens[f"{name}_logits"]
    assert result.masks.shape == logits.shape and result.masks.dtype == bool
    np.testing.assert_allclose(result.mask_logits.numpy(), logits, atol=TOLERANCE, rtol=LOGIT_RTOL, err_msg=name)
    decided = np.abs(logits) > DECIDED
    assert np.array_equal(result.masks[decided], (logits > 0)[decided]), name
    np.testing.assert_allclose(result.iou_predictions.numpy(), goldens[f"{name}_iou"], atol=TOLERANCE, rtol=LOGIT_RTOL, err_msg=name)
    assert result.low_res_logits.shape == (1, 256, 256)
    if f"{name}_low_res" in goldens:
        np.testing.assert_allclose(result.low_res_logits.numpy(), goldens[f"{name}_low_res"], atol=TOLERANCE, rtol=LOGIT_RTOL, err_msg=name)


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
