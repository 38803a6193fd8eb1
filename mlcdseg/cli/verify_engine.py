"""`mlcdseg verify-engine`: the native engine against the official seg() on the same inputs."""

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from statistics import mean

from PIL import Image

from mlcdseg.atomic_files import write_files_atomically
from mlcdseg.cli.model_options import add_model_options, model_settings
from mlcdseg.demo.scenes import SCENES, render_scene
from mlcdseg.errors import MlcdsegError
from mlcdseg.masks.images import load_image
from mlcdseg.model.engines import NATIVE, OFFICIAL
from mlcdseg.model.verification import MIN_AGREEMENT, EngineCase, ExpressionSource, compare_engines

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
#: Asked of every image of --images when no --expressions file is given.
GENERIC_EXPRESSIONS = ("the person on the left", "the largest object", "the object in the center")


def register_verify_engine(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `mlcdseg verify-engine`."""
    parser = subparsers.add_parser(
        "verify-engine",
        help="check the native engine against the official seg() path (GPU and real weights)",
        description=(
            "Load the model twice, through the model card's remote code (official) and through "
            "mlcdseg's native engine, run both on the same images and expressions and report, per "
            f"case, the IoU of the two masks and the model time of each. Exits 1 if any IoU is "
            f"below {MIN_AGREEMENT}: then do not rely on --engine native for this checkpoint. "
            "Needs the memory of two copies of the model."
        ),
    )
    add_model_options(parser, engine=False)
    parser.add_argument(
        "--images", type=Path, metavar="DIR", help="folder of images (default: the demo's sample scenes)"
    )
    parser.add_argument(
        "--expressions",
        type=Path,
        metavar="FILE",
        help="text file, one expression per line, asked of every image (default: each sample "
        "scene's own expressions, or a few generic ones for --images)",
    )
    parser.add_argument("-o", "--output", type=Path, metavar="JSON", help="write every case here as JSON")
    parser.set_defaults(handler=run_verify_engine)
    return parser


def run_verify_engine(arguments: argparse.Namespace) -> int:
    """Handler: inputs are checked before either model loads."""
    images = list(_images(arguments.images))
    expressions = _expression_source(arguments.expressions, arguments.images is None)
    settings = model_settings(arguments)
    official = settings.with_overrides(engine=OFFICIAL).load_segmenter()
    native = settings.with_overrides(engine=NATIVE).load_segmenter()
    cases = compare_engines(official, native, images, expressions)
    if not cases:
        raise MlcdsegError("no expression to compare: the expressions file is empty")
    print(_table(cases))
    if arguments.output is not None:
        report = {
            "official": official.model_version,
            "native": native.model_version,
            "min_agreement": MIN_AGREEMENT,
            "cases": [asdict(case) for case in cases],
        }
        write_files_atomically(
            arguments.output.parent or Path("."), {arguments.output.name: json.dumps(report, indent=2).encode()}
        )
    disagreeing = [case for case in cases if not case.agrees]
    if disagreeing:
        print(
            f"FAIL: {len(disagreeing)} of {len(cases)} cases have a mask IoU below {MIN_AGREEMENT}; "
            "do not rely on --engine native for this checkpoint (use official)"
        )
        return 1
    print(f"OK: all {len(cases)} cases agree (IoU >= {MIN_AGREEMENT})")
    return 0


def _images(folder: Path | None) -> Iterator[tuple[str, Image.Image]]:
    """(name, RGB image) of each image in `folder`, or of each sample scene."""
    if folder is None:
        for scene in SCENES:
            yield scene.name, render_scene(scene)
        return
    if not folder.is_dir():
        raise MlcdsegError(f"--images {folder} is not a folder")
    paths = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise MlcdsegError(f"--images {folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for path in paths:
        yield path.name, load_image(path)


def _expression_source(path: Path | None, sample_scenes: bool) -> ExpressionSource:
    """The expressions file's lines (blank and # lines skipped), else the defaults."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise MlcdsegError(f"cannot read the expressions file {path}: {error}") from None
        return ExpressionSource([line.strip() for line in lines if line.strip() and not line.startswith("#")])
    if sample_scenes:
        return ExpressionSource(per_image={scene.name: scene.expressions for scene in SCENES})
    return ExpressionSource(GENERIC_EXPRESSIONS)


def _table(cases: list[EngineCase]) -> str:
    """One line per case, then the mean model time per expression of each engine."""
    lines = [f"{'image':<20} {'IoU':>6} {'official ms':>11} {'native ms':>9}  expression"]
    for case in cases:
        lines.append(
            f"{case.image[:20]:<20} {case.iou:>6.3f} {1000 * case.official_seconds:>11.1f} "
            f"{1000 * case.native_seconds:>9.1f}  {case.expression}"
        )
    official_ms = 1000 * mean(case.official_seconds for case in cases)
    native_ms = 1000 * mean(case.native_seconds for case in cases)
    lines.append(
        f"mean per expression: official {official_ms:.1f} ms, native {native_ms:.1f} ms "
        f"({official_ms / native_ms:.1f}x)" if native_ms > 0 else ""
    )
    return "\n".join(lines)
