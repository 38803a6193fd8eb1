"""docker-compose.yml and backend/Dockerfile, checked for structure (Docker itself is not needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))[
        "services"
    ]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (REPO_ROOT / "backend" / "Dockerfile").read_text(encoding="utf-8")


def test_compose_has_label_studio_and_the_backend(services: dict) -> None:
    assert set(services) == {"label-studio", "mlcdseg-backend"}
    assert services["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"


def test_label_studio_serves_local_files_and_may_call_a_private_backend(services: dict) -> None:
    label_studio = services["label-studio"]
    environment = label_studio["environment"]
    assert "8080:8080" in label_studio["ports"]
    assert environment["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert environment["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == "/label-studio/files"
    assert environment["ML_BLOCK_LOCAL_IP"] == "false"
    assert any(volume.endswith(":/label-studio/data") for volume in label_studio["volumes"])


def test_backend_is_built_from_the_repository_with_the_backend_dockerfile(services: dict) -> None:
    build = services["mlcdseg-backend"]["build"]
    context = (REPO_ROOT / build["context"]).resolve()
    assert context == REPO_ROOT
    assert (context / build["dockerfile"]).is_file()
    assert "9090:9090" in services["mlcdseg-backend"]["ports"]


def test_backend_reserves_one_nvidia_gpu(services: dict) -> None:
    (device,) = services["mlcdseg-backend"]["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}


def test_backend_is_wired_to_label_studio_and_keeps_weights_in_a_volume(services: dict) -> None:
    backend = services["mlcdseg-backend"]
    environment = backend["environment"]
    assert environment["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert environment["LABEL_STUDIO_API_KEY"] == "${LABEL_STUDIO_API_KEY:-}"
    # the same key is the token Label Studio creates its first user with
    assert (
        services["label-studio"]["environment"]["LABEL_STUDIO_USER_TOKEN"]
        == "${LABEL_STUDIO_API_KEY:-}"
    )
    assert environment["MLCDSEG_MODEL"].startswith("${MLCDSEG_MODEL")
    assert environment["MLCDSEG_REVISION"].startswith("${MLCDSEG_REVISION")
    assert any(volume.endswith(":/data/hf") for volume in backend["volumes"])


def test_every_named_volume_is_declared(services: dict) -> None:
    declared = set(yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["volumes"])
    used = {
        volume.split(":", 1)[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if not volume.startswith(("/", ".", "$"))
    }
    assert used == declared


def test_dockerfile_uses_a_cuda_base_and_installs_the_requirements(dockerfile: str) -> None:
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert "cuda" in base
    assert re.search(r"^RUN pip install -r requirements\.txt$", dockerfile, flags=re.MULTILINE)
    for copied in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, flags=re.MULTILINE):
        for source in copied.split():
            assert (
                REPO_ROOT / source
            ).exists(), f"Dockerfile copies {source}, which the repository lacks"


def test_dockerfile_runs_unprivileged_gunicorn_with_a_health_check(dockerfile: str) -> None:
    assert re.search(r"^USER (?!root)\S+$", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^ENV .*HF_HOME=/data/hf", dockerfile, flags=re.MULTILINE | re.DOTALL)
    assert re.search(r"^EXPOSE 9090$", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", dockerfile, flags=re.MULTILINE)
    (command,) = re.findall(r"^CMD (.+)$", dockerfile, flags=re.MULTILINE)
    assert command == '["gunicorn", "-c", "backend/gunicorn.conf.py", "backend._wsgi:app"]'
    assert (
        "COPY . " not in dockerfile and "huggingface-cli download" not in dockerfile
    )  # no weights baked in
