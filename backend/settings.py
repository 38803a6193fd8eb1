"""Backend settings: one frozen dataclass, read once from the environment and validated."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from mlcdseg.errors import SettingsError
from mlcdseg.model.settings import EnvironmentReader, ModelSettings
from mlcdseg.urls import HTTP_URL_DESCRIPTION, is_http_url

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MIB = 1024 * 1024

__all__ = ["LOG_LEVELS", "Settings"]


@dataclass(frozen=True)
class Settings(ModelSettings):
    """Everything the backend reads from its environment; each field names its variable.

    The model fields (MLCDSEG_MODEL, MODEL_DIR, …) and their checks come from ModelSettings.
    """

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
    allowed_hosts: tuple[str, ...] = ()  # MLCDSEG_ALLOWED_HOSTS: extra image hosts, lower case
    max_image_bytes: int = 50 * _MIB  # MLCDSEG_MAX_IMAGE_BYTES
    max_image_pixels: int = 64_000_000  # MLCDSEG_MAX_IMAGE_PIXELS
    fetch_timeout: float = 30.0  # MLCDSEG_FETCH_TIMEOUT, seconds for one whole image download
    image_cache_size: int = 8  # MLCDSEG_IMAGE_CACHE_SIZE: decoded images kept; 0 = no cache
    image_cache_mb: int = 512  # MLCDSEG_IMAGE_CACHE_MB: MiB of decoded pixels kept, at most
    max_request_bytes: int = 64 * _MIB  # MLCDSEG_MAX_REQUEST_BYTES: largest request body
    predict_budget: float = 20.0  # MLCDSEG_PREDICT_BUDGET: seconds a batch /predict computes
    job_queue_limit: int = 100_000  # MLCDSEG_JOB_QUEUE_LIMIT: tasks the background job may hold

    def __post_init__(self) -> None:
        """Validate every field, so that `dataclasses.replace` validates too."""
        super().__post_init__()
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
            ("MLCDSEG_IMAGE_CACHE_MB", self.image_cache_mb, 0),
            ("MLCDSEG_MAX_REQUEST_BYTES", self.max_request_bytes, 1),
            ("MLCDSEG_PREDICT_BUDGET", self.predict_budget, 0.0),
            ("MLCDSEG_JOB_QUEUE_LIMIT", self.job_queue_limit, 0),
        ):
            if not value >= least:  # also refuses NaN
                raise SettingsError(f"{name}={value} must be at least {least}")

    @property
    def label_studio_api(self) -> bool:
        """True when both LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are set (the job can write)."""
        return bool(self.label_studio_url and self.label_studio_api_key)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """The (user, password) pair the endpoints require, or None when auth is off."""
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass
        return None

    @property
    def logging_level(self) -> int:
        """LOG_LEVEL as a `logging` level number."""
        return logging.getLevelName(self.log_level)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `environ` (default os.environ); empty variables count as unset."""
        reader = EnvironmentReader(environ)
        defaults = cls()
        return cls(
            **ModelSettings.fields_from_env(reader),
            label_studio_url=reader.text("LABEL_STUDIO_URL"),
            label_studio_api_key=reader.text("LABEL_STUDIO_API_KEY"),
            basic_auth_user=reader.text("BASIC_AUTH_USER"),
            basic_auth_pass=reader.text("BASIC_AUTH_PASS"),
            log_level=(reader.text("LOG_LEVEL") or defaults.log_level).upper(),
            port=reader.integer("PORT", defaults.port),
            workers=reader.integer("WORKERS", defaults.workers),
            threads=reader.integer("THREADS", defaults.threads),
            allowed_hosts=reader.host_list("MLCDSEG_ALLOWED_HOSTS"),
            max_image_bytes=reader.integer("MLCDSEG_MAX_IMAGE_BYTES", defaults.max_image_bytes),
            max_image_pixels=reader.integer("MLCDSEG_MAX_IMAGE_PIXELS", defaults.max_image_pixels),
            fetch_timeout=reader.number("MLCDSEG_FETCH_TIMEOUT", defaults.fetch_timeout),
            image_cache_size=reader.integer("MLCDSEG_IMAGE_CACHE_SIZE", defaults.image_cache_size),
            image_cache_mb=reader.integer("MLCDSEG_IMAGE_CACHE_MB", defaults.image_cache_mb),
            max_request_bytes=reader.integer(
                "MLCDSEG_MAX_REQUEST_BYTES", defaults.max_request_bytes
            ),
            predict_budget=reader.number("MLCDSEG_PREDICT_BUDGET", defaults.predict_budget),
            job_queue_limit=reader.integer("MLCDSEG_JOB_QUEUE_LIMIT", defaults.job_queue_limit),
        )
