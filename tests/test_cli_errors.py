"""Bad input to the command line never prints a traceback.

A failure is exit status 1 and ONE stderr line `mlcdseg: error: …`; an argparse usage error is
exit status 2 with the usage and one `mlcdseg …: error: …` line. Most cases run `main()`
in-process; a few run `python -m mlcdseg` to see exactly what a user sees.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mlcdseg.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPRESSIONS_CONFIG = REPO_ROOT / "label_config" / "expressions.xml"
#: Every variable `mlcdseg serve` reads, cleared so that the developer's environment cannot leak in.
SERVE_VARIABLES = (
    "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "LOG_LEVEL",
    "PORT", "WORKERS", "THREADS", "MODEL_DIR", "MLCDSEG_MODEL", "MLCDSEG_REVISION",
    "MLCDSEG_DEVICE", "MLCDSEG_DTYPE", "MLCDSEG_PROMPT_TEMPLATE", "MLCDSEG_FORCE_SEG",
    "MLCDSEG_ALLOWED_HOSTS", "MLCDSEG_MAX_IMAGE_BYTES", "MLCDSEG_MAX_IMAGE_PIXELS",
    "MLCDSEG_FETCH_TIMEOUT", "MLCDSEG_IMAGE_CACHE_SIZE", "MLCDSEG_MAX_REQUEST_BYTES",
)  # fmt: skip


# --- fixtures and checks -------------------------------------------------------------------------


class Files:
    """Bad (and a few good) inputs under one temporary folder; attributes are their paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = root / "a-directory"
        self.directory.mkdir()
        self.png = root / "image.png"
        Image.new("RGB", (8, 6), (255, 0, 0)).save(self.png)
        self.text = self.write("not-an-image.png", "hello")
        self.empty = self.write("empty.json", "")
        self.json_object = self.write("object.json", '{"tasks": []}')
        self.truncated = self.write("truncated.json", '[{"id": 1, "data": {}}, {"id": 2')
        self.binary = root / "binary.json"
        self.binary.write_bytes(b"\xff\xfe\x00\x81garbage")
        self.empty_export = self.write("empty-export.json", "[]")
        self.garbage_xml = self.write("config.xml", "<View><Image")
        self.missing = root / "missing"

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def export(self, name: str, tasks: list) -> Path:
        return self.write(name, json.dumps(tasks))


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture(autouse=True)
def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `serve` case that passes validation fails the test instead of starting gunicorn."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("mlcdseg serve got past validation and would have started gunicorn")

    monkeypatch.setattr("backend.server.serve", refuse)
    for name in SERVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def run_cli(capsys: pytest.CaptureFixture, *arguments: object) -> tuple[int, str, str]:
    status = main([str(argument) for argument in arguments])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(status: int, out: str, err: str, *fragments: str) -> None:
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1, (status, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("mlcdseg: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def assert_usage_error(status: int, out: str, err: str, fragment: str) -> None:
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (status, err)
    assert lines[0].startswith("usage: mlcdseg")
    assert lines[-1].startswith("mlcdseg") and ": error: " in lines[-1], err
    assert fragment in lines[-1]
    assert sum(": error: " in line for line in lines) == 1


# --- every command: usage errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["segment"], "invalid choice: 'segment'"),
        (["--log-level", "LOUD", "predict", "x.png", "red"], "argument --log-level"),
        (["predict", "x.png"], "the following arguments are required: EXPRESSION"),
        (["predict", "x.png", "   "], "the expression is empty"),
        (["predict", "x.png", "red", "--bogus"], "unrecognized arguments: --bogus"),
        (["predict", "x.png", "red", "-o", "mask.jpg"], "end it with .png"),
        (["predict", "x.png", "red", "--overlay", "overlay.xyz"], "end it with an image extension"),
        (["predict", "x.png", "red", "--dtype", "int8"], "argument --dtype: invalid choice"),
        (["predict", "x.png", "red", "--prompt-template", "no slot"], "must contain '{expression}'"),
        (["evaluate", "export.json"], "the following arguments are required: -o/--output"),
        (["evaluate", "export.json", "-o", "out", "--workers", "0"], "must be at least 1"),
        (["evaluate", "export.json", "-o", "out", "--annotation", "best"], "invalid choice: 'best'"),
        (["evaluate", "--project", "one", "-o", "out"], "argument --project: invalid int value"),
        (["evaluate", "-o", "out", "--export-timeout", "-1"], "must be a positive number of seconds"),
        (["export-refcoco", "-o", "out", "--export-timeout", "0"], "must be a positive number of seconds"),
        (["evaluate", "-o", "out", "--export-timeout", "nan"], "must be a positive number of seconds"),
        (["export-refcoco", "export.json"], "the following arguments are required: -o/--output"),
        (["import-refcoco", "root", "-o", "tasks.json"], "--image-url-prefix"),
        (["import-refcoco", "root", "-o", "t.json", "--image-url-prefix", "/", "--format", "svg"],
         "argument --format: invalid choice"),
        (["stand-in-model"], "the following arguments are required: DIRECTORY"),
        (["serve", "--port", "http"], "argument --port: invalid int value"),
        (["serve", "--workers", "2"], "unrecognized arguments: --workers"),
    ],
)  # fmt: skip
def test_usage_errors_print_the_usage_and_one_error_line(
    capsys: pytest.CaptureFixture, arguments: list[str], fragment: str
) -> None:
    assert_usage_error(*run_cli(capsys, *arguments), fragment)


