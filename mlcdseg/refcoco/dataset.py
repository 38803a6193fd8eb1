"""The RefCOCO dataset format that the REFER API loads: names, splits, sentences, masks, files.

A dataset lives in `<root>/<dataset>/`: `refs(<split_by>).p` (a pickled list of refs) and
`instances.json` (COCO images, annotations, categories). REFER's getMask indexes
`segmentation[0]`, so an annotation's segmentation is a list (of polygons or of RLE dicts).

Split rule (permissive, documented in the CLI help): a split must be one REFER's getRefIds can
select (train, val, test, testA, testB, testC, testAB, testBC, testAC), otherwise it is an
error; a selectable split that the published dataset does not use (say `test` for refcoco/unc)
is accepted with a warning, since REFER loads it but the usual benchmark scripts never ask for it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from mlcdseg.errors import MaskFormatError, NestingTooDeepError, ReferDatasetError
from mlcdseg.json_depth import MAX_NESTING_DEPTH, DepthLimitedReader
from mlcdseg.masks.images import DEFAULT_MAX_PIXELS
from mlcdseg.masks.codecs import coco_polygons_to_mask, decode_coco_rle

logger = logging.getLogger(__name__)

#: The dataset names REFER accepts, their split_by variants and the splits each publishes.
DATASET_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
    "refclef": {"unc": ("train", "val", "testA", "testB", "testC"), "berkeley": ("train", "val", "test")},
}
#: Every split name REFER.getRefIds can select refs by.
REFER_SPLITS: tuple[str, ...] = ("train", "val", "test", "testA", "testB", "testC", "testAB", "testBC", "testAC")
INSTANCES_FILE = "instances.json"
#: Largest image (height x width) whose masks are decoded: the pixel limit of decoded images,
#: far above the images of the REFER datasets.
MAX_MASK_PIXELS = DEFAULT_MAX_PIXELS

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def refs_file_name(split_by: str) -> str:
    """The refs pickle's file name, e.g. "refs(unc).p"."""
    return f"refs({split_by}).p"


def check_split_by(dataset: str, split_by: str) -> None:
    """ReferDatasetError unless REFER knows the dataset and this split_by of it."""
    if dataset not in DATASET_SPLITS:
        raise ReferDatasetError(f"unknown dataset {dataset!r}; REFER knows: {', '.join(DATASET_SPLITS)}")
    if split_by not in DATASET_SPLITS[dataset]:
        known = ", ".join(DATASET_SPLITS[dataset])
        raise ReferDatasetError(f"{dataset} has no split_by {split_by!r}; it has: {known}")


def check_split(dataset: str, split_by: str, split: str) -> str:
    """The split itself when REFER can select it (see the module's split rule), else ReferDatasetError."""
    check_split_by(dataset, split_by)
    if split not in REFER_SPLITS:
        raise ReferDatasetError(
            f"split {split!r} cannot be selected by REFER; use one of: {', '.join(REFER_SPLITS)} "
            f"({dataset}/{split_by} publishes {', '.join(DATASET_SPLITS[dataset][split_by])})"
        )
    if split not in DATASET_SPLITS[dataset][split_by]:
        logger.warning(
            "split %r is not one %s/%s publishes (%s); REFER loads it but benchmark scripts may not ask for it",
            split,
            dataset,
            split_by,
            ", ".join(DATASET_SPLITS[dataset][split_by]),
        )
    return split


def split_selects(requested: str, ref_split: str) -> bool:
    """Whether REFER.getRefIds(split=requested) selects a ref whose split is ref_split."""
    if requested in ("testA", "testB", "testC"):
        return requested[-1] in ref_split
    if requested == "test":
        return "test" in ref_split
    return ref_split == requested


def tokenize(expression: str) -> list[str]:
    """Lowercase word tokens of an expression; apostrophes stay inside words ("man's")."""
    return _TOKEN.findall(expression.lower())


def normalise_expression(expression: str) -> str:
    """The expression lowercased with whitespace runs collapsed and ends stripped."""
    return " ".join(expression.lower().split())


