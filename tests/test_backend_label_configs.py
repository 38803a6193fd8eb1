"""The labeling configs shipped in label_config/: valid for Label Studio, and read as intended."""

from __future__ import annotations

from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from mlcdseg.labelstudio.label_config import parse_label_config

LABEL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "label_config"


@pytest.mark.parametrize("name", ["expressions.xml", "interactive.xml", "polygons.xml"])
def test_config_passes_label_studio_validation(name: str) -> None:
    LabelInterface((LABEL_CONFIG_DIR / name).read_text(encoding="utf-8")).validate()


@pytest.mark.parametrize(
    ("name", "kind", "prompt_controls"),
    [
        ("expressions.xml", "brush", ()),
        ("interactive.xml", "brush", ("prompt",)),
        ("polygons.xml", "polygon", ()),
    ],
)
def test_config_gives_the_backend_an_image_an_expression_and_a_mask_control(
    name: str, kind: str, prompt_controls: tuple[str, ...]
) -> None:
    setup = parse_label_config((LABEL_CONFIG_DIR / name).read_text(encoding="utf-8"))
    assert (setup.image_name, setup.image_field, setup.expression_field) == (
        "image",
        "image",
        "expression",
    )
    assert setup.prompt_controls == prompt_controls
    (control,) = setup.mask_controls
    assert (control.kind, control.to_name, control.labels) == (kind, "image", ("object",))


def test_interactive_config_submits_the_prompt_once_like_the_captured_project() -> None:
    (prompt,) = [
        c
        for c in LabelInterface((LABEL_CONFIG_DIR / "interactive.xml").read_text()).controls
        if c.tag == "TextArea"
    ]
    assert prompt.attr["showSubmitButton"] == "true" and prompt.attr["maxSubmissions"] == "1"
    assert prompt.attr["editable"] == "true"
