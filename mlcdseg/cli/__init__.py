"""The `mlcdseg` command line: one argparse subcommand per task.

Adding a subcommand: in your own module write

    def register_<name>(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        parser = subparsers.add_parser("<name>", help="one line for `mlcdseg --help`",
                                       description="what it does, what it reads and writes")
        parser.add_argument(...)
        parser.set_defaults(handler=_run_<name>)  # handler(arguments: argparse.Namespace) -> int
        return parser

and append it to COMMANDS below. A package outside the library registers its commands through
the entry-point group "mlcdseg.commands" (the backend adds `serve` that way, so the library never
imports the backend). `mlcdseg --help` imports every registered module, so keep their
top-level imports light: import torch and transformers inside functions. A handler prints its
result to stdout and returns the exit status; for a failure it raises MlcdsegError (or OSError
for files), which `main` prints as one line `mlcdseg: error: …` with exit status 1 — never a
traceback. Usage errors exit with 2 (argparse).
"""

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from mlcdseg import __version__
from mlcdseg.cli.demo import register_demo
from mlcdseg.cli.evaluate import register_evaluate
from mlcdseg.cli.predict import register_predict, register_stand_in_model
from mlcdseg.cli.prelabel import register_prelabel
from mlcdseg.cli.refcoco import register_export_refcoco, register_import_refcoco
from mlcdseg.cli.verify_engine import register_verify_engine
from mlcdseg.errors import MlcdsegError, one_line
from mlcdseg.log_lines import configure_logging

Register = Callable[[argparse._SubParsersAction], argparse.ArgumentParser]
#: The entry-point group through which installed packages add subcommands.
PLUGIN_GROUP = "mlcdseg.commands"


#: Every subcommand's register function, in the order `mlcdseg --help` lists them.
COMMANDS: list[Register] = [
    register_predict,
    register_demo,
    register_evaluate,
    register_prelabel,
    register_export_refcoco,
    register_import_refcoco,
    register_stand_in_model,
    register_verify_engine,
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
    for register in COMMANDS + plugin_commands():
        register(subparsers)
    return parser


def plugin_commands() -> list[Register]:
    """The register functions other installed packages declare in the "mlcdseg.commands" group
    (the backend's `serve`), by name."""
    found = sorted(entry_points(group=PLUGIN_GROUP), key=lambda entry: entry.name)
    return [entry.load() for entry in found]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version and usage errors
        return exit_request.code if isinstance(exit_request.code, int) else 0
    configure_logging("%(levelname)s %(name)s: %(message)s", arguments.log_level)
    try:
        return arguments.handler(arguments)
    except (MlcdsegError, OSError) as error:
        print(f"mlcdseg: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlcdseg: interrupted", file=sys.stderr)
        return 130