def sentence_record(sent_id: int, raw: str) -> dict[str, Any]:
    """A REFER sentence {sent_id, sent, raw, tokens} for an expression as typed."""
    return {"sent_id": sent_id, "sent": normalise_expression(raw), "raw": raw, "tokens": tokenize(raw)}


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Bool (height, width) mask of a COCO segmentation in any form, the union of its parts.

    Accepts a list of polygons ([x0, y0, x1, y1, ...] in pixels), a list of RLE dicts, or one
    RLE dict (counts compressed str/bytes or an uncompressed list). An empty list is an empty mask.
    """
    if isinstance(segmentation, dict):
        parts: list[Any] = [segmentation]
    elif isinstance(segmentation, list):
        parts = segmentation
    else:
        raise MaskFormatError(f"a segmentation must be a list or an RLE dict, not {type(segmentation).__name__}")
    try:
        mask = coco_polygons_to_mask([part for part in parts if isinstance(part, list)], height, width)
    except Exception as error:  # pycocotools' own errors, a bare Exception among them (see coco_polygons_to_mask)
        raise MaskFormatError(f"a polygon segmentation is malformed: {error}") from error
    for part in parts:
        if isinstance(part, dict):
            part_mask = decode_coco_rle(part)
            if part_mask.shape != (height, width):
                raise MaskFormatError(
                    f"an RLE segmentation of size {list(part_mask.shape)} does not fit its {height}x{width} image"
                )
            mask |= part_mask
        elif not isinstance(part, list):
            raise MaskFormatError(f"a segmentation part must be a polygon or an RLE dict, not {part!r:.40}")
    return mask


def _image_size(image: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of a COCO image record; ReferDatasetError naming the image and field when unusable.

    Both must be whole numbers from 1, with at most MAX_MASK_PIXELS pixels in all: a corrupt
    size is refused, not allocated.
    """
    name = f"image {image.get('id')} ({image.get('file_name')})"
    size = []
    for field in ("height", "width"):
        try:
            value = int(image[field])
        except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
            value = 0  # refused below, like a size under 1
        if value < 1:
            raise ReferDatasetError(f"{name} has {field} {image[field]!r}; it must be a whole number from 1")
        size.append(value)
    height, width = size
    if height * width > MAX_MASK_PIXELS:
        raise ReferDatasetError(
            f"{name} has height {height} and width {width}: over the {MAX_MASK_PIXELS} pixels a mask may have"
        )
    return height, width


def rle_geometry(rle: Mapping[str, Any]) -> dict[str, Any]:
    """COCO annotation fields of a mask RLE: segmentation [rle], area (pixels), bbox [x, y, w, h]."""
    coco_rle = {"size": list(rle["size"]), "counts": rle["counts"].encode()}
    return {
        "segmentation": [dict(rle)],
        "area": int(coco_mask.area(coco_rle)),
        "bbox": [float(value) for value in coco_mask.toBbox(coco_rle)],
    }


def assign_ids(preferred: Sequence[int | None]) -> list[int]:
    """An id per record, in order: its preferred id unless an earlier record took it, else the smallest free id >= 1."""
    taken: set[int] = set()
    kept: list[int | None] = []
    for wish in preferred:
        keep = wish is not None and wish not in taken
        kept.append(wish if keep else None)
        if keep:
            taken.add(wish)
    fresh = (candidate for candidate in itertools.count(1) if candidate not in taken)
    return [next(fresh) if wish is None else wish for wish in kept]


