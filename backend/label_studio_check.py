"""The start-up check of the Label Studio settings: one warning line when the background job
cannot write (URL or key unset, host unreachable, key refused), never an error that stops the start.
"""

from __future__ import annotations

import logging

from backend.settings import Settings
from mlcdseg.errors import LabelStudioError, one_line
from mlcdseg.labelstudio.client import LabelStudioClient

logger = logging.getLogger(__name__)

#: Seconds the check may wait for Label Studio: a start-up must not hang on it.
CHECK_TIMEOUT_S = 3.0


def label_studio_problem(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
    """Why the backend cannot use Label Studio's API, in one line; None when the key works."""
    if not settings.label_studio_api:
        unset = [
            name
            for name, value in (
                ("LABEL_STUDIO_URL", settings.label_studio_url),
                ("LABEL_STUDIO_API_KEY", settings.label_studio_api_key),
            )
            if not value
        ]
        return (
            f"{' and '.join(unset)} unset: relative task images cannot be fetched and there is no "
            f"background prediction job; a /predict answers what it reaches within "
            f"MLCDSEG_PREDICT_BUDGET={settings.predict_budget:g} s and the rest on a later retrieval"
        )
    assert settings.label_studio_url is not None and settings.label_studio_api_key is not None
    client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key, timeout_s=timeout_s)
    try:
        client.whoami()
    except LabelStudioError as error:
        message = one_line(error)
        if " answered 401" in message or " answered 403" in message:
            return f"Label Studio at {settings.label_studio_url} refused LABEL_STUDIO_API_KEY: {message:.200}"
        return f"Label Studio at {settings.label_studio_url} is unreachable: {message:.200}"
    return None


def warn_about_label_studio(settings: Settings) -> None:
    """Log the problem found by label_studio_problem as one warning; nothing when all is well."""
    problem = label_studio_problem(settings)
    if problem is not None:
        logger.warning("Label Studio check: %s", problem)
