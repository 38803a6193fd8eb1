"""RefCOCO in and out: `import-refcoco` (REFER dataset → Label Studio tasks) and `export-refcoco`
(Label Studio export → REFER dataset), on a tiny REFER dataset built here.

The exported dataset is read back the way REFER does it (pickle + json, getMask's polygon/RLE
logic written out below), never with mlcdseg's own loader, and with pycocotools.coco.COCO.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from mlcdseg import cli
from mlcdseg.errors import MaskFormatError, ReferDatasetError
from mlcdseg.masks.codecs import encode_brush_rle
from mlcdseg.refcoco.dataset import (
    assign_ids,
    check_split,
    json_list_chunks,
    segmentation_mask,
    sentence_record,
    tokenize,
)
from mlcdseg.refcoco.exporter import image_file_name
from mlcdseg.labelstudio.regions import mask_from_regions

PREFIX = "/data/local-files/?d=coco/train2014/"
MODEL_VERSION = "fake-model@1"
_ids = itertools.count(500)


# ---------------------------------------------------------------- a tiny REFER dataset
def _box(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


IMAGES = [
    {"id": 9001, "file_name": "COCO_train2014_000000009001.jpg", "height": 24, "width": 32},
    {"id": 9002, "file_name": "COCO_train2014_000000009002.jpg", "height": 20, "width": 20},
    {"id": 9003, "file_name": "COCO_train2014_000000009003.jpg", "height": 16, "width": 28},
]
BALL = _box(24, 32, 3, 4, 11, 13) | _box(24, 32, 15, 20, 18, 30)  # two parts
ANNOTATIONS = [
    # RLE list, counts as str (what export-refcoco writes; refclef's form)
    {"id": 71, "image_id": 9001, "category_id": 37, "segmentation": [_rle(BALL)], "iscrowd": 0},
    # polygons (refcoco's form); pixel coordinates
    {
        "id": 72,
        "image_id": 9001,
        "category_id": 47,
        "segmentation": [[20.0, 2.0, 30.0, 2.0, 30.0, 9.5, 20.0, 9.5]],
        "iscrowd": 0,
    },
    # one uncompressed RLE dict (crowd form)
    {
        "id": 73,
        "image_id": 9002,
        "category_id": 1,
        "iscrowd": 1,
        "segmentation": {"size": [20, 20], "counts": [45, 5, 15, 5, 15, 5, 310]},
    },
    # two polygons
    {
        "id": 74,
        "image_id": 9003,
        "category_id": 1,
        "iscrowd": 0,
        "segmentation": [[1.0, 1.0, 8.0, 1.0, 8.0, 7.0, 1.0, 7.0], [15.5, 3.0, 26.0, 3.0, 20.0, 14.0]],
    },
]
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 37, "name": "sports ball"}, {"id": 47, "name": "cup"}]


def _sentence(sent_id: int, raw: str) -> dict:
    return {"sent_id": sent_id, "raw": raw, "sent": raw.lower(), "tokens": raw.lower().split()}


def _ref(ref_id: int, ann_id: int, image_id: int, category_id: int, split: str, *sentences: dict) -> dict:
    """A ref as REFER's refs files hold it; file_name and sent_ids follow from the other fields."""
    return {
        "ref_id": ref_id,
        "ann_id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "split": split,
        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
        "sent_ids": [sentence["sent_id"] for sentence in sentences],
        "sentences": list(sentences),
    }


REFS = [
    _ref(11, 71, 9001, 37, "val", _sentence(101, "the red ball"), _sentence(102, "Ball on the LEFT")),
    _ref(12, 72, 9001, 47, "val", _sentence(103, "cup")),
    _ref(13, 73, 9002, 1, "testA", _sentence(104, "man"), _sentence(105, "guy in the middle")),
    _ref(14, 74, 9003, 1, "train", _sentence(106, "people")),
]


