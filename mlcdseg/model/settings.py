"""The model options, read once from the environment and validated: one place for backend,
CLI and demo.

`ModelSettings` holds what decides which model answers and how (MLCDSEG_MODEL, MODEL_DIR,
MLCDSEG_REVISION, MLCDSEG_DEVICE, MLCDSEG_DTYPE, MLCDSEG_PROMPT_TEMPLATE, MLCDSEG_FORCE_SEG,
MLCDSEG_ENGINE).
The backend's own settings extend it; the CLI takes its option defaults from it; the demo asks
it which model the backend would load. `EnvironmentReader` gives typed access to variables
with messages that name them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlcdseg.errors import PromptTemplateError, SettingsError
from mlcdseg.model.engines import ENGINE_CHOICES
from mlcdseg.model.loading import DEFAULT_MODEL, DTYPES, load_model
from mlcdseg.model.prompts import DEFAULT_PROMPT_TEMPLATE, check_prompt_template
from mlcdseg.model.segmenter import Segmenter

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")
_Value = TypeVar("_Value", int, float)
_Settings = TypeVar("_Settings", bound="ModelSettings")


@dataclass(frozen=True)
class ModelSettings:
    """Which model to load and how it answers; each field names its variable."""

    model_dir: str | None = None  # MODEL_DIR: a directory of local model directories
    model: str = DEFAULT_MODEL  # MLCDSEG_MODEL: hub id or local directory
    revision: str | None = None  # MLCDSEG_REVISION: hub commit to pin
    device: str = "auto"  # MLCDSEG_DEVICE: auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # MLCDSEG_DTYPE
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # MLCDSEG_PROMPT_TEMPLATE
    force_seg: bool = False  # MLCDSEG_FORCE_SEG: always answer with a mask
    engine: str = "auto"  # MLCDSEG_ENGINE: auto, native (mlcdseg.engine) or official (model.seg)

    def __post_init__(self) -> None:
        """Validate every field, so that `dataclasses.replace` validates too."""
        if self.dtype not in DTYPES:
            raise SettingsError(f"MLCDSEG_DTYPE={self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.engine not in ENGINE_CHOICES:
            raise SettingsError(
                f"MLCDSEG_ENGINE={self.engine!r} is not one of {', '.join(ENGINE_CHOICES)}"
            )
        if not self.model:
            raise SettingsError("MLCDSEG_MODEL is empty; give a hub id or a model directory")
        if self.model_dir is not None and not Path(self.model_dir).expanduser().is_dir():
            raise SettingsError(f"MODEL_DIR={self.model_dir!r} is not a directory")
        try:
            check_prompt_template(self.prompt_template)
        except PromptTemplateError as error:
            raise SettingsError(f"MLCDSEG_PROMPT_TEMPLATE: {error}") from None

    @property
    def model_source(self) -> str:
        """What to load: MODEL_DIR/MLCDSEG_MODEL when that directory exists, else MLCDSEG_MODEL."""
        if self.model_dir is not None:
            candidate = Path(self.model_dir).expanduser() / self.model
            if candidate.is_dir():
                return str(candidate)
        return self.model

    def load_segmenter(self) -> Segmenter:
        """Load the model these settings name (see load_model for what it raises)."""
        return load_model(
            self.model_source,
            revision=self.revision,
            device=self.device,
            dtype=self.dtype,
            prompt_template=self.prompt_template,
            force_seg=self.force_seg,
            engine=self.engine,
        )

    def with_overrides(self: _Settings, **changes: object) -> _Settings:
        """A validated copy with the given fields changed; None values leave a field as it is."""
        return dataclasses.replace(
            self, **{key: value for key, value in changes.items() if value is not None}
        )

    @staticmethod
    def fields_from_env(reader: EnvironmentReader) -> dict[str, Any]:
        """The model fields set in the environment, for this class or one that extends it."""
        defaults = ModelSettings()
        return {
            "model_dir": reader.text("MODEL_DIR"),
            "model": reader.text("MLCDSEG_MODEL") or defaults.model,
            "revision": reader.text("MLCDSEG_REVISION"),
            "device": reader.text("MLCDSEG_DEVICE") or defaults.device,
            "dtype": (reader.text("MLCDSEG_DTYPE") or defaults.dtype).lower(),
            "prompt_template": reader.text("MLCDSEG_PROMPT_TEMPLATE") or defaults.prompt_template,
            "force_seg": reader.boolean("MLCDSEG_FORCE_SEG", defaults.force_seg),
            "engine": (reader.text("MLCDSEG_ENGINE") or defaults.engine).lower(),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelSettings:
        """The model settings of `environ` (default os.environ); empty variables count as unset."""
        return cls(**ModelSettings.fields_from_env(EnvironmentReader(environ)))


class EnvironmentReader:
    """Typed access to environment variables with messages naming the variable."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def text(self, name: str) -> str | None:
        """The stripped value; None when unset or blank."""
        value = self._environ.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int) -> int:
        """A whole number; `default` when unset."""
        return self._converted(name, default, int, "a whole number")

    def number(self, name: str, default: float) -> float:
        """A number; `default` when unset."""
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
        """A yes/no word (1/true/yes/on, 0/false/no/off); `default` when unset."""
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
        """Comma-separated host names, lower case; () when unset."""
        value = self.text(name)
        if value is None:
            return ()
        return tuple(host.strip().lower() for host in value.split(",") if host.strip())
