"""`mlcdseg serve`: run the Label Studio ML backend in this process (gunicorn, gthread)."""

from __future__ import annotations

import argparse

from backend.settings import Settings
from mlcdseg.model.loading import DEFAULT_MODEL, check_model_source


def register_serve(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to the mlcdseg CLI."""
    parser = subparsers.add_parser(
        "serve",
        help="run the Label Studio ML backend",
        description=(
            "Serve MLCD-Seg to Label Studio as an ML backend (GET /health, POST /setup, /predict, /webhook). "
            "Every setting comes from the environment (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, MLCDSEG_MODEL, "
            "WORKERS, …; see README); the options below override their variables."
        ),
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT or 9090)")
    parser.add_argument(
        "--model",
        help=f"hub id or local model directory (default: $MLCDSEG_MODEL or {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--threads", type=int, help="request threads per worker (default: $THREADS or 8)"
    )
    parser.set_defaults(handler=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; SettingsError (an MlcdsegError) for a bad setting or option,
    ModelNotFoundError for a missing model directory (before gunicorn starts any worker)."""
    from backend.server import configure_logging, serve

    settings = Settings.from_env().with_overrides(
        port=args.port, model=args.model, threads=args.threads
    )
    check_model_source(settings.model_source)
    configure_logging(settings)
    serve(settings, args.host)
    return 0