def write_refer(root: Path, dataset: str = "refcoco", split_by: str = "unc", refs: list | None = None) -> Path:
    """A REFER dataset folder as REFER's downloads lay it out (python 2 pickle protocol)."""
    directory = root / dataset
    directory.mkdir(parents=True)
    (directory / f"refs({split_by}).p").write_bytes(pickle.dumps(REFS if refs is None else refs, protocol=2))
    instances = {"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES}
    (directory / "instances.json").write_text(json.dumps(instances))
    return root


@pytest.fixture
def refer_root(tmp_path: Path) -> Path:
    return write_refer(tmp_path / "refer")


# ---------------------------------------------------------------- reading back as REFER does
def load_like_refer(root: Path, dataset: str = "refcoco", split_by: str = "unc") -> dict:
    """REFER.__init__ + createIndex, reduced to the indexes these tests use."""
    refs = pickle.loads((root / dataset / f"refs({split_by}).p").read_bytes())
    instances = json.loads((root / dataset / "instances.json").read_text())
    return {
        "refs": refs,
        "anns": {ann["id"]: ann for ann in instances["annotations"]},
        "imgs": {image["id"]: image for image in instances["images"]},
        "cats": {category["id"]: category["name"] for category in instances["categories"]},
    }


def refer_get_mask(index: dict, ref: dict) -> np.ndarray:
    """REFER.getMask: polygons through frPyObjects, else the segmentation list as RLEs; summed."""
    ann = index["anns"][ref["ann_id"]]
    image = index["imgs"][ref["image_id"]]
    if type(ann["segmentation"][0]) == list:  # noqa: E721 - the very test REFER makes
        rle = coco_mask.frPyObjects(ann["segmentation"], image["height"], image["width"])
    else:
        rle = ann["segmentation"]
    mask = coco_mask.decode(rle)
    return np.sum(mask, axis=2).astype(np.uint8)


def reference_mask(annotation_id: int) -> np.ndarray:
    """The source dataset's mask of an annotation, decoded with pycocotools directly."""
    ann = next(ann for ann in ANNOTATIONS if ann["id"] == annotation_id)
    image = next(image for image in IMAGES if image["id"] == ann["image_id"])
    segmentation = ann["segmentation"]
    if isinstance(segmentation, dict):
        rles = coco_mask.frPyObjects([segmentation], image["height"], image["width"])
    elif isinstance(segmentation[0], list):
        rles = coco_mask.frPyObjects(segmentation, image["height"], image["width"])
    else:
        rles = [{**part, "counts": part["counts"].encode()} for part in segmentation]
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


# ---------------------------------------------------------------- running the CLI
@pytest.fixture
def run(capsys: pytest.CaptureFixture):
    """`mlcdseg ARGS...` in process; returns (status, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        status = cli.main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


def import_tasks(run, root: Path, output: Path, *extra: str) -> list[dict]:
    status, _, err = run("import-refcoco", root, "-o", output, "--image-url-prefix", PREFIX, *extra)
    assert status == 0, err
    return json.loads(output.read_text())


# ---------------------------------------------------------------- building a Label Studio export
@pytest.fixture(scope="module")
def captured(fixtures_dir: Path) -> list[dict]:
    return json.loads((fixtures_dir / "export_snapshot_full_predictions.json").read_text())


def model_mask_for(mask: np.ndarray) -> np.ndarray:
    """A fake model's answer: the reference shifted one pixel right, plus one stray pixel."""
    shifted = np.roll(mask, 1, axis=1)
    shifted[-1, -1] = True
    return shifted


def as_export(tasks: list[dict], template: dict, model: dict[int, np.ndarray] | None = None) -> list[dict]:
    """Imported tasks as Label Studio 1.23.2's snapshot export shows them once annotated and predicted.

    Each task's imported annotation becomes a submitted one; `model` maps task positions to model masks.
    """
    exported = []
    for position, imported in enumerate(tasks):
        item = copy.deepcopy(template)
        item.update(id=next(_ids), data=imported["data"], annotations=[], predictions=[])
        for source in imported.get("annotations", []):
            annotation = copy.deepcopy(template["annotations"][0])
            annotation.update(id=next(_ids), task=item["id"], result=source["result"], ground_truth=True)
            item["annotations"].append(annotation)
        if model and position in model:
            prediction = copy.deepcopy(template["predictions"][0])
            region = copy.deepcopy(template["predictions"][0]["result"][0])
            height, width = model[position].shape
            region.update(original_height=height, original_width=width)
            region["value"]["rle"] = encode_brush_rle(model[position])
            prediction.update(id=next(_ids), task=item["id"], result=[region], model_version=MODEL_VERSION)
            item["predictions"].append(prediction)
        exported.append(item)
    return exported


def write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


# ---------------------------------------------------------------- import-refcoco
def test_import_writes_one_task_per_sentence_with_the_refer_ids(run, refer_root: Path, tmp_path: Path):
    tasks = import_tasks(run, refer_root, tmp_path / "tasks.json")

    assert [task["data"]["sent_id"] for task in tasks] == [101, 102, 103, 104, 105, 106]
    assert tasks[1]["data"] == {
        "image": PREFIX + "COCO_train2014_000000009001.jpg",  # the image's name, not the ref's "_71" one
        "expression": "ball on the left",
        "ref_id": 11,
        "sent_id": 102,
        "ann_id": 71,
        "image_id": 9001,
        "split": "val",
    }
    assert all("annotations" not in task for task in tasks)


@pytest.mark.parametrize(
    ("split", "ref_ids"), [("val", [11, 11, 12]), ("testA", [13, 13]), ("test", [13, 13]), ("train", [14])]
)
def test_import_selects_a_split_as_refer_getrefids_does(run, refer_root: Path, tmp_path: Path, split, ref_ids):
    tasks = import_tasks(run, refer_root, tmp_path / "tasks.json", "--split", split)

    assert [task["data"]["ref_id"] for task in tasks] == ref_ids


@pytest.mark.parametrize("annotation_id", [71, 72, 73, 74])
def test_ground_truth_brush_regions_hold_the_reference_masks_bit_exact(run, refer_root, tmp_path, annotation_id):
    tasks = import_tasks(run, refer_root, tmp_path / "tasks.json", "--with-ground-truth")
    task = next(task for task in tasks if task["data"]["ann_id"] == annotation_id)
    expected = reference_mask(annotation_id)

    (annotation,) = task["annotations"]
    assert annotation["ground_truth"] is True
    (region,) = annotation["result"]
    assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "mask", "image")
    assert (region["original_height"], region["original_width"]) == expected.shape
    category = {71: "sports ball", 72: "cup", 73: "person", 74: "person"}[annotation_id]
    assert region["value"]["brushlabels"] == [category]
    assert np.array_equal(mask_from_regions([region], "mask", *expected.shape), expected)


