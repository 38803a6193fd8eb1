"""End to end against a real Label Studio 1.23.2 and our backend (gunicorn) serving the offline stand-in.

One Label Studio and one backend (legacy API token) are started per session; the personal access
token test starts a second backend for itself. The expressions project is shared: its predictions
are retrieved once, then reviewed (human annotations through the API) for evaluate and
export-refcoco. The Label Studio executable comes from
.venv-labelstudio (`make test` creates it) or $MLCDSEG_LABEL_STUDIO; without one these tests FAIL,
unless MLCDSEG_SKIP_LABELSTUDIO=1 asks to skip them.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from pycocotools import mask as coco_mask

from mlcdseg.demo.run import SAMPLES_FOLDER, DemoProject, prediction_problems, set_up_project
from mlcdseg.demo.scenes import SCENES, DemoSample, write_demo_images
from mlcdseg.errors import LabelStudioError, ServiceStartError
from mlcdseg.labelstudio.export_source import open_export_source
from mlcdseg.labelstudio.client import JsonObject, LabelStudioClient
from mlcdseg.labelstudio.local_server import REPO_ROOT, BackendServer, LabelStudioServer, find_label_studio
from mlcdseg.masks.codecs import decode_brush_rle, encode_brush_rle
from mlcdseg.evaluation.metrics import PRECISION_THRESHOLDS
from mlcdseg.model.loading import STAND_IN_VERSION_PREFIX
from mlcdseg.model.stand_in import colour_rule_mask

LABEL_CONFIG_DIR = REPO_ROOT / "label_config"


@pytest.fixture(scope="session")
def backend(
    label_studio: LabelStudioServer, stand_in_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendServer]:
    """Our backend under gunicorn, serving the stand-in and fetching images from Label Studio."""
    with BackendServer(
        stand_in_model_dir,
        tmp_path_factory.mktemp("backend"),
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
    ) as server:
        yield server


@dataclass(frozen=True)
class PredictedProject:
    """A project whose predictions were retrieved, and Label Studio's answer to that action."""

    project: DemoProject
    retrieve_answer: JsonObject


@pytest.fixture(scope="session")
def expressions_project(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer
) -> PredictedProject:
    """The expressions.xml project with every task's prediction retrieved from the backend (one batch)."""
    project = _project(client, label_studio, backend, "expressions.xml")
    return PredictedProject(project, client.retrieve_predictions(project.project_id))


@pytest.fixture(scope="session")
def personal_access_token(client: LabelStudioClient) -> str:
    """A personal access token of the session user, created through the API (one per user).

    Personal access tokens are switched off for the organization first, as they may be in one
    created by an older Label Studio, so that the client's enabling step runs against the server.
    """
    client.update_jwt_settings(api_tokens_enabled=False)
    token = client.create_personal_access_token()
    assert client.jwt_settings() == {"api_tokens_enabled": True, "legacy_api_tokens_enabled": True}
    return token


def _project(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer, config_name: str
) -> DemoProject:
    """A project with `label_config/<config_name>`, the sample images as local files, and our backend."""
    label_config = (LABEL_CONFIG_DIR / config_name).read_text(encoding="utf-8")
    return set_up_project(client, label_config, label_studio.document_root, backend.url, f"e2e {config_name}")


def _samples_folder(label_studio: LabelStudioServer) -> Path:
    """Where set_up_project writes the sample images: a folder of Label Studio's document root."""
    return label_studio.document_root / SAMPLES_FOLDER


