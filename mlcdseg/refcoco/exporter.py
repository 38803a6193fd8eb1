"""`mlcdseg export-refcoco`: the human masks of a Label Studio export as a REFER-loadable dataset.

Written into ROOT/DATASET/, all or nothing:
- `refs(SPLIT_BY).p`: one ref per human-masked object. Tasks that show the same image with the
  same human mask (bit for bit) but different expressions are one ref with several sentences;
  each sentence keeps its Label Studio `task_id` and, where the task has a prediction, the `iou`
  of the model mask against the human mask and the `model_version` of that prediction: the
  task's newest prediction, or the one of --model-version. Predictions of several model versions
  never stop an export: the human masks are the dataset.
- `instances.json`: COCO images, annotations (segmentation = [one RLE dict, counts as str], as
  REFER's getMask indexes segmentation[0]), categories (one per mask label, ids from 1, sorted).
- `coco.json`: the same with segmentation = the RLE dict itself, as pycocotools.COCO reads it.
- `no_target.json`: samples whose human mask is empty (no COCO annotation can hold them), as a
  list of sentences with their task_id, image_id, file_name and split.

Ids: an image keeps the task's `image_id` data field, a ref its `ref_id`, an annotation its
`ann_id`, a sentence its `sent_id` (as import-refcoco writes them) unless an earlier record took
the id; the others get the smallest free ids from 1, in task order. A ref's category is the label
covering most of its mask; its split the first of its tasks' `split` fields, else --default-split.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mlcdseg import __version__
from mlcdseg.atomic_files import write_files_atomically
from mlcdseg.errors import ExportFormatError, MaskFormatError, ReferDatasetError
from mlcdseg.evaluation.samples import HumanSample, ModelPrediction, SampleSettings, human_samples, model_predictions
from mlcdseg.labelstudio.tasks import Skip, SkipCode, Unusable, malformed_task_skip, task_data
from mlcdseg.masks.codecs import encode_coco_rle, iou_from_counts
from mlcdseg.refcoco.dataset import (
    INSTANCES_FILE,
    assign_ids,
    check_split,
    refs_file_name,
    rle_geometry,
    sentence_record,
)
from mlcdseg.labelstudio.regions import dominant_label
from mlcdseg.evaluation.scoring import compare

logger = logging.getLogger(__name__)

COCO_FILE = "coco.json"
NO_TARGET_FILE = "no_target.json"
#: Category of a mask whose regions carry no label.
UNLABELLED_CATEGORY = "object"
PREDICTION_IDS_ONLY = "its predictions are listed as ids only (plain export); export a snapshot for IoU"
_ImageKey = tuple[str, Any]


@dataclass
class _Sentence:
    """One expression of a ref, its task and the model's (intersection, union) per version, oldest to newest."""

    task_id: Any
    raw: str
    preferred_id: int | None
    counts: dict[str, tuple[int, int]]


@dataclass
class _Ref:
    """One human-masked object: an image, a mask (COCO RLE), its label, split and sentences."""

    image_key: _ImageKey
    rle: dict[str, Any]
    label: str
    split: str
    preferred_ref_id: int | None
    preferred_ann_id: int | None
    sentences: list[_Sentence] = field(default_factory=list)


@dataclass
class _Image:
    """An image as the tasks show it: file name, task image_id, (height, width) when known."""

    file_name: str
    preferred_id: int | None
    size: tuple[int, int] | None


@dataclass
class _NoTarget:
    """A sample with an empty human mask, kept for no_target.json."""

    image_key: _ImageKey
    split: str
    sentence: _Sentence