def test_polygon_ground_truth_uses_the_named_control_and_label(run, refer_root: Path, tmp_path: Path):
    tasks = import_tasks(
        run,
        refer_root,
        tmp_path / "tasks.json",
        "--with-ground-truth",
        "--format",
        "polygon",
        "--control",
        "outline",
        "--to-name",
        "photo",
        "--label",
        "object",
        "--split",
        "train",
    )
    regions = tasks[0]["annotations"][0]["result"]
    expected = reference_mask(74)

    assert len(regions) == 2  # one per part of the two-polygon segmentation
    assert {(r["type"], r["from_name"], r["to_name"]) for r in regions} == {("polygonlabels", "outline", "photo")}
    assert all(region["value"]["polygonlabels"] == ["object"] for region in regions)
    drawn = mask_from_regions(regions, "outline", *expected.shape)
    assert np.count_nonzero(drawn & expected) / np.count_nonzero(drawn | expected) > 0.8


# ---------------------------------------------------------------- the round trip
def test_import_annotate_predict_export_keeps_every_mask_bit_exact(run, refer_root, tmp_path, captured):
    tasks = import_tasks(run, refer_root, tmp_path / "tasks.json", "--with-ground-truth")
    model = {
        position: model_mask_for(reference_mask(task["data"]["ann_id"]))
        for position, task in enumerate(tasks)
        if position != 4  # one task the model never saw
    }
    source = write_json(tmp_path / "export.json", as_export(tasks, captured[0], model))

    status, out, err = run(
        "export-refcoco", source, "-o", tmp_path / "out", "--dataset", "refcoco", "--split-by", "unc"
    )

    assert status == 0, err
    assert "4 refs (6 sentences, IoU of model version fake-model@1) on 3 images" in out
    index = load_like_refer(tmp_path / "out")
    refs = {ref["ref_id"]: ref for ref in index["refs"]}
    assert sorted(refs) == [11, 12, 13, 14]
    for original in REFS:
        ref = refs[original["ref_id"]]
        assert (ref["ann_id"], ref["image_id"], ref["split"]) == (
            original["ann_id"],
            original["image_id"],
            original["split"],
        )
        assert ref["sent_ids"] == original["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        assert [s["raw"] for s in ref["sentences"]] == [s["sent"] for s in original["sentences"]]
        expected = reference_mask(original["ann_id"])
        mask = refer_get_mask(index, ref)
        assert mask.dtype == np.uint8 and np.array_equal(mask, expected.astype(np.uint8))
        ann = index["anns"][ref["ann_id"]]
        assert isinstance(ann["segmentation"], list) and isinstance(ann["segmentation"][0]["counts"], str)
        assert ann["area"] == np.count_nonzero(expected) and ann["iscrowd"] == 0
        rows, columns = np.nonzero(expected)
        assert ann["bbox"] == [columns.min(), rows.min(), np.ptp(columns) + 1, np.ptp(rows) + 1]
        image = index["imgs"][ref["image_id"]]
        assert (image["file_name"], image["height"], image["width"]) == (
            next(i["file_name"] for i in IMAGES if i["id"] == ref["image_id"]),
            *expected.shape,
        )
        assert index["cats"][ref["category_id"]] == next(
            c["name"] for c in CATEGORIES if c["id"] == original["category_id"]
        )
        for sentence in ref["sentences"]:
            position = next(i for i, task in enumerate(tasks) if task["data"]["sent_id"] == sentence["sent_id"])
            assert sentence["task_id"] == json.loads(source.read_text())[position]["id"]
            if position in model:
                predicted = model[position]
                iou = np.count_nonzero(predicted & expected) / np.count_nonzero(predicted | expected)
                assert sentence["iou"] == pytest.approx(iou)
            else:
                assert "iou" not in sentence
    assert sorted(index["cats"].values()) == ["cup", "person", "sports ball"]
    assert sorted(index["cats"]) == [1, 2, 3]


def test_coco_json_loads_in_pycocotools_and_ann_to_mask_gives_the_masks(run, refer_root, tmp_path, captured):
    tasks = import_tasks(run, refer_root, tmp_path / "tasks.json", "--with-ground-truth")
    source = write_json(tmp_path / "export.json", as_export(tasks, captured[0]))
    assert run("export-refcoco", source, "-o", tmp_path / "out")[0] == 0

    coco = COCO(str(tmp_path / "out" / "refcoco" / "coco.json"))

    assert sorted(coco.getAnnIds()) == [71, 72, 73, 74]
    for annotation_id in coco.getAnnIds():
        assert np.array_equal(coco.annToMask(coco.loadAnns(annotation_id)[0]), reference_mask(annotation_id))


def test_tasks_showing_one_object_become_one_ref_with_each_task_as_a_sentence(run, tmp_path, captured):
    """A plain Label Studio project: no REFER ids in the data, ids are numbered from 1."""
    big, small = _box(30, 40, 2, 3, 20, 25), _box(30, 40, 22, 30, 28, 39)
    upload = "/data/upload/3/5b1c-street.jpg"

    def labelled(mask: np.ndarray, label: str) -> list[dict]:
        region = copy.deepcopy(captured[0]["annotations"][0]["result"][0])
        region.update(original_height=30, original_width=40)
        region["value"].update(rle=encode_brush_rle(mask), brushlabels=[label])
        return [{"result": [region]}]

    tasks = [
        {"data": {"image": upload, "expression": "The big CAR "}, "annotations": labelled(big, "car")},
        {"data": {"image": upload, "expression": "small dog"}, "annotations": labelled(small, "dog")},
        {
            "data": {"image": upload, "expression": "car on the left", "split": "testB"},
            "annotations": labelled(big, "car"),
        },
        {
            "data": {"image": "/data/local-files/?d=photos%2Fpark.png", "expression": "a dog's ball"},
            "annotations": labelled(big, "dog"),
        },
    ]
    source = write_json(tmp_path / "export.json", as_export(tasks, captured[0]))
    task_ids = [task["id"] for task in json.loads(source.read_text())]

    status, _, err = run("export-refcoco", source, "-o", tmp_path / "out", "--default-split", "testA")

    assert status == 0, err
    index = load_like_refer(tmp_path / "out")
    assert [(ref["ref_id"], ref["ann_id"], ref["image_id"], ref["split"]) for ref in index["refs"]] == [
        (1, 1, 1, "testA"),
        (2, 2, 1, "testA"),
        (3, 3, 2, "testA"),
    ]
    first = index["refs"][0]
    assert first["sentences"] == [
        {
            "sent_id": 1,
            "sent": "the big car",
            "raw": "The big CAR",
            "tokens": ["the", "big", "car"],
            "task_id": task_ids[0],
        },
        {
            "sent_id": 2,
            "sent": "car on the left",
            "raw": "car on the left",
            "tokens": ["car", "on", "the", "left"],
            "task_id": task_ids[2],
        },
    ]
    assert first["sent_ids"] == [1, 2] and first["file_name"] == "5b1c-street.jpg"
    assert index["refs"][2]["sentences"][0]["tokens"] == ["a", "dog's", "ball"]
    assert {image["id"]: image["file_name"] for image in index["imgs"].values()} == {
        1: "5b1c-street.jpg",
        2: "park.png",
    }
    assert {index["cats"][ref["category_id"]] for ref in index["refs"]} == {"car", "dog"}
    assert index["cats"] == {1: "car", 2: "dog"}


def test_empty_human_masks_go_to_no_target_json(run, tmp_path, captured):
    empty_result = [{"result": []}]
    tasks = [
        {
            "data": {"image": "/data/upload/1/a.png", "expression": "the unicorn", "image_id": 7},
            "annotations": empty_result,
        }
    ]
    model = {0: _box(480, 640, 0, 0, 2, 2)}  # predicted image size gives the image record its size
    source = write_json(tmp_path / "export.json", as_export(tasks, captured[0], model))

    status, out, err = run("export-refcoco", source, "-o", tmp_path / "out")

    assert status == 0, err
    assert "0 refs" in out and "1 no-target samples" in out
    directory = tmp_path / "out" / "refcoco"
    (entry,) = json.loads((directory / "no_target.json").read_text())
    assert entry == {
        "sent_id": 1,
        "sent": "the unicorn",
        "raw": "the unicorn",
        "tokens": ["the", "unicorn"],
        "task_id": json.loads(source.read_text())[0]["id"],
        "iou": 0.0,
        "model_version": MODEL_VERSION,
        "image_id": 7,
        "file_name": "a.png",
        "split": "val",
    }
    index = load_like_refer(tmp_path / "out")
    assert index["refs"] == [] and index["anns"] == {}
    assert index["imgs"] == {7: {"id": 7, "file_name": "a.png", "height": 480, "width": 640}}


# ---------------------------------------------------------------- the captured exports
def test_the_captured_snapshot_export_exports(run, tmp_path, fixtures_dir):
    status, out, err = run(
        "export-refcoco", fixtures_dir / "export_snapshot_full_predictions.json", "-o", tmp_path / "out"
    )

    assert status == 0, err
    assert "wrote 0 refs" in out
    assert "skipped: 2 × no annotation" in out
    assert "skipped: 1 × no expression" in out  # the captured project had no expression field
    assert sorted(path.name for path in (tmp_path / "out" / "refcoco").iterdir()) == [
        "coco.json",
        "instances.json",
        "no_target.json",
        "refs(unc).p",
    ]


def test_the_captured_task_with_an_expression_becomes_one_ref(run, tmp_path, captured):
    task = copy.deepcopy(captured[0])
    task["data"]["expression"] = "red and blue"
    source = write_json(tmp_path / "export.json", [task])

    status, _, err = run("export-refcoco", source, "-o", tmp_path / "out")

    assert status == 0, err
    index = load_like_refer(tmp_path / "out")
    (ref,) = index["refs"]
    human = mask_from_regions(task["annotations"][0]["result"], "mask", 480, 640)  # union of red and blue
    assert np.array_equal(refer_get_mask(index, ref), human.astype(np.uint8))
    assert index["cats"][ref["category_id"]] == "blue"  # the label covering most pixels
    assert ref["sentences"][0]["iou"] == 1.0  # the prediction is the annotation
    assert index["imgs"][ref["image_id"]]["file_name"] == "img0.png"


def test_the_plain_export_with_prediction_ids_exports_without_iou(run, tmp_path, fixtures_dir):
    tasks = json.loads((fixtures_dir / "export_json_min.json").read_text())
    tasks[0]["data"]["expression"] = "red"
    source = write_json(tmp_path / "export.json", tasks)

    status, out, err = run("export-refcoco", source, "-o", tmp_path / "out")

    assert status == 0, err
    assert "without IoU: 1 × its predictions are listed as ids only" in out
    (ref,) = load_like_refer(tmp_path / "out")["refs"]
    assert "iou" not in ref["sentences"][0]


# ---------------------------------------------------------------- bad input
def _one_line_error(status: int, err: str) -> str:
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlcdseg: error: "), err
    return lines[0]


def test_missing_refs_file_is_one_line_error_and_writes_nothing(run, tmp_path: Path):
    (tmp_path / "refer" / "refcoco").mkdir(parents=True)

    status, _, err = run("import-refcoco", tmp_path / "refer", "-o", tmp_path / "tasks.json", "--image-url-prefix", "/")

    assert "refs(unc).p" in _one_line_error(status, err)
    assert not (tmp_path / "tasks.json").exists()


def test_split_not_in_the_refs_names_the_splits_there(run, refer_root: Path, tmp_path: Path):
    status, _, err = run(
        "import-refcoco", refer_root, "-o", tmp_path / "tasks.json", "--image-url-prefix", "/", "--split", "testB"
    )

    assert "'testB'" in _one_line_error(status, err) and "val, testA, train" in err
    assert not (tmp_path / "tasks.json").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--dataset", "refcocoX"],
            re.escape("unknown dataset 'refcocoX'; REFER knows: refcoco, refcoco+, refcocog, refclef"),
        ),
        (["--dataset", "refcoco+"], r"cannot read .*refcoco\+/refs\(unc\)\.p"),  # no such folder in ROOT
        (["--dataset", "refcocog", "--split-by", "unc"], "refcocog has no split_by 'unc'; it has: umd, google"),
    ],
)
def test_a_wrong_dataset_name_or_split_by_is_a_one_line_error(run, refer_root, tmp_path, options, message):
    status, _, err = run("import-refcoco", refer_root, "-o", tmp_path / "t.json", "--image-url-prefix", "/", *options)

    assert re.search(message, _one_line_error(status, err))
    assert not (tmp_path / "t.json").exists()

    status, _, err = run("export-refcoco", write_json(tmp_path / "export.json", []), "-o", tmp_path / "out", *options)
    if "refcoco+" not in options:  # exporting creates the dataset's folder
        assert re.search(message, _one_line_error(status, err))
        assert not (tmp_path / "out").exists()


