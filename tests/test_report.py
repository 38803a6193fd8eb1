"""The evaluation outputs: the CSV, overlay pictures and the self-contained page."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from mlcdseg.evaluation import report
from mlcdseg.evaluation.evaluate import ChunkResult, EvaluationTotals
from mlcdseg.evaluation.review import LeadTimeHistogram
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
    assert header == "task_id,expression,split,model_version,annotator,intersection,union,iou,human_area,model_area,lead_time,score"
    assert row == "3,thing 3,,v1,1,5,10,0.5,7,8,,"


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


def test_overlay_draws_fixed_colour_contours_of_model_human_and_both_and_is_downscaled():
    human = np.zeros((200, 400), bool)
    model = np.zeros((200, 400), bool)
    human[20:180, :200] = True
    model[20:180, 100:300] = True
    picture = decode_png(report.overlay_data_uri(human, model, None, max_side=100))
    assert picture.shape == (50, 100, 3)
    # at 100x50 the human mask spans columns [0, 50), the model's [25, 75), both rows [5, 45)
    row = picture[25]
    assert tuple(row[0]) == tuple(row[49]) == report.HUMAN_COLOUR  # the human mask's left and right edges
    assert tuple(row[25]) == tuple(row[74]) == report.MODEL_COLOUR  # the model mask's edges
    assert tuple(row[10]) == tuple(row[35]) == tuple(row[90]) == (40, 40, 40)  # inside: no tint
    assert tuple(picture[5][35]) == report.BOTH_COLOUR  # the top edges coincide
    assert tuple(picture[5][10]) == report.HUMAN_COLOUR and tuple(picture[5][60]) == report.MODEL_COLOUR
    colours = {report.HUMAN_COLOUR, report.MODEL_COLOUR, report.BOTH_COLOUR}
    assert len(colours) == 3


def test_overlay_leaves_the_image_colours_inside_the_masks():
    image = Image.new("RGB", (40, 20), (0, 200, 0))
    mask = np.zeros((20, 40), bool)
    mask[5:15, 5:35] = True
    picture = decode_png(report.overlay_data_uri(mask, mask, image))
    assert tuple(picture[10, 20]) == (0, 200, 0) and tuple(picture[5, 20]) == report.BOTH_COLOUR


def test_plots_label_their_axes_and_keep_long_legends_inside_the_picture():
    long_version = "stand-in:" + "f" * 40 + "@" + "0123456789abcdef" * 3
    histogram = report.svg_histogram({long_version: [1] * 10, "v2": [2] * 10})
    curve = report.svg_precision_curve({long_version: {"precision@0.5": 0.5}, "v2": {"precision@0.5": 0.7}})
    for svg in (histogram, curve):
        width = float(re.search(r'<svg width="(\d+)"', svg).group(1))
        height = float(re.search(r'height="(\d+)"', svg).group(1))
        assert len(re.findall(r'class="tick axis-label"', svg)) == 2
        legend = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" class="tick legend"><title>([^<]*)</title>([^<]*)</text>', svg)
        assert [title for _, _, title, _ in legend] == [long_version, "v2"]
        for x, y, _, shown in legend:
            # 11 px text: at most ~6.5 px a character
            assert float(x) + 6.5 * len(shown) <= width and float(y) <= height
    assert "samples</text>" in histogram and "IoU threshold k</text>" in curve


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


# ---------------------------------------------------------------- the review section
def reviewed(task_id: int, iou_tenths: int, annotator: str, lead_time: float | None, version: str = "v1") -> ScoredSample:
    """A sample of IoU iou_tenths / 10 (union 10 px) by `annotator`, who spent `lead_time` seconds."""
    return ScoredSample(task_id, "thing", "val", version, annotator, iou_tenths, 10, 10, iou_tenths, lead_time=lead_time)


def test_review_counts_accepted_corrected_and_redrawn_by_version_and_annotator_with_median_lead_times():
    samples = [
        reviewed(1, 10, "ann", 4.0), reviewed(2, 10, "ann", 6.0), reviewed(3, 10, "bob", 5.0),  # accepted
        reviewed(4, 7, "bob", 30.0), reviewed(5, 5, "bob", None),  # corrected (0.5 counts as corrected)
        reviewed(6, 4, "ann", 120.0, version="v2"),  # redrawn
    ]
    review = content_of(samples)["review"]

    v1 = review["by_model_version"]["v1"]
    assert v1["samples"] == 5
    assert (v1["accepted"]["count"], v1["corrected"]["count"], v1["redrawn"]["count"]) == (3, 2, 0)
    assert v1["accepted"]["share"] == pytest.approx(0.6)
    assert v1["accepted"]["median_lead_time_s"] == pytest.approx(5.0, rel=0.01)
    assert v1["corrected"]["median_lead_time_s"] == pytest.approx(30.0, rel=0.01)  # the sample without one is not counted
    assert v1["redrawn"]["median_lead_time_s"] is None
    ann = review["by_annotator"]["ann"]
    assert (ann["accepted"]["count"], ann["redrawn"]["count"]) == (2, 1)
    assert ann["redrawn"]["median_lead_time_s"] == pytest.approx(120.0, rel=0.01)
    page = report.render_html(content_of(samples), [])
    section = page.split("Review: what the pre-annotations saved")[1].split("<h2>")[0]
    assert "60.0 % (3)" in section and "2 min 0" in section and "<th>bob</th>" in section


def test_the_median_lead_time_is_within_one_percent_in_bounded_memory():
    generator = np.random.default_rng(7)
    lead_times = generator.lognormal(mean=3.0, sigma=1.2, size=20_001)
    histogram = LeadTimeHistogram()
    for seconds in lead_times:
        histogram.add(float(seconds))
    assert histogram.median() == pytest.approx(float(np.median(lead_times)), rel=0.01)
    assert len(histogram._counts) <= LeadTimeHistogram.BINS
    assert LeadTimeHistogram().median() is None