def _image_rgb(path: Path) -> np.ndarray:
    """An image file as a uint8 (H, W, 3) array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _exported_tasks(label_studio: LabelStudioServer, api_key: str, project_id: int) -> list[JsonObject]:
    """A snapshot export of a live project with full predictions, as mlcdseg evaluate takes it."""
    with open_export_source(None, label_studio_url=label_studio.url, api_key=api_key, project=project_id) as snapshot:
        return list(snapshot.tasks())


def _brush_mask(results: list[dict], height: int, width: int) -> np.ndarray:
    """Union of the brush regions of a prediction result, decoded with decode_brush_rle; bool (H, W)."""
    mask = np.zeros((height, width), dtype=bool)
    for region in results:
        assert region["type"] == "brushlabels", region["type"]
        assert (region["original_height"], region["original_width"]) == (height, width)
        mask |= decode_brush_rle(region["value"]["rle"], height, width)
    return mask


def _expected_mask(rgb: np.ndarray, expression: str) -> np.ndarray:
    """What the stand-in must answer: its colour rule, all-false for 'no target'; bool (H, W)."""
    expected = colour_rule_mask(rgb, expression)
    return np.zeros(rgb.shape[:2], dtype=bool) if expected is None else expected


def _brush_region(mask: np.ndarray, label: str = "object") -> JsonObject:
    """A brushlabels region of the `mask` control on `image`, as the editor submits one; mask bool (H, W)."""
    height, width = mask.shape
    return {
        "from_name": "mask",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": [label]},
    }


def _assert_predictions_follow_the_colour_rule(
    exported: Sequence[JsonObject], samples: Sequence[DemoSample], images_folder: Path
) -> None:
    """Each exported task (in sample order) has one stand-in prediction equal to the colour rule."""
    for task, sample in zip(exported, samples, strict=True):
        assert task["data"]["expression"] == sample.expression
        assert len(task["predictions"]) == 1, task["predictions"]
        prediction = task["predictions"][0]
        assert prediction["model_version"].startswith(STAND_IN_VERSION_PREFIX)
        rgb = _image_rgb(images_folder / sample.image_name)
        predicted = _brush_mask(prediction["result"], *rgb.shape[:2])
        expected = _expected_mask(rgb, sample.expression)
        assert expected.any(), f"sample {sample} should name a colour present in its image"
        assert np.array_equal(predicted, expected), f"task {task['id']} ({sample.expression!r})"


@pytest.mark.labelstudio
def test_batch_predictions_in_the_export_equal_the_stand_in_colour_rule(
    label_studio: LabelStudioServer, expressions_project: PredictedProject
) -> None:
    project = expressions_project.project

    exported = _exported_tasks(label_studio, label_studio.token, project.project_id)

    assert expressions_project.retrieve_answer["processed_items"] == len(project.task_ids)
    assert [task["id"] for task in exported] == list(project.task_ids)
    _assert_predictions_follow_the_colour_rule(exported, project.samples, _samples_folder(label_studio))


@pytest.mark.labelstudio
def test_a_task_whose_image_is_missing_gets_no_prediction_and_is_retried_later(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer
) -> None:
    """A failed task stores no prediction (never a fake "no target"), so a later retrieval asks again."""
    folder = label_studio.document_root / "late-images"
    (sample,) = write_demo_images(folder)[:1]
    late_name = "arrives-later.png"
    config = (LABEL_CONFIG_DIR / "expressions.xml").read_text(encoding="utf-8")
    project_id = client.create_project("e2e missing image", config)["id"]
    client.add_local_storage(project_id, str(folder))
    client.import_tasks(
        project_id,
        [
            {"data": {"image": f"/data/local-files/?d=late-images/{name}", "expression": sample.expression}}
            for name in (sample.image_name, late_name)
        ],
    )
    present_id, late_id = sorted(task["id"] for task in client.tasks(project_id))
    client.connect_ml_backend(project_id, backend.url)

    client.retrieve_predictions(project_id)
    assert sorted(p["task"] for p in client.predictions(project_id)) == [present_id]

    (folder / late_name).write_bytes((folder / sample.image_name).read_bytes())
    client.retrieve_predictions(project_id)
    by_task = {p["task"]: p for p in client.predictions(project_id)}
    assert sorted(by_task) == [present_id, late_id]
    rgb = _image_rgb(folder / late_name)
    assert np.array_equal(
        _brush_mask(by_task[late_id]["result"], *rgb.shape[:2]), _expected_mask(rgb, sample.expression)
    )


def _jwt_claims(token: str) -> JsonObject:
    """The payload of a JWT, unverified."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _project_of_uploaded_images(
    client: LabelStudioClient, title: str, images_folder: Path, samples: Sequence[DemoSample]
) -> tuple[int, dict[str, str]]:
    """A project with expressions.xml whose task images are uploaded files; (project id, {image name: URL})."""
    # Label Studio refuses a direct upload while the labeling config reads more than one data key,
    # so the images go up first and the config comes after.
    project_id = client.create_project(title)["id"]
    image_paths = [images_folder / name for name in sorted({sample.image_name for sample in samples})]
    upload_urls = client.upload_files(project_id, image_paths)
    client.update_project(project_id, label_config=(LABEL_CONFIG_DIR / "expressions.xml").read_text(encoding="utf-8"))
    tasks = [{"data": {"image": upload_urls[sample.image_name], "expression": sample.expression}} for sample in samples]
    client.import_tasks(project_id, tasks)
    return project_id, upload_urls


