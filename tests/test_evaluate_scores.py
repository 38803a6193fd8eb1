"""`mlcdseg evaluate` with prediction scores: score ranking in report.json and the page, and the review queue.

Exports are built as in test_evaluate (copies of a captured Label Studio 1.23.2 task); expected
figures come from the known masks with numpy and scipy, never from the code under test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mlcdseg.evaluation import report
from mlcdseg.evaluation.evaluate import evaluate_export
from mlcdseg.evaluation.samples import SampleSettings
from mlcdseg.labelstudio.export_source import ExportSource
from tests.test_evaluate import (  # noqa: F401 (captured_task is a fixture)
    box,
    brush,
    captured_task,
    pair_task,
    prediction,
    run_cli,
    task,
    write_export,
)

HUMAN = box(0, 0, 10, 20)  # 200 px
#: (score, model mask) per task; IoUs against HUMAN: 1.0, 0.5, 0.9, 0.0, 0.45, 0.75
CASES = [
    (0.95, box(0, 0, 10, 20)),
    (0.30, box(0, 0, 10, 10)),
    (0.80, box(0, 0, 10, 18)),
    (0.10, box(20, 20, 30, 40)),
    (0.30, box(0, 0, 9, 10)),
    (0.60, box(0, 0, 10, 15)),
]


def with_score(item: dict, score: float | None, region_score: float | None = None) -> dict:
    """`item` whose (only) prediction carries `score` at its top level and `region_score` on its regions."""
    (predicted,) = item["predictions"]
    predicted.pop("score", None)
    if score is not None:
        predicted["score"] = score
    for region in predicted["result"]:
        region.pop("score", None)
        if region_score is not None:
            region["score"] = region_score
    return item


def scored_export(tmp_path: Path, template: dict) -> Path:
    tasks = [with_score(pair_task(template, index + 1, HUMAN, model), score) for index, (score, model) in enumerate(CASES)]
    return write_export(tmp_path, tasks)


def expected_ious() -> np.ndarray:
    return np.array([np.sum(HUMAN & model) / np.sum(HUMAN | model) for _, model in CASES])


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


# ---------------------------------------------------------------- report.json
def test_score_ranking_of_an_export_equals_scipy_on_the_known_masks(tmp_path, captured_task):
    result = evaluate_export(ExportSource(scored_export(tmp_path, captured_task)), tmp_path / "out", SampleSettings())
    scores, ious = np.array([score for score, _ in CASES]), expected_ious()
    assert ious == pytest.approx([1.0, 0.5, 0.9, 0.0, 0.45, 0.75])
    ranking = result["score_ranking"]["by_model_version"]["v1"]
    assert (ranking["scored_samples"], ranking["unscored_samples"]) == (6, 0)
    redrawn = ious < 0.5
    u_statistic = stats.mannwhitneyu(1 - scores[redrawn], 1 - scores[~redrawn]).statistic
    assert ranking["auroc"]["value"] == pytest.approx(u_statistic / (redrawn.sum() * (~redrawn).sum()))
    assert ranking["spearman"]["value"] == pytest.approx(stats.spearmanr(scores, ious).statistic)
    # needing a fix (IoU < 0.9): tasks 2, 4, 5, 6. 10 % and 20 % of 6 review 1 and 2 samples: task 4
    # (0.10), then the tie 2/5 at 0.30 (both need a fix); 50 % reviews 3: tasks 4, 2, 5.
    curve = ranking["review_curve"]
    assert curve["needs_fixing"] == 4
    assert [point["found"]["value"] for point in curve["points"]] == pytest.approx([1 / 4, 2 / 4, 3 / 4])
    assert [point["random"] for point in curve["points"]] == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert json.loads((tmp_path / "out" / "report.json").read_text())["score_ranking"] == result["score_ranking"]
    rows = read_csv(tmp_path / "out" / "samples.csv")
    assert [float(row["score"]) for row in rows] == [score for score, _ in CASES]


def test_the_region_score_stands_in_for_a_missing_prediction_score_and_nonsense_scores_count_as_none(tmp_path, captured_task):
    tasks = [
        with_score(pair_task(captured_task, 1, HUMAN, CASES[0][1]), None, region_score=0.7),
        with_score(pair_task(captured_task, 2, HUMAN, CASES[1][1]), 0.2, region_score=0.9),  # the prediction's wins
        with_score(pair_task(captured_task, 3, HUMAN, CASES[2][1]), 1.5),
        with_score(pair_task(captured_task, 4, HUMAN, CASES[3][1]), True),  # a bool is not a score
        with_score(pair_task(captured_task, 5, HUMAN, CASES[4][1]), None),
    ]
    path = write_export(tmp_path, tasks)
    result = evaluate_export(ExportSource(path), tmp_path / "out", SampleSettings())
    assert [row["score"] for row in read_csv(tmp_path / "out" / "samples.csv")] == ["0.7", "0.2", "", "", ""]
    ranking = result["score_ranking"]["by_model_version"]["v1"]
    assert (ranking["scored_samples"], ranking["unscored_samples"]) == (2, 3)


def test_an_export_without_scores_gives_null_figures_with_reasons_and_says_so_on_the_page(tmp_path, captured_task):
    tasks = [with_score(pair_task(captured_task, index + 1, HUMAN, model), None) for index, (_, model) in enumerate(CASES)]
    result = evaluate_export(ExportSource(write_export(tmp_path, tasks)), tmp_path / "out", SampleSettings())
    ranking = result["score_ranking"]["by_model_version"]["v1"]
    assert ranking["scored_samples"] == 0 and ranking["unscored_samples"] == 6
    for figure in (ranking["auroc"], ranking["spearman"], ranking["review_curve"]["points"][0]["found"]):
        assert figure == {"value": None, "reason": "no sample's prediction carries a score"}
    page = (tmp_path / "out" / "report.html").read_text()
    assert "No prediction carries a score" in page and "Review curve" not in page


# ---------------------------------------------------------------- the page
def test_the_page_tables_the_figures_and_plots_the_review_curve_and_iou_by_score(tmp_path, captured_task):
    evaluate_export(ExportSource(scored_export(tmp_path, captured_task)), tmp_path / "out", SampleSettings())
    page = (tmp_path / "out" / "report.html").read_text()
    section = page.split("Prediction scores: review the least confident first?")[1].split("<h2>")[0]
    assert "<th>v1</th><td>6</td><td>0</td>" in section
    assert "<td>50.0 % (33.3 %)</td>" in section  # lowest 20 %: 2 of the 4 to fix, random 2 of 6
    review_curve = section.split("<svg")[1]
    assert "Review curve" in review_curve and "random order" in review_curve
    assert "2 reviewed: 50% found (random 33%)" in review_curve
    iou_by_score = section.split("<svg")[2]
    # score bins holding samples: 0.1, 0.3 (2), 0.6, 0.8, 0.9 → five dots; 0.3-0.4 has mean IoU (0.5 + 0.45) / 2
    assert iou_by_score.count("<circle") == 5 and "mean IoU 0.475 (2 samples)" in iou_by_score


def test_review_curve_plot_places_points_at_the_share_reviewed_and_found():
    ranking = {"v1": {"scored_samples": 10, "review_curve": {"needs_fixing": 4, "points": [
        {"percent": 50, "reviewed": 5, "found": {"value": 0.75, "reason": None}, "random": 0.5}]}}}
    svg = report.svg_review_curve(ranking, width=520, axes_height=260)
    left, right, top, bottom = 58, 16, 12, 40  # report's plot margins
    plot_width, plot_height = 520 - left - right, 260 - top - bottom
    x, y = left + plot_width * 0.5, top + plot_height * (1 - 0.75)
    assert f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"' in svg
    assert 'stroke-dasharray="5 4"' in svg  # random order's diagonal


# ---------------------------------------------------------------- the review queue
def test_review_queue_lists_scored_tasks_lowest_score_first_with_links_and_iou_when_annotated(tmp_path, captured_task):
    tasks = [with_score(pair_task(captured_task, index + 1, HUMAN, model), score) for index, (score, model) in enumerate(CASES)]
    unannotated = with_score(task(captured_task, 7, [], [prediction(captured_task, [brush(captured_task, HUMAN)])]), 0.05)
    unscored = with_score(pair_task(captured_task, 8, HUMAN, HUMAN), None)
    hostile = with_score(pair_task(captured_task, 9, HUMAN, HUMAN, expression='=HYPERLINK("http://evil","x")'), 0.99)
    path = write_export(tmp_path, [*tasks, unannotated, unscored, hostile])
    queue = tmp_path / "queues" / "review.csv"
    evaluate_export(ExportSource(path), tmp_path / "out", SampleSettings(), review_queue=queue,
                    label_studio_url="http://ls.example:8080/")
    rows = read_csv(queue)
    assert list(rows[0]) == ["task_id", "task_link", "model_version", "expression", "score", "iou"]
    # task 7 (0.05, not annotated), 4 (0.10), the tie 2 and 5 (0.30) in export order, 6, 3, 1, 9; 8 has no score
    assert [row["task_id"] for row in rows] == ["7", "4", "2", "5", "6", "3", "1", "9"]
    assert rows[0]["iou"] == "" and rows[0]["expression"] == "thing 7"
    assert [float(row["iou"]) for row in rows[1:-1]] == pytest.approx([0.0, 0.5, 0.45, 0.75, 0.9, 1.0])
    assert rows[1]["score"] == "0.1" and rows[1]["model_version"] == "v1"
    project = captured_task["project"]
    assert rows[1]["task_link"] == f"http://ls.example:8080/projects/{project}/data?task=4"
    assert rows[-1]["expression"] == "'" + '=HYPERLINK("http://evil","x")'  # neutralised as in samples.csv
    assert sorted(p.name for p in queue.parent.iterdir()) == ["review.csv"]  # no staging folder left


def test_review_queue_without_a_label_studio_url_has_empty_links_and_can_sit_beside_the_outputs(tmp_path, captured_task, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    outdir = tmp_path / "out"
    assert run_cli(str(scored_export(tmp_path, captured_task)), "-o", str(outdir), "--review-queue", str(outdir / "queue.csv")) == 0
    rows = read_csv(outdir / "queue.csv")
    assert len(rows) == 6 and {row["task_link"] for row in rows} == {""}
    assert sorted(p.name for p in outdir.iterdir()) == ["queue.csv", "report.html", "report.json", "samples.csv"]


def test_review_queue_may_not_replace_an_output(tmp_path, captured_task, capsys):
    outdir = tmp_path / "out"
    code = run_cli(str(scored_export(tmp_path, captured_task)), "-o", str(outdir), "--review-queue", str(outdir / "samples.csv"))
    assert code == 2
    assert "--review-queue" in capsys.readouterr().err and not outdir.exists()


def test_a_failed_run_writes_no_review_queue(tmp_path, captured_task, monkeypatch):
    queue = tmp_path / "elsewhere" / "queue.csv"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "render_html", broken)
    with pytest.raises(OSError):
        evaluate_export(ExportSource(scored_export(tmp_path, captured_task)), tmp_path / "out", SampleSettings(),
                        review_queue=queue)
    assert not queue.exists() and not (tmp_path / "out").exists()


def test_the_summary_prints_each_scored_versions_figures(tmp_path, captured_task, capsys):
    assert run_cli(str(scored_export(tmp_path, captured_task)), "-o", str(tmp_path / "out")) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("v1 scores:"))
    assert "of 4 masks needing a fix (IoU < 0.9)" in line and "lowest 20 % finds 50.0 % (random 33.3 %)" in line
