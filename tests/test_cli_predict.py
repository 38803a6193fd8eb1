"""`mlcdseg predict`, `stand-in-model`, `--version`, `--help` and one-line errors."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from mlcdseg.cli import build_parser, main
from mlcdseg.model.stand_in import colour_rule_mask

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def scene_path(tmp_path) -> Path:
    """A 40×30 grey PNG with a red square and a blue bar."""
    image = Image.new("RGB", (40, 30), (128, 128, 128))
    image.paste((255, 0, 0), (5, 5, 15, 15))
    image.paste((0, 0, 255), (20, 20, 38, 24))
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def _red_mask(path: Path) -> np.ndarray:
    return colour_rule_mask(np.asarray(Image.open(path).convert("RGB")), "red")


def _run_module(*arguments: str) -> subprocess.CompletedProcess:
    """`python -m mlcdseg ARGUMENTS` from the repository root (env from conftest: offline)."""
    return subprocess.run(
        [sys.executable, "-m", "mlcdseg", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mlcdseg: error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_predict_as_a_module_writes_the_colour_rule_mask(stand_in_model_dir, scene_path, tmp_path):
    mask_path = tmp_path / "mask.png"
    result = _run_module(
        "predict", str(scene_path), "the red square", "--model", str(stand_in_model_dir),
        "-o", str(mask_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = np.asarray(Image.open(mask_path))
    assert written.dtype == np.uint8 and set(np.unique(written)) == {0, 255}
    assert np.array_equal(written == 255, _red_mask(scene_path))
    assert "found: 100 px" in result.stdout
    assert "OFFLINE STAND-IN, not MLCD-Seg" in result.stdout
    assert "OFFLINE STAND-IN" in result.stderr  # the load warning
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_bad_input_as_a_module_is_one_line_without_traceback(stand_in_model_dir, tmp_path):
    result = _run_module(
        "predict", str(tmp_path / "missing.jpg"), "red", "--model", str(stand_in_model_dir)
    )
    assert result.returncode == 1
    _assert_one_line_error(result.stderr, "missing.jpg", "does not exist")
    assert result.stdout == ""


def test_help_does_not_import_torch_or_transformers():
    code = (
        "import sys; from mlcdseg.cli import main; "
        "status = main(['--help']); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'; "
        "sys.exit(status)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "predict" in result.stdout and "stand-in-model" in result.stdout


# pycocotools' own decode (the independent reference here) trips a numpy 2 deprecation warning.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_json_output_parses_and_holds_the_mask_as_coco_rle(stand_in_model_dir, scene_path, capsys):
    status = main(["predict", str(scene_path), "red", "--model", str(stand_in_model_dir), "--json"])
    assert status == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == {"path": str(scene_path), "width": 40, "height": 30}
    assert record["has_target"] is True
    assert record["area"] == 100 and record["area_fraction"] == pytest.approx(100 / 1200)
    assert record["model_version"].startswith("stand-in:stand-in@local-")
    assert record["is_stand_in"] is True
    assert record["prompt"] == "Could you provide a segmentation mask for the red in this image?"
    rle = record["mask_coco_rle"]
    assert rle["size"] == [30, 40] and isinstance(rle["counts"], str)
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), _red_mask(scene_path))
    assert record["files"] == {"mask": None, "overlay": None}


def test_overlay_and_no_target_summary(stand_in_model_dir, scene_path, tmp_path, capsys):
    overlay_path = tmp_path / "overlay.jpg"
    mask_path = tmp_path / "mask.png"
    status = main(
        [
            "predict", str(scene_path), "a yellow cat", "--model", str(stand_in_model_dir),
            "-o", str(mask_path), "--overlay", str(overlay_path),
        ]
    )  # fmt: skip
    assert status == 0
    output = capsys.readouterr().out
    assert "target:  none" in output and str(overlay_path) in output
    with Image.open(overlay_path) as overlay:
        assert overlay.format == "JPEG" and overlay.size == (40, 30)
    assert not np.asarray(Image.open(mask_path)).any()


def test_force_seg_flag_reaches_the_model(stand_in_model_dir, scene_path, capsys):
    main(["predict", str(scene_path), "a cat", "--model", str(stand_in_model_dir), "--json",
          "--force-seg"])  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert record["has_target"] is True and record["area"] == 0


def test_model_defaults_to_the_environment(stand_in_model_dir, scene_path, monkeypatch, capsys):
    monkeypatch.setenv("MLCDSEG_MODEL", str(stand_in_model_dir))
    monkeypatch.setenv("MLCDSEG_PROMPT_TEMPLATE", "Segment the {expression}.")
    assert main(["predict", str(scene_path), "blue bar", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["is_stand_in"] and record["prompt"] == "Segment the blue bar."


def test_version_is_the_installed_package_metadata_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mlcdseg {importlib.metadata.version('mlcdseg')}"


def _command_names() -> list[str]:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    return sorted(subparsers.choices)


@pytest.mark.parametrize("command", [None, *_command_names()])
def test_every_command_has_help(command, capsys):
    arguments = ["--help"] if command is None else [command, "--help"]
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert output.startswith("usage: mlcdseg") and len(output.splitlines()) > 5


def test_stand_in_model_command_writes_a_loadable_stand_in(tmp_path, capsys):
    directory = tmp_path / "demo-model"
    assert main(["stand-in-model", str(directory)]) == 0
    output = capsys.readouterr().out
    assert str(directory) in output and "NOT MLCD-Seg" in output
    assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["predict", "{image}", "red", "--model", "/no/such/model"], ["/no/such/model"]),
        (["predict", "{image}", "red", "--model", "{model}", "-o", "{tmp}/absent/m.png"],
         ["absent", "does not exist"]),
        (["predict", "{image}", "red", "--model", "{model}", "--dtype", "float32",
          "--device", "tpu"], ["unknown device 'tpu'"]),
        (["predict", "{tmp}", "red", "--model", "{model}"], ["directory"]),
        (["stand-in-model", "{tmp}"], ["not a stand-in"]),
    ],
    ids=["missing-model", "missing-output-dir", "bad-device", "image-is-a-directory",
         "stand-in-over-other-files"],
)  # fmt: skip
def test_failures_print_one_line_and_exit_1(
    arguments, fragments, stand_in_model_dir, scene_path, tmp_path, capsys
):
    values = {"image": scene_path, "model": stand_in_model_dir, "tmp": tmp_path}
    assert main([argument.format(**values) for argument in arguments]) == 1
    captured = capsys.readouterr()
    _assert_one_line_error(captured.err, *fragments)
    assert captured.out == ""


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        ([], "COMMAND"),
        (["predict", "x.png", "  "], "expression is empty"),
        (["predict", "x.png", "red", "-o", "mask.jpg"], ".png"),
        (["predict", "x.png", "red", "--overlay", "overlay.txt"], "image extension"),
        (["predict", "x.png", "red", "--prompt-template", "Segment it"], "{expression}"),
        (["predict", "x.png", "red", "--dtype", "float64"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(arguments, fragment, capsys):
    assert main(arguments) == 2
    stderr = capsys.readouterr().err
    assert fragment in stderr and "Traceback" not in stderr
