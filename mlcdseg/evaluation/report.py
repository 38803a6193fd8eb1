"""Evaluation outputs: report.json, samples.csv and a self-contained report.html.

The writers take open text streams; evaluate opens them with mlcdseg.atomic_files, so a failed
run leaves no partial file and keeps the previous outputs. The HTML page has no external
assets: inline CSS, SVG plots drawn here and overlay pictures as PNG data URIs.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mlcdseg.errors import MlcdsegError
from mlcdseg.evaluation.metrics import FRACTION_KEYS, PRECISION_THRESHOLDS
from mlcdseg.evaluation.review import OUTCOMES
from mlcdseg.masks.images import mask_image, mask_outline

if TYPE_CHECKING:
    from mlcdseg.evaluation.scoring import ComparedSample

SAMPLE_COLUMNS = (
    "task_id", "expression", "split", "model_version", "annotator",
    "intersection", "union", "iou", "human_area", "model_area", "lead_time", "score",
)
#: Overlay contour colours, fixed and unlike each other: the model's mask, the human's, and where
#: both boundaries coincide. Contours leave the image's own colours untouched inside the masks.
MODEL_COLOUR, HUMAN_COLOUR, BOTH_COLOUR = (255, 0, 255), (0, 230, 255), (255, 225, 0)
OVERLAY_KEY = ((MODEL_COLOUR, "model"), (HUMAN_COLOUR, "human"), (BOTH_COLOUR, "both"))
CONTOUR_PIXELS = 2
ImageLoader = Callable[[str], Image.Image]
#: Margins of every plot's axes in px (left: y ticks and label, right, top, bottom: x ticks and
#: label); the legend goes below the axes, one line per series, so long names are never cut.
_PLOT_MARGINS = (58, 16, 12, 40)
_LEGEND_LINE = 16
_TICK_CHAR_PX = 6.5  # the widest average character of the 11 px tick font
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


class SafeCsvWriter:
    """A CSV written row by row under a header of `columns`, safe to open in a spreadsheet."""

    def __init__(self, stream: IO[str], columns: Sequence[str]) -> None:
        self._writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
        self._writer.writeheader()

    def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (dicts keyed by the columns; other keys are left out, None is an empty cell).

        Text cells that a spreadsheet would run as a formula get a leading "'" (see
        spreadsheet_safe); numbers are written as they are.
        """
        self._writer.writerows(
            {column: spreadsheet_safe(value) for column, value in row.items()} for row in rows
        )


class SampleCsvWriter(SafeCsvWriter):
    """samples.csv written row by row, with a header of SAMPLE_COLUMNS."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream, SAMPLE_COLUMNS)


#: First characters that make a spreadsheet treat a cell as a formula (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """`value`, with a "'" put before a string that starts like a formula; other types unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def write_json(stream: IO[str], content: Mapping[str, Any]) -> None:
    """Write `content` as indented JSON followed by a newline."""
    json.dump(content, stream, indent=2, ensure_ascii=False)
    stream.write("\n")


