"""The `import-refcoco` and `export-refcoco` subcommands: argument parsing and printed summaries."""

from __future__ import annotations

import argparse
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlcdseg.cli.export_source_options import add_export_source_arguments, opened_export_source
from mlcdseg.labelstudio.label_config import MaskControl
from mlcdseg.refcoco.dataset import DATASET_SPLITS, REFER_SPLITS
from mlcdseg.refcoco.exporter import COCO_FILE, NO_TARGET_FILE, export_refcoco
from mlcdseg.refcoco.importer import GroundTruthRegions, import_refcoco

_SPLIT_RULE = textwrap.fill(
    f"A split must be one REFER's getRefIds can select ({', '.join(REFER_SPLITS)}); one the dataset does not "
    "publish (e.g. test for refcoco/unc) is accepted with a warning.",
    width=96,
)

_IMPORT_DESCRIPTION = f"""\
Read ROOT/DATASET/refs(SPLIT_BY).p and ROOT/DATASET/instances.json and write a Label Studio
import JSON (a list of tasks), one task per sentence, with data {{image: PREFIX + the image's
file_name, expression: the sentence's normalised text, ref_id, sent_id, ann_id, image_id, split}}.
export-refcoco reads those ids back.

--with-ground-truth adds the reference mask as an imported annotation (ground_truth: true) in the
control --control on the Image tag --to-name: brush (lossless, bit-exact through Label Studio
and back) or polygon (loses boundary pixels).

{_SPLIT_RULE}

refs files are pickles: they are read as plain data only (lists, dicts, strings, numbers); a
file holding anything else is refused.
"""

_EXPORT_DESCRIPTION = f"""\
Write the human masks of a Label Studio export as a RefCOCO dataset that the REFER API loads, into
ROOT/DATASET/, all or nothing:

  refs(SPLIT_BY).p  one ref per human-masked object; tasks showing the same image and the same
                    mask (bit for bit) with different expressions are one ref with several
                    sentences {{sent_id, sent, raw, tokens, task_id, iou, model_version}}; iou is
                    the model mask's IoU against the human mask, where the task has a prediction:
                    of --model-version, else the task's newest (model_version names which); the
                    human masks are the dataset whatever model versions the export holds
  instances.json    COCO images, annotations (segmentation [RLE with counts as str], area, bbox,
                    iscrowd 0) and categories (one per mask label, ids from 1)
  {COCO_FILE:<17} the same for pycocotools.coco.COCO (segmentation = the RLE itself)
  {NO_TARGET_FILE:<17} samples with an empty human mask (no COCO annotation can hold them)

Ids come from the tasks' image_id, ref_id, ann_id and sent_id data fields (as import-refcoco
writes them) where present and unique, else the smallest free ones. A task's split is its split
data field, else --default-split. Samples without an expression or an image file name are
skipped and counted.

{_SPLIT_RULE}

SOURCE is a Label Studio JSON export file (with full predictions for IoU: an export snapshot);
--label-studio-url, --api-key and --project export a live project instead.
"""