@dataclass(frozen=True)
class ReferDataset:
    """A loaded REFER dataset: refs in file order and the COCO records they point to, by id."""

    refs: list[dict[str, Any]]
    images: dict[int, dict[str, Any]]
    annotations: dict[int, dict[str, Any]]
    categories: dict[int, str]

    def splits(self) -> list[str]:
        """The distinct splits of the refs, in order of first appearance."""
        return list(dict.fromkeys(ref["split"] for ref in self.refs))

    def select(self, split: str | None) -> list[dict[str, Any]]:
        """The refs REFER.getRefIds(split=split) selects (all for None); ReferDatasetError when none."""
        if split is None:
            return list(self.refs)
        selected = [ref for ref in self.refs if split_selects(split, ref["split"])]
        if not selected:
            raise ReferDatasetError(
                f"no ref is in split {split!r}; the refs hold: {', '.join(self.splits()) or 'nothing'}"
            )
        return selected

    def annotation_mask(self, ref: Mapping[str, Any]) -> np.ndarray:
        """Bool (H, W) mask of a ref's annotation at its image's size.

        ReferDatasetError when the image's size is not whole numbers or is over MAX_MASK_PIXELS.
        """
        height, width = _image_size(self.images[ref["image_id"]])
        try:
            return segmentation_mask(self.annotations[ref["ann_id"]]["segmentation"], height, width)
        except MaskFormatError as error:
            raise MaskFormatError(f"annotation {ref['ann_id']} of ref {ref['ref_id']}: {error}") from error


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds lists, dicts, strings and numbers only: pickle can run code."""

    def find_class(self, module: str, name: str) -> Any:
        """Refuse every class and function reference."""
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, not only to plain data")


def load_refer_dataset(root: str | os.PathLike[str], dataset: str, split_by: str) -> ReferDataset:
    """Read `<root>/<dataset>/refs(<split_by>).p` and `instances.json`; ReferDatasetError when unusable."""
    check_split_by(dataset, split_by)
    directory = Path(root) / dataset
    refs_path = directory / refs_file_name(split_by)
    refs = _load_refs(refs_path)
    instances = _load_json(directory / INSTANCES_FILE)
    instances_path = directory / INSTANCES_FILE
    images = _index_records(instances, "images", ("id", "file_name", "height", "width"), instances_path)
    annotations = _index_records(instances, "annotations", ("id", "segmentation"), instances_path)
    categories = {
        category_id: str(record["name"])
        for category_id, record in _index_records(instances, "categories", ("id", "name"), instances_path).items()
    }
    for ref in refs:
        if ref["ann_id"] not in annotations or ref["image_id"] not in images:
            raise ReferDatasetError(
                f"ref {ref['ref_id']} in {refs_path} points at annotation {ref['ann_id']} or image "
                f"{ref['image_id']}, which {instances_path} does not hold"
            )
    return ReferDataset(refs, images, annotations, categories)


_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")
_SENTENCE_KEYS = ("sent_id", "sent")


def _load_refs(path: Path) -> list[dict[str, Any]]:
    """The pickled list of refs, each checked for the keys REFER and import-refcoco use."""
    try:
        with path.open("rb") as stream:
            refs = _PlainDataUnpickler(stream, encoding="utf-8").load()
    except OSError as error:
        raise ReferDatasetError(f"cannot read {path}: {error.strerror or error}") from error
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError) as error:
        raise ReferDatasetError(f"{path} is not a REFER refs pickle: {error}") from error
    if not isinstance(refs, list):
        raise ReferDatasetError(f"{path} holds a {type(refs).__name__}, not a list of refs")
    for index, ref in enumerate(refs):
        missing = _missing_keys(ref, _REF_KEYS) or next(
            (_missing_keys(sentence, _SENTENCE_KEYS) for sentence in _as_list(ref.get("sentences"))), []
        )
        if missing:
            raise ReferDatasetError(f"ref #{index} in {path} lacks {', '.join(missing)}")
    return refs


def _index_records(instances: Any, section: str, keys: Sequence[str], path: Path) -> dict[Any, dict[str, Any]]:
    """The records of one COCO section by id, each checked for `keys`; ReferDatasetError otherwise."""
    records = instances.get(section) if isinstance(instances, dict) else None
    if not isinstance(records, list):
        raise ReferDatasetError(f"{path} has no {section!r} list; it is not COCO instances")
    for position, record in enumerate(records):
        missing = _missing_keys(record, keys)
        if missing:
            raise ReferDatasetError(f"{section} #{position} in {path} lacks {', '.join(missing)}")
    return {record["id"]: record for record in records}


def _missing_keys(record: Any, keys: Iterable[str]) -> list[str]:
    """The keys a record (expected to be a dict) lacks; all of them when it is no dict."""
    if not isinstance(record, dict):
        return list(keys)
    return [key for key in keys if key not in record]


def _as_list(value: Any) -> list[Any]:
    """The value when it is a list, else a list holding one non-dict (so key checks fail)."""
    return value if isinstance(value, list) else [None]


def _load_json(path: Path) -> Any:
    """A JSON file's content; ReferDatasetError when missing, not JSON or nested too deep."""
    try:
        with path.open("rb") as stream:
            return json.load(DepthLimitedReader(stream, MAX_NESTING_DEPTH))
    except NestingTooDeepError as error:
        raise ReferDatasetError(f"{path} {error}; a COCO instances file never is") from None
    except OSError as error:
        raise ReferDatasetError(f"cannot read {path}: {error.strerror or error}") from error
    except ValueError as error:
        raise ReferDatasetError(f"{path} is not valid JSON: {error}") from error


def json_list_chunks(items: Iterable[Any]) -> Iterator[bytes]:
    """A JSON array of the items as byte chunks, one item at a time."""
    separator = b"["
    for item in items:
        yield separator + json.dumps(item).encode()
        separator = b","
    yield b"[]\n" if separator == b"[" else b"]\n"

