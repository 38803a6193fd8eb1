"""`mlcdseg import-refcoco`: a RefCOCO (REFER) dataset as Label Studio tasks, one per sentence.

Each task's data holds the image URL (prefix + the image record's file_name; a ref's own
file_name carries an annotation suffix in RefCOCO and is ignored, as REFER's README says),
the expression (the normalised `sent`) and the REFER ids, so `export-refcoco` can give
them back. With ground truth, the reference mask becomes an imported annotation: a lossless
brush region (bit-exact through Label Studio and back) or polygons (which lose boundary pixels).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcdseg.atomic_files import write_files_atomically
from mlcdseg.labelstudio.label_config import MaskControl
from mlcdseg.refcoco.dataset import (
    ReferDataset,
    check_split,
    json_list_chunks,
    load_refer_dataset,
)
from mlcdseg.labelstudio.regions import regions_for_mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundTruthRegions:
    """How reference masks become annotations: the control to draw them in and a fixed label.

    label None labels each region with its annotation's COCO category name.
    """

    control: MaskControl
    label: str | None = None


def iter_import_tasks(
    dataset: ReferDataset,
    refs: Iterable[dict[str, Any]],
    image_url_prefix: str,
    ground_truth: GroundTruthRegions | None = None,
) -> Iterator[dict[str, Any]]:
    """Label Studio tasks for the refs, one per sentence, in ref then sentence order.

    data: {image, expression, ref_id, sent_id, ann_id, image_id, split}; with ground_truth
    each task also carries `annotations: [{"result": regions, "ground_truth": true}]`.
    """
    for ref in refs:
        image = dataset.images[ref["image_id"]]
        annotations = None
        if ground_truth is not None:
            label = ground_truth.label or dataset.categories.get(dataset.annotations[ref["ann_id"]].get("category_id"))
            regions = regions_for_mask(dataset.annotation_mask(ref), ground_truth.control, label)
            annotations = [{"result": regions, "ground_truth": True}]
        for sentence in ref["sentences"]:
            task: dict[str, Any] = {
                "data": {
                    "image": image_url_prefix + image["file_name"],
                    "expression": sentence["sent"],
                    "ref_id": ref["ref_id"],
                    "sent_id": sentence["sent_id"],
                    "ann_id": ref["ann_id"],
                    "image_id": ref["image_id"],
                    "split": ref["split"],
                }
            }
            if annotations is not None:
                task["annotations"] = annotations
            yield task


def import_refcoco(
    root: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    dataset: str = "refcoco",
    split_by: str = "unc",
    split: str | None = None,
    image_url_prefix: str,
    ground_truth: GroundTruthRegions | None = None,
) -> dict[str, int]:
    """Write the Label Studio import JSON (a list of tasks) for one split (None: all) of a dataset.

    Tasks are written one by one (memory holds the dataset, not the tasks). Returns counts
    {tasks, refs, images}. Nothing is written when reading or converting fails.
    """
    if split is not None:
        check_split(dataset, split_by, split)
    loaded = load_refer_dataset(root, dataset, split_by)
    refs = loaded.select(split)
    tasks = iter_import_tasks(loaded, refs, image_url_prefix, ground_truth)
    output = Path(output)
    write_files_atomically(output.parent, {output.name: json_list_chunks(tasks)})
    counts = {
        "tasks": sum(len(ref["sentences"]) for ref in refs),
        "refs": len(refs),
        "images": len({ref["image_id"] for ref in refs}),
    }
    logger.info("wrote %(tasks)d tasks of %(refs)d refs on %(images)d images", counts)
    return counts
