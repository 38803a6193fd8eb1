"""Which model the demo serves: the backend's own lookup decides whether MLCD-Seg is at hand."""

from pathlib import Path

import pytest
import torch

from mlcdseg.demo.run import choose_model, real_model_available
from mlcdseg.model.loading import DEFAULT_MODEL, available_offline


@pytest.fixture
def clean_model_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in ("MLCDSEG_MODEL", "MLCDSEG_REVISION", "MODEL_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_local_directory_is_available_offline_and_an_uncached_hub_id_is_not(stand_in_model_dir: Path) -> None:
    assert available_offline(str(stand_in_model_dir))
    assert not available_offline(DEFAULT_MODEL)  # the tests' Hugging Face cache is empty


def test_without_a_gpu_the_demo_writes_and_serves_the_stand_in(clean_model_env, tmp_path: Path) -> None:
    clean_model_env.setattr(torch.cuda, "is_available", lambda: False)
    choice = choose_model(None, tmp_path)
    assert choice.is_stand_in
    assert (Path(choice.location) / "config.json").is_file()


def test_a_gpu_with_the_weights_under_model_dir_serves_mlcd_seg(clean_model_env, tmp_path: Path) -> None:
    clean_model_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_model_env.setenv("MODEL_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    assert not real_model_available()
    (tmp_path / "models" / DEFAULT_MODEL).mkdir(parents=True)
    assert real_model_available()
    choice = choose_model(None, tmp_path / "work")
    assert (choice.location, choice.is_stand_in) == (DEFAULT_MODEL, False)


def test_a_named_model_is_served_as_named(clean_model_env, stand_in_model_dir: Path, tmp_path: Path) -> None:
    clean_model_env.setenv("MLCDSEG_MODEL", str(stand_in_model_dir))
    choice = choose_model(None, tmp_path)
    assert (choice.location, choice.is_stand_in) == (str(stand_in_model_dir), True)
