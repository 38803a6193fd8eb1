"""The evaluation outputs: the CSV, overlay pictures and the self-contained page."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from mlcdseg.evaluation import report
from mlcdseg.evaluation.evaluate import ChunkResult, EvaluationTotals
from mlcdseg.labelstudio.tasks import Skip
from mlcdseg.masks.codecs import encode_brush_rle
from mlcdseg.evaluation.scoring import ScoredSample, ComparedSample


def sample(task_id: int, intersection: int, union: int, human: int, model: int, version: str = "v1",
           split: str | None = "val", image: str | None = None) -> ScoredSample:
    return ScoredSample(task_id, f"thing {task_id}", split, version, "1", intersection, union, human, model, image)


def content_of(samples: list[ScoredSample], skipped: list[Skip] = ()) -> dict:
    totals = EvaluationTotals(worst_count=3)
    totals.add(ChunkResult(tasks=len(samples), samples=samples, skipped=list(skipped)))
    return totals.report({"path": "export.json", "annotation": "latest"})


def decode_png(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))).convert("RGB"))


def test_samples_csv_has_the_columns_and_empty_cells_for_none(tmp_path):
    stream = io.StringIO()
    report.SampleCsvWriter(stream).write_rows([sample(3, 5, 10, 7, 8, split=None).row()])
    header, row = stream.getvalue().splitlines()
    assert header == "task_id,expression,split,model_version,annotator,intersection,union,iou,human_area,model_area"
    assert row == "3,thing 3,,v1,1,5,10,0.5,7,8"


def test_percent_has_one_decimal_and_a_dash_for_missing():
    assert report.percent(0.12345) == "12.3" and report.percent(1.0) == "100.0" and report.percent(None) == "–"


def test_page_is_self_contained_and_holds_the_refcoco_table():
    content = content_of([sample(1, 9, 10, 9, 10), sample(2, 1, 4, 2, 3, split="testA"), sample(3, 5, 5, 5, 5, version="v2")],
                         [Skip(4, "no annotation")])
    page = report.render_html(content, [])
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page and "<style>" in page
    table = page.split('<table class="refcoco">')[1].split("</table>")[0]
    assert [cell for cell in re.findall(r'<th colspan="2">([^<]*)</th>', table)] == ["all", "testA", "val"]
    # v1 over all: cIoU = 10/14, gIoU = (0.9 + 0.25) / 2; testA: 25.0 / 25.0; val: 90.0 / 90.0
    assert "<tr><th>v1</th><td>71.4</td><td>57.5</td><td>25.0</td><td>25.0</td><td>90.0</td><td>90.0</td></tr>" in table
    assert "<tr><th>v2</th><td>100.0</td><td>100.0</td><td>–</td><td>–</td>" in table
    assert "task 4: no annotation" in page


def test_svg_plots_draw_a_bar_per_nonempty_bin_and_a_point_per_threshold():
    histogram = report.svg_histogram({"v1": [0, 2, 0, 0, 0, 0, 0, 0, 0, 5], "v2": [1] * 10})
    assert histogram.count("<rect") == 20 + 2  # bars (zero-height included) + legend swatches
    assert "<title>5</title>" in histogram
    curve = report.svg_precision_curve({"v1": {f"precision@{k}": 1 - k for k in (0.5, 0.6, 0.7, 0.8, 0.9)}})
    assert curve.count("<circle") == 5 and "<polyline" in curve


def test_overlay_colours_human_only_model_only_and_both_and_is_downscaled():
    human = np.zeros((200, 400), bool)
    model = np.zeros((200, 400), bool)
    human[:, :200] = True
    model[:, 100:300] = True
    picture = decode_png(report.overlay_data_uri(human, model, None, max_side=100))
    assert picture.shape == (50, 100, 3)
    row = picture[25]  # columns: human only [0, 25), both [25, 50), model only [50, 75), neither
    assert row[10][2] > 150 > row[10][0]  # human only: blue
    assert row[35][0] > 150 and row[35][1] > 120 and row[35][2] < 50  # both: yellow
    assert row[60][0] > 150 > row[60][2]  # model only: red
    assert tuple(row[90]) == (24, 24, 24)  # neither: dark background


def _worst_case(image: str | None) -> ComparedSample:
    human = np.zeros((20, 30), bool)
    human[5:15, 5:15] = True
    region = {"type": "brushlabels", "from_name": "mask", "original_height": 20, "original_width": 30,
              "value": {"format": "rle", "rle": encode_brush_rle(human), "brushlabels": ["red"]}}
    return ComparedSample(sample(1, 0, 100, 100, 0, image=image), (region,), (), (20, 30))


def test_worst_views_draw_over_the_image_when_it_loads_and_say_so_when_not(tmp_path):
    image_path = tmp_path / "img.png"
    Image.new("RGB", (30, 20), (0, 200, 0)).save(image_path)
    (view,) = report.worst_task_views([_worst_case(str(image_path))], lambda ref: Image.open(ref).convert("RGB"))
    assert view.note is None and decode_png(view.picture)[0, 0][1] > 100  # green image shows through
    (view,) = report.worst_task_views([_worst_case("/data/upload/1/x.png")], None)
    assert view.note == "image not reachable: no image loader was given"
    wrong_size = tmp_path / "wrong.png"
    Image.new("RGB", (10, 10)).save(wrong_size)
    (view,) = report.worst_task_views([_worst_case(str(wrong_size))], lambda ref: Image.open(ref).convert("RGB"))
    assert view.note == "image is 10x10 but the masks are 30x20"