@pytest.mark.labelstudio
# label-studio-sdk 2.1.2 refreshes a personal access token with pydantic's deprecated parse_obj.
@pytest.mark.filterwarnings("ignore:The `parse_obj` method is deprecated:DeprecationWarning")
def test_a_backend_keyed_with_a_personal_access_token_fetches_uploaded_images(
    client: LabelStudioClient,
    label_studio: LabelStudioServer,
    stand_in_model_dir: Path,
    personal_access_token: str,
    tmp_path: Path,
) -> None:
    images_folder = tmp_path / "images"
    samples = write_demo_images(images_folder)
    project_id, upload_urls = _project_of_uploaded_images(client, "e2e personal access token", images_folder, samples)
    # The images need authentication, and the refresh token is no credential itself: only the
    # access token that /api/token/refresh/ gives for it is.
    assert _jwt_claims(personal_access_token)["token_type"] == "refresh"
    image_url = label_studio.url + upload_urls[samples[0].image_name]
    assert requests.get(image_url, timeout=10).status_code == 401
    refresh_token_as_bearer = {"Authorization": f"Bearer {personal_access_token}"}
    assert requests.get(image_url, headers=refresh_token_as_bearer, timeout=10).status_code == 401

    with BackendServer(
        stand_in_model_dir,
        tmp_path / "backend",
        label_studio_url=label_studio.url,
        label_studio_api_key=personal_access_token,
        threads=2,
    ) as backend:
        client.connect_ml_backend(project_id, backend.url, title="MLCD-Seg (personal access token)")
        answer = client.retrieve_predictions(project_id)
    exported = _exported_tasks(label_studio, personal_access_token, project_id)

    assert answer["processed_items"] == len(samples)
    assert [task["data"]["image"] for task in exported] == [upload_urls[sample.image_name] for sample in samples]
    _assert_predictions_follow_the_colour_rule(exported, samples, images_folder)


@pytest.mark.labelstudio
def test_interactive_prompt_from_the_textarea_segments_what_it_names(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer
) -> None:
    project = _project(client, label_studio, backend, "interactive.xml")
    task_id, sample = project.task_ids[0], project.samples[0]
    rgb = _image_rgb(_samples_folder(label_studio) / sample.image_name)

    for prompt in ("the blue ball", "the yellow star", "the white cat"):
        context = {
            "result": [
                {"from_name": "prompt", "to_name": "image", "type": "textarea", "value": {"text": [prompt]}}
            ]
        }
        answer = client.interactive_annotating(project.ml_backend_id, task_id, context)

        predicted = _brush_mask(answer["data"]["result"], *rgb.shape[:2])
        assert np.array_equal(predicted, _expected_mask(rgb, prompt)), prompt


def _with_rectangle(mask: np.ndarray, rows: slice, columns: slice, value: bool) -> np.ndarray:
    """A copy of a bool (H, W) mask with a rectangle painted in (value True) or cut out (False)."""
    corrected = mask.copy()
    corrected[rows, columns] = value
    return corrected


