"""The `mlcdseg` command line: one argparse subcommand per task.

Adding a subcommand: in your own module write

    def register_<name>(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        parser = subparsers.add_parser("<name>", help="one line for `mlcdseg --help`",
                                       description="what it does, what it reads and writes")
        parser.add_argument(...)
        parser.set_defaults(handler=_run_<name>)  # handler(arguments: argparse.Namespace) -> int
        return parser

and append it to COMMANDS below. `mlcdseg --help` imports every registered module, so keep their
top-level imports light: import torch and transformers inside functions. A handler prints its
result to stdout and returns the exit status; for a failure it raises MlcdsegError (or OSError
for files), which `main` prints as one line `mlcdseg: error: …` with exit status 1 — never a
traceback. Usage errors exit with 2 (argparse).
"""

import argparse
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from backend.cli import register_serve
from mlcdseg import __version__
from mlcdseg.atomic_files import write_files_atomically
from mlcdseg.demo import register_demo
from mlcdseg.errors import MlcdsegError, one_line
from mlcdseg.evaluate_cli import register_evaluate
from mlcdseg.images import load_image, mask_image, overlay_mask
from mlcdseg.model import DEFAULT_MODEL, DTYPES, Prediction, Segmenter, load_model
from mlcdseg.prompts import DEFAULT_PROMPT_TEMPLATE, build_prompt, check_prompt_template
from mlcdseg.refcoco_cli import register_export_refcoco, register_import_refcoco
from mlcdseg.stand_in import write_stand_in_model

Register = Callable[[argparse._SubParsersAction], argparse.ArgumentParser]