def test_a_refs_pickle_that_holds_objects_is_refused(run, tmp_path: Path):
    root = write_refer(tmp_path / "refer", refs=[{**REFS[0], "split": Path("val")}])

    status, _, err = run("import-refcoco", root, "-o", tmp_path / "t.json", "--image-url-prefix", "/")

    assert "not a REFER refs pickle" in _one_line_error(status, err) and "pathlib" in err


def test_non_json_source_writes_nothing(run, tmp_path: Path):
    source = tmp_path / "export.json"
    source.write_text("label,image\nred,a.png\n")

    status, _, err = run("export-refcoco", source, "-o", tmp_path / "out")

    assert "not a list of tasks" in _one_line_error(status, err)
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_an_earlier_dataset_untouched(run, refer_root, tmp_path, captured):
    tasks = import_tasks(run, refer_root, tmp_path / "tasks.json", "--with-ground-truth")
    good = write_json(tmp_path / "good.json", as_export(tasks, captured[0]))
    assert run("export-refcoco", good, "-o", tmp_path / "out")[0] == 0
    before = {path.name: path.read_bytes() for path in (tmp_path / "out" / "refcoco").iterdir()}
    bad_tasks = as_export(tasks, captured[0])
    bad_tasks[-1]["data"]["split"] = "validation"
    bad = write_json(tmp_path / "bad.json", bad_tasks)

    status, _, err = run("export-refcoco", bad, "-o", tmp_path / "out")

    assert "split 'validation' cannot be selected by REFER" in _one_line_error(status, err)
    assert {path.name: path.read_bytes() for path in (tmp_path / "out" / "refcoco").iterdir()} == before


