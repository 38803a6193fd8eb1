"""The demo: which model it serves, how it fails on a taken port, its logs and its instructions."""

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from mlcdseg.cli import main
from mlcdseg.demo.run import (
    DemoProject,
    annotator_instructions,
    choose_model,
    project_titles,
    real_model_available,
)
from mlcdseg.errors import ServiceStartError
from mlcdseg.labelstudio.local_server import (
    LOOPBACK,
    REPO_ROOT,
    LabelStudioServer,
    ManagedProcess,
)
from mlcdseg.model.loading import DEFAULT_MODEL, available_offline
from mlcdseg.model.settings import ModelSettings
from mlcdseg.model.stand_in_files.colour_rule import MAX_COLOUR_DISTANCE


@pytest.fixture
def without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def with_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_local_directory_is_available_offline_and_an_uncached_hub_id_is_not(stand_in_model_dir: Path) -> None:
    assert available_offline(str(stand_in_model_dir))
    assert not available_offline(DEFAULT_MODEL)  # the tests' Hugging Face cache is empty


def test_without_a_gpu_the_demo_writes_and_serves_the_stand_in(without_gpu, tmp_path: Path) -> None:
    choice = choose_model(None, tmp_path, ModelSettings.from_env({}))
    assert choice.is_stand_in
    assert (Path(choice.location) / "config.json").is_file()


def test_a_gpu_with_the_weights_under_model_dir_serves_mlcd_seg_from_there(with_gpu, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    settings = ModelSettings.from_env({"MODEL_DIR": str(models)})
    assert not real_model_available(settings)
    (models / DEFAULT_MODEL).mkdir(parents=True)
    assert real_model_available(settings)
    choice = choose_model(None, tmp_path / "work", settings)
    assert (choice.location, choice.is_stand_in) == (str(models / DEFAULT_MODEL), False)


def test_a_named_model_is_served_as_named(stand_in_model_dir: Path, tmp_path: Path) -> None:
    settings = ModelSettings.from_env({"MLCDSEG_MODEL": str(stand_in_model_dir)})
    choice = choose_model(None, tmp_path, settings)
    assert (choice.location, choice.is_stand_in) == (str(stand_in_model_dir), True)


def test_a_model_named_under_model_dir_is_served_from_there(stand_in_model_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "my-stand-in").symlink_to(stand_in_model_dir, target_is_directory=True)
    settings = ModelSettings.from_env({"MODEL_DIR": str(models), "MLCDSEG_MODEL": "my-stand-in"})
    choice = choose_model(None, tmp_path / "work", settings)
    assert (choice.location, choice.is_stand_in) == (str(models / "my-stand-in"), True)
    # --model takes the place of MLCDSEG_MODEL and is looked up under MODEL_DIR the same way
    by_option = choose_model("my-stand-in", tmp_path / "work", ModelSettings.from_env({"MODEL_DIR": str(models)}))
    assert (by_option.location, by_option.is_stand_in) == (str(models / "my-stand-in"), True)


def test_the_model_comes_from_the_settings_given_not_from_the_environment(
    without_gpu, monkeypatch: pytest.MonkeyPatch, stand_in_model_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLCDSEG_MODEL", str(tmp_path / "not-this-one"))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "nor-under-here"))
    choice = choose_model(None, tmp_path, ModelSettings.from_env({"MLCDSEG_MODEL": str(stand_in_model_dir)}))
    assert choice.location == str(stand_in_model_dir)


@pytest.mark.labelstudio  # the demo checks for Label Studio's virtualenv before the port
def test_a_taken_port_is_refused_at_once_with_one_line_naming_it_and_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        status = main(["demo", "--port", str(port), "--data-dir", str(tmp_path), "--model", "stand-in-unused"])
    errors = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(errors) == 1, errors
    assert f"port {port}" in errors[0] and "--port" in errors[0]


def test_each_start_of_a_service_writes_a_fresh_log(tmp_path: Path) -> None:
    log_path = tmp_path / "service.log"
    for run in ("first", "second"):
        service = ManagedProcess(
            "fake service",
            [sys.executable, "-c", f"print('{run} run'); raise SystemExit(3)"],
            os.environ,
            log_path,
            "http://127.0.0.1:9/health",
            startup_timeout_s=30,
        )
        with pytest.raises(ServiceStartError, match="exited with status 3"):
            service.start()
    assert log_path.read_text().splitlines() == ["second run"]


def test_label_studio_is_started_without_error_reporting_to_outside_hosts(tmp_path: Path) -> None:
    executable = tmp_path / "label-studio"
    executable.write_text("#!/bin/sh\nexit 1\n")
    executable.chmod(0o755)
    server = LabelStudioServer(tmp_path / "data", executable=executable)
    assert server.env["SENTRY_DSN"] == ""
    assert server.env["FRONTEND_SENTRY_DSN"] == ""


def _steps_found_in_order(text: str, steps: list[str]) -> list[str]:
    """The steps found in `text` one after the other (case-insensitive), each after the one before."""
    lowered, position, found = text.lower(), 0, []
    for step in steps:
        position = lowered.find(step.lower(), position)
        if position < 0:
            break
        found.append(step)
    return found


INTERACTIVE_STEPS = ["Auto-Annotation", "Auto-Accept Suggestions", "prompt box", "Submit"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(annotator_instructions("http://127.0.0.1:8080", *[DemoProject(1, 1, (), ())] * 2, "pw", Path("d")), id="demo"),
        pytest.param((REPO_ROOT / "label_config" / "interactive.xml").read_text(), id="interactive.xml"),
        pytest.param(
            (REPO_ROOT / "README.md").read_text().split("**Interactive pre-annotation in the editor**")[1][:1200],
            id="README",
        ),
    ],
)
def test_interactive_instructions_name_auto_annotation_before_the_prompt(text: str) -> None:
    assert _steps_found_in_order(text, INTERACTIVE_STEPS) == INTERACTIVE_STEPS


def test_the_readme_states_the_stand_in_colour_tolerance_from_the_rule() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"at\nmost {MAX_COLOUR_DISTANCE:.0f}" in readme or f"at most {MAX_COLOUR_DISTANCE:.0f}" in readme


@pytest.mark.parametrize("is_stand_in", [True, False])
def test_demo_project_titles_are_distinct_and_fit_label_studios_50_characters(is_stand_in: bool) -> None:
    titles = project_titles(is_stand_in)
    assert len(set(titles)) == 2 and all(3 <= len(title) <= 50 for title in titles), titles