# --- predict -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("text", "is not an image format Pillow can read"),
        ("empty", "is not an image format Pillow can read"),
    ],
)
def test_predict_on_an_image_it_cannot_read(
    capsys: pytest.CaptureFixture, files: Files, stand_in_model_dir: Path, image: str, fragment: str
) -> None:
    result = run_cli(capsys, "predict", getattr(files, image), "red", "--model", stand_in_model_dir)
    assert_one_error_line(*result, fragment)


def test_predict_with_an_unusable_model(capsys: pytest.CaptureFixture, files: Files) -> None:
    for model, fragment in [
        (files.missing, "does not exist"),
        (files.png, "is a file; give a model directory"),
        (files.directory, "cannot load the model in"),
    ]:
        assert_one_error_line(
            *run_cli(capsys, "predict", files.png, "red", "--model", model), fragment
        )


def test_predict_on_an_unknown_device(
    capsys: pytest.CaptureFixture, files: Files, stand_in_model_dir: Path
) -> None:
    result = run_cli(
        capsys, "predict", files.png, "red", "--model", stand_in_model_dir, "--device", "tpu"
    )
    assert_one_error_line(*result, "unknown device 'tpu'")


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        (".", "is empty once blanks and trailing full stops are dropped"),
        ("...", "is empty once blanks and trailing full stops are dropped"),
        ("red \udcff", "is not valid Unicode text"),  # an undecodable argv byte
    ],
)
def test_predict_with_an_expression_the_model_cannot_take(
    capsys: pytest.CaptureFixture,
    files: Files,
    stand_in_model_dir: Path,
    expression: str,
    fragment: str,
) -> None:
    """Was a traceback: ValueError from the model's build_prompt, UnicodeEncodeError from the
    tokenizer."""
    result = run_cli(capsys, "predict", files.png, expression, "--model", stand_in_model_dir)
    assert_one_error_line(*result, fragment)


def test_predict_checks_the_expression_before_loading_the_model(
    capsys: pytest.CaptureFixture, files: Files
) -> None:
    """A 17 GB model takes minutes to load: an expression it cannot take fails before that."""
    result = run_cli(capsys, "predict", files.png, "...", "--model", files.missing)
    assert_one_error_line(*result, "is empty once blanks and trailing full stops are dropped")


def test_predict_into_a_missing_directory_or_onto_a_directory(
    capsys: pytest.CaptureFixture, files: Files, stand_in_model_dir: Path
) -> None:
    (files.root / "taken.png").mkdir()
    for option, path, fragment in [
        ("-o", files.missing / "mask.png", "does not exist"),
        ("--overlay", files.missing / "overlay.jpg", "does not exist"),
        ("-o", files.root / "taken.png", "it is a directory"),
    ]:
        result = run_cli(
            capsys, "predict", files.png, "red", "--model", stand_in_model_dir, option, path
        )
        assert_one_error_line(*result, fragment)


def test_predict_into_an_unwritable_directory(
    capsys: pytest.CaptureFixture, files: Files, stand_in_model_dir: Path, unwritable_dir: Path
) -> None:
    result = run_cli(
        capsys, "predict", files.png, "red", "--model", stand_in_model_dir,
        "-o", unwritable_dir / "mask.png",
    )  # fmt: skip
    assert_one_error_line(*result, str(unwritable_dir / "mask.png"))
    assert ".tmp" not in result[2]  # the destination is named, not its temporary file