def _with_prediction(task: dict, model_version: str, updated_at: str, regions: list) -> dict:
    """A copy of the first prediction of `task`, as model version `model_version`, last updated at `updated_at`."""
    prediction = copy.deepcopy(task["predictions"][0])
    prediction.update(id=next(_ids), model_version=model_version, result=regions, created_at=updated_at, updated_at=updated_at)
    return prediction


def test_an_export_of_two_model_versions_scores_each_task_by_its_newest_prediction(run, tmp_path, captured):
    """Task 1's newest prediction is other@2 (empty: IoU 0); task 2's newest is the original (IoU 1)."""
    first, second = copy.deepcopy(captured[0]), copy.deepcopy(captured[0])
    original = first["predictions"][0]["model_version"]
    first["annotations"][0]["result"] = copy.deepcopy(first["predictions"][0]["result"])
    second["annotations"][0]["result"] = copy.deepcopy(first["predictions"][0]["result"])
    first.update(id=next(_ids), data={**first["data"], "expression": "red"})
    second.update(id=next(_ids), data={**second["data"], "expression": "the red one"})
    first["predictions"] = [
        _with_prediction(first, original, "2026-01-01T00:00:00Z", first["predictions"][0]["result"]),
        _with_prediction(first, "other@2", "2026-02-01T00:00:00Z", []),
    ]
    second["predictions"] = [
        _with_prediction(second, "other@2", "2026-01-01T00:00:00Z", []),
        _with_prediction(second, original, "2026-02-01T00:00:00Z", second["predictions"][0]["result"]),
    ]
    source = write_json(tmp_path / "export.json", [first, second])

    status, out, err = run("export-refcoco", source, "-o", tmp_path / "newest")
    assert status == 0, err
    assert "newest prediction among 2 model versions" in out
    sentences = {s["task_id"]: s for ref in load_like_refer(tmp_path / "newest")["refs"] for s in ref["sentences"]}
    assert {task_id: (s["model_version"], s["iou"]) for task_id, s in sentences.items()} == {
        first["id"]: ("other@2", 0.0),
        second["id"]: (original, 1.0),
    }

    status, out, err = run("export-refcoco", source, "-o", tmp_path / "chosen", "--model-version", "other@2")
    assert status == 0 and "IoU of model version other@2" in out, err
    sentences = [s for ref in load_like_refer(tmp_path / "chosen")["refs"] for s in ref["sentences"]]
    assert [(s["model_version"], s["iou"]) for s in sentences] == [("other@2", 0.0)] * 2