def register_predict(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `mlcdseg predict IMAGE EXPRESSION`."""
    environment = os.environ
    parser = subparsers.add_parser(
        "predict",
        help="segment what an expression refers to in one image",
        description=(
            "Load MLCD-Seg (or a local model directory, e.g. the offline stand-in) and segment "
            "what EXPRESSION refers to in IMAGE. The image is EXIF-oriented as Label Studio shows "
            "it; the mask has that size. A bare expression ('man in the red shirt') is put into "
            "the prompt template; a full question or instruction (ending with '?', or starting "
            "with 'segment', 'please', 'could you', 'can you', ...) is sent as is. Prints a short "
            "summary, or a JSON object with --json (the mask as COCO RLE)."
        ),
        epilog=(
            "Environment: MLCDSEG_MODEL, MLCDSEG_REVISION, MLCDSEG_DEVICE, MLCDSEG_DTYPE and "
            "MLCDSEG_PROMPT_TEMPLATE set the defaults of the matching options; HF_HOME says "
            "where downloaded weights are."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="image file (JPEG, PNG, WebP, TIFF, ...)")
    parser.add_argument(
        "expression",
        metavar="EXPRESSION",
        type=_expression,
        help="referring expression, or a full question",
    )
    parser.add_argument(
        "--model",
        default=environment.get("MLCDSEG_MODEL", DEFAULT_MODEL),
        help="hub id or local model directory (default: $MLCDSEG_MODEL or %(default)s)",
    )
    parser.add_argument(
        "--revision",
        default=environment.get("MLCDSEG_REVISION") or None,
        help="hub commit, tag or branch to load; pin a commit (default: $MLCDSEG_REVISION)",
    )
    parser.add_argument(
        "--device",
        default=environment.get("MLCDSEG_DEVICE", "auto"),
        help="auto, cpu, cuda or cuda:N (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=environment.get("MLCDSEG_DTYPE", "auto"),
        help="weights precision; auto is float16 on CUDA, float32 on CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--prompt-template",
        type=_prompt_template,
        default=environment.get("MLCDSEG_PROMPT_TEMPLATE", DEFAULT_PROMPT_TEMPLATE),
        help="prompt for a bare expression; must contain {expression} (default: %(default)r)",
    )
    parser.add_argument(
        "--force-seg",
        action="store_true",
        help="always return a mask, never 'no target' (MLCD-Seg's benchmark mode)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=_png_path,
        help="write the mask here as a PNG (255 = target, 0 = background)",
    )
    parser.add_argument(
        "--overlay",
        type=_image_path,
        help="write the image with the mask drawn over it here (.png, .jpg, .webp, ...)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object instead of the summary"
    )
    parser.set_defaults(handler=_run_predict)
    return parser


def register_stand_in_model(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `mlcdseg stand-in-model DIRECTORY`."""
    parser = subparsers.add_parser(
        "stand-in-model",
        help="write the offline stand-in model (NOT MLCD-Seg) for tests and demos",
        description=(
            "Write a small model directory that loads like MLCD-Seg (transformers, "
            "trust_remote_code) but is NOT MLCD-Seg: it segments the pixels of the first colour "
            "named in the expression (red, green, blue, yellow, white, black, ...). Use it with "
            "--model DIRECTORY to try the pipeline offline on a CPU."
        ),
    )
    parser.add_argument(
        "directory",
        metavar="DIRECTORY",
        help="directory to write (created; must be empty or hold a stand-in)",
    )
    parser.set_defaults(handler=_run_stand_in_model)
    return parser


#: Every subcommand's register function, in the order `mlcdseg --help` lists them.
COMMANDS: list[Register] = [
    register_predict,
    register_serve,
    register_demo,
    register_evaluate,
    register_export_refcoco,
    register_import_refcoco,
    register_stand_in_model,
]


def build_parser() -> argparse.ArgumentParser:
    """The `mlcdseg` parser with every subcommand in COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="mlcdseg",
        description=(
            "MLCD-Seg referring-expression segmentation for Label Studio: predict masks, serve "
            "a Label Studio ML backend, evaluate against human masks, move RefCOCO data."
        ),
        epilog="Run `mlcdseg COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mlcdseg {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=os.environ.get("LOG_LEVEL", "WARNING").upper(),
        help="log messages from this level on to stderr (default: $LOG_LEVEL or %(default)s)",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, title="commands"
    )
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version and usage errors
        return exit_request.code if isinstance(exit_request.code, int) else 0
    logging.basicConfig(
        level=arguments.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return arguments.handler(arguments)
    except (MlcdsegError, OSError) as error:
        print(f"mlcdseg: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlcdseg: interrupted", file=sys.stderr)
        return 130


def _run_predict(arguments: argparse.Namespace) -> int:
    """Handler of `mlcdseg predict`: expression and outputs are checked before the model loads."""
    build_prompt(arguments.expression, arguments.prompt_template)  # raises ExpressionError
    for output in (arguments.output, arguments.overlay):
        if output is not None:
            _check_output_path(output)
    image = load_image(arguments.image)
    segmenter = load_model(
        arguments.model,
        revision=arguments.revision,
        device=arguments.device,
        dtype=arguments.dtype,
        prompt_template=arguments.prompt_template,
        force_seg=arguments.force_seg,
    )
    prediction = segmenter.predict(image, arguments.expression)
    if arguments.output is not None:
        _write_image(mask_image(prediction.mask), arguments.output)
    if arguments.overlay is not None:
        _write_image(overlay_mask(image, prediction.mask), arguments.overlay)
    if arguments.json:
        print(json.dumps(_prediction_record(arguments, image, segmenter, prediction), indent=2))
    else:
        print(_prediction_summary(arguments, image, segmenter, prediction))
    return 0


def _run_stand_in_model(arguments: argparse.Namespace) -> int:
    """Handler of `mlcdseg stand-in-model`."""
    directory = write_stand_in_model(arguments.directory)
    print(f"wrote the offline stand-in model to {directory}")
    print(
        "It is NOT MLCD-Seg: it segments the pixels of the first colour named in the expression, "
        f"for tests and offline demos. Use it with --model {directory}"
    )
    return 0


def _prediction_record(
    arguments: argparse.Namespace,
    image: Image.Image,
    segmenter: Segmenter,
    prediction: Prediction,
) -> dict:
    """The --json object of one prediction."""
    from mlcdseg.masks import encode_coco_rle

    area = int(prediction.mask.sum())
    return {
        "image": {"path": arguments.image, "width": image.width, "height": image.height},
        "expression": arguments.expression,
        "prompt": prediction.prompt,
        "has_target": prediction.has_target,
        "area": area,
        "area_fraction": area / (image.width * image.height),
        "model_version": segmenter.model_version,
        "is_stand_in": segmenter.is_stand_in,
        "mask_coco_rle": encode_coco_rle(prediction.mask),
        "files": {"mask": arguments.output, "overlay": arguments.overlay},
    }


def _prediction_summary(
    arguments: argparse.Namespace,
    image: Image.Image,
    segmenter: Segmenter,
    prediction: Prediction,
) -> str:
    """The human summary of one prediction, a few aligned lines."""
    area = int(prediction.mask.sum())
    size = f"{image.width}×{image.height}"
    if prediction.has_target:
        target = f"found: {area} px, {100 * area / (image.width * image.height):.2f} % of {size}"
    else:
        target = f"none (the model answered 'no target'; empty {size} mask)"
    model = segmenter.model_version
    if segmenter.is_stand_in:
        model += " (OFFLINE STAND-IN, not MLCD-Seg)"
    lines = [f"target:  {target}", f"model:   {model}", f"prompt:  {prediction.prompt}"]
    if arguments.output is not None:
        lines.append(f"mask:    {arguments.output}")
    if arguments.overlay is not None:
        lines.append(f"overlay: {arguments.overlay}")
    return "\n".join(lines)


def _check_output_path(path: str) -> None:
    """Raise OSError unless `path` can be written: its directory exists and it is not one."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {target.parent} does not exist")
    try:  # a probe file: permission bits alone do not tell (root, read-only mounts, /proc)
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}") from None


def _write_image(image: Image.Image, path: str) -> None:
    """Encode `image` in the format its extension names and replace `path` atomically."""
    encoded = io.BytesIO()
    image.save(encoded, format=Image.registered_extensions()[Path(path).suffix.lower()])
    target = Path(path)
    write_files_atomically(target.parent, {target.name: encoded.getvalue()})


def _expression(text: str) -> str:
    """argparse type: a non-blank expression."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the expression is empty")
    return text


def _prompt_template(template: str) -> str:
    """argparse type: a template containing {expression}."""
    try:
        return check_prompt_template(template)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _png_path(path: str) -> str:
    """argparse type: a .png path (masks must be stored losslessly)."""
    if Path(path).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{path!r}: the mask is written as PNG; end it with .png")
    return path


def _image_path(path: str) -> str:
    """argparse type: a path whose extension names an image format Pillow can write."""
    image_format = Image.registered_extensions().get(Path(path).suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise argparse.ArgumentTypeError(
            f"{path!r}: end it with an image extension such as .png, .jpg or .webp"
        )
    return path