def test_predict_refuses_an_unwritable_output_before_loading_the_model(
    capsys: pytest.CaptureFixture, files: Files, tmp_path: Path, unwritable_dir: Path
) -> None:
    missing_model = tmp_path / "no-such-model"
    result = run_cli(
        capsys, "predict", files.png, "red", "--model", missing_model,
        "--overlay", unwritable_dir / "overlay.png",
    )  # fmt: skip
    assert_one_error_line(*result, f"cannot write {unwritable_dir / 'overlay.png'}")
    assert str(missing_model) not in result[2]  # the model was never looked for


# --- evaluate and export-refcoco: the export and the labeling config ---------------------------

EXPORT_COMMANDS = ["evaluate", "export-refcoco"]
TASK = {"id": 1, "data": {"image": "/data/upload/1/a.png", "expression": "red"}}


@pytest.mark.parametrize("command", EXPORT_COMMANDS)
@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("missing", "No such file or directory"),
        ("directory", "Is a directory"),
        ("png", "not a list of tasks"),
        ("text", "not a list of tasks"),
        ("empty", "is empty"),
        ("json_object", "holds a JSON object, not a list of tasks"),
        ("truncated", "is truncated"),
        ("binary", "not a list of tasks"),
    ],
)
def test_a_file_that_is_no_export(
    capsys: pytest.CaptureFixture, files: Files, command: str, source: str, fragment: str
) -> None:
    result = run_cli(capsys, command, getattr(files, source), "-o", files.root / "out")
    assert_one_error_line(*result, fragment)
    assert not (files.root / "out").exists()


WRONGLY_TYPED_TASKS = {
    "predictions-a-number": [{**TASK, "annotations": [], "predictions": 7}],
    "annotations-a-number": [{**TASK, "annotations": 7, "predictions": []}],
    "tasks-not-objects": [1, "task", None, [], {"id": 2}],
    "data-a-string": [{"id": 1, "data": "red", "annotations": [], "predictions": []}],
    "results-not-regions": [
        {**TASK, "annotations": [{"id": 1, "result": [5, "x", None, {"type": ["brushlabels"]}]}],
         "predictions": [{"model_version": "m", "result": {"type": "brushlabels"}}]}
    ],
    "region-value-a-string": [
        {**TASK, "annotations": [{"id": 1, "result": [
            {"type": "brushlabels", "from_name": "mask", "original_width": 2,
             "original_height": 2, "value": "rle"}]}],
         "predictions": [{"model_version": "m", "result": [
            {"type": "textarea", "from_name": "prompt", "value": {"text": 5}}]}]}
    ],
    "ids-and-users-of-any-shape": [
        {"id": [1], "data": {"image": ["a"], "expression": {"x": 1}, "split": [1], "ref_id": "x"},
         "annotations": [{"id": {}, "completed_by": {"email": ["x"]}, "updated_at": 5, "result": []}],
         "predictions": [{"model_version": ["m"], "created_at": [], "result": []}]}
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("command", "tasks"),
    [
        pytest.param(command, tasks, id=f"{command}-{name}")
        for command in EXPORT_COMMANDS
        for name, tasks in WRONGLY_TYPED_TASKS.items()
    ],
)
def test_an_export_with_fields_of_the_wrong_type_skips_the_task_or_is_one_error_line(
    capsys: pytest.CaptureFixture, files: Files, command: str, tasks: list
) -> None:
    export = files.export("export.json", tasks)
    status, out, err = run_cli(capsys, command, export, "-o", files.root / "out")
    assert "Traceback" not in out + err
    if status != 0:
        assert_one_error_line(status, out, err)
    else:
        assert out.strip()  # a summary of what was written and what was left out


@pytest.mark.parametrize("command", EXPORT_COMMANDS)
@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ("missing", "cannot read the labeling config"),
        ("directory", "cannot read the labeling config"),
        ("garbage_xml", "the labeling config is not valid XML"),
        ("png", "cannot read the labeling config"),
        ("binary", "is not UTF-8 text"),
    ],
)
def test_a_labeling_config_it_cannot_use(
    capsys: pytest.CaptureFixture, files: Files, command: str, config: str, fragment: str
) -> None:
    result = run_cli(
        capsys, command, files.empty_export, "-o", files.root / "out",
        "--label-config", getattr(files, config),
    )  # fmt: skip
    assert_one_error_line(*result, fragment)


