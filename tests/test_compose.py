"""docker-compose.yml and backend/Dockerfile, checked for structure (Docker itself is not needed)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from backend.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))[
        "services"
    ]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (REPO_ROOT / "backend" / "Dockerfile").read_text(encoding="utf-8")


def _published_container_ports(service: dict) -> set[int]:
    """The container side of a service's "host:container" port mappings."""
    return {int(str(mapping).rsplit(":", 1)[-1]) for mapping in service.get("ports", [])}


def _interpolated(environment: dict, variables: dict[str, str]) -> dict[str, str]:
    """A service's environment as compose resolves it: ${NAME:-default} from `variables`."""

    def value(match: re.Match) -> str:
        return variables.get(match.group(1)) or match.group(2) or ""

    return {name: re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", value, str(raw)) for name, raw in environment.items()}


@pytest.fixture(scope="module")
def example_variables() -> dict[str, str]:
    """.env.example as compose reads it (what `cp .env.example .env` gives)."""
    lines = (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


class _RecordingEnvironment(dict):
    """An environment mapping that remembers every name looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, name, default=None):
        self.read.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)

    def __contains__(self, name) -> bool:
        self.read.add(name)
        return super().__contains__(name)


def test_every_variable_compose_gives_the_backend_is_read_and_valid(services: dict, example_variables: dict) -> None:
    environment = _RecordingEnvironment(
        _interpolated(services["mlcdseg-backend"]["environment"], example_variables)
    )
    settings = Settings.from_env(environment)  # SettingsError if compose sets a bad value
    assert set(environment) <= environment.read, "compose sets variables the backend never reads"
    assert settings.port in _published_container_ports(services["mlcdseg-backend"])


def test_every_backend_variable_of_env_example_reaches_the_backend(services: dict, example_variables: dict) -> None:
    backend_environment = services["mlcdseg-backend"]["environment"]
    passed = {name for raw in backend_environment.values() for name in re.findall(r"\$\{(\w+)", str(raw))}
    environment = _RecordingEnvironment({})
    Settings.from_env(environment)
    meant_for_the_backend = {name for name in example_variables if name in environment.read}
    assert meant_for_the_backend <= passed, "set in .env.example, never handed to the backend"


def test_the_backend_reaches_label_studio_by_service_name_and_port(services: dict, example_variables: dict) -> None:
    backend = _interpolated(services["mlcdseg-backend"]["environment"], example_variables)
    label_studio_url = urlsplit(Settings.from_env(backend).label_studio_url)
    assert label_studio_url.hostname in services
    assert label_studio_url.port in _published_container_ports(services[label_studio_url.hostname])
    # The key the backend fetches images with is the token Label Studio creates its first user with.
    label_studio = services[label_studio_url.hostname]["environment"]
    assert services["mlcdseg-backend"]["environment"]["LABEL_STUDIO_API_KEY"] == label_studio["LABEL_STUDIO_USER_TOKEN"]
    assert label_studio["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"


def test_label_studio_is_the_version_the_tests_run_against(services: dict) -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    (tested,) = re.findall(r"^LABEL_STUDIO_VERSION\s*[:?]?=\s*(\S+)", makefile, flags=re.MULTILINE)
    assert services["label-studio"]["image"].rsplit(":", 1)[1] == tested


def test_label_studio_serves_its_files_volume_and_may_call_a_private_backend(services: dict) -> None:
    label_studio = services["label-studio"]
    environment = label_studio["environment"]
    document_root = environment["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert environment["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert any(str(volume).split(":")[-2] == document_root for volume in label_studio["volumes"])
    assert environment["ML_BLOCK_LOCAL_IP"] == "false"  # else Label Studio refuses the backend's address
    assert any(volume.endswith(":/label-studio/data") for volume in label_studio["volumes"])


def test_backend_is_built_from_the_repository_with_the_backend_dockerfile(services: dict) -> None:
    build = services["mlcdseg-backend"]["build"]
    context = (REPO_ROOT / build["context"]).resolve()
    assert context == REPO_ROOT
    assert (context / build["dockerfile"]).is_file()


def test_backend_reserves_one_nvidia_gpu(services: dict) -> None:
    (device,) = services["mlcdseg-backend"]["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}


def test_backend_keeps_weights_in_the_volume_hf_home_points_to(services: dict, dockerfile: str) -> None:
    (hf_home,) = re.findall(r"HF_HOME=(\S+)", dockerfile)
    assert any(str(volume).split(":")[1] == hf_home for volume in services["mlcdseg-backend"]["volumes"])


def test_every_named_volume_is_declared(services: dict) -> None:
    declared = set(yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["volumes"])
    used = {
        volume.split(":", 1)[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if not volume.startswith(("/", ".", "$"))
    }
    assert used == declared


def test_dockerfile_takes_torch_from_the_requirements_not_its_base_image(dockerfile: str) -> None:
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert base.startswith("python:"), "a pytorch base image would bring a torch the tests never ran"
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