def _lower_part_cut(mask: np.ndarray, kept_share: float) -> np.ndarray:
    """A copy of a non-empty bool (H, W) mask without the rows below `kept_share` of its height."""
    rows = np.flatnonzero(mask.any(axis=1))
    first_cut_row = rows[0] + int(kept_share * (rows[-1] - rows[0] + 1))
    return _with_rectangle(mask, slice(first_cut_row, None), slice(None), False)


#: What the reviewer does with the prediction of each task, in task order; later tasks stay unannotated.
REVIEW_ACTIONS = ("accept", "accept", "accept", "add a box", "cut the lower half", "cut and add", "no target")


def _reviewed_mask(action: str, model_mask: np.ndarray) -> np.ndarray:
    """The mask a reviewer submits after correcting a (non-empty) predicted bool (H, W) mask."""
    if action == "add a box":
        return _with_rectangle(model_mask, slice(0, 40), slice(0, 60), True)
    if action == "cut the lower half":
        return _lower_part_cut(model_mask, 0.5)
    if action == "cut and add":
        return _with_rectangle(_lower_part_cut(model_mask, 0.8), slice(-30, None), slice(-50, None), True)
    assert action == "no target", action
    return np.zeros_like(model_mask)


@dataclass(frozen=True)
class ReviewedProject:
    """The expressions project after review: per annotated task id, what was submitted and predicted."""

    project_id: int
    task_ids: tuple[int, ...]
    human_masks: dict[int, np.ndarray]
    model_masks: dict[int, np.ndarray]
    expressions: dict[int, str]
    model_version: str

    @property
    def annotated(self) -> list[int]:
        """Ids of the annotated tasks, ascending."""
        return sorted(self.human_masks)

    def pixel_counts(self, task_id: int) -> tuple[int, int]:
        """(intersection, union) of the submitted and the colour-rule mask of a task."""
        human, model = self.human_masks[task_id], self.model_masks[task_id]
        return int(np.count_nonzero(human & model)), int(np.count_nonzero(human | model))


@pytest.fixture(scope="session")
def reviewed_project(
    client: LabelStudioClient, label_studio: LabelStudioServer, expressions_project: PredictedProject
) -> ReviewedProject:
    """Human annotations submitted through the API on top of the expressions project's predictions.

    The reviewer accepts three predicted regions unchanged, corrects three masks (box added, part
    cut), submits one empty annotation (no target) and leaves the remaining tasks unannotated.
    """
    project = expressions_project.project
    assert len(project.task_ids) > len(REVIEW_ACTIONS), "some tasks must stay unannotated"
    predicted_tasks = _exported_tasks(label_studio, label_studio.token, project.project_id)
    human_masks, model_masks, expressions = {}, {}, {}
    for action, task, sample in zip(REVIEW_ACTIONS, predicted_tasks, project.samples, strict=False):
        rgb = _image_rgb(_samples_folder(label_studio) / sample.image_name)
        model_mask = _expected_mask(rgb, sample.expression)
        prediction_result = task["predictions"][0]["result"]
        if action == "accept":
            result, human_mask = prediction_result, _brush_mask(prediction_result, *rgb.shape[:2])
        else:
            human_mask = _reviewed_mask(action, model_mask)
            assert not np.array_equal(human_mask, model_mask), action
            result = [_brush_region(human_mask)] if human_mask.any() else []
        client.create_annotation(task["id"], result)
        human_masks[task["id"]], model_masks[task["id"]] = human_mask, model_mask
        expressions[task["id"]] = sample.expression
    model_version = predicted_tasks[0]["predictions"][0]["model_version"]
    return ReviewedProject(project.project_id, project.task_ids, human_masks, model_masks, expressions, model_version)