@pytest.mark.parametrize("command", EXPORT_COMMANDS)
def test_an_unknown_control(capsys: pytest.CaptureFixture, files: Files, command: str) -> None:
    result = run_cli(
        capsys, command, files.empty_export, "-o", files.root / "out",
        "--label-config", EXPRESSIONS_CONFIG, "--control", "outline",
    )  # fmt: skip
    assert_one_error_line(*result, "no mask control named 'outline'")


@pytest.mark.parametrize("command", EXPORT_COMMANDS)
@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ([], "give an export file, or --label-studio-url, --api-key and --project"),
        (["--project", "1"], "--project needs --label-studio-url and --api-key"),
        pytest.param(
            ["--project", "1", "--label-studio-url", "http://ls:port", "--api-key", "k"],
            "--label-studio-url",
            id="label-studio-url-with-a-bad-port",
        ),
        pytest.param(
            ["--project", "1", "--label-studio-url", "http://[::1", "--api-key", "k"],
            "--label-studio-url 'http://[::1' is not an http(s) URL",
            id="label-studio-url-with-an-unclosed-bracket",
        ),
    ],
)  # fmt: skip
def test_a_live_project_it_cannot_reach(
    capsys: pytest.CaptureFixture, files: Files, command: str, options: list[str], fragment: str
) -> None:
    result = run_cli(capsys, command, "-o", files.root / "out", *options)
    assert_one_error_line(*result, fragment)


@pytest.mark.parametrize("command", EXPORT_COMMANDS)
def test_an_output_that_cannot_be_written(
    capsys: pytest.CaptureFixture, files: Files, unwritable_dir: Path, command: str
) -> None:
    for output in [files.png, files.png / "sub", unwritable_dir / "out"]:
        assert_one_error_line(*run_cli(capsys, command, files.empty_export, "-o", output))
    assert files.png.read_bytes()[:4] == b"\x89PNG"  # untouched


@pytest.mark.parametrize("command", EXPORT_COMMANDS)
def test_an_output_under_or_at_a_file_says_the_file_is_not_a_directory(
    capsys: pytest.CaptureFixture, files: Files, command: str
) -> None:
    for output in [files.png, files.png / "sub"]:
        result = run_cli(capsys, command, files.empty_export, "-o", output)
        assert_one_error_line(*result, f"cannot write into {output}", "is not a directory")
        assert "File exists" not in result[2]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--dataset", "refcocox"], "unknown dataset 'refcocox'"),
        (["--split-by", "mit"], "has no split_by 'mit'"),
        (["--default-split", "validation"], "split 'validation' cannot be selected by REFER"),
    ],
)
def test_export_refcoco_with_an_unknown_dataset_split_by_or_split(
    capsys: pytest.CaptureFixture, files: Files, options: list[str], fragment: str
) -> None:
    result = run_cli(
        capsys, "export-refcoco", files.empty_export, "-o", files.root / "out", *options
    )
    assert_one_error_line(*result, fragment)


# --- import-refcoco ------------------------------------------------------------------------------

REF = {
    "ref_id": 1, "ann_id": 1, "image_id": 1, "category_id": 1, "split": "val",
    "file_name": "a_1.jpg", "sent_ids": [1],
    "sentences": [{"sent_id": 1, "sent": "red", "raw": "red", "tokens": ["red"]}],
}  # fmt: skip
INSTANCES = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 6}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 3, 0, 3, 3]],
         "area": 4, "bbox": [0, 0, 3, 3], "iscrowd": 0}
    ],
    "categories": [{"id": 1, "name": "thing"}],
}  # fmt: skip


class RunsACommand:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def refer_root(root: Path, refs: bytes | None, instances: str | None) -> Path:
    """root/refcoco/ with refs(unc).p and instances.json as given (None: left out)."""
    dataset = root / "refcoco"
    dataset.mkdir(parents=True)
    if refs is not None:
        (dataset / "refs(unc).p").write_bytes(refs)
    if instances is not None:
        (dataset / "instances.json").write_text(instances, encoding="utf-8")
    return root


def with_image(**changes: object) -> str:
    return json.dumps({**INSTANCES, "images": [{**INSTANCES["images"][0], **changes}]})