def overlay_data_uri(
    human_mask: np.ndarray, model_mask: np.ndarray, image: Image.Image | None, max_side: int = 320
) -> str:
    """A PNG data URI of both bool (H, W) masks' contours, over the image when given, at most max_side px.

    Contours CONTOUR_PIXELS wide, drawn at the picture's size: MODEL_COLOUR for the model's mask,
    HUMAN_COLOUR for the human's, BOTH_COLOUR where the two coincide; the image shows unchanged
    (a dark grey background without one).
    """
    height, width = human_mask.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    human_small, model_small = (
        np.asarray(mask_image(mask).resize(size, Image.Resampling.NEAREST)) > 0 for mask in (human_mask, model_mask)
    )
    if image is None:
        picture = np.full((size[1], size[0], 3), 40, dtype=np.uint8)
    else:
        picture = np.array(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
    human_outline = mask_outline(human_small, CONTOUR_PIXELS)
    model_outline = mask_outline(model_small, CONTOUR_PIXELS)
    picture[human_outline] = HUMAN_COLOUR
    picture[model_outline] = MODEL_COLOUR
    picture[human_outline & model_outline] = BOTH_COLOUR
    buffer = io.BytesIO()
    Image.fromarray(picture, mode="RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class WorstTaskView:
    """One of the worst samples as the page shows it: its CSV row, overlay picture and a note."""

    row: Mapping[str, Any]
    picture: str
    note: str | None


def worst_task_views(cases: Sequence[ComparedSample], load_image: ImageLoader | None) -> list[WorstTaskView]:
    """Overlay pictures of the worst samples, over their task image when it can be loaded."""
    views = []
    for case in cases:
        human_mask, model_mask = case.masks()
        image, note = None, "image not reachable: the task has no image reference"
        if case.sample.image and load_image is None:
            note = "image not reachable: no image loader was given"
        elif case.sample.image:
            try:
                image, note = load_image(case.sample.image), None
            except MlcdsegError as error:
                note = f"image not reachable: {error}"
        if image is not None and image.size != human_mask.shape[::-1]:
            image, note = None, f"image is {image.width}x{image.height} but the masks are {human_mask.shape[1]}x{human_mask.shape[0]}"
        views.append(WorstTaskView(case.sample.row(), overlay_data_uri(human_mask, model_mask, image), note))
    return views


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal; an en dash for None."""
    return "–" if value is None else f"{100 * value:.1f}"


def _text(value: Any) -> str:
    """HTML-escaped text of any value; an en dash for None."""
    return "–" if value is None else html.escape(str(value))


def _svg_frame(width: int, height: int, title: str, body: Sequence[str]) -> str:
    """An inline SVG element with an accessible title."""
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{html.escape(title)}</title>' + "".join(body) + "</svg>"
    )


def _legend(names: Sequence[str], x: float, y: float, width: float) -> list[str]:
    """Colour swatches with the series names, one per line from (x, y); a name longer than the
    picture's `width` leaves room for is shortened with an ellipsis (the full name is its tooltip)."""
    items = []
    most_chars = max(8, int((width - x - 14) / _TICK_CHAR_PX))
    for index, name in enumerate(names):
        top = y + _LEGEND_LINE * index
        shown = name if len(name) <= most_chars else name[: most_chars - 1] + "…"
        items.append(f'<rect x="{x}" y="{top}" width="10" height="10" fill="{PALETTE[index % len(PALETTE)]}"/>')
        items.append(
            f'<text x="{x + 14}" y="{top + 9}" class="tick legend"><title>{html.escape(name)}</title>'
            f"{html.escape(shown)}</text>"
        )
    return items


def _plot_height(axes_height: int, series: int) -> int:
    """The height of a plot whose axes take `axes_height` px, with a legend line per series below."""
    return axes_height + 8 + _LEGEND_LINE * series


def _axis_labels(x_label: str, y_label: str, left: int, top: int, plot_width: float, plot_height: float) -> list[str]:
    """The x axis label under the tick labels and the y axis label, turned, left of the tick labels."""
    x_label_y = top + plot_height + 34
    y_centre = top + plot_height / 2
    return [
        (
            f'<text x="{left + plot_width / 2:.1f}" y="{x_label_y:.1f}" class="tick axis-label" text-anchor="middle">'
            f"{html.escape(x_label)}</text>"
        ),
        (
            f'<text x="12" y="{y_centre:.1f}" class="tick axis-label" text-anchor="middle" '
            f'transform="rotate(-90 12 {y_centre:.1f})">{html.escape(y_label)}</text>'
        ),
    ]


def svg_histogram(counts: Mapping[str, Sequence[int]], width: int = 520, axes_height: int = 260) -> str:
    """Grouped bar chart of per-sample IoU counts in equal bins over [0, 1], one series per version.

    The axes take `axes_height` px; the legend (one line per version) goes below them.
    """
    left, right, top, bottom = _PLOT_MARGINS
    plot_width, plot_height = width - left - right, axes_height - top - bottom
    height = _plot_height(axes_height, len(counts))
    bins = len(next(iter(counts.values()), [0] * 10))
    tallest = max((max(series) for series in counts.values()), default=0) or 1
    body = [f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" y2="{top + plot_height}" class="axis"/>']
    slot = plot_width / bins
    bar = slot * 0.8 / max(1, len(counts))
    for series_index, series in enumerate(counts.values()):
        for bin_index, count in enumerate(series):
            bar_height = plot_height * count / tallest
            x = left + bin_index * slot + slot * 0.1 + series_index * bar
            body.append(
                f'<rect x="{x:.1f}" y="{top + plot_height - bar_height:.1f}" width="{bar:.1f}" '
                f'height="{bar_height:.1f}" fill="{PALETTE[series_index % len(PALETTE)]}"><title>{count}</title></rect>'
            )
    for bin_index in range(0, bins + 1, max(1, bins // 5)):
        x = left + bin_index * slot
        body.append(f'<text x="{x:.1f}" y="{top + plot_height + 16}" class="tick" text-anchor="middle">{bin_index / bins:.1f}</text>')
    for tick in sorted({0, tallest // 2, tallest}):  # whole counts only, each once
        y = top + plot_height * (1 - tick / tallest)
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick}</text>')
    body += _axis_labels("IoU of the model mask against the human mask", "samples", left, top, plot_width, plot_height)
    body += _legend(list(counts), left, axes_height + 4, width)
    return _svg_frame(width, height, "Histogram of per-sample IoU", body)


def svg_precision_curve(
    metrics_by_version: Mapping[str, Mapping[str, Any]], width: int = 520, axes_height: int = 260
) -> str:
    """Precision@k for k in PRECISION_THRESHOLDS, one line per model version, in percent.

    The axes take `axes_height` px; the legend (one line per version) goes below them.
    """
    left, right, top, bottom = _PLOT_MARGINS
    plot_width, plot_height = width - left - right, axes_height - top - bottom
    height = _plot_height(axes_height, len(metrics_by_version))
    low, high = PRECISION_THRESHOLDS[0], PRECISION_THRESHOLDS[-1]
    body = _fraction_grid(left, top, plot_width, plot_height, lambda value: f"{value:.0%}")
    for threshold in PRECISION_THRESHOLDS:
        x = left + plot_width * (threshold - low) / (high - low)
        body.append(f'<text x="{x:.1f}" y="{top + plot_height + 16}" class="tick" text-anchor="middle">{threshold}</text>')
    body += _axis_labels("IoU threshold k", "precision@k (%)", left, top, plot_width, plot_height)
    for index, metrics in enumerate(metrics_by_version.values()):
        points = []
        for threshold in PRECISION_THRESHOLDS:
            value = metrics.get(f"precision@{threshold}")
            if value is not None:
                x = left + plot_width * (threshold - low) / (high - low)
                points.append((x, top + plot_height * (1 - value), None))
        body += _series(points, PALETTE[index % len(PALETTE)])
    body += _legend(list(metrics_by_version), left, axes_height + 4, width)
    return _svg_frame(width, height, "Precision at IoU threshold k", body)


def _fraction_grid(
    left: int, top: int, plot_width: float, plot_height: float, label: Callable[[float], str]
) -> list[str]:
    """The frame of axes whose y runs over [0, 1], with grid lines and `label`-ed ticks at each quarter."""
    body = [f'<rect x="{left}" y="{top}" width="{plot_width}" height="{plot_height}" class="frame"/>']
    for quarter in range(5):
        value = quarter / 4
        y = top + plot_height * (1 - value)
        body.append(f'<line x1="{left}" y1="{y}" x2="{left + plot_width}" y2="{y}" class="grid"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4}" class="tick" text-anchor="end">{label(value)}</text>')
    return body


def _x_fraction_ticks(left: int, top: int, plot_width: float, plot_height: float, label: Callable[[float], str]) -> list[str]:
    """Tick labels under axes whose x runs over [0, 1], at each quarter."""
    return [
        f'<text x="{left + plot_width * quarter / 4:.1f}" y="{top + plot_height + 16}" class="tick" '
        f'text-anchor="middle">{label(quarter / 4)}</text>'
        for quarter in range(5)
    ]


def _series(points: Sequence[tuple[float, float, str | None]], colour: str, dashed: bool = False) -> list[str]:
    """A line through (x, y) picture points with a dot at each; a point's text, when given, is its tooltip."""
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    body = [
        f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)}" fill="none" '
        f'stroke="{colour}" stroke-width="2"{dash}/>'
    ]
    for x, y, tooltip in points:
        title = f"<title>{html.escape(tooltip)}</title>" if tooltip else ""
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">{title}</circle>')
    return body


def svg_review_curve(ranking_by_version: Mapping[str, Mapping[str, Any]], width: int = 520, axes_height: int = 260) -> str:
    """The review curve: share of the masks that needed fixing found against share of samples
    reviewed lowest score first, one line per model version, and random order's diagonal (dashed).

    Versions whose curve is undefined are left out; the legend (one line per version) goes below.
    """
    left, right, top, bottom = _PLOT_MARGINS
    plot_width, plot_height = width - left - right, axes_height - top - bottom
    curves = {
        version: ranking["review_curve"]["points"] for version, ranking in ranking_by_version.items()
        if any(point["found"]["value"] is not None for point in ranking["review_curve"]["points"])
    }
    height = _plot_height(axes_height, len(curves))
    body = _fraction_grid(left, top, plot_width, plot_height, lambda value: f"{value:.0%}")
    body += _x_fraction_ticks(left, top, plot_width, plot_height, lambda value: f"{value:.0%}")
    body += _axis_labels("samples reviewed, lowest score first", "masks needing a fix found", left, top, plot_width, plot_height)

    def picture(reviewed: float, found: float, tooltip: str | None = None) -> tuple[float, float, str | None]:
        return left + plot_width * reviewed, top + plot_height * (1 - found), tooltip

    body += _series([picture(0, 0), picture(1, 1)], "#9ca3af", dashed=True)
    label_x, label_y, _ = picture(0.55, 0.59)  # just above the diagonal, along it
    body.append(
        f'<text x="{label_x:.1f}" y="{label_y:.1f}" class="tick" transform="rotate('
        f'-{math.degrees(math.atan2(plot_height, plot_width)):.1f} {label_x:.1f} {label_y:.1f})">random order</text>'
    )
    for index, points in enumerate(curves.values()):
        line = [picture(0, 0)]
        for point in points:
            found = point["found"]["value"]
            if found is not None:
                tooltip = f"{point['reviewed']} reviewed: {found:.0%} found (random {point['random']:.0%})"
                line.append(picture(point["random"], found, tooltip))
        body += _series([*line, picture(1, 1)], PALETTE[index % len(PALETTE)])
    body += _legend(list(curves), left, axes_height + 4, width)
    return _svg_frame(width, height, "Review curve: masks needing a fix found, lowest score first", body)


def svg_iou_by_score(ranking_by_version: Mapping[str, Mapping[str, Any]], width: int = 520, axes_height: int = 260) -> str:
    """Mean IoU against the model's score, per score bin, one line per model version (empty bins left out).

    The legend (one line per version with a scored sample) goes below the axes.
    """
    left, right, top, bottom = _PLOT_MARGINS
    plot_width, plot_height = width - left - right, axes_height - top - bottom
    scored = {version: ranking for version, ranking in ranking_by_version.items() if ranking["scored_samples"]}
    height = _plot_height(axes_height, len(scored))
    body = _fraction_grid(left, top, plot_width, plot_height, lambda value: f"{value:.2f}")
    body += _x_fraction_ticks(left, top, plot_width, plot_height, lambda value: f"{value:.2f}")
    body += _axis_labels("score of the prediction", "mean IoU against the human mask", left, top, plot_width, plot_height)
    for index, ranking in enumerate(scored.values()):
        points = [
            (left + plot_width * (score_bin["from"] + score_bin["to"]) / 2, top + plot_height * (1 - score_bin["mean_iou"]),
             f"score {score_bin['from']:.1f}-{score_bin['to']:.1f}: mean IoU {score_bin['mean_iou']:.3f} "
             f"({score_bin['samples']} samples)")
            for score_bin in ranking["iou_by_score_bin"] if score_bin["samples"]
        ]
        body += _series(points, PALETTE[index % len(PALETTE)])
    body += _legend(list(scored), left, axes_height + 4, width)
    return _svg_frame(width, height, "Mean IoU by score of the prediction", body)


def refcoco_table(by_version_and_split: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """RefCOCO-style table: rows are model versions, columns split x (cIoU, gIoU) in percent."""
    splits = ["all"] + sorted({s for columns in by_version_and_split.values() for s in columns} - {"all"})
    head = "".join(f'<th colspan="2">{_text(split)}</th>' for split in splits)
    sub = "<th>cIoU</th><th>gIoU</th>" * len(splits)
    rows = []
    for version, columns in by_version_and_split.items():
        cells = "".join(
            f"<td>{percent(columns.get(split, {}).get('cIoU'))}</td><td>{percent(columns.get(split, {}).get('gIoU'))}</td>"
            for split in splits
        )
        rows.append(f"<tr><th>{_text(version)}</th>{cells}</tr>")
    return (
        f'<table class="refcoco"><thead><tr><th rowspan="2">model version</th>{head}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def metrics_table(groups: Mapping[str, Mapping[str, Any]], label: str) -> str:
    """Every metric (percent) and the sample counts of each group, one row per group."""
    head = "".join(f"<th>{html.escape(name.replace('precision@', 'Pr@'))}</th>" for name in FRACTION_KEYS)
    rows = "".join(
        f"<tr><th>{_text(group)}</th>{''.join(f'<td>{percent(metrics.get(name))}</td>' for name in FRACTION_KEYS)}"
        f"<td>{metrics.get('samples')}</td><td>{metrics.get('no_target_samples')}</td></tr>"
        for group, metrics in groups.items()
    )
    return (
        f"<table><thead><tr><th>{html.escape(label)}</th>{head}<th>samples</th><th>no-target</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


_OUTCOME_HEADINGS = {
    "accepted": "accepted as it was (IoU ≥ 0.95)",
    "corrected": "lightly corrected (0.5 ≤ IoU < 0.95)",
    "redrawn": "redrawn (IoU < 0.5)",
}


def _seconds(value: float | None) -> str:
    """A lead time in seconds for the page: one decimal under a minute, else minutes and seconds."""
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s"


def review_table(groups: Mapping[str, Mapping[str, Any]], label: str) -> str:
    """Per group: samples, then per review outcome its share (count) and the median lead time."""
    head = "".join(f'<th colspan="2">{html.escape(_OUTCOME_HEADINGS[outcome])}</th>' for outcome, _ in OUTCOMES)
    sub = "<th>share (samples)</th><th>median lead time</th>" * len(OUTCOMES)
    rows = []
    for group, review in groups.items():
        cells = "".join(
            f"<td>{percent(review[outcome]['share'])} % ({review[outcome]['count']})</td>"
            f"<td>{_seconds(review[outcome]['median_lead_time_s'])}</td>"
            for outcome, _ in OUTCOMES
        )
        rows.append(f"<tr><th>{_text(group)}</th><td>{review['samples']}</td>{cells}</tr>")
    return (
        f'<table class="review"><thead><tr><th rowspan="2">{html.escape(label)}</th><th rowspan="2">samples</th>'
        f"{head}</tr><tr>{sub}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def review_section(review: Mapping[str, Any]) -> str:
    """The page's review section: what the pre-annotations saved, by model version and by annotator."""
    return (
        "<h2>Review: what the pre-annotations saved</h2>"
        "<p class='muted'>Each submitted mask against the model's pre-annotation of its task: accepted as it "
        "was, lightly corrected or redrawn; the median lead time is the annotators' time per annotation in "
        "that group (Label Studio's lead_time; approximate, within 1 %).</p>"
        "<h3>By model version</h3>" + review_table(review["by_model_version"], "model version")
        + "<h3>By annotator</h3>" + review_table(review["by_annotator"], "annotator")
    )


def _figure_cell(figure: Mapping[str, Any], digits: int = 3) -> str:
    """A table cell of a {"value", "reason"} figure: the value, or an en dash whose tooltip is the reason."""
    if figure["value"] is None:
        return f'<td title="{html.escape(figure["reason"] or "")}">–</td>'
    return f"<td>{figure['value']:.{digits}f}</td>"


def score_ranking_table(ranking_by_version: Mapping[str, Mapping[str, Any]], thresholds: Mapping[str, float]) -> str:
    """Per model version: scored and unscored samples, AUROC, Spearman and the review curve's points."""
    reviewed_percents = [point["percent"] for point in next(iter(ranking_by_version.values()))["review_curve"]["points"]]
    head = "".join(f"<th>lowest {reviewed} %: found (random)</th>" for reviewed in reviewed_percents)
    rows = []
    for version, ranking in ranking_by_version.items():
        curve = "".join(
            f"<td>{percent(point['found']['value'])} % ({percent(point['random'])} %)</td>"
            if point["found"]["value"] is not None else _figure_cell(point["found"])
            for point in ranking["review_curve"]["points"]
        )
        rows.append(
            f"<tr><th>{_text(version)}</th><td>{ranking['scored_samples']}</td><td>{ranking['unscored_samples']}</td>"
            f"{_figure_cell(ranking['auroc'])}{_figure_cell(ranking['spearman'])}"
            f"<td>{ranking['review_curve']['needs_fixing']}</td>{curve}</tr>"
        )
    return (
        "<table class='score-ranking'><thead><tr><th>model version</th><th>scored</th><th>unscored</th>"
        f"<th>AUROC (IoU &lt; {thresholds['redrawn_iou_below']})</th><th>Spearman (score, IoU)</th>"
        f"<th>needing a fix (IoU &lt; {thresholds['needs_fixing_iou_below']})</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def score_ranking_section(ranking: Mapping[str, Any]) -> str:
    """The page's section on the prediction scores: does reviewing the lowest scores first find the bad masks?"""
    by_version = ranking["by_model_version"]
    heading = "<h2>Prediction scores: review the least confident first?</h2>"
    if not any(version["scored_samples"] for version in by_version.values()):
        return heading + (
            "<p class='muted'>No prediction carries a score (the official engine sends none; the native "
            "engine and the stand-in do).</p>"
        )
    thresholds = ranking["thresholds"]
    return (
        heading + "<p class='muted'>How well the model's score ranks its masks: AUROC of a low score for "
        f"the masks redrawn (IoU &lt; {thresholds['redrawn_iou_below']}; 0.5 is chance, 1 perfect), Spearman's "
        f"rank correlation of score and IoU, and the share of the masks that needed a fix (IoU &lt; "
        f"{thresholds['needs_fixing_iou_below']}) found by reviewing the lowest-scored samples first, against "
        "random order. A dash's tooltip says why the figure is undefined.</p>"
        + score_ranking_table(by_version, thresholds)
        + f"<div class='plots'>{svg_review_curve(by_version)}{svg_iou_by_score(by_version)}</div>"
    )


def _worst_card(view: WorstTaskView) -> str:
    """One figure of the worst-samples grid."""
    row = view.row
    note = f'<p class="note">{html.escape(view.note)}</p>' if view.note else ""
    return (
        f'<figure><img src="{view.picture}" alt="overlay of task {_text(row.get("task_id"))}">'
        f"<figcaption><b>task {_text(row.get('task_id'))}</b> · IoU {float(row.get('iou', 0)):.3f}<br>"
        f"“{_text(row.get('expression'))}”<br>model {_text(row.get('model_version'))} · annotator {_text(row.get('annotator'))}<br>"
        f"human {row.get('human_area')} px · model {row.get('model_area')} px{note}</figcaption></figure>"
    )


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111827;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d1d5db;padding:4px 8px;text-align:right}
thead th,tbody th{background:#f3f4f6;text-align:center}tbody th{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:24px}.axis,.frame{stroke:#6b7280;fill:none}.grid{stroke:#e5e7eb}
.tick{font-size:11px;fill:#374151}.grid-worst{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;width:320px}figure img{max-width:320px;border:1px solid #d1d5db}
figcaption{font-size:12px}.note{color:#b45309;margin:2px 0}.muted{color:#6b7280}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle;
border:3px solid;background:#282828}
h3{font-size:15px;margin-bottom:4px}
"""


def render_html(content: Mapping[str, Any], worst: Sequence[WorstTaskView], max_skipped: int = 200) -> str:
    """The self-contained report page for a report.json `content` and its worst samples."""
    source = content["source"]
    skipped = content["skipped"]
    colour_key = "Contours: " + "".join(
        f'<span style="border-color:rgb{colour}"></span>{label}' for colour, label in OVERLAY_KEY
    )
    skipped_items = "".join(f"<li>task {_text(s['task_id'])}: {_text(s['reason'])}</li>" for s in skipped[:max_skipped])
    more = f"<p class='muted'>… and {len(skipped) - max_skipped} more (see report.json)</p>" if len(skipped) > max_skipped else ""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mlcdseg evaluation</title>",
        f"<style>{_CSS}</style></head><body><h1>mlcdseg evaluation: human masks vs model pre-annotations</h1>",
        (
            f"<p class='muted'>source {_text(source.get('path'))} · {source['tasks']} tasks · "
            f"{source['samples']} samples · {source['skipped']} skipped · "
            f"annotation: {_text(source.get('annotation'))}</p>"
        ),
        "<h2>RefCOCO table (%)</h2>", refcoco_table(content["by_model_version_and_split"]),
        "<h2>All metrics by model version (%)</h2>", metrics_table(content["by_model_version"], "model version"),
        "<h2>Overall (%)</h2>", metrics_table({"all samples": content["overall"]}, ""),
        *(f"<h2>By {label} (%)</h2>" + metrics_table(content[key], label)
          for key, label in (("by_split", "split"), ("by_annotator", "annotator")) if content[key]),
        review_section(content["review"]),
        score_ranking_section(content["score_ranking"]),
        "<h2>Plots</h2><div class='plots'>",
        svg_histogram(content["iou_histogram"]["counts"] or {"none": [0] * content["iou_histogram"]["bins"]}),
        svg_precision_curve(content["by_model_version"]), "</div>",
        f"<h2>Worst samples</h2><p class='key'>{colour_key}</p><div class='grid-worst'>",
        "".join(_worst_card(view) for view in worst) or "<p class='muted'>no samples</p>", "</div>",
        f"<h2>Skipped ({len(skipped)})</h2><ul>{skipped_items}</ul>{more}",
        "</body></html>",
    ]
    return "\n".join(parts)