# ---------------------------------------------------------------- format pieces
def test_sentences_keep_the_raw_text_and_lowercase_the_rest():
    assert sentence_record(5, "  The man's RED hat,  left ") == {
        "sent_id": 5,
        "sent": "the man's red hat, left",
        "raw": "  The man's RED hat,  left ",
        "tokens": ["the", "man's", "red", "hat", "left"],
    }
    assert tokenize("left-most zebra_2") == ["left", "most", "zebra", "2"]


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/data/local-files/?d=dataset1/img0.png", "img0.png"),
        ("/data/local-files/?d=coco%2Ftrain2014%2FCOCO_1.jpg", "COCO_1.jpg"),
        ("/data/upload/1/784bbc8a-img2.png", "784bbc8a-img2.png"),
        ("https://example.com/a/b%20c.jpg?X-Amz-Signature=1", "b c.jpg"),
        ("s3://bucket/key/d.jpg", "d.jpg"),
        ("data:image/png;base64,iVBORw0KGgo=", None),
        ("https://example.com/", None),
    ],
)
def test_image_file_names_come_from_the_task_image_url(url: str, name: str | None):
    assert image_file_name(url) == name


def test_ids_keep_the_first_claim_and_number_the_rest_from_one():
    assert assign_ids([5, None, 5, 1, None]) == [5, 2, 3, 1, 4]