@pytest.mark.parametrize(
    ("refs", "instances", "fragment"),
    [
        (None, json.dumps(INSTANCES), "cannot read"),
        (pickle.dumps([REF]), None, "cannot read"),
        (b"garbage", json.dumps(INSTANCES), "is not a REFER refs pickle"),
        (b"", json.dumps(INSTANCES), "is not a REFER refs pickle"),
        (pickle.dumps({"refs": [REF]}), json.dumps(INSTANCES), "holds a dict, not a list of refs"),
        (pickle.dumps([1, 2]), json.dumps(INSTANCES), "lacks ref_id"),
        (pickle.dumps([{**REF, "sentences": "red"}]), json.dumps(INSTANCES), "lacks sent_id"),
        (pickle.dumps([{**REF, "ann_id": 9}]), json.dumps(INSTANCES), "does not hold"),
        (pickle.dumps([REF]), "{", "is not valid JSON"),
        (pickle.dumps([REF]), "[]", "no 'images' list"),
        (pickle.dumps([REF]),
         json.dumps({**INSTANCES, "annotations": [{**INSTANCES["annotations"][0], "segmentation": "x"}]}),
         "a segmentation must be a list or an RLE dict"),
        pytest.param(
            pickle.dumps([REF]), with_image(height="tall"), "height",
            id="image-height-not-a-number",
        ),
        pytest.param(
            pickle.dumps([REF]), with_image(height=10**9, width=10**9), "height",
            id="image-size-absurd",
        ),
    ],
)  # fmt: skip
def test_import_refcoco_of_a_dataset_it_cannot_read(
    capsys: pytest.CaptureFixture, tmp_path: Path, refs: bytes | None, instances: str | None,
    fragment: str,
) -> None:  # fmt: skip
    root = refer_root(tmp_path / "data", refs, instances)
    output = tmp_path / "tasks.json"
    result = run_cli(
        capsys, "import-refcoco", root, "-o", output, "--image-url-prefix", "/data/",
        "--with-ground-truth",
    )  # fmt: skip
    assert_one_error_line(*result, fragment)
    assert not output.exists()


