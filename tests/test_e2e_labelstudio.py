"""End to end against a real Label Studio 1.23.2 and our backend (gunicorn) serving the offline stand-in.

One Label Studio and one backend are started per session. The Label Studio executable comes from
.venv-labelstudio (`make test` creates it) or $MLCDSEG_LABEL_STUDIO; without one these tests FAIL,
unless MLCDSEG_SKIP_LABELSTUDIO=1 asks to skip them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcdseg.demo import SAMPLES_FOLDER, DemoProject, prediction_problems, set_up_project
from mlcdseg.demo_data import SCENES, write_demo_images
from mlcdseg.errors import LabelStudioError, ServiceStartError
from mlcdseg.export_source import open_export_source
from mlcdseg.labelstudio_client import LabelStudioClient
from mlcdseg.labelstudio_server import REPO_ROOT, BackendServer, LabelStudioServer, find_label_studio
from mlcdseg.masks import decode_brush_rle, encode_brush_rle
from mlcdseg.model import STAND_IN_VERSION_PREFIX
from mlcdseg.stand_in import colour_rule_mask

SKIP_VARIABLE = "MLCDSEG_SKIP_LABELSTUDIO"
LABEL_CONFIG_DIR = REPO_ROOT / "label_config"


@pytest.fixture(scope="session")
def label_studio_executable() -> Path:
    """The label-studio executable; fails (does not skip) when it is missing, unless opted out."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: Label Studio end-to-end tests skipped on request")
    try:
        return find_label_studio()
    except LabelStudioError as error:
        missing = str(error)
    pytest.fail(
        f"{missing}\n`make test` installs Label Studio into .venv-labelstudio; "
        f"set {SKIP_VARIABLE}=1 to skip these tests instead.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def label_studio(
    label_studio_executable: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelStudioServer]:
    """A running Label Studio on a free loopback port with a fresh SQLite database."""
    with LabelStudioServer(
        tmp_path_factory.mktemp("label-studio"), executable=label_studio_executable
    ) as server:
        yield server


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


@pytest.fixture(scope="session")
def client(label_studio: LabelStudioServer) -> LabelStudioClient:
    """A REST client authenticated with the session user's legacy token."""
    return LabelStudioClient(label_studio.url, label_studio.token)


def _project(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer, config_name: str
) -> DemoProject:
    """A project with `label_config/<config_name>`, the sample images as local files, and our backend."""
    label_config = (LABEL_CONFIG_DIR / config_name).read_text(encoding="utf-8")
    return set_up_project(client, label_config, label_studio.document_root, backend.url, f"e2e {config_name}")


def _image_rgb(label_studio: LabelStudioServer, image_name: str) -> np.ndarray:
    """The sample image as a uint8 (H, W, 3) array, read from Label Studio's document root."""
    with Image.open(label_studio.document_root / SAMPLES_FOLDER / image_name) as image:
        return np.asarray(image.convert("RGB"))


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


@pytest.mark.labelstudio
def test_batch_predictions_in_the_export_equal_the_stand_in_colour_rule(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer
) -> None:
    project = _project(client, label_studio, backend, "expressions.xml")

    answer = client.retrieve_predictions(project.project_id)
    with open_export_source(
        None, label_studio_url=label_studio.url, api_key=label_studio.token, project=project.project_id
    ) as snapshot:
        exported = list(snapshot.tasks())

    assert answer["processed_items"] == len(project.task_ids)
    assert [task["id"] for task in exported] == list(project.task_ids)
    for task, sample in zip(exported, project.samples):
        assert task["data"]["expression"] == sample.expression
        assert len(task["predictions"]) == 1, task["predictions"]
        prediction = task["predictions"][0]
        assert prediction["model_version"].startswith(STAND_IN_VERSION_PREFIX)
        rgb = _image_rgb(label_studio, sample.image_name)
        predicted = _brush_mask(prediction["result"], *rgb.shape[:2])
        expected = _expected_mask(rgb, sample.expression)
        assert expected.any(), f"sample {sample} should name a colour present in its image"
        assert np.array_equal(predicted, expected), f"task {task['id']} ({sample.expression!r})"


@pytest.mark.labelstudio
def test_interactive_prompt_from_the_textarea_segments_what_it_names(
    client: LabelStudioClient, label_studio: LabelStudioServer, backend: BackendServer
) -> None:
    project = _project(client, label_studio, backend, "interactive.xml")
    task_id, sample = project.task_ids[0], project.samples[0]
    rgb = _image_rgb(label_studio, sample.image_name)

    for prompt in ("the blue ball", "the yellow star", "the white cat"):
        context = {
            "result": [
                {"from_name": "prompt", "to_name": "image", "type": "textarea", "value": {"text": [prompt]}}
            ]
        }
        answer = client.interactive_annotating(project.ml_backend_id, task_id, context)

        predicted = _brush_mask(answer["data"]["result"], *rgb.shape[:2])
        assert np.array_equal(predicted, _expected_mask(rgb, prompt)), prompt


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
    rgb = np.asarray(Image.open(tmp_path / samples[0].image_name).convert("RGB"))
    height, width = rgb.shape[:2]
    region = {
        "from_name": "mask",
        "to_name": "image",
        "type": "brushlabels",
        "original_height": height,
        "original_width": width,
        "value": {
            "format": "rle",
            "rle": encode_brush_rle(_expected_mask(rgb, samples[0].expression)),
            "brushlabels": ["object"],
        },
    }
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
