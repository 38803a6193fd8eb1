"""Backend settings: one frozen dataclass, read once from the environment and validated."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mlcdseg.errors import MlcdsegError
from mlcdseg.model import DEFAULT_MODEL, DTYPES
from mlcdseg.prompts import DEFAULT_PROMPT_TEMPLATE, check_prompt_template
from mlcdseg.urls import HTTP_URL_DESCRIPTION, is_http_url

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")
_MIB = 1024 * 1024
_Value = TypeVar("_Value", int, float)


class SettingsError(MlcdsegError):
    """An environment variable of the backend holds a value it cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything the backend reads from its environment; each field names its variable."""

    label_studio_url: str | None = None  # LABEL_STUDIO_URL, no trailing slash
    label_studio_api_key: str | None = (
        None  # LABEL_STUDIO_API_KEY: legacy token or personal access token
    )
    basic_auth_user: str | None = None  # BASIC_AUTH_USER
    basic_auth_pass: str | None = None  # BASIC_AUTH_PASS
    log_level: str = "INFO"  # LOG_LEVEL
    port: int = 9090  # PORT
    workers: int = 1  # WORKERS: gunicorn processes, each loads its own model
    threads: int = 8  # THREADS: request threads per worker
    model_dir: str | None = None  # MODEL_DIR: a directory of local model directories
    model: str = DEFAULT_MODEL  # MLCDSEG_MODEL: hub id or local directory
    revision: str | None = None  # MLCDSEG_REVISION: hub commit to pin
    device: str = "auto"  # MLCDSEG_DEVICE: auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # MLCDSEG_DTYPE
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # MLCDSEG_PROMPT_TEMPLATE
    force_seg: bool = False  # MLCDSEG_FORCE_SEG: always answer with a mask
    allowed_hosts: tuple[str, ...] = ()  # MLCDSEG_ALLOWED_HOSTS: extra image hosts, lower case
    max_image_bytes: int = 50 * _MIB  # MLCDSEG_MAX_IMAGE_BYTES
    max_image_pixels: int = 64_000_000  # MLCDSEG_MAX_IMAGE_PIXELS
    fetch_timeout: float = 30.0  # MLCDSEG_FETCH_TIMEOUT, seconds for one whole image download
    image_cache_size: int = 8  # MLCDSEG_IMAGE_CACHE_SIZE: decoded images kept; 0 = no cache
    max_request_bytes: int = 64 * _MIB  # MLCDSEG_MAX_REQUEST_BYTES: largest request body

    def __post_init__(self) -> None:
        """Validate every field, so that `dataclasses.replace` validates too."""
        if self.label_studio_url is not None:
            if not is_http_url(self.label_studio_url):
                raise SettingsError(
                    f"LABEL_STUDIO_URL={self.label_studio_url!r} is not {HTTP_URL_DESCRIPTION}"
                )
            object.__setattr__(self, "label_studio_url", self.label_studio_url.rstrip("/"))
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(
                f"LOG_LEVEL={self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"PORT={self.port} is not a TCP port (1-65535)")
        if self.dtype not in DTYPES:
            raise SettingsError(f"MLCDSEG_DTYPE={self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not self.model:
            raise SettingsError("MLCDSEG_MODEL is empty; give a hub id or a model directory")
        if self.model_dir is not None and not Path(self.model_dir).expanduser().is_dir():
            raise SettingsError(f"MODEL_DIR={self.model_dir!r} is not a directory")
        try:
            check_prompt_template(self.prompt_template)
        except ValueError as error:
            raise SettingsError(f"MLCDSEG_PROMPT_TEMPLATE: {error}") from None
        for host in self.allowed_hosts:
            if not host or any(character in host for character in "/:@ "):
                raise SettingsError(
                    f"MLCDSEG_ALLOWED_HOSTS entry {host!r} is not a bare host name (no scheme, port or path)"
                )
        for name, value, least in (
            ("WORKERS", self.workers, 1),
            ("THREADS", self.threads, 1),
            ("MLCDSEG_MAX_IMAGE_BYTES", self.max_image_bytes, 1),
            ("MLCDSEG_MAX_IMAGE_PIXELS", self.max_image_pixels, 1),
            ("MLCDSEG_FETCH_TIMEOUT", self.fetch_timeout, 0.001),
            ("MLCDSEG_IMAGE_CACHE_SIZE", self.image_cache_size, 0),
            ("MLCDSEG_MAX_REQUEST_BYTES", self.max_request_bytes, 1),
        ):
            if not value >= least:  # also refuses NaN
                raise SettingsError(f"{name}={value} must be at least {least}")

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """The (user, password) pair the endpoints require, or None when auth is off."""
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass
        return None

    @property
    def model_source(self) -> str:
        """What to load: MODEL_DIR/MLCDSEG_MODEL when that directory exists, else MLCDSEG_MODEL."""
        if self.model_dir is not None:
            candidate = Path(self.model_dir).expanduser() / self.model
            if candidate.is_dir():
                return str(candidate)
        return self.model

    @property
    def logging_level(self) -> int:
        """LOG_LEVEL as a `logging` level number."""
        return logging.getLevelName(self.log_level)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `environ` (default os.environ); empty variables count as unset."""
        reader = _EnvReader(os.environ if environ is None else environ)
        defaults = cls()
        return cls(
            label_studio_url=reader.text("LABEL_STUDIO_URL"),
            label_studio_api_key=reader.text("LABEL_STUDIO_API_KEY"),
            basic_auth_user=reader.text("BASIC_AUTH_USER"),
            basic_auth_pass=reader.text("BASIC_AUTH_PASS"),
            log_level=(reader.text("LOG_LEVEL") or defaults.log_level).upper(),
            port=reader.integer("PORT", defaults.port),
            workers=reader.integer("WORKERS", defaults.workers),
            threads=reader.integer("THREADS", defaults.threads),
            model_dir=reader.text("MODEL_DIR"),
            model=reader.text("MLCDSEG_MODEL") or defaults.model,
            revision=reader.text("MLCDSEG_REVISION"),
            device=reader.text("MLCDSEG_DEVICE") or defaults.device,
            dtype=(reader.text("MLCDSEG_DTYPE") or defaults.dtype).lower(),
            prompt_template=reader.text("MLCDSEG_PROMPT_TEMPLATE") or defaults.prompt_template,
            force_seg=reader.boolean("MLCDSEG_FORCE_SEG", defaults.force_seg),
            allowed_hosts=reader.host_list("MLCDSEG_ALLOWED_HOSTS"),
            max_image_bytes=reader.integer("MLCDSEG_MAX_IMAGE_BYTES", defaults.max_image_bytes),
            max_image_pixels=reader.integer("MLCDSEG_MAX_IMAGE_PIXELS", defaults.max_image_pixels),
            fetch_timeout=reader.number("MLCDSEG_FETCH_TIMEOUT", defaults.fetch_timeout),
            image_cache_size=reader.integer("MLCDSEG_IMAGE_CACHE_SIZE", defaults.image_cache_size),
            max_request_bytes=reader.integer(
                "MLCDSEG_MAX_REQUEST_BYTES", defaults.max_request_bytes
            ),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """A validated copy with the given fields changed; None values leave a field as it is."""
        return dataclasses.replace(
            self, **{key: value for key, value in changes.items() if value is not None}
        )


class _EnvReader:
    """Typed access to environment variables with messages naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int) -> int:
        return self._converted(name, default, int, "a whole number")

    def number(self, name: str, default: float) -> float:
        return self._converted(name, default, float, "a number")

    def _converted(
        self, name: str, default: _Value, convert: Callable[[str], _Value], kind: str
    ) -> _Value:
        value = self.text(name)
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not {kind}") from None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in _TRUE_WORDS:
            return True
        if value.lower() in _FALSE_WORDS:
            return False
        raise SettingsError(
            f"{name}={value!r} is not a boolean; use one of {', '.join(_TRUE_WORDS + _FALSE_WORDS)}"
        )

    def host_list(self, name: str) -> tuple[str, ...]:
        value = self.text(name)
        if value is None:
            return ()
        return tuple(host.strip().lower() for host in value.split(",") if host.strip())