def test_import_refcoco_refuses_a_pickle_that_runs_code(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    marker = tmp_path / "it-ran"
    root = refer_root(tmp_path / "data", pickle.dumps(RunsACommand(marker)), json.dumps(INSTANCES))
    result = run_cli(
        capsys, "import-refcoco", root, "-o", tmp_path / "t.json", "--image-url-prefix", "/"
    )
    assert_one_error_line(*result, "not only to plain data")
    assert not marker.exists()


def test_import_refcoco_of_a_root_that_is_missing_or_a_file(
    capsys: pytest.CaptureFixture, files: Files
) -> None:
    for root in [files.missing, files.png, files.directory]:
        result = run_cli(
            capsys, "import-refcoco", root, "-o", files.root / "t.json", "--image-url-prefix", "/"
        )
        assert_one_error_line(*result, "cannot read")


def test_import_refcoco_with_an_unknown_dataset_or_split_or_an_unwritable_output(
    capsys: pytest.CaptureFixture, tmp_path: Path, unwritable_dir: Path
) -> None:
    root = refer_root(tmp_path / "data", pickle.dumps([REF]), json.dumps(INSTANCES))
    (tmp_path / "taken.json").mkdir()
    for options, fragment in [
        (["-o", tmp_path / "t.json", "--dataset", "coco"], "unknown dataset 'coco'"),
        (["-o", tmp_path / "t.json", "--split", "validation"], "cannot be selected by REFER"),
        (["-o", tmp_path / "taken.json"], "Is a directory"),
        (["-o", unwritable_dir / "t.json"], ""),
    ]:
        result = run_cli(capsys, "import-refcoco", root, "--image-url-prefix", "/", *options)
        assert_one_error_line(*result, fragment)


# --- stand-in-model ------------------------------------------------------------------------------


def test_stand_in_model_into_a_file_a_full_directory_or_nowhere(
    capsys: pytest.CaptureFixture, files: Files, unwritable_dir: Path
) -> None:
    for directory, fragment in [
        (files.png, "File exists"),
        (files.root, "the directory is not empty and is not a stand-in model directory"),
        (unwritable_dir / "stand-in", ""),
    ]:
        assert_one_error_line(*run_cli(capsys, "stand-in-model", directory), fragment)


# --- serve ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"PORT": "http"}, "PORT='http' is not a whole number"),
        ({"PORT": "70000"}, "PORT=70000 is not a TCP port"),
        ({"WORKERS": "0"}, "WORKERS=0 must be at least 1"),
        ({"LABEL_STUDIO_URL": "localhost:8080"}, "LABEL_STUDIO_URL='localhost:8080' is not an http(s) URL"),
        ({"LABEL_STUDIO_URL": "http://[::1"}, "is not an http(s) URL with a host and a valid port"),
        ({"LABEL_STUDIO_URL": "http://ls:port"}, "is not an http(s) URL with a host and a valid port"),
        ({"LABEL_STUDIO_URL": "http://ls:99999"}, "is not an http(s) URL with a host and a valid port"),
        ({"LABEL_STUDIO_URL": "http://evil\\@ls"}, "is not an http(s) URL with a host and a valid port"),
        ({"BASIC_AUTH_USER": "ls"}, "set both BASIC_AUTH_USER and BASIC_AUTH_PASS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='LOUD' is not one of"),
        ({"MLCDSEG_DTYPE": "int8"}, "MLCDSEG_DTYPE='int8' is not one of"),
        ({"MLCDSEG_PROMPT_TEMPLATE": "Segment it"}, "must contain '{expression}'"),
        ({"MLCDSEG_FORCE_SEG": "maybe"}, "MLCDSEG_FORCE_SEG='maybe' is not a boolean"),
        ({"MLCDSEG_FETCH_TIMEOUT": "nan"}, "MLCDSEG_FETCH_TIMEOUT=nan must be at least"),
        ({"MLCDSEG_ALLOWED_HOSTS": "http://cdn"}, "is not a bare host name"),
        ({"MLCDSEG_MAX_REQUEST_BYTES": "64MB"}, "is not a whole number"),
        ({"MODEL_DIR": "/nonexistent/models"}, "MODEL_DIR='/nonexistent/models' is not a directory"),
        ({"MLCDSEG_MODEL": "/nonexistent/model"}, "model directory '/nonexistent/model' does not exist"),
    ],
)  # fmt: skip
def test_serve_with_a_bad_setting_stops_before_starting(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, variables: dict, fragment: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert_one_error_line(*run_cli(capsys, "serve"), fragment)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--port", "0"], "PORT=0 is not a TCP port"),
        (["--threads", "0"], "THREADS=0 must be at least 1"),
        (["--model", "./no-such-model"], "does not exist"),
        (["--model", str(REPO_ROOT / "pyproject.toml")], "is a file; give a model directory"),
    ],
)
def test_serve_with_a_bad_option_stops_before_starting(
    capsys: pytest.CaptureFixture, options: list[str], fragment: str
) -> None:
    """A missing model directory used to start gunicorn, whose worker then failed to boot."""
    assert_one_error_line(*run_cli(capsys, "serve", *options), fragment)


# --- as a user runs it: python -m mlcdseg --------------------------------------------------------


def run_module(*arguments: object, **environment: str) -> subprocess.CompletedProcess:
    """`python -m mlcdseg ARGUMENTS` from the repository root (conftest made it offline)."""
    variables = {key: value for key, value in os.environ.items() if key not in SERVE_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "mlcdseg", *map(str, arguments)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**variables, **environment},
    )


def test_module_prints_one_line_for_an_image_given_as_an_export(files: Files) -> None:
    result = run_module("evaluate", files.png, "-o", files.root / "report")
    assert_one_error_line(result.returncode, result.stdout, result.stderr, "not a list of tasks")


def test_module_prints_one_line_for_a_missing_image(files: Files) -> None:
    result = run_module("predict", files.missing, "the red one", "--model", files.directory)
    assert_one_error_line(result.returncode, result.stdout, result.stderr, "does not exist")


def test_module_prints_one_line_for_a_bad_server_setting() -> None:
    result = run_module("serve", LABEL_STUDIO_URL="http://[::1")
    assert_one_error_line(result.returncode, result.stdout, result.stderr, "LABEL_STUDIO_URL")


def test_module_prints_usage_and_one_line_for_an_unknown_command() -> None:
    result = run_module("segment", "image.png")
    assert_usage_error(result.returncode, result.stdout, result.stderr, "invalid choice: 'segment'")