class ReferExportBuilder:
    """Collects the samples of export tasks, then builds the REFER dataset files from them.

    Memory holds one COCO RLE per distinct object and a few numbers per sentence.
    """

    def __init__(self, dataset: str, split_by: str, default_split: str, settings: SampleSettings) -> None:
        self.dataset, self.split_by, self.settings = dataset, split_by, settings
        self.default_split = check_split(dataset, split_by, default_split)
        self._checked_splits = {default_split}
        self.images: dict[_ImageKey, _Image] = {}
        self.refs: dict[tuple[_ImageKey, str], _Ref] = {}
        self.no_target: list[_NoTarget] = []
        self._grouped_tasks: set[tuple[tuple[_ImageKey, str | None], Any]] = set()
        self.skipped: list[Skip] = []
        self.without_iou: list[Skip] = []
        self.versions_seen: set[str] = set()
        self.tasks = 0
        self.samples = 0

    def add_task(self, task: Any) -> None:
        """Add the human samples of one export item (skips are recorded, not raised)."""
        self.tasks += 1
        malformed = malformed_task_skip(task, self.tasks - 1)
        if malformed is not None:
            self.skipped.append(malformed)
            return
        try:
            predictions, prediction_skips = model_predictions(task, self.settings)
        except ExportFormatError:  # predictions as ids only: the human masks still make a dataset
            predictions, prediction_skips = {}, []
            self.without_iou.append(Skip(task.get("id"), PREDICTION_IDS_ONLY, SkipCode.PREDICTION_IDS_ONLY))
        humans, human_skips = human_samples(task, self.settings)
        self.versions_seen.update(predictions)
        self.without_iou.extend(prediction_skips)
        self.skipped.extend(human_skips)
        data = task_data(task)
        for human in humans:
            try:
                self._add_sample(human, predictions, data)
            except Unusable as unusable:
                self.skipped.append(unusable.skip(human.task_id))
            else:
                self.samples += 1

    def _add_sample(self, human: HumanSample, predictions: Mapping[str, ModelPrediction], data: dict) -> None:
        """Add one human sample to its ref (or to the no-target list); Unusable when it can't be."""
        expression = human.expression or next((p.expression for p in predictions.values() if p.expression), None)
        if not expression:
            raise Unusable(SkipCode.NO_EXPRESSION, "no expression (neither in the task data nor typed into a TextArea)")
        file_name = image_file_name(human.image or "")
        if file_name is None:
            raise Unusable(SkipCode.NO_IMAGE, f"no image file name in the task's image reference {human.image!r:.80}")
        split = self._split(human)
        try:
            rle = encode_coco_rle(human.mask()) if human.regions else None
        except MaskFormatError as error:
            raise Unusable(SkipCode.CORRUPT_MASK, f"the human mask is unreadable: {error}") from None
        counts, size = self._model_counts(human, predictions)
        data_image_id = _as_id(data.get("image_id"))
        image_key: _ImageKey = ("url", human.image) if data_image_id is None else ("image_id", data_image_id)
        image = self.images.setdefault(image_key, _Image(file_name, data_image_id, None))
        if size is not None and image.size not in (None, size):
            raise Unusable(
                SkipCode.SIZE_MISMATCH,
                f"image {file_name} is {size[1]}x{size[0]} here but {image.size[1]}x{image.size[0]} in another task",
            )
        image.size = image.size or size
        group = (image_key, None if rle is None else rle["counts"])
        if (group, human.task_id) in self._grouped_tasks:
            raise Unusable(SkipCode.DUPLICATE_MASK, "another annotation of the task drew the same mask")
        self._grouped_tasks.add((group, human.task_id))
        sentence = _Sentence(human.task_id, expression, _as_id(data.get("sent_id")), counts)
        if rle is None:
            self.no_target.append(_NoTarget(image_key, split, sentence))
            return
        label = dominant_label(human.regions, *rle["size"]) or UNLABELLED_CATEGORY
        ref_ids = _as_id(data.get("ref_id")), _as_id(data.get("ann_id"))
        ref = self.refs.setdefault(group, _Ref(image_key, rle, label, split, *ref_ids))
        if ref.split != split:
            logger.warning(
                "task %s is in split %r, its object's ref in %r: the ref stays there", human.task_id, split, ref.split
            )
        ref.sentences.append(sentence)

    def _model_counts(
        self, human: HumanSample, predictions: Mapping[str, ModelPrediction]
    ) -> tuple[dict[str, tuple[int, int]], tuple[int, int] | None]:
        """(intersection, union) of each model version's mask with the human mask, and the image size."""
        counts, size = {}, human.image_size
        for version, prediction in predictions.items():
            try:
                compared = compare(human, prediction)
            except Unusable as unusable:
                self.without_iou.append(unusable.skip(human.task_id))
                continue
            counts[version] = (compared.sample.intersection, compared.sample.union)
            size = size or prediction.image_size
        return counts, size

    def _split(self, human: HumanSample) -> str:
        """The sample's split: its task's split field, else the default; checked once per name."""
        split = human.split or self.default_split
        if split not in self._checked_splits:
            try:
                check_split(self.dataset, self.split_by, split)
            except ReferDatasetError as error:
                raise ReferDatasetError(f"task {human.task_id}: {error}") from error
            self._checked_splits.add(split)
        return split

    def choose_model_version(self, requested: str | None) -> str | None:
        """The model version whose IoU the sentences carry: the requested one, else the only one seen,
        else None (each task's newest prediction).

        ExportFormatError when the requested version is not in the export.
        """
        if requested is not None and requested not in self.versions_seen:
            seen = ", ".join(sorted(self.versions_seen)) or "none"
            raise ExportFormatError(f"model version {requested!r} is not in the export; versions seen: {seen}")
        if requested is None and len(self.versions_seen) == 1:
            return next(iter(self.versions_seen))
        return requested

    def build(self, model_version: str | None) -> dict[str, Any]:
        """The dataset as {"refs": [...], "instances": {...}, "coco": {...}, "no_target": [...]}."""
        image_ids = dict(zip(self.images, assign_ids([image.preferred_id for image in self.images.values()])))
        _check_unique_file_names(self.images)
        refs = list(self.refs.values())
        ref_ids = assign_ids([ref.preferred_ref_id for ref in refs])
        ann_ids = assign_ids([ref.preferred_ann_id for ref in refs])
        sentences = [sentence for ref in refs for sentence in ref.sentences] + [
            entry.sentence for entry in self.no_target
        ]
        # consumed below in this same order: the refs' sentences, then the no-target ones
        sent_ids = iter(assign_ids([sentence.preferred_id for sentence in sentences]))
        category_ids = {label: index for index, label in enumerate(sorted({ref.label for ref in refs}), start=1)}
        images = [
            {"id": image_ids[key], "file_name": image.file_name, "height": image.size[0], "width": image.size[1]}
            for key, image in self.images.items()
            if image.size is not None
        ]
        annotations, ref_records = [], []
        for ref, ref_id, ann_id in zip(refs, ref_ids, ann_ids):
            image_id, category_id = image_ids[ref.image_key], category_ids[ref.label]
            annotations.append(
                {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0, **rle_geometry(ref.rle)}
            )
            records = [_sentence_record(sentence, next(sent_ids), model_version) for sentence in ref.sentences]
            ref_records.append(
                {
                    "ref_id": ref_id,
                    "ann_id": ann_id,
                    "image_id": image_id,
                    "category_id": category_id,
                    "split": ref.split,
                    "file_name": self.images[ref.image_key].file_name,
                    "sent_ids": [record["sent_id"] for record in records],
                    "sentences": records,
                }
            )
        no_target = [
            {
                **_sentence_record(entry.sentence, next(sent_ids), model_version),
                "image_id": image_ids[entry.image_key],
                "file_name": self.images[entry.image_key].file_name,
                "split": entry.split,
            }
            for entry in self.no_target
        ]
        info = {
            "description": f"{self.dataset} ({self.split_by}) exported from Label Studio by mlcdseg export-refcoco",
            "version": __version__,
            "iou_model_version": model_version,
        }
        categories = [{"id": index, "name": label, "supercategory": label} for label, index in category_ids.items()]
        instances = {"info": info, "images": images, "annotations": annotations, "categories": categories}
        coco_annotations = [{**annotation, "segmentation": annotation["segmentation"][0]} for annotation in annotations]
        return {
            "refs": ref_records,
            "instances": instances,
            "coco": {**instances, "annotations": coco_annotations},
            "no_target": no_target,
        }

    def summary(self, model_version: str | None, dataset: Mapping[str, Any]) -> dict[str, Any]:
        """Counts of what was read, written and skipped."""
        return {
            "tasks": self.tasks,
            "samples": self.samples,
            "refs": len(dataset["refs"]),
            "sentences": sum(len(ref["sentences"]) for ref in dataset["refs"]),
            "images": len(dataset["instances"]["images"]),
            "categories": len(dataset["instances"]["categories"]),
            "no_target": len(dataset["no_target"]),
            "model_version": model_version,
            "model_versions_seen": sorted(self.versions_seen),
            "skipped": [skip.record() for skip in self.skipped],
            "without_iou": [skip.record() for skip in self.without_iou],
        }


