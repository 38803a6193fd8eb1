"""Run the backend: load the model once per process and serve the app with gunicorn (gthread)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from backend.app import create_app
from backend.label_studio_check import warn_about_label_studio
from backend.settings import Settings
from backend.task_claims import shared_claims_file
from mlcdseg.errors import MlcdsegError
from mlcdseg.log_lines import configure_logging as configure_log_lines

logger = logging.getLogger(__name__)

#: Seconds a worker may stay silent; covers loading (or first downloading) a 17 GB model at boot.
WORKER_TIMEOUT_S = 1800
GRACEFUL_TIMEOUT_S = 60
#: Threads per worker kept free of predictions, for /health, /setup and the other light endpoints.
RESERVED_THREADS = 1


def configure_logging(settings: Settings) -> None:
    """Log to stderr at LOG_LEVEL with timestamps and logger names (the level wins over the CLI's),
    one line per record (mlcdseg.log_lines)."""
    configure_log_lines("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    logging.getLogger().setLevel(settings.logging_level)


def load_app(settings: Settings) -> Flask:
    """Load the model the settings name (once, in this process) and build the app around it.

    Runs in a gunicorn worker: the Label Studio settings are checked first (one warning line when
    the URL or key is unset, the host unreachable or the key refused; never fatal). A model that cannot be loaded is logged as one line and ends the
    worker with gunicorn's boot-error status, which stops the whole server instead of respawning.
    """
    configure_logging(settings)
    warn_about_label_studio(settings)
    try:
        segmenter = settings.load_segmenter()
    except MlcdsegError as error:
        logger.error("cannot start the backend: %s", error)
        raise SystemExit(Arbiter.WORKER_BOOT_ERROR) from None
    return create_app(settings, segmenter)


def gunicorn_options(settings: Settings, host: str = "0.0.0.0") -> dict[str, Any]:
    """Gunicorn settings for the backend: gthread workers, the model loaded after the fork."""
    return {
        "bind": f"{host}:{settings.port}",
        "workers": settings.workers,
        # THREADS for predictions (create_app admits no more /predict at once) and one more that
        # only light requests can hold, so /health answers within Label Studio's 1 s when busy.
        "threads": settings.threads + RESERVED_THREADS,
        "worker_class": "gthread",
        # Each worker loads its own model after the fork: CUDA must never be initialised in the master.
        "preload_app": False,
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "loglevel": settings.log_level.lower(),
        "accesslog": "-",
        "errorlog": "-",
        # Recent gunicorn (27) opens a control socket at a fixed path in ~/.gunicorn, which a second
        # server on the same machine takes over; we never use it. Older versions ignore the key.
        "control_socket_disable": True,
    }


class GunicornServer(BaseApplication):
    """Gunicorn run in-process (for `mlcdseg serve`) with options from the settings."""

    def __init__(self, settings: Settings, host: str) -> None:
        self._settings = settings
        self._options = gunicorn_options(settings, host)
        super().__init__()

    def load_config(self) -> None:
        """Hand gunicorn the options it knows (BaseApplication hook)."""
        for key, value in self._options.items():
            if key in self.cfg.settings:  # settings this gunicorn version knows
                self.cfg.set(key, value)

    def load(self) -> Flask:
        """Build the app in the worker, after the fork (BaseApplication hook)."""
        return load_app(self._settings)


def serve(settings: Settings, host: str = "0.0.0.0") -> None:
    """Serve until interrupted."""
    logger.info(
        "serving %s on %s:%d (%d worker(s) x %d threads)",
        settings.model_source,
        host,
        settings.port,
        settings.workers,
        settings.threads,
    )
    shared_claims_file(settings.workers)  # made here, before the fork, so that every worker shares it
    GunicornServer(settings, host).run()
