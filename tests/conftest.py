"""Shared fixtures: the captured Label Studio 1.23.2 requests and exports, the offline stand-in model,
and one real Label Studio per session for the end-to-end tests (with a REST client)."""

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlcdseg.errors import LabelStudioError
from mlcdseg.labelstudio.client import LabelStudioClient
from mlcdseg.labelstudio.local_server import LabelStudioServer, find_label_studio

SKIP_VARIABLE = "MLCDSEG_SKIP_LABELSTUDIO"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "labelstudio-1.23.2"

# Tests never reach the Hugging Face hub nor touch ~/.cache: offline mode and a throwaway HF_HOME
# (transformers copies remote code into HF_MODULES_CACHE), set before anything imports
# transformers, which reads them at import time. Subprocesses inherit them.
_HF_HOME = Path(tempfile.mkdtemp(prefix="mlcdseg-tests-hf-"))
os.environ.update(
    {
        "HF_HOME": str(_HF_HOME),
        "HF_MODULES_CACHE": str(_HF_HOME / "modules"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
)
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of the real request bodies and exports captured from Label Studio 1.23.2."""
    assert FIXTURES_DIR.is_dir(), f"captured Label Studio fixtures not found at {FIXTURES_DIR}"
    return FIXTURES_DIR


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Path:
    """A directory nothing can be created in: read-only for a normal user, /proc for root."""
    if os.geteuid() != 0:
        directory = tmp_path / "read-only"
        directory.mkdir(mode=0o500)
        return directory
    if not Path("/proc").is_dir():
        pytest.skip("running as root without /proc: no directory is unwritable")
    return Path("/proc")


@pytest.fixture(scope="session")
def stand_in_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline stand-in model directory (NOT MLCD-Seg: a colour rule), written once."""
    from mlcdseg.model.stand_in import write_stand_in_model

    return write_stand_in_model(tmp_path_factory.mktemp("models") / "stand-in")


@pytest.fixture(scope="session")
def stand_in_segmenter(stand_in_model_dir: Path):
    """The stand-in loaded on CPU through mlcdseg.model.loading.load_model, the path MLCD-Seg takes."""
    from mlcdseg.model.loading import load_model

    return load_model(str(stand_in_model_dir), device="cpu")


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
    # A first start runs the migrations (~35 s alone); a busy 2-core machine needs several times that.
    with LabelStudioServer(
        tmp_path_factory.mktemp("label-studio"), executable=label_studio_executable, startup_timeout_s=300
    ) as server:
        yield server


@pytest.fixture(scope="session")
def client(label_studio: LabelStudioServer) -> LabelStudioClient:
    """A REST client authenticated with the session user's legacy token."""
    return LabelStudioClient(label_studio.url, label_studio.token)
