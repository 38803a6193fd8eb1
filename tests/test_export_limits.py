"""Hostile exports cannot exhaust memory or time, nor smuggle formulas into samples.csv."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mlcdseg import cli
from mlcdseg.errors import ExportFormatError
from mlcdseg.evaluation import report
from mlcdseg.evaluation.evaluate import evaluate_export
from mlcdseg.evaluation.samples import SampleSettings, human_samples, model_predictions
from mlcdseg.labelstudio import export_source
from mlcdseg.labelstudio.export_source import ExportSource, iter_export_tasks
from mlcdseg.labelstudio.tasks import SkipCode
from tests.test_evaluate import PAIRS, captured_task, pair_task, run_cli  # noqa: F401 (fixture)
from tests.test_refcoco import write_refer


# ---------------------------------------------------------------- nesting depth
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deeply_nested_export_is_a_one_line_error_not_a_memory_blow_up(tmp_path, opener):
    path = tmp_path / "export.json"
    path.write_bytes(b"[" + opener * 100_000)
    with pytest.raises(ExportFormatError, match="is nested deeper than 64 levels .after 0 complete tasks"):
        list(iter_export_tasks(path))


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    text = '\\"' + "[{" * 500 + '\\\\'  # an escaped quote first, an escaped backslash last
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"id": 1, "data": {"expression": text}}, [[1]]]))
    assert list(iter_export_tasks(path)) == [{"id": 1, "data": {"expression": text}}, [[1]]]


def test_an_escape_split_across_reads_is_followed(tmp_path):
    prefix = '[{"x": "' + "a" * (export_source.READ_CHUNK_BYTES - 9)  # the backslash ends the first read
    path = tmp_path / "export.json"
    path.write_text(prefix + '\\"' + "[" * 100 + '"}]')
    (item,) = iter_export_tasks(path)
    assert item["x"].endswith('"' + "[" * 100)


def test_nesting_up_to_the_limit_is_read(tmp_path):
    path = tmp_path / "export.json"
    nested = "[" * 63 + "1" + "]" * 63  # the export's own array makes 64 levels
    path.write_text(f"[{nested}, 2.5, \"x\", true]")
    assert list(iter_export_tasks(path))[1:] == [2.5, "x", True]


def test_deep_export_through_the_cli_is_one_line(tmp_path, capsys):
    path = tmp_path / "export.json"
    path.write_bytes(b"[" * 100_000)
    assert run_cli(str(path), "-o", str(tmp_path / "out")) == 1
    error = capsys.readouterr().err
    assert error.startswith("mlcdseg: error: ") and "nested deeper" in error and error.count("\n") == 1


# ---------------------------------------------------------------- leading whitespace
class _CountingReader(io.BytesIO):
    """A byte stream that counts the bytes handed out by read()."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_preamble_scan_reads_each_byte_once_and_stops_at_the_array():
    whitespace = b" \n\t\r" * (10 * 1024 * 1024 // 4)
    stream = _CountingReader(b"\xef\xbb\xbf" + whitespace + b"[1]" + b" " * 100_000)
    export_source._seek_past_preamble(stream, Path("export.json"))
    assert stream.tell() == 3 + len(whitespace)  # at the "[", the whitespace is not parsed again
    assert stream.bytes_read <= 3 + len(whitespace) + 2 * export_source._PEEK_BYTES


def test_ten_mebibytes_of_leading_whitespace_are_read(tmp_path, captured_task):  # noqa: F811
    path = tmp_path / "export.json"
    path.write_bytes(b" " * (10 * 1024 * 1024) + json.dumps([pair_task(captured_task, 1, *PAIRS[0])]).encode())
    assert [task["id"] for task in iter_export_tasks(path)] == [1]


# ---------------------------------------------------------------- declared image size
def _huge_region_task(template: dict) -> dict:
    task = pair_task(template, 7, *PAIRS[0])
    for item in (task["annotations"][0], task["predictions"][0]):
        for region in item["result"]:
            region.update(original_width=50_000, original_height=50_000)
    return task


def test_a_region_declaring_a_huge_image_is_skipped_with_a_reason(captured_task):  # noqa: F811
    task = _huge_region_task(captured_task)
    samples, skips = human_samples(task, SampleSettings())
    assert samples == []
    (skip,) = skips
    assert skip.code is SkipCode.IMAGE_TOO_LARGE
    assert "50000x50000" in skip.reason and "64000000" in skip.reason
    predictions, prediction_skips = model_predictions(task, SampleSettings())
    assert predictions == {} and prediction_skips[0].code is SkipCode.IMAGE_TOO_LARGE


def test_the_pixel_limit_is_an_option(captured_task, tmp_path):  # noqa: F811
    task = pair_task(captured_task, 8, *PAIRS[0])  # 40x30 = 1200 px
    assert human_samples(task, SampleSettings(max_image_pixels=1200))[1] == []
    (skip,) = human_samples(task, SampleSettings(max_image_pixels=1199))[1]
    assert skip.code is SkipCode.IMAGE_TOO_LARGE
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    assert run_cli(str(path), "-o", str(tmp_path / "out"), "--max-image-pixels", "1199") == 1  # nothing scored
    skipped = json.loads((tmp_path / "out" / "report.json").read_text())["skipped"]
    assert "more than 1199 pixels" in skipped[0]["reason"]


def test_evaluate_skips_a_huge_region_and_scores_the_rest(tmp_path, captured_task):  # noqa: F811
    path = tmp_path / "export.json"
    path.write_text(json.dumps([_huge_region_task(captured_task), pair_task(captured_task, 1, *PAIRS[0])]))
    content = evaluate_export(ExportSource(path), tmp_path / "out", SampleSettings())
    assert content["overall"]["samples"] == 1
    assert [skip["task_id"] for skip in content["skipped"]] == [7, 7]


# ---------------------------------------------------------------- spreadsheet formulas
@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_sample_csv_text_cells_cannot_start_a_formula(text):
    stream = io.StringIO(newline="")
    row = {"task_id": 1, "expression": text, "split": text, "model_version": text, "annotator": text,
           "intersection": 5, "union": 10, "iou": 0.5, "human_area": 5, "model_area": 7}
    report.SampleCsvWriter(stream).write_rows([row])
    (written,) = list(csv.DictReader(io.StringIO(stream.getvalue())))
    for column in ("expression", "split", "model_version", "annotator"):
        assert written[column] == "'" + text
    assert (written["task_id"], written["intersection"], written["iou"]) == ("1", "5", "0.5")


def test_sample_csv_numbers_stay_numbers_even_negative():
    stream = io.StringIO(newline="")
    row = dict.fromkeys(report.SAMPLE_COLUMNS, None) | {"task_id": -3, "iou": -0.0, "expression": "red car"}
    report.SampleCsvWriter(stream).write_rows([copy.deepcopy(row)])
    (written,) = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert (written["task_id"], written["iou"], written["expression"], written["split"]) == ("-3", "-0.0", "red car", "")


def test_sample_csv_of_a_real_run_neutralises_an_expression(tmp_path, captured_task):  # noqa: F811
    path = tmp_path / "export.json"
    path.write_text(json.dumps([pair_task(captured_task, 1, *PAIRS[0], expression="=1+1")]))
    evaluate_export(ExportSource(path), tmp_path / "out", SampleSettings())
    with (tmp_path / "out" / "samples.csv").open(newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["expression"] == "'=1+1" and row["iou"] == "1.0"
    assert np.isclose(float(row["iou"]), 1.0)


def test_deeply_nested_refcoco_instances_are_a_one_line_error(tmp_path, capsys):
    root = write_refer(tmp_path / "refer")
    (root / "refcoco" / "instances.json").write_bytes(b'{"images": ' + b"[" * 100_000)
    status = cli.main(["import-refcoco", str(root), "-o", str(tmp_path / "t.json"), "--image-url-prefix", "/"])
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1, error
    assert "instances.json is nested deeper than 64 levels" in error
    assert not (tmp_path / "t.json").exists()
