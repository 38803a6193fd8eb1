"""Backend settings from the environment: defaults, parsing, and clear errors on bad values."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from backend.settings import Settings
from mlcdseg.errors import SettingsError


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.port, settings.workers, settings.threads) == (9090, 1, 8)
    assert settings.model == "DeepGlint-AI/MLCD-Seg-7B" and settings.model_source == settings.model
    assert (
        settings.basic_auth is None and settings.force_seg is False and settings.allowed_hosts == ()
    )
    assert settings.logging_level == logging.INFO


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "LABEL_STUDIO_URL": "http://label-studio:8080/",
            "LABEL_STUDIO_API_KEY": "abc",
            "BASIC_AUTH_USER": "u",
            "BASIC_AUTH_PASS": "p",
            "LOG_LEVEL": "debug",
            "PORT": "9191",
            "WORKERS": "2",
            "THREADS": "4",
            "MLCDSEG_MODEL": "DeepGlint-AI/MLCD-Seg",
            "MLCDSEG_REVISION": "0123abc",
            "MLCDSEG_DEVICE": "cuda:1",
            "MLCDSEG_DTYPE": "BFloat16",
            "MLCDSEG_PROMPT_TEMPLATE": "Segment the {expression}.",
            "MLCDSEG_FORCE_SEG": "yes",
            "MLCDSEG_ALLOWED_HOSTS": " Images.Example.com , cdn.example.org,, ",
            "MLCDSEG_MAX_IMAGE_BYTES": "1000",
            "MLCDSEG_MAX_IMAGE_PIXELS": "2000",
            "MLCDSEG_FETCH_TIMEOUT": "2.5",
            "MLCDSEG_IMAGE_CACHE_SIZE": "0",
            "MLCDSEG_MAX_REQUEST_BYTES": "3000",
        }
    )
    assert settings == Settings(
        label_studio_url="http://label-studio:8080",
        label_studio_api_key="abc",
        basic_auth_user="u",
        basic_auth_pass="p",
        log_level="DEBUG",
        port=9191,
        workers=2,
        threads=4,
        model="DeepGlint-AI/MLCD-Seg",
        revision="0123abc",
        device="cuda:1",
        dtype="bfloat16",
        prompt_template="Segment the {expression}.",
        force_seg=True,
        allowed_hosts=("images.example.com", "cdn.example.org"),
        max_image_bytes=1000,
        max_image_pixels=2000,
        fetch_timeout=2.5,
        image_cache_size=0,
        max_request_bytes=3000,
    )
    assert settings.basic_auth == ("u", "p")


def test_empty_variables_count_as_unset() -> None:
    """docker compose passes `${VAR:-}` through as empty strings."""
    assert (
        Settings.from_env(
            {"MLCDSEG_REVISION": "", "PORT": " ", "MLCDSEG_MODEL": "", "LABEL_STUDIO_API_KEY": ""}
        )
        == Settings()
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PORT": "http"}, r"PORT='http' is not a whole number"),
        ({"PORT": "70000"}, r"PORT=70000 is not a TCP port"),
        ({"WORKERS": "0"}, r"WORKERS=0 must be at least 1"),
        ({"THREADS": "-1"}, r"THREADS=-1 must be at least 1"),
        ({"MLCDSEG_FETCH_TIMEOUT": "soon"}, r"MLCDSEG_FETCH_TIMEOUT='soon' is not a number"),
        ({"MLCDSEG_FETCH_TIMEOUT": "nan"}, r"MLCDSEG_FETCH_TIMEOUT=nan must be at least"),
        ({"MLCDSEG_IMAGE_CACHE_SIZE": "-2"}, r"MLCDSEG_IMAGE_CACHE_SIZE=-2 must be at least 0"),
        ({"MLCDSEG_MAX_IMAGE_BYTES": "0"}, r"MLCDSEG_MAX_IMAGE_BYTES=0 must be at least 1"),
        ({"MLCDSEG_FORCE_SEG": "maybe"}, r"MLCDSEG_FORCE_SEG='maybe' is not a boolean"),
        ({"LOG_LEVEL": "loud"}, r"LOG_LEVEL='LOUD' is not one of DEBUG"),
        ({"MLCDSEG_DTYPE": "int8"}, r"MLCDSEG_DTYPE='int8' is not one of auto"),
        (
            {"MLCDSEG_PROMPT_TEMPLATE": "Segment it"},
            r"MLCDSEG_PROMPT_TEMPLATE: .*must contain '\{expression\}'",
        ),
        (
            {"LABEL_STUDIO_URL": "label-studio:8080"},
            r"LABEL_STUDIO_URL='label-studio:8080' is not an http\(s\) URL",
        ),
        ({"LABEL_STUDIO_URL": "ftp://ls"}, r"is not an http\(s\) URL"),
        ({"BASIC_AUTH_USER": "u"}, r"set both BASIC_AUTH_USER and BASIC_AUTH_PASS"),
        (
            {"MLCDSEG_ALLOWED_HOSTS": "https://cdn.example.org"},
            r"entry 'https://cdn.example.org' is not a bare host name",
        ),
        ({"MODEL_DIR": "/no/such/dir"}, r"MODEL_DIR='/no/such/dir' is not a directory"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_model_dir_holds_local_model_directories(tmp_path: Path) -> None:
    (tmp_path / "DeepGlint-AI" / "MLCD-Seg-7B").mkdir(parents=True)
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    assert settings.model_source == str(tmp_path / "DeepGlint-AI" / "MLCD-Seg-7B")
    assert (
        Settings.from_env({"MODEL_DIR": str(tmp_path), "MLCDSEG_MODEL": "other/model"}).model_source
        == "other/model"
    )


def test_overrides_are_validated_and_none_keeps_the_value() -> None:
    settings = Settings().with_overrides(port=9999, model=None, threads=2)
    assert (settings.port, settings.model, settings.threads) == (9999, Settings().model, 2)
    with pytest.raises(SettingsError, match="PORT=0"):
        Settings().with_overrides(port=0)
