"""`mlcdseg verify-engine`: agreement between two engines, and what the command says."""

import json

import numpy as np
import pytest

from mlcdseg.cli import main
from mlcdseg.demo.scenes import SCENES, render_scene
from mlcdseg.model.segmenter import Segmenter
from mlcdseg.model.settings import ModelSettings
from mlcdseg.model.verification import ExpressionSource, compare_engines


class ShiftedEngine:
    """Another engine's masks moved `pixels` to the right: a native engine that disagrees."""

    name = "native"

    def __init__(self, inner, pixels: int) -> None:
        self.inner = inner
        self.pixels = pixels

    def segment_many(self, image, prompts, force_seg):
        return [np.roll(masks, self.pixels, axis=2) for masks in self.inner.segment_many(image, prompts, force_seg)]


def _segmenter_over(engine, reference: Segmenter) -> Segmenter:
    return Segmenter(
        engine, model_version="test", device="cpu", dtype="float32", is_stand_in=True,
        prompt_template=reference.prompt_template,
    )


def test_the_same_engine_twice_agrees_on_every_case_including_no_target(stand_in_segmenter):
    scene = SCENES[0]
    expressions = [*scene.expressions, "the purple elephant"]
    cases = compare_engines(
        stand_in_segmenter, stand_in_segmenter, [(scene.name, render_scene(scene))], ExpressionSource(expressions)
    )
    assert [case.expression for case in cases] == expressions
    assert all(case.iou == 1.0 and case.agrees for case in cases)
    assert cases[0].official_has_target and not cases[-1].native_has_target


def test_verify_engine_exits_1_and_names_the_disagreement_when_masks_differ(
    stand_in_segmenter, monkeypatch, capsys, tmp_path
):
    shifted = _segmenter_over(ShiftedEngine(stand_in_segmenter.engine, 40), stand_in_segmenter)
    monkeypatch.setattr(
        ModelSettings, "load_segmenter", lambda settings: shifted if settings.engine == "native" else stand_in_segmenter
    )
    report = tmp_path / "cases.json"
    status = main(["verify-engine", "--model", "anything", "-o", str(report)])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL:" in out and "do not rely on --engine native" in out
    cases = json.loads(report.read_text())["cases"]
    assert len(cases) == sum(len(scene.expressions) for scene in SCENES)
    assert min(case["iou"] for case in cases) < 0.99


def test_verify_engine_passes_when_the_engines_agree(stand_in_segmenter, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(ModelSettings, "load_segmenter", lambda settings: stand_in_segmenter)
    expressions = tmp_path / "expressions.txt"
    expressions.write_text("# comment\nthe red car\n\nthe blue ball\n")
    images = tmp_path / "images"
    images.mkdir()
    render_scene(SCENES[0]).save(images / "street.png")
    assert main(["verify-engine", "--images", str(images), "--expressions", str(expressions)]) == 0
    out = capsys.readouterr().out
    assert "OK: all 2 cases agree" in out and "the blue ball" in out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--images", "/nonexistent-folder"], "is not a folder"),
        (["--expressions", "/nonexistent.txt"], "cannot read the expressions file"),
    ],
)
def test_verify_engine_refuses_bad_inputs_in_one_line_before_loading(arguments, message, monkeypatch, capsys):
    monkeypatch.setattr(ModelSettings, "load_segmenter", lambda settings: pytest.fail("loaded a model"))
    assert main(["verify-engine", *arguments]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_verify_engine_on_the_stand_in_says_the_native_engine_cannot_run_it(stand_in_model_dir, capsys):
    assert main(["verify-engine", "--model", str(stand_in_model_dir), "--device", "cpu"]) == 1
    assert "the native engine cannot run" in capsys.readouterr().err
