"""`mlcdseg evaluate` on exports shaped exactly like Label Studio 1.23.2's snapshot export.

Synthetic tasks are copies of a task of the captured export whose brush RLE and image sizes are
replaced (masks encoded with mlcdseg.masks.codecs.encode_brush_rle). Expected metrics are computed here
with plain numpy from the known masks, never with RefSegMeter.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlcdseg import cli

from mlcdseg.evaluation import report
from mlcdseg.errors import LabelStudioError
from mlcdseg.evaluation.evaluate import evaluate_export
from mlcdseg.cli.evaluate import register_evaluate
from mlcdseg.labelstudio.export_source import ExportSource, open_export_source, snapshot_project_export
from mlcdseg.evaluation.samples import SampleSettings, human_samples
from mlcdseg.masks.codecs import encode_brush_rle, polygons_to_mask

HEIGHT, WIDTH = 30, 40
OUTPUTS = ("report.json", "samples.csv", "report.html")
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
_ids = itertools.count(1000)


# ---------------------------------------------------------------- building exports
@pytest.fixture(scope="module")
def captured_task(fixtures_dir: Path) -> dict:
    """Task 1 of the captured snapshot export (one annotation, one prediction, two brush regions)."""
    return json.loads((fixtures_dir / "export_snapshot_full_predictions.json").read_text())[0]


def box(top: int, left: int, bottom: int, right: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def brush(template: dict, mask: np.ndarray, from_name: str = "mask") -> dict:
    """A brush region shaped like the captured one, holding `mask`."""
    region = copy.deepcopy(template["annotations"][0]["result"][0])
    region.update(id=f"r{next(_ids)}", from_name=from_name, original_height=mask.shape[0], original_width=mask.shape[1])
    region["value"]["rle"] = encode_brush_rle(mask)
    return region


def polygon(template: dict, points: list[tuple[float, float]]) -> dict:
    region = copy.deepcopy(template["annotations"][0]["result"][0])
    region.update(id=f"r{next(_ids)}", type="polygonlabels", original_height=HEIGHT, original_width=WIDTH)
    region["value"] = {"points": [list(point) for point in points], "closed": True, "polygonlabels": ["red"]}
    return region


def annotation(template: dict, regions: list[dict], *, user: int = 1, updated: str = "2026-11-27T04:36:13Z",
               cancelled: bool = False, ground_truth: bool = False) -> dict:
    item = copy.deepcopy(template["annotations"][0])
    item.update(id=next(_ids), completed_by=user, result=regions, was_cancelled=cancelled,
                ground_truth=ground_truth, created_at=updated, updated_at=updated)
    return item


def prediction(template: dict, regions: list[dict], version: str = "v1") -> dict:
    item = copy.deepcopy(template["predictions"][0])
    item.update(id=next(_ids), result=regions, model_version=version)
    return item


def task(template: dict, task_id: int, annotations: list[dict], predictions: list[dict], **data) -> dict:
    item = copy.deepcopy(template)
    item.update(id=task_id, annotations=annotations, predictions=predictions)
    item["data"] = {"image": f"/data/upload/1/img{task_id}.png", "expression": f"thing {task_id}", **data}
    return item


def pair_task(template: dict, task_id: int, human: np.ndarray, model: np.ndarray, version: str = "v1", **data) -> dict:
    """A task whose latest annotation holds `human` and whose prediction holds `model` (empty → no region)."""
    human_regions = [brush(template, human)] if human.any() else []
    model_regions = [brush(template, model)] if model.any() else []
    return task(template, task_id, [annotation(template, human_regions)], [prediction(template, model_regions, version)], **data)


def write_export(tmp_path: Path, tasks: list, name: str = "export.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


def run_cli(*args: str) -> int:
    """`mlcdseg evaluate …` through the real command line entry point."""
    commands = cli.COMMANDS if register_evaluate in cli.COMMANDS else [*cli.COMMANDS, register_evaluate]
    original, cli.COMMANDS = cli.COMMANDS, commands
    try:
        return cli.main(["evaluate", "--quiet", *args])
    finally:
        cli.COMMANDS = original


def evaluate_file(path: Path, outdir: Path, **settings) -> dict:
    return evaluate_export(ExportSource(path), outdir, SampleSettings(**settings))


def read_rows(outdir: Path) -> list[dict]:
    with (outdir / "samples.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


# ---------------------------------------------------------------- the numpy oracle
def oracle(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """cIoU, gIoU, precision@k, N-acc, T-acc of (human, model) mask pairs, by hand."""
    intersections = [int(np.sum(h & m)) for h, m in pairs]
    unions = [int(np.sum(h | m)) for h, m in pairs]
    ious = [i / u if u else 1.0 for i, u in zip(intersections, unions)]
    no_target = [(h, m) for h, m in pairs if not h.any()]
    target = [(h, m) for h, m in pairs if h.any()]
    expected = {"cIoU": sum(intersections) / sum(unions), "gIoU": sum(ious) / len(ious), "samples": len(pairs)}
    for k in THRESHOLDS:
        expected[f"precision@{k}"] = sum(iou >= k for iou in ious) / len(ious)
    expected["N-acc"] = sum(not m.any() for _, m in no_target) / len(no_target) if no_target else None
    expected["T-acc"] = sum(bool(m.any()) for _, m in target) / len(target) if target else None
    expected["no_target_samples"] = len(no_target)
    return expected


def assert_metrics(actual: dict, expected: dict) -> None:
    assert actual.keys() >= expected.keys()
    for key, value in expected.items():
        assert actual[key] == (pytest.approx(value) if value is not None else None), key


PAIRS = [
    (box(0, 0, 10, 10), box(0, 0, 10, 10)),  # perfect
    (box(0, 0, 10, 20), box(0, 10, 10, 30)),  # half overlap
    (box(5, 5, 25, 35), box(6, 6, 24, 34)),  # close
    (box(0, 0, 5, 5), box(20, 20, 30, 40)),  # miss
    (box(10, 10, 20, 30), np.zeros((HEIGHT, WIDTH), bool)),  # model found nothing
]


# ---------------------------------------------------------------- metrics
def test_metrics_and_sample_rows_equal_a_numpy_oracle(tmp_path, captured_task):
    tasks = [pair_task(captured_task, index + 1, human, model) for index, (human, model) in enumerate(PAIRS)]
    result = evaluate_file(write_export(tmp_path, tasks), tmp_path / "out")
    assert_metrics(result["overall"], oracle(PAIRS))
    assert_metrics(result["by_model_version"]["v1"], oracle(PAIRS))
    rows = read_rows(tmp_path / "out")
    assert [row["task_id"] for row in rows] == ["1", "2", "3", "4", "5"]
    for row, (human, model) in zip(rows, PAIRS):
        assert int(row["intersection"]) == np.sum(human & model)
        assert int(row["union"]) == np.sum(human | model)
        assert int(row["human_area"]) == human.sum() and int(row["model_area"]) == model.sum()
        assert row["model_version"] == "v1" and row["annotator"] == "1"
        assert row["expression"] == f"thing {row['task_id']}"
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == result


def test_no_target_samples_give_n_acc(tmp_path, captured_task):
    empty = np.zeros((HEIGHT, WIDTH), bool)
    pairs = [(empty, empty), (empty, box(0, 0, 3, 3)), (box(0, 0, 9, 9), box(0, 0, 9, 6))]
    tasks = [pair_task(captured_task, index + 1, human, model) for index, (human, model) in enumerate(pairs)]
    result = evaluate_file(write_export(tmp_path, tasks), tmp_path / "out")
    assert_metrics(result["overall"], oracle(pairs))
    assert result["overall"]["N-acc"] == pytest.approx(0.5) and result["overall"]["no_target_samples"] == 2


def test_polygon_human_mask_against_brush_model_mask(tmp_path, captured_task):
    points = [(10.0, 10.0), (60.0, 10.0), (60.0, 70.0), (10.0, 70.0)]
    human = polygons_to_mask([points], HEIGHT, WIDTH)
    model = box(5, 5, 20, 30)
    item = task(captured_task, 1, [annotation(captured_task, [polygon(captured_task, points)])],
                [prediction(captured_task, [brush(captured_task, model)])])
    result = evaluate_file(write_export(tmp_path, [item]), tmp_path / "out")
    assert human.any()
    assert_metrics(result["overall"], oracle([(human, model)]))


def test_several_regions_of_the_control_are_merged(tmp_path, captured_task):
    left, right = box(0, 0, 10, 10), box(15, 20, 25, 35)
    model = box(0, 0, 25, 35)
    item = task(captured_task, 1, [annotation(captured_task, [brush(captured_task, left), brush(captured_task, right)])],
                [prediction(captured_task, [brush(captured_task, model)])])
    result = evaluate_file(write_export(tmp_path, [item]), tmp_path / "out")
    assert_metrics(result["overall"], oracle([(left | right, model)]))


def test_each_model_version_is_scored_separately_and_can_be_picked(tmp_path, captured_task):
    human = box(0, 0, 10, 20)
    good, bad = box(0, 0, 10, 18), box(20, 20, 30, 40)
    item = task(captured_task, 1, [annotation(captured_task, [brush(captured_task, human)])],
                [prediction(captured_task, [brush(captured_task, good)], "good-1"),
                 prediction(captured_task, [brush(captured_task, bad)], "bad-1")])
    path = write_export(tmp_path, [item])
    result = evaluate_file(path, tmp_path / "all")
    assert sorted(result["by_model_version"]) == ["bad-1", "good-1"]
    assert_metrics(result["by_model_version"]["good-1"], oracle([(human, good)]))
    assert_metrics(result["by_model_version"]["bad-1"], oracle([(human, bad)]))
    assert_metrics(result["overall"], oracle([(human, good), (human, bad)]))
    picked = evaluate_file(path, tmp_path / "one", model_version="good-1")
    assert list(picked["by_model_version"]) == ["good-1"]
    assert picked["source"]["model_versions_seen"] == ["bad-1", "good-1"]


def test_unknown_model_version_is_an_error_listing_the_versions(tmp_path, captured_task, capsys):
    tasks = [pair_task(captured_task, 1, PAIRS[0][0], PAIRS[0][1], "alpha"),
             pair_task(captured_task, 2, PAIRS[1][0], PAIRS[1][1], "beta")]
    assert run_cli(str(write_export(tmp_path, tasks)), "-o", str(tmp_path / "out"), "--model-version", "gamma") == 1
    error = capsys.readouterr().err
    assert "mlcdseg: error: model version 'gamma' is not in the export; versions seen: alpha, beta" in error
    assert not (tmp_path / "out").exists()


def test_splits_are_reported_and_tabled(tmp_path, captured_task):
    splits = ["val", "testA", "val", "testB", "testA"]
    tasks = [pair_task(captured_task, i + 1, h, m, split=s) for i, ((h, m), s) in enumerate(zip(PAIRS, splits))]
    result = evaluate_file(write_export(tmp_path, tasks), tmp_path / "out")
    assert sorted(result["by_split"]) == ["testA", "testB", "val"]
    for split in ("val", "testA", "testB"):
        assert_metrics(result["by_split"][split], oracle([p for p, s in zip(PAIRS, splits) if s == split]))
    assert sorted(result["by_model_version_and_split"]["v1"]) == ["all", "testA", "testB", "val"]
    page = (tmp_path / "out" / "report.html").read_text()
    val = oracle([p for p, s in zip(PAIRS, splits) if s == "val"])
    assert '<th colspan="2">val</th>' in page and f"<td>{100 * val['cIoU']:.1f}</td>" in page


# ---------------------------------------------------------------- which annotation is the human mask
def _annotated(template: dict, annotations: list[dict]) -> dict:
    return task(template, 7, annotations, [prediction(template, [brush(template, box(0, 0, 10, 10))])])


def test_latest_submitted_annotation_is_the_human_mask_and_cancelled_ones_are_ignored(tmp_path, captured_task):
    old = annotation(captured_task, [brush(captured_task, box(0, 0, 10, 5))], updated="2026-11-27T04:00:00Z")
    latest = annotation(captured_task, [brush(captured_task, box(0, 0, 10, 10))], updated="2026-11-27T05:00:00Z", user=2)
    cancelled = annotation(captured_task, [], updated="2026-11-27T06:00:00Z", cancelled=True, user=3)
    result = evaluate_file(write_export(tmp_path, [_annotated(captured_task, [old, latest, cancelled])]), tmp_path / "out")
    assert result["overall"]["gIoU"] == 1.0 and list(result["by_annotator"]) == ["2"]
    only_cancelled = _annotated(captured_task, [cancelled])
    result = evaluate_file(write_export(tmp_path, [only_cancelled]), tmp_path / "out2")
    assert result["skipped"] == [{"task_id": 7, "code": "cancelled", "reason": "every annotation was cancelled"}]


def test_ground_truth_mode_uses_the_ground_truth_annotation(tmp_path, captured_task):
    truth = annotation(captured_task, [brush(captured_task, box(0, 0, 10, 5))], updated="2026-11-27T04:00:00Z", ground_truth=True)
    newer = annotation(captured_task, [brush(captured_task, box(0, 0, 10, 10))], updated="2026-11-27T05:00:00Z")
    no_truth = _annotated(captured_task, [copy.deepcopy(newer)])
    no_truth["id"] = 8
    path = write_export(tmp_path, [_annotated(captured_task, [truth, newer]), no_truth])
    result = evaluate_file(path, tmp_path / "out", annotation="ground-truth")
    assert result["overall"]["gIoU"] == pytest.approx(0.5) and result["overall"]["samples"] == 1
    assert result["skipped"] == [{"task_id": 8, "code": "no-ground-truth", "reason": "no ground-truth annotation"}]


def test_all_mode_gives_each_annotator_a_sample(tmp_path, captured_task):
    first = annotation(captured_task, [brush(captured_task, box(0, 0, 10, 5))], user=11, updated="2026-11-27T04:00:00Z")
    revised = annotation(captured_task, [brush(captured_task, box(0, 0, 10, 10))], user=11, updated="2026-11-27T06:00:00Z")
    other = annotation(captured_task, [brush(captured_task, box(0, 0, 5, 10))], user=12)
    result = evaluate_file(write_export(tmp_path, [_annotated(captured_task, [first, revised, other])]), tmp_path / "out", annotation="all")
    assert result["by_annotator"]["11"]["gIoU"] == 1.0
    assert result["by_annotator"]["12"]["gIoU"] == pytest.approx(0.5)
    assert result["overall"]["samples"] == 2


# ---------------------------------------------------------------- expressions, controls, label configs
LABEL_CONFIG = (
    '<View><Image name="image" value="$picture"/><Text name="ref" value="$sentence"/>'
    '<TextArea name="prompt" toName="image"/>'
    '<BrushLabels name="mask" toName="image"><Label value="red"/></BrushLabels>'
    '<PolygonLabels name="outline" toName="image"><Label value="red"/></PolygonLabels></View>'
)


def test_expression_comes_from_the_text_tag_field_else_the_textarea(tmp_path, captured_task):
    textarea = {"from_name": "prompt", "to_name": "image", "type": "textarea", "value": {"text": ["the red one"]}}
    mask_region = brush(captured_task, box(0, 0, 4, 4))
    with_field = task(captured_task, 1, [annotation(captured_task, [mask_region])],
                      [prediction(captured_task, [mask_region])], sentence="a dog on the left")
    from_textarea = task(captured_task, 2, [annotation(captured_task, [mask_region, textarea])],
                         [prediction(captured_task, [mask_region])])
    from_prediction = task(captured_task, 3, [annotation(captured_task, [mask_region])],
                           [prediction(captured_task, [mask_region, textarea])])
    settings = SampleSettings.from_label_config(LABEL_CONFIG, control="mask")
    assert (settings.expression_field, settings.image_field, settings.prompt_controls) == ("sentence", "picture", ("prompt",))
    evaluate_export(ExportSource(write_export(tmp_path, [with_field, from_textarea, from_prediction])), tmp_path / "out", settings)
    assert [row["expression"] for row in read_rows(tmp_path / "out")] == ["a dog on the left", "the red one", "the red one"]


def test_several_mask_controls_need_a_control(tmp_path, captured_task):
    regions = [brush(captured_task, box(0, 0, 4, 4), "mask"), brush(captured_task, box(0, 0, 8, 8), "other")]
    item = task(captured_task, 1, [annotation(captured_task, regions)], [prediction(captured_task, regions)])
    path = write_export(tmp_path, [item])
    result = evaluate_file(path, tmp_path / "out")
    assert "several mask controls (mask, other); pick one with --control" in result["skipped"][0]["reason"]
    assert run_cli(str(path), "-o", str(tmp_path / "picked"), "--control", "other") == 0
    assert read_rows(tmp_path / "picked")[0]["human_area"] == "64"
    config = tmp_path / "config.xml"
    config.write_text(LABEL_CONFIG)
    assert run_cli(str(path), "-o", str(tmp_path / "x"), "--label-config", str(config)) == 1


# ---------------------------------------------------------------- the captured exports
def test_captured_snapshot_export_evaluates(fixtures_dir, tmp_path, capsys):
    outdir = tmp_path / "out"
    assert run_cli(str(fixtures_dir / "export_snapshot_full_predictions.json"), "-o", str(outdir)) == 0
    result = json.loads((outdir / "report.json").read_text())
    assert result["overall"]["samples"] == 1 and result["overall"]["cIoU"] == 1.0
    assert result["by_model_version"]["textseg-0.1"]["gIoU"] == 1.0
    assert result["skipped"] == [{"task_id": 2, "code": "no-annotation", "reason": "no annotation"}, {"task_id": 3, "code": "no-annotation", "reason": "no annotation"}]
    (row,) = read_rows(outdir)
    assert int(row["human_area"]) > 0 and row["human_area"] == row["model_area"] == row["intersection"]
    assert "3 tasks, 1 samples, 2 skipped" in capsys.readouterr().out


def test_ids_only_export_says_a_full_predictions_snapshot_is_needed(fixtures_dir, tmp_path, capsys):
    assert run_cli(str(fixtures_dir / "export_json_min.json"), "-o", str(tmp_path / "out")) == 1
    error = capsys.readouterr().err
    assert error.startswith("mlcdseg: error: task 1 lists its predictions as ids only")
    assert '"only_id": false' in error and "--project" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"not json at all", "starts with 'n', not a list of tasks"),
        (b'{"tasks": []}', "holds a JSON object, not a list of tasks"),
        (b"[{]", "is not valid JSON after 0 complete tasks"),
    ],
)
def test_unusable_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "export.json"
    path.write_bytes(content)
    assert run_cli(str(path), "-o", str(tmp_path / "out")) == 1
    error = capsys.readouterr().err
    assert error.startswith("mlcdseg: error: ") and message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_byte_order_mark_and_leading_whitespace_are_accepted(tmp_path, captured_task):
    path = tmp_path / "export.json"
    path.write_bytes(b"\xef\xbb\xbf" + b" \n" * 5000 + json.dumps([pair_task(captured_task, 1, *PAIRS[2])]).encode())
    assert_metrics(evaluate_file(path, tmp_path / "out")["overall"], oracle([PAIRS[2]]))


def test_help_says_what_source_may_be_and_what_is_written(capsys):
    assert run_cli("--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    for needed in ('"only_id": false', "--project", "ids only", "report.json", "samples.csv", "report.html"):
        assert needed in text, needed


def test_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert run_cli(str(tmp_path / "nope.json"), "-o", str(tmp_path / "out")) == 1
    assert "cannot read the export" in capsys.readouterr().err


def test_truncated_export_fails_without_touching_previous_outputs(tmp_path, captured_task, capsys):
    tasks = [pair_task(captured_task, i + 1, h, m) for i, (h, m) in enumerate(PAIRS * 8)]
    outdir = tmp_path / "out"
    assert run_cli(str(write_export(tmp_path, tasks)), "-o", str(outdir)) == 0
    before = {name: (outdir / name).read_bytes() for name in OUTPUTS}
    text = json.dumps(tasks)
    (tmp_path / "cut.json").write_text(text[: len(text) * 3 // 4])
    assert run_cli(str(tmp_path / "cut.json"), "-o", str(outdir)) == 1
    error = capsys.readouterr().err
    assert "is truncated: it ends after" in error and "Traceback" not in error
    assert {name: (outdir / name).read_bytes() for name in OUTPUTS} == before
    assert sorted(p.name for p in outdir.iterdir()) == sorted(OUTPUTS)


def test_failure_while_writing_the_page_keeps_previous_outputs(tmp_path, captured_task, monkeypatch):
    path = write_export(tmp_path, [pair_task(captured_task, 1, *PAIRS[1])])
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "report.json").write_text("previous")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "render_html", broken)
    with pytest.raises(OSError):
        evaluate_file(path, outdir)
    assert [p.name for p in outdir.iterdir()] == ["report.json"]
    assert (outdir / "report.json").read_text() == "previous"


def test_bad_tasks_are_skipped_with_a_reason(tmp_path, captured_task):
    good = pair_task(captured_task, 1, *PAIRS[0])
    corrupt = pair_task(captured_task, 2, *PAIRS[1])
    corrupt["predictions"][0]["result"][0]["value"]["rle"] = [1, 2, 3]
    short = pair_task(captured_task, 3, *PAIRS[1])
    short["annotations"][0]["result"][0]["value"]["rle"] = encode_brush_rle(box(0, 0, 5, 5, 20, 40))
    other_size = task(captured_task, 4, [annotation(captured_task, [brush(captured_task, box(0, 0, 5, 5))])],
                      [prediction(captured_task, [brush(captured_task, box(0, 0, 5, 5, 60, 80))])])
    unannotated = task(captured_task, 5, [], [prediction(captured_task, [])])
    unpredicted = task(captured_task, 6, [annotation(captured_task, [])], [])
    result = evaluate_file(write_export(tmp_path, [good, corrupt, short, other_size, unannotated, unpredicted, 42]), tmp_path / "out")
    assert result["overall"]["samples"] == 1
    reasons = {skip["task_id"]: skip["reason"] for skip in result["skipped"]}
    assert reasons[2].startswith("model version v1: ") and len(reasons[2]) > len("model version v1: ")
    assert reasons[3].startswith("the human mask of 1: ")
    assert reasons[4] == "the human mask is 40x30 but model version v1 drew on 80x60"
    assert reasons[5] == "no annotation" and reasons[6] == "no prediction"
    assert reasons[None] == "item 6 of the export is not a task object"


def test_tasks_of_the_wrong_shape_are_skipped_with_the_field_named(tmp_path, captured_task):
    good = pair_task(captured_task, 1, *PAIRS[0])
    shapes = [{**good, "id": 2, "predictions": 7}, {**good, "id": 3, "annotations": {"id": 1}},
              {**good, "id": 4, "data": "red"}, {**good, "id": 5, "data": None, "predictions": None}]
    result = evaluate_file(write_export(tmp_path, [good, *shapes]), tmp_path / "out")
    assert result["overall"]["samples"] == 1
    assert {skip["task_id"]: skip["reason"] for skip in result["skipped"]} == {
        2: "its 'predictions' field is not a list",
        3: "its 'annotations' field is not a list",
        4: "its 'data' field is not an object",
        5: "no prediction",  # null is an empty field, as Label Studio may write it
    }


# ---------------------------------------------------------------- page, workers, live project
def test_report_page_is_self_contained_with_overlays_and_a_note_when_images_are_unreachable(tmp_path, captured_task):
    tasks = [pair_task(captured_task, i + 1, h, m) for i, (h, m) in enumerate(PAIRS)]
    evaluate_file(write_export(tmp_path, tasks), tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    assert '<table class="refcoco">' in page and "<th>v1</th>" in page
    assert page.count("<figure>") == 5 and page.count('src="data:image/png;base64,') == 5
    # histogram, precision curve, and (the captured prediction scores 0.9) review curve and IoU by score
    assert "image not reachable" in page and page.count("<svg") == 4


def test_two_workers_give_the_same_outputs_as_one(tmp_path, captured_task):
    tasks = [pair_task(captured_task, i + 1, h, m, version=f"v{i % 2}", split=f"s{i % 3}")
             for i, (h, m) in enumerate(PAIRS * 7)]
    path = write_export(tmp_path, tasks)
    settings = SampleSettings()
    for workers in (1, 2):
        evaluate_export(ExportSource(path), tmp_path / f"w{workers}", settings, workers=workers, chunk_size=3, worst_count=4)
    for name in OUTPUTS:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


def test_errors_with_workers_stop_the_pool_and_write_nothing(tmp_path, fixtures_dir, captured_task):
    text = json.dumps([pair_task(captured_task, i + 1, h, m) for i, (h, m) in enumerate(PAIRS * 6)])
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    assert run_cli(str(tmp_path / "cut.json"), "-o", str(tmp_path / "a"), "--workers", "2") == 1
    assert run_cli(str(fixtures_dir / "export_json_min.json"), "-o", str(tmp_path / "b"), "--workers", "2") == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_worst_samples_are_the_lowest_ious(tmp_path, captured_task):
    tasks = [pair_task(captured_task, i + 1, h, m) for i, (h, m) in enumerate(PAIRS * 3)]
    evaluate_export(ExportSource(write_export(tmp_path, tasks)), tmp_path / "out", SampleSettings(), chunk_size=4, worst_count=4)
    page = (tmp_path / "out" / "report.html").read_text()
    shown = [int(chunk.split("</b>")[0]) for chunk in page.split("<b>task ")[1:]]
    assert shown == [4, 5, 9, 10]  # IoU 0 (four of them, earliest first)


def _fake_label_studio(export_body: bytes, label_config: str, statuses: list[str], requests: list):
    """An httpx transport answering the snapshot export calls like Label Studio 1.23."""
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        path = request.url.path
        if path == "/api/projects/5/" and request.method == "GET":
            return httpx.Response(200, json={"id": 5, "label_config": label_config})
        if path == "/api/projects/5/exports/" and request.method == "POST":
            return httpx.Response(201, json={"id": 9, "status": "created"})
        if path == "/api/projects/5/exports/9":
            return httpx.Response(200, json={"id": 9, "status": statuses.pop(0)})
        if path == "/api/projects/5/exports/9/download":
            return httpx.Response(200, content=export_body)
        return httpx.Response(404, json={"detail": "not found"})
    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://ls.test")


def test_live_project_is_exported_as_a_full_predictions_snapshot(tmp_path, captured_task):
    config = LABEL_CONFIG.replace('<PolygonLabels name="outline" toName="image"><Label value="red"/></PolygonLabels>', "")
    body = json.dumps([pair_task(captured_task, 1, *PAIRS[1], sentence="left half")]).encode()
    requests: list = []
    client = _fake_label_studio(body, config, ["in_progress", "completed"], requests)
    with open_export_source(None, label_studio_url="http://ls.test", api_key="a" * 40, project=5,
                            poll_interval_s=0.01, httpx_client=client) as source:
        settings = SampleSettings.from_label_config(source.label_config)
        source_path = source.path
        result = evaluate_export(source, tmp_path / "out", settings)
    assert not source_path.exists()
    created = next(r for r in requests if r.method == "POST")
    assert json.loads(created.content)["serialization_options"] == {"predictions": {"only_id": False}}
    assert created.headers["Authorization"] == "Token " + "a" * 40
    assert result["source"]["kind"] == "label-studio" and result["source"]["export_id"] == 9
    assert_metrics(result["overall"], oracle([PAIRS[1]]))
    assert read_rows(tmp_path / "out")[0]["expression"] == "left half"


def test_failed_live_export_is_a_label_studio_error(tmp_path):
    client = _fake_label_studio(b"[]", LABEL_CONFIG, ["failed"], [])
    with pytest.raises(LabelStudioError, match="could not build export 9 of project 5"), open_export_source(
        None, label_studio_url="http://ls.test", api_key="a" * 40, project=5, poll_interval_s=0.01, httpx_client=client
    ):
        pass


@pytest.mark.parametrize("url", ["http://ls:port", "http://[::1"])
def test_a_url_httpx_cannot_parse_is_a_label_studio_error(tmp_path, url):
    with pytest.raises(LabelStudioError, match=f"could not be reached while reading project 5 at {re.escape(url)}"):
        snapshot_project_export(url, "a" * 40, 5, tmp_path)


def test_a_malformed_label_studio_url_is_refused_before_any_request(tmp_path):
    requests: list = []
    client = _fake_label_studio(b"[]", LABEL_CONFIG, ["completed"], requests)
    with pytest.raises(LabelStudioError, match=r"--label-studio-url 'http://ls:99999' is not an http\(s\) URL"):
        with open_export_source(None, label_studio_url="http://ls:99999", api_key="k", project=5, httpx_client=client):
            pass
    assert requests == []


def test_human_samples_are_reusable_without_predictions(captured_task):
    item = task(captured_task, 3, [annotation(captured_task, [brush(captured_task, box(2, 3, 6, 9))], user=4)], [], split="val")
    (sample,), skipped = human_samples(item, SampleSettings())
    assert skipped == [] and (sample.task_id, sample.split, sample.annotator) == (3, "val", "4")
    assert sample.image == "/data/upload/1/img3.png" and sample.image_size == (HEIGHT, WIDTH)
    assert np.array_equal(sample.mask(), box(2, 3, 6, 9))


def test_a_human_mask_is_decoded_once_and_shared_read_only(captured_task):
    item = task(captured_task, 3, [annotation(captured_task, [brush(captured_task, box(2, 3, 6, 9))])], [])
    (sample,), _ = human_samples(item, SampleSettings())
    assert sample.mask() is sample.mask((HEIGHT, WIDTH))  # every model version compares against one decode
    assert not sample.mask().flags.writeable


def test_an_export_that_scores_no_sample_says_why_by_skip_code_and_exits_non_zero(fixtures_dir, tmp_path, capsys):
    tasks = json.loads((fixtures_dir / "export_snapshot_full_predictions.json").read_text())
    for task in tasks:
        if task["annotations"]:
            task["predictions"] = []  # the annotated task loses its prediction; the others have no annotation
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))

    assert run_cli(str(path), "-o", str(tmp_path / "out")) == 1

    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith("mlcdseg: error: no sample was scored; 2 no-annotation (e.g. task 2: no annotation); ")
    assert "1 no-prediction (e.g. task 1: no prediction)" in error
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["skipped_by_code"]["no-annotation"]["count"] == 2


def test_the_annotators_lead_time_reaches_samples_csv_and_the_review(fixtures_dir, tmp_path):
    tasks = json.loads((fixtures_dir / "export_snapshot_full_predictions.json").read_text())
    annotated = next(task for task in tasks if task["annotations"])
    annotated["annotations"][0]["lead_time"] = 12.5  # Label Studio's seconds spent on the annotation
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))

    assert run_cli(str(path), "-o", str(tmp_path / "out")) == 0

    (row,) = read_rows(tmp_path / "out")
    assert row["lead_time"] == "12.5"
    review = json.loads((tmp_path / "out" / "report.json").read_text())["review"]
    accepted = review["by_model_version"]["textseg-0.1"]["accepted"]
    assert accepted["count"] == 1 and accepted["median_lead_time_s"] == pytest.approx(12.5, rel=0.01)
    assert "Review: what the pre-annotations saved" in (tmp_path / "out" / "report.html").read_text()
