"""Start and stop a local Label Studio and the mlcdseg ML backend as subprocesses (tests, demo, bench).

Both services listen on 127.0.0.1 only, log to a file, and are stopped by terminating their
whole process group (then killing it) so no worker outlives the context manager.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import requests

from mlcdseg.errors import LabelStudioError, ServiceStartError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_STUDIO_ENV_VAR = "MLCDSEG_LABEL_STUDIO"
LABEL_STUDIO_VENV_NAME = ".venv-labelstudio"
INSTALL_HINT = (
    "install it with `make test` (which creates .venv-labelstudio), or by hand: "
    "python3 -m venv .venv-labelstudio && .venv-labelstudio/bin/pip install label-studio==1.23.2; "
    f"or point --label-studio / {LABEL_STUDIO_ENV_VAR} at a label-studio executable"
)
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def new_legacy_token() -> str:
    """Return a random Label Studio legacy API token: 40 lowercase hex digits."""
    return secrets.token_hex(20)


def _executable_in(candidate: Path) -> Path | None:
    """Return the label-studio executable that `candidate` names (the file, or a virtualenv holding it)."""
    if candidate.is_dir():
        candidate = candidate / "bin" / "label-studio"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def find_label_studio(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate the label-studio executable: `explicit`, $MLCDSEG_LABEL_STUDIO, ./.venv-labelstudio, PATH.

    `explicit` and the environment variable may name the executable or a virtualenv directory.
    Raises LabelStudioError with installation instructions when none is found.
    """
    named = explicit if explicit is not None else os.environ.get(LABEL_STUDIO_ENV_VAR)
    if named:
        found = _executable_in(Path(named).expanduser())
        if found is None:
            raise LabelStudioError(f"no label-studio executable at {named}; {INSTALL_HINT}")
        return found
    for venv in (REPO_ROOT / LABEL_STUDIO_VENV_NAME, Path.cwd() / LABEL_STUDIO_VENV_NAME):
        found = _executable_in(venv)
        if found is not None:
            return found
    on_path = shutil.which("label-studio")
    if on_path:
        return Path(on_path)
    raise LabelStudioError(
        f"Label Studio is not installed (looked in {REPO_ROOT / LABEL_STUDIO_VENV_NAME} and on PATH); "
        + INSTALL_HINT
    )


def log_tail(log_path: Path, lines: int = 40) -> str:
    """Return the last `lines` lines of a log file ('' when it does not exist)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


ServiceT = TypeVar("ServiceT", bound="ManagedProcess")


class ManagedProcess:
    """A service subprocess in its own process group, logging to a file, ready when a URL answers 2xx.

    Use it as a context manager: entering starts it and waits until it is ready, leaving stops it.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        ready_url: str,
        startup_timeout_s: float,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.ready_url = ready_url
        self.startup_timeout_s = startup_timeout_s
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the process and block until `ready_url` answers 2xx; raise ServiceStartError otherwise."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting %s: %s (log: %s)", self.name, " ".join(self.command), self.log_path)
        with open(self.log_path, "wb") as log_file:  # a fresh log per start
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        logger.info("%s ready at %s after %.1f s", self.name, self.ready_url, time.monotonic() - started)

    def _wait_ready(self, started: float) -> None:
        """Poll `ready_url` until it answers 2xx, the process exits, or the startup timeout passes."""
        assert self.process is not None
        while True:
            exit_code = self.process.poll()
            if exit_code is not None:
                raise ServiceStartError(
                    f"{self.name} exited with status {exit_code} while starting; "
                    f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if requests.get(self.ready_url, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() - started > self.startup_timeout_s:
                raise ServiceStartError(
                    f"{self.name} did not answer {self.ready_url} within {self.startup_timeout_s:.0f} s; "
                    f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.5)

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the process group, wait up to `grace_s`, then kill it; a no-op when not running."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it", self.name, grace_s)
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=grace_s)
        # Workers of a stopped leader may linger in the group; they have no reason to stay.
        self._signal_group(process, signal.SIGKILL)
        logger.info("%s stopped", self.name)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
        """Send `signum` to the process group led by `process`, ignoring a group that is already gone."""
        try:
            os.killpg(process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self: ServiceT) -> ServiceT:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """Return this process's environment without Python path overrides, plus `overrides`."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(overrides)
    return env


class LabelStudioServer(ManagedProcess):
    """A local Label Studio (SQLite in `data_dir`) on 127.0.0.1, with a known user and legacy API token.

    Local files under `document_root` (default `data_dir/files`) are served once a local-files
    storage for their folder is added to a project.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        executable: str | os.PathLike[str] | None = None,
        port: int | None = None,
        username: str = "demo@example.com",
        password: str | None = None,
        token: str | None = None,
        document_root: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.document_root = Path(document_root).resolve() if document_root else self.data_dir / "files"
        self.port = port if port is not None else free_port()
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.token = token if token is not None else new_legacy_token()
        if len(self.token) != 40 or any(c not in "0123456789abcdef" for c in self.token):
            raise LabelStudioError("a Label Studio legacy API token must be 40 lowercase hex digits")
        self.url = f"http://{LOOPBACK}:{self.port}"
        env = _child_env(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                "COLLECT_ANALYTICS": "false",
                "LATEST_VERSION_CHECK": "false",
                # No error reports to outside hosts (Sentry), from the server or the browser.
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "LABEL_STUDIO_DJANGO_DB": "sqlite",
            }
        )
        command = [
            str(find_label_studio(executable)),
            "start",
            "--no-browser",
            "--internal-host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]
        super().__init__(
            "Label Studio",
            command,
            env,
            self.data_dir / "label-studio.log",
            f"{self.url}/health",
            startup_timeout_s,
            cwd=self.data_dir,
        )

    def start(self) -> None:
        """Create the data and document folders, start Label Studio and wait until /health answers."""
        self.document_root.mkdir(parents=True, exist_ok=True)
        super().start()


class BackendServer(ManagedProcess):
    """The mlcdseg ML backend under gunicorn on 127.0.0.1, serving `model` (a hub id or directory)."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        log_dir: str | os.PathLike[str],
        port: int | None = None,
        label_studio_url: str | None = None,
        label_studio_api_key: str | None = None,
        workers: int = 1,
        threads: int = 4,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        overrides = {
            "MLCDSEG_MODEL": str(model),
            "PORT": str(self.port),
            "WORKERS": str(workers),
            "THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        }
        if label_studio_url:
            overrides["LABEL_STUDIO_URL"] = label_studio_url
        if label_studio_api_key:
            overrides["LABEL_STUDIO_API_KEY"] = label_studio_api_key
        overrides.update(extra_env or {})
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(REPO_ROOT / "backend" / "gunicorn.conf.py"),
            "--bind",
            f"{LOOPBACK}:{self.port}",
            "backend._wsgi:app",
        ]
        super().__init__(
            "mlcdseg backend",
            command,
            _child_env(overrides),
            Path(log_dir).resolve() / "backend.log",
            f"{self.url}/health",
            startup_timeout_s,
            cwd=REPO_ROOT,
        )
