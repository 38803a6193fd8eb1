"""The GPU install (requirements.txt) gets the torch release CI tests (requirements-cpu.txt)."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pinned_release(requirements_file: str, package: str) -> Version:
    """The `package==X` pin of a requirements file (the local build tag, e.g. +cpu, dropped)."""
    for line in (ROOT / requirements_file).read_text().splitlines():
        match = re.fullmatch(rf"{package}==([\w.]+)", line.strip())
        if match:
            return Version(match.group(1))
    raise AssertionError(f"{requirements_file} pins no {package}")


def test_gpu_and_cpu_requirements_pin_the_same_torch():
    assert pinned_release("requirements.txt", "torch") == pinned_release("requirements-cpu.txt", "torch")


def test_pinned_torch_lies_in_the_declared_range_whose_floor_has_enable_gqa():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_requirement = next(Requirement(spec) for spec in project["dependencies"] if spec.startswith("torch"))
    assert pinned_release("requirements.txt", "torch") in torch_requirement.specifier
    # scaled_dot_product_attention(enable_gqa=...) arrived in torch 2.5: nothing older may be admitted.
    assert Version("2.4.1") not in torch_requirement.specifier
    assert Version("2.5.0") in torch_requirement.specifier


def test_torchvision_is_the_release_built_for_the_pinned_torch():
    torch_release = pinned_release("requirements.txt", "torch")
    # torchvision 0.(minor + 15) pairs with torch 2.minor (0.19 ↔ 2.4, 0.24 ↔ 2.9, 0.29 ↔ 2.14).
    assert pinned_release("requirements.txt", "torchvision") == Version(f"0.{torch_release.minor + 15}.{torch_release.micro}")