def register_import_refcoco(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `mlcdseg import-refcoco ROOT -o TASKS.json`."""
    parser = subparsers.add_parser(
        "import-refcoco",
        help="turn a RefCOCO (REFER) dataset into Label Studio tasks, one per sentence",
        description=_IMPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", metavar="ROOT", help="data root holding DATASET/refs(SPLIT_BY).p and instances.json")
    parser.add_argument("-o", "--output", required=True, metavar="TASKS_JSON", help="Label Studio import file to write")
    _add_dataset_arguments(parser)
    parser.add_argument("--split", help="split to import, selected as REFER.getRefIds does (default: every ref)")
    parser.add_argument(
        "--image-url-prefix",
        required=True,
        metavar="PREFIX",
        help="put before each file_name, e.g. /data/local-files/?d=coco/train2014/",
    )
    parser.add_argument("--with-ground-truth", action="store_true", help="add the reference mask as an annotation")
    parser.add_argument("--label", help="label of the ground-truth regions (default: the COCO category name)")
    parser.add_argument("--control", default="mask", help="BrushLabels/PolygonLabels control name (default: mask)")
    parser.add_argument("--to-name", default="image", help="Image tag the control labels (default: image)")
    parser.add_argument(
        "--format", choices=("brush", "polygon"), default="brush", help="ground-truth region kind (default: brush)"
    )
    parser.set_defaults(handler=_run_import)
    return parser


def register_export_refcoco(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `mlcdseg export-refcoco SOURCE -o ROOT`."""
    parser = subparsers.add_parser(
        "export-refcoco",
        help="write the human masks of a Label Studio export as a RefCOCO (REFER) dataset",
        description=_EXPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", required=True, metavar="ROOT", help="data root; files go to ROOT/DATASET/")
    _add_dataset_arguments(parser)
    parser.add_argument("--default-split", default="val", help="split of tasks without one (default: val)")
    add_export_source_arguments(
        parser, model_version_help="model version whose IoU the sentences carry (default: each task's newest prediction)"
    )
    parser.set_defaults(handler=_run_export)
    return parser


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset and --split-by (checked against each other when the command runs)."""
    names = ", ".join(DATASET_SPLITS)
    parser.add_argument("--dataset", default="refcoco", help=f"REFER dataset name: {names} (default: refcoco)")
    variants = "; ".join(f"{name}: {', '.join(split_bys)}" for name, split_bys in DATASET_SPLITS.items())
    parser.add_argument("--split-by", default="unc", help=f"who split the dataset ({variants}; default: unc)")


def _run_import(arguments: argparse.Namespace) -> int:
    """Handler of `mlcdseg import-refcoco`."""
    ground_truth = None
    if arguments.with_ground_truth:
        control = MaskControl(arguments.control, arguments.format, arguments.to_name, labels=())
        ground_truth = GroundTruthRegions(control, arguments.label)
    counts = import_refcoco(
        arguments.root,
        arguments.output,
        dataset=arguments.dataset,
        split_by=arguments.split_by,
        split=arguments.split,
        image_url_prefix=arguments.image_url_prefix,
        ground_truth=ground_truth,
    )
    print(f"wrote {counts['tasks']} tasks ({counts['refs']} refs, {counts['images']} images) to {arguments.output}")
    return 0


def _run_export(arguments: argparse.Namespace) -> int:
    """Handler of `mlcdseg export-refcoco`."""
    with opened_export_source(arguments) as (source, settings):
        summary = export_refcoco(
            source.tasks(),
            arguments.output,
            settings,
            dataset=arguments.dataset,
            split_by=arguments.split_by,
            default_split=arguments.default_split,
        )
    if summary["model_version"]:
        iou = f", IoU of model version {summary['model_version']}"
    elif len(summary["model_versions_seen"]) > 1:
        iou = f", IoU of each task's newest prediction among {len(summary['model_versions_seen'])} model versions"
    else:
        iou = ""
    print(
        f"wrote {summary['refs']} refs ({summary['sentences']} sentences{iou}) on {summary['images']} images "
        f"and {summary['no_target']} no-target samples to {Path(arguments.output) / arguments.dataset}"
    )
    _print_reasons("skipped", summary["skipped"])
    _print_reasons("without IoU", summary["without_iou"])
    return 0


def _print_reasons(what: str, skips: Sequence[dict[str, Any]], shown: int = 5) -> None:
    """One line per most common reason, then one for the rest."""
    reasons = Counter(skip["reason"] for skip in skips)
    for reason, count in reasons.most_common(shown):
        print(f"{what}: {count} × {reason}")
    rest = sum(reasons.values()) - sum(count for _, count in reasons.most_common(shown))
    if rest:
        print(f"{what}: {rest} more for other reasons")