def _sentence_record(sentence: _Sentence, sent_id: int, model_version: str | None) -> dict[str, Any]:
    """A REFER sentence plus task_id, and the iou and model_version of its scored prediction.

    The prediction is the one of `model_version`, or with None the task's newest; a sentence
    without one has neither key.
    """
    record = {**sentence_record(sent_id, sentence.raw), "task_id": sentence.task_id}
    scored = model_version if model_version is not None else next(reversed(sentence.counts), None)
    if scored in sentence.counts:
        record["iou"] = iou_from_counts(*sentence.counts[scored])
        record["model_version"] = scored
    return record


def image_file_name(url: str) -> str | None:
    """The file name (basename) of a task image reference, or None when it names no file.

    `/data/local-files/?d=dir/a.jpg` → a.jpg; `/data/upload/1/abc-a.jpg` → abc-a.jpg;
    `http(s)://…/a%20b.jpg?sig=…` → "a b.jpg"; `s3://bucket/key/a.jpg` → a.jpg; a path → its name.
    """
    parts = urlsplit(url)
    if parts.scheme == "data":
        return None
    local_file = parse_qs(parts.query).get("d") if parts.path.rstrip("/").endswith("/data/local-files") else None
    path = local_file[0] if local_file else unquote(parts.path)
    name = PurePosixPath(path.replace("\\", "/")).name
    return name or None