def _reference_metrics(reviewed: ReviewedProject) -> JsonObject:
    """The RefCOCO metrics of the annotated tasks (submitted mask as reference), computed here with numpy."""
    counts = np.array([reviewed.pixel_counts(task_id) for task_id in reviewed.annotated])
    intersections, unions = counts[:, 0], counts[:, 1]
    ious = np.where(unions == 0, 1.0, intersections / np.maximum(unions, 1))
    human_empty = np.array([not reviewed.human_masks[task_id].any() for task_id in reviewed.annotated])
    model_empty = np.array([not reviewed.model_masks[task_id].any() for task_id in reviewed.annotated])
    return {
        "cIoU": intersections.sum() / unions.sum(),
        "gIoU": ious.mean(),
        **{f"precision@{k}": np.mean(ious >= k) for k in PRECISION_THRESHOLDS},
        "N-acc": np.mean(model_empty[human_empty]) if human_empty.any() else None,
        "T-acc": np.mean(~model_empty[~human_empty]) if (~human_empty).any() else None,
        "samples": len(ious),
        "no_target_samples": int(human_empty.sum()),
    }


def _run_mlcdseg_on_project(command: str, label_studio: LabelStudioServer, project_id: int, output: Path) -> None:
    """`python -m mlcdseg COMMAND` on a live project (legacy token) writing to `output`; asserts exit status 0."""
    completed = subprocess.run(
        [
            sys.executable, "-m", "mlcdseg", command,
            "--label-studio-url", label_studio.url, "--api-key", label_studio.token, "--project", str(project_id),
            "-o", str(output),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.labelstudio
def test_evaluate_on_the_live_project_scores_the_reviewed_masks_against_the_predictions(
    label_studio: LabelStudioServer, reviewed_project: ReviewedProject, tmp_path: Path
) -> None:
    reviewed = reviewed_project
    expected = _reference_metrics(reviewed)
    assert 0 < expected["cIoU"] < 1 and expected["N-acc"] == 0 and expected["T-acc"] == 1
    assert len({value for key, value in expected.items() if key.startswith("precision@")}) > 2

    _run_mlcdseg_on_project("evaluate", label_studio, reviewed.project_id, tmp_path)

    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["overall"] == pytest.approx(expected, rel=1e-9)
    assert report["by_model_version"] == {reviewed.model_version: pytest.approx(expected, rel=1e-9)}
    assert (report["source"]["tasks"], report["source"]["samples"]) == (len(reviewed.task_ids), len(reviewed.annotated))
    unannotated = sorted(set(reviewed.task_ids) - set(reviewed.annotated))
    skipped = [(skip["task_id"], skip["reason"]) for skip in report["skipped"]]
    assert skipped == [(task_id, "no annotation") for task_id in unannotated]
    with (tmp_path / "samples.csv").open(newline="", encoding="utf-8") as rows:
        samples = list(csv.DictReader(rows))
    assert sorted(int(row["task_id"]) for row in samples) == reviewed.annotated
    for row in samples:
        counts = (int(row["intersection"]), int(row["union"]))
        assert counts == reviewed.pixel_counts(int(row["task_id"])), row
    assert html.escape(reviewed.model_version) in (tmp_path / "report.html").read_text(encoding="utf-8")


def _refer_masks(dataset_dir: Path) -> list[tuple[JsonObject, np.ndarray]]:
    """Each ref of a REFER dataset with its bool (H, W) mask, loaded as REFER's getMask does it."""
    with (dataset_dir / "refs(unc).p").open("rb") as refs_file:
        refs = pickle.load(refs_file)
    instances = json.loads((dataset_dir / "instances.json").read_text(encoding="utf-8"))
    annotations = {annotation["id"]: annotation for annotation in instances["annotations"]}
    images = {image["id"]: image for image in instances["images"]}
    loaded = []
    for ref in refs:
        annotation, image = annotations[ref["ann_id"]], images[ref["image_id"]]
        assert isinstance(annotation["segmentation"][0]["counts"], str), "REFER wants RLE counts as str"
        mask = np.sum(coco_mask.decode(annotation["segmentation"]), axis=2) > 0
        assert mask.shape == (image["height"], image["width"])
        loaded.append((ref, mask))
    return loaded


@pytest.mark.labelstudio
def test_export_refcoco_of_the_live_project_holds_the_reviewed_masks_bit_for_bit(
    label_studio: LabelStudioServer, reviewed_project: ReviewedProject, tmp_path: Path
) -> None:
    reviewed = reviewed_project

    _run_mlcdseg_on_project("export-refcoco", label_studio, reviewed.project_id, tmp_path)

    sentences: dict[int, JsonObject] = {}
    for ref, mask in _refer_masks(tmp_path / "refcoco"):
        for sentence in ref["sentences"]:
            assert np.array_equal(mask, reviewed.human_masks[sentence["task_id"]]), sentence
            sentences[sentence["task_id"]] = sentence
    no_target = json.loads((tmp_path / "refcoco" / "no_target.json").read_text(encoding="utf-8"))
    assert [entry["task_id"] for entry in no_target] == [
        task_id for task_id in reviewed.annotated if not reviewed.human_masks[task_id].any()
    ]
    sentences.update({entry["task_id"]: entry for entry in no_target})
    assert sorted(sentences) == reviewed.annotated
    for task_id, sentence in sentences.items():
        intersection, union = reviewed.pixel_counts(task_id)
        assert sentence["raw"] == reviewed.expressions[task_id]
        assert sentence["iou"] == pytest.approx(intersection / union), task_id


@pytest.mark.labelstudio
def test_an_invalid_label_config_is_refused_with_label_studios_reason(client: LabelStudioClient) -> None:
    with pytest.raises(LabelStudioError, match="label_config"):
        client.create_project("broken", "<View><Image name='image' value='$image'/>")


def test_missing_label_studio_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCDSEG_LABEL_STUDIO", str(tmp_path / "no-such-venv"))

    with pytest.raises(LabelStudioError, match="make test"):
        find_label_studio()


@pytest.mark.labelstudio
def test_demo_once_without_a_gpu_serves_the_stand_in_says_so_and_exits_zero(
    label_studio_executable: Path,
) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "MLCDSEG_MODEL"}
    environment.update({"MLCDSEG_LABEL_STUDIO": str(label_studio_executable), "CUDA_VISIBLE_DEVICES": ""})

    completed = subprocess.run(
        [sys.executable, "-m", "mlcdseg", "demo", "--once"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    task_count = sum(len(scene.expressions) for scene in SCENES)
    assert f"OK: every one of the {task_count} tasks has a non-empty predicted mask" in completed.stdout
    assert "OFFLINE STAND-IN MODEL - NOT MLCD-Seg" in completed.stderr


def test_demo_check_names_tasks_without_a_prediction_or_with_an_empty_mask(tmp_path: Path) -> None:
    samples = tuple(write_demo_images(tmp_path))[:3]
    rgb = _image_rgb(tmp_path / samples[0].image_name)
    region = _brush_region(_expected_mask(rgb, samples[0].expression))
    project = DemoProject(project_id=1, ml_backend_id=1, task_ids=(11, 12, 13), samples=samples)
    predictions = [{"task": 11, "result": [region]}, {"task": 12, "result": []}]

    problems = prediction_problems(predictions, project, tmp_path)

    assert len(problems) == 2
    assert problems[0].startswith("task 12 ") and problems[0].endswith("the predicted mask is empty")
    assert problems[1].startswith("task 13 ") and problems[1].endswith("no prediction")


def _fake_label_studio(tmp_path: Path, script: str) -> Path:
    """An executable shell script standing in for label-studio."""
    executable = tmp_path / "label-studio"
    executable.write_text(f"#!/bin/sh\n{script}\n")
    executable.chmod(0o755)
    return executable


def test_a_label_studio_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    executable = _fake_label_studio(tmp_path, "echo 'django.db.utils.OperationalError: disk full'; exit 3")
    server = LabelStudioServer(tmp_path / "data", executable=executable)

    with pytest.raises(ServiceStartError, match="(?s)exited with status 3.*disk full"):
        server.start()


def test_a_label_studio_that_never_answers_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    executable = _fake_label_studio(tmp_path, f"echo $$ > {pid_file}; echo 'still migrating'; exec sleep 60")
    server = LabelStudioServer(tmp_path / "data", executable=executable, startup_timeout_s=1)

    with pytest.raises(ServiceStartError, match="(?s)did not answer .*/health within 1 s.*still migrating"):
        server.start()

    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
