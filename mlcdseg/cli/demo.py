"""`mlcdseg demo`: the command that runs mlcdseg.demo.run (Label Studio, the backend, sample tasks)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from mlcdseg.demo import run as demo_run
from mlcdseg.demo.run import DEFAULT_DATA_DIR, DEFAULT_LABEL_STUDIO_PORT, run_demo
from mlcdseg.errors import ServiceStartError


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into a normal exit so the services started by the demo are stopped too."""
    raise SystemExit(128 + signum)


def _demo_command(arguments: argparse.Namespace) -> int:
    """Entry point of `mlcdseg demo`."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return run_demo(
            label_studio=arguments.label_studio,
            data_dir=arguments.data_dir,
            port=arguments.port,
            model=arguments.model,
            once=arguments.once,
        )
    except ServiceStartError as error:
        # Keep the service's log tail on its own lines; the CLI would fold it into one.
        print(f"mlcdseg: error: {error}", file=sys.stderr)
        return 1


def register_demo(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `demo` subcommand to the mlcdseg CLI."""
    parser = subparsers.add_parser(
        "demo",
        help="run Label Studio with MLCD-Seg pre-annotations on sample images (local only)",
        description=demo_run.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="headless: check that every task got a non-empty predicted mask, stop everything and exit",
    )
    parser.add_argument(
        "--label-studio",
        metavar="PATH",
        help="label-studio executable or its virtualenv (default: $MLCDSEG_LABEL_STUDIO, "
        "./.venv-labelstudio, then label-studio on PATH)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help=f"folder for Label Studio's database, the images and the stand-in model "
        f"(default: ./{DEFAULT_DATA_DIR}; a temporary folder with --once)",
    )
    parser.add_argument(
        "--port",
        type=int,
        help=f"Label Studio port (default: {DEFAULT_LABEL_STUDIO_PORT} when free, else any free port)",
    )
    parser.add_argument(
        "--model",
        help="model for the backend: hub id or directory (default: $MLCDSEG_MODEL, else MLCD-Seg when a GPU "
        "and cached weights are present, else the offline stand-in)",
    )
    parser.set_defaults(handler=_demo_command)
    return parser