def test_splits_refer_cannot_select_are_refused_and_unpublished_ones_warned(caplog):
    with pytest.raises(ReferDatasetError, match="'validation' cannot be selected"):
        check_split("refcoco", "unc", "validation")
    with caplog.at_level(logging.WARNING):
        assert check_split("refcoco", "unc", "test") == "test"
    assert "not one refcoco/unc publishes" in caplog.text
    assert check_split("refcocog", "umd", "test") == "test"


def test_segmentations_decode_in_every_coco_form():
    mask = _box(6, 8, 1, 2, 4, 7)
    rle = _rle(mask)
    square = [[2.0, 1.0, 7.0, 1.0, 7.0, 4.0, 2.0, 4.0]]
    assert np.array_equal(segmentation_mask([rle], 6, 8), mask)
    assert np.array_equal(segmentation_mask(rle, 6, 8), mask)
    assert np.array_equal(segmentation_mask([], 6, 8), np.zeros((6, 8), dtype=bool))
    polygon_mask = segmentation_mask(square, 6, 8)
    assert polygon_mask.shape == (6, 8) and polygon_mask[2, 4] and not polygon_mask[5, 0]
    with pytest.raises(MaskFormatError, match="does not fit"):
        segmentation_mask([rle], 8, 6)


@pytest.mark.parametrize("polygons", [[[1.0, 2.0]], [["a", "b", "c", "d", "e", "f"]]])
def test_malformed_polygon_segmentation_is_a_mask_format_error(polygons):
    # pycocotools raises a bare Exception for the short polygon: it must not escape as a traceback
    with pytest.raises(MaskFormatError, match="polygon segmentation is malformed"):
        segmentation_mask(polygons, 6, 8)


