"""`mlcdseg predict` (one image, one expression → mask) and `mlcdseg stand-in-model`."""

import argparse
import io
import json
import tempfile
from pathlib import Path

from PIL import Image

from mlcdseg.atomic_files import write_files_atomically
from mlcdseg.cli.model_options import add_model_options, model_settings
from mlcdseg.masks.images import load_image, mask_image, overlay_mask
from mlcdseg.model.prompts import build_prompt
from mlcdseg.model.segmenter import Prediction, Segmenter
from mlcdseg.model.stand_in import write_stand_in_model


def register_predict(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `mlcdseg predict IMAGE EXPRESSION`."""
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
            "Environment: MLCDSEG_MODEL (with MODEL_DIR), MLCDSEG_REVISION, MLCDSEG_DEVICE, "
            "MLCDSEG_DTYPE, MLCDSEG_PROMPT_TEMPLATE and MLCDSEG_FORCE_SEG set the defaults of the "
            "matching options; HF_HOME says where downloaded weights are."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="image file (JPEG, PNG, WebP, TIFF, ...)")
    parser.add_argument(
        "expression",
        metavar="EXPRESSION",
        type=_expression,
        help="referring expression, or a full question",
    )
    add_model_options(parser)
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
    parser.add_argument(
        "--latency-ms",
        type=_milliseconds,
        default=0.0,
        help="set cost of each model call in milliseconds, for load tests and benchmarks (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_stand_in_model)
    return parser


def _run_predict(arguments: argparse.Namespace) -> int:
    """Handler of `mlcdseg predict`: expression and outputs are checked before the model loads."""
    settings = model_settings(arguments)
    build_prompt(arguments.expression, settings.prompt_template)  # raises ExpressionError
    for output in (arguments.output, arguments.overlay):
        if output is not None:
            _check_output_path(output)
    image = load_image(arguments.image)
    segmenter = settings.load_segmenter()
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
    directory = write_stand_in_model(arguments.directory, latency_ms=arguments.latency_ms)
    latency = f" (each call takes {arguments.latency_ms:g} ms)" if arguments.latency_ms else ""
    print(f"wrote the offline stand-in model to {directory}{latency}")
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
    from mlcdseg.masks.codecs import encode_coco_rle

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


def _milliseconds(text: str) -> float:
    """argparse type: a duration in milliseconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} ms: the latency must be 0 or more")
    return value
