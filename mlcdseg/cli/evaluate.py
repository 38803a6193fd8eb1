"""The `evaluate` subcommand: argument parsing, task images for the overlays, the printed summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from mlcdseg.evaluation import report
from mlcdseg.errors import ImageFetchError
from mlcdseg.evaluation.evaluate import OUTPUT_NAMES, evaluate_export
from mlcdseg.evaluation.score_ranking import NEEDS_FIXING_IOU_BELOW, REDRAWN_IOU_BELOW
from mlcdseg.cli.export_source_options import add_export_source_arguments, opened_export_source, positive_int
from mlcdseg.labelstudio.image_fetch import ImageFetcher
from mlcdseg.masks.images import load_image


def task_image_loader(label_studio_url: str | None, api_key: str | None) -> report.ImageLoader:
    """Load a task image from a local path (or file:// URL), else through Label Studio's ImageFetcher."""
    fetcher = ImageFetcher(label_studio_url, api_key) if label_studio_url else None

    def load(reference: str) -> Image.Image:
        path = Path(reference.removeprefix("file://"))
        if path.is_file():
            return load_image(path)
        if fetcher is None:
            raise ImageFetchError(f"{reference} is not a local file; pass --label-studio-url and --api-key to fetch it")
        return fetcher.fetch(reference)

    return load


_DESCRIPTION = """\
Score the human-corrected masks of a Label Studio project against the model's pre-annotation
masks with the RefCOCO metrics (cIoU, gIoU, precision@0.5-0.9, N-acc, T-acc).

SOURCE is a Label Studio JSON export file with predictions serialized in full (an export
snapshot: POST /api/projects/<id>/exports with {"serialization_options": {"predictions":
{"only_id": false}}}); the plain /export gives prediction ids only and cannot be scored.
Instead of SOURCE, --label-studio-url, --api-key and --project make that snapshot of a live project.

Written into OUTDIR, all or nothing: report.json (overall, by_split, by_model_version,
by_annotator, skipped tasks with reasons, source), samples.csv (one row per task x annotator x
model version) and report.html (a self-contained page: RefCOCO-style table, IoU histogram,
precision@k curve, the prediction scores' review curve and IoU by score, mask overlays of the
worst samples). When the predictions carry a score (the native engine and the stand-in send
one), report.json's score_ranking says per model version how well it finds the masks that need
fixing: AUROC of a low score for IoU < 0.5, Spearman's correlation of score and IoU, and the
share of the masks with IoU < 0.9 found by reviewing the lowest-scored 10, 20, 50 % first.

--review-queue FILE.csv writes every scored prediction, annotated or not, lowest score first:
task id, Label Studio link (under --label-studio-url), model version, expression, score, IoU.
"""


def register_evaluate(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score human-corrected masks against model pre-annotations (RefCOCO metrics)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="directory for report.json, samples.csv, report.html")
    add_export_source_arguments(
        parser,
        model_version_help="score only this model version (default: each version separately)",
        live_project_description="The URL and key also fetch task images for the worst-sample overlays.",
    )
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N", help="processes decoding masks (default 1)")
    parser.add_argument("--worst", type=positive_int, default=12, metavar="K", help="worst samples shown with overlays (default 12)")
    parser.add_argument(
        "--review-queue", metavar="FILE.csv",
        help="also write the scored tasks in review order, lowest score first (task links under --label-studio-url)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_evaluate)
    return parser


def skip_summary(skipped_by_code: dict[str, dict], shown: int = 3) -> str:
    """The main skip reasons on one line: count and code of the `shown` most common, one example each."""
    if not skipped_by_code:
        return "the export holds no task"
    parts = [
        f"{entry['count']} {code} (e.g. task {entry['example']['task_id']}: {entry['example']['reason']})"
        for code, entry in list(skipped_by_code.items())[:shown]
    ]
    rest = sum(entry["count"] for entry in list(skipped_by_code.values())[shown:])
    return "; ".join(parts) + (f"; {rest} more for other reasons" if rest else "")


def run_evaluate(args: argparse.Namespace) -> int:
    """Run `mlcdseg evaluate` from parsed arguments; print a summary; MlcdsegError on failure."""
    if args.review_queue is not None and review_queue_replaces_an_output(Path(args.review_queue), Path(args.output)):
        print(f"mlcdseg: error: --review-queue {args.review_queue} would replace an output of {args.output}; "
              "give it another name", file=sys.stderr)
        return 2
    with opened_export_source(args) as (source, settings):
        result = evaluate_export(
            source, args.output, settings, workers=args.workers, worst_count=args.worst, quiet=args.quiet,
            load_image=task_image_loader(args.label_studio_url, args.api_key),
            review_queue=args.review_queue, label_studio_url=args.label_studio_url,
        )
    summary = result["source"]
    print(f"{summary['tasks']} tasks, {summary['samples']} samples, {summary['skipped']} skipped")
    if summary["samples"] == 0:
        print(f"mlcdseg: error: no sample was scored; {skip_summary(result['skipped_by_code'])}", file=sys.stderr)
        return 1
    if summary["skipped"]:
        print(f"skipped: {skip_summary(result['skipped_by_code'])}")
    for version, metrics in result["by_model_version"].items():
        print(f"{version}: cIoU {report.percent(metrics['cIoU'])}  gIoU {report.percent(metrics['gIoU'])}  "
              f"Pr@0.5 {report.percent(metrics['precision@0.5'])}  ({metrics['samples']} samples)")
    for version, ranking in result["score_ranking"]["by_model_version"].items():
        if ranking["scored_samples"]:
            print(score_ranking_line(version, ranking))
    print(f"wrote {Path(args.output) / 'report.html'}, report.json, samples.csv")
    if args.review_queue is not None:
        print(f"wrote the review queue {args.review_queue}")
    return 0


def review_queue_replaces_an_output(queue: Path, outdir: Path) -> bool:
    """Whether the review queue's path is one of the files evaluate writes into outdir."""
    return queue.absolute().parent == outdir.absolute() and queue.name in OUTPUT_NAMES


def score_ranking_line(version: str, ranking: dict) -> str:
    """One printed line: how well a model version's scores rank its masks (see score_ranking)."""

    def shown(figure: dict) -> str:
        return "undefined" if figure["value"] is None else f"{figure['value']:.3f}"

    curve = ", ".join(
        f"lowest {point['percent']} % finds {report.percent(point['found']['value'])} %"
        f" (random {report.percent(point['random'])} %)"
        for point in ranking["review_curve"]["points"]
    )
    return (f"{version} scores: AUROC (IoU < {REDRAWN_IOU_BELOW}) {shown(ranking['auroc'])}  "
            f"Spearman {shown(ranking['spearman'])}  of {ranking['review_curve']['needs_fixing']} masks "
            f"needing a fix (IoU < {NEEDS_FIXING_IOU_BELOW}), {curve}")