def test_each_annotators_mask_is_its_own_object_and_equal_masks_count_once(run, tmp_path, captured):
    task = copy.deepcopy(captured[0])
    task["data"]["expression"] = "red"
    red, blue = copy.deepcopy(task["annotations"][0]["result"])
    annotations = []
    for user, regions in ((1, [red, blue]), (2, [red]), (3, [blue, red])):  # 3 draws what 1 drew
        annotation = copy.deepcopy(task["annotations"][0])
        annotation.update(id=next(_ids), completed_by=user, result=regions)
        annotations.append(annotation)
    task["annotations"] = annotations
    source = write_json(tmp_path / "export.json", [task])

    status, out, err = run("export-refcoco", source, "-o", tmp_path / "out", "--annotation", "all")

    assert status == 0, err
    assert "skipped: 1 × another annotation of the task drew the same mask" in out
    index = load_like_refer(tmp_path / "out")
    masks = [refer_get_mask(index, ref).astype(bool) for ref in index["refs"]]
    results = [annotation["result"] for annotation in annotations[:2]]
    assert [
        np.array_equal(mask, mask_from_regions(result, "mask", 480, 640)) for mask, result in zip(masks, results)
    ] == [True, True]
    assert [len(ref["sentences"]) for ref in index["refs"]] == [1, 1]
    assert [index["cats"][ref["category_id"]] for ref in index["refs"]] == ["blue", "red"]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ("not json", "is not valid JSON"),
        ({"images": IMAGES, "annotations": ANNOTATIONS}, "has no 'categories' list"),
        (
            {"images": [{"id": 9001}], "annotations": ANNOTATIONS, "categories": CATEGORIES},
            "images #0 in .* lacks file_name, height, width",
        ),
    ],
)
def test_unusable_instances_are_one_line_errors(run, refer_root: Path, tmp_path: Path, instances, message):
    path = refer_root / "refcoco" / "instances.json"
    path.write_text(instances if isinstance(instances, str) else json.dumps(instances))

    status, _, err = run("import-refcoco", refer_root, "-o", tmp_path / "t.json", "--image-url-prefix", "/")

    assert re.search(message, _one_line_error(status, err))
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ({"height": "tall"}, r"image 9001 \(COCO_train2014_000000009001\.jpg\) has height 'tall'; it must be a whole"),
        ({"width": 0}, "image 9001 .* has width 0"),
        ({"width": float("inf")}, "image 9001 .* has width inf"),  # JSON's Infinity
        ({"height": 10**5, "width": 10**5}, "height 100000 and width 100000: over the 89478485 pixels a mask may have"),
    ],
)
def test_image_sizes_no_mask_can_have_are_one_line_errors(run, refer_root: Path, tmp_path: Path, size, message):
    images = [{**IMAGES[0], **size}, *IMAGES[1:]]
    instances = {"images": images, "annotations": ANNOTATIONS, "categories": CATEGORIES}
    (refer_root / "refcoco" / "instances.json").write_text(json.dumps(instances))

    status, _, err = run(
        "import-refcoco", refer_root, "-o", tmp_path / "t.json", "--image-url-prefix", "/", "--with-ground-truth"
    )

    assert re.search(message, _one_line_error(status, err))
    assert not (tmp_path / "t.json").exists()


def test_tasks_of_the_wrong_shape_are_skipped_as_evaluate_skips_them(run, tmp_path, captured):
    good = copy.deepcopy(captured[0])
    good["data"]["expression"] = "red and blue"
    shapes = [{**good, "id": 2, "predictions": 7}, {**good, "id": 3, "annotations": 7}, {**good, "id": 4, "data": "x"}]
    source = write_json(tmp_path / "export.json", [good, *shapes])

    status, out, err = run("export-refcoco", source, "-o", tmp_path / "out")

    assert status == 0, err
    for reason in ("its 'predictions' field is not a list", "its 'annotations' field is not a list",
                   "its 'data' field is not an object"):
        assert f"skipped: 1 × {reason}" in out
    assert len(load_like_refer(tmp_path / "out")["refs"]) == 1


def test_json_lists_stream_as_valid_json():
    assert json.loads(b"".join(json_list_chunks([]))) == []
    assert json.loads(b"".join(json_list_chunks(iter([1, {"a": [2]}, "é"])))) == [1, {"a": [2]}, "é"]


def test_a_live_project_needs_the_label_studio_url(run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)

    status, _, err = run("export-refcoco", "--project", "3", "-o", tmp_path / "out")

    assert "--project needs --label-studio-url and --api-key" in _one_line_error(status, err)
    assert not (tmp_path / "out").exists()


def test_a_label_config_names_the_expression_field_and_the_mask_control(run, tmp_path, captured):
    config = tmp_path / "config.xml"
    config.write_text(
        '<View><Image name="image" value="$image"/><Text name="caption" value="$caption"/>'
        '<BrushLabels name="outline" toName="image"><Label value="red"/></BrushLabels>'
        '<BrushLabels name="mask" toName="image"><Label value="red"/></BrushLabels></View>'
    )
    task = copy.deepcopy(captured[0])
    task["data"]["caption"] = "the red one"
    red, blue = task["annotations"][0]["result"]
    red["from_name"] = "outline"
    task["annotations"][0]["result"] = [red, blue]
    source = write_json(tmp_path / "export.json", [task])

    status, _, err = run("export-refcoco", source, "-o", tmp_path / "out", "--label-config", config)
    assert "several mask controls (outline, mask); pick one with --control" in _one_line_error(status, err)

    status, _, err = run(
        "export-refcoco", source, "-o", tmp_path / "out", "--label-config", config, "--control", "outline"
    )

    assert status == 0, err
    index = load_like_refer(tmp_path / "out")
    (ref,) = index["refs"]
    assert ref["sentences"][0]["raw"] == "the red one"
    assert np.array_equal(refer_get_mask(index, ref), mask_from_regions([red], None, 480, 640).astype(np.uint8))