def _as_id(value: Any) -> int | None:
    """A task data value as a non-negative integer id (int or digit string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _check_unique_file_names(images: Mapping[_ImageKey, _Image]) -> None:
    """ExportFormatError when two different images share a file name (REFER finds images by name)."""
    owners: dict[str, _ImageKey] = {}
    for key, image in images.items():
        other = owners.setdefault(image.file_name, key)
        if other != key:
            raise ExportFormatError(
                f"two different images ({other[0]} {other[1]!r} and {key[0]} {key[1]!r}) share the file name "
                f"{image.file_name!r}; REFER finds images by file name alone"
            )


def dataset_files(dataset: Mapping[str, Any], split_by: str) -> dict[str, bytes]:
    """The encoded files of a built dataset: refs pickle (protocol 2, loadable by Python 2 REFER) and JSONs."""
    return {
        refs_file_name(split_by): pickle.dumps(dataset["refs"], protocol=2),
        INSTANCES_FILE: json.dumps(dataset["instances"]).encode(),
        COCO_FILE: json.dumps(dataset["coco"]).encode(),
        NO_TARGET_FILE: json.dumps(dataset["no_target"], indent=1).encode(),
    }


def export_refcoco(
    tasks: Iterable[Any],
    root: str | os.PathLike[str],
    settings: SampleSettings,
    *,
    dataset: str = "refcoco",
    split_by: str = "unc",
    default_split: str = "val",
) -> dict[str, Any]:
    """Write ROOT/DATASET/{refs(SPLIT_BY).p, instances.json, coco.json, no_target.json} from export tasks.

    settings.model_version picks the model version whose IoU the sentences carry (None: each
    task's newest prediction). Returns the summary; nothing is written when anything fails.
    """
    builder = ReferExportBuilder(dataset, split_by, default_split, settings)
    for task in tasks:
        builder.add_task(task)
    model_version = builder.choose_model_version(settings.model_version)
    built = builder.build(model_version)
    files = dataset_files(built, split_by)
    write_files_atomically(Path(root) / dataset, files)
    summary = builder.summary(model_version, built)
    logger.info("exported %(refs)d refs with %(sentences)d sentences on %(images)d images", summary)
    return summary
