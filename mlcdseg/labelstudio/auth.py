"""Authentication against Label Studio's API: a legacy `Token`, or a personal access token (a
refresh JWT) exchanged for short-lived `Bearer` access tokens. Shared by the image fetcher and the
REST client.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time

import requests

from mlcdseg.errors import LabelStudioError, MlcdsegError

logger = logging.getLogger(__name__)

TOKEN_REFRESH_PATH = "/api/token/refresh/"
_TOKEN_EXPIRY_MARGIN_S = 30.0


def jwt_claims(token: str) -> dict | None:
    """The (unverified) payload of a JSON Web Token, or None when `token` is not JWT-shaped."""
    segments = token.split(".")
    if len(segments) != 3:
        return None
    try:
        header, payload = (
            json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
            for segment in segments[:2]
        )
    except ValueError:
        return None
    if not isinstance(header, dict) or "alg" not in header or not isinstance(payload, dict):
        return None
    return payload


class LabelStudioAuth:
    """The Authorization header for Label Studio: a legacy `Token`, or a `Bearer` access token
    obtained from a personal access token (a refresh JWT) and renewed when it expires or is refused.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        session: requests.Session,
        timeout: float,
        error: type[MlcdsegError] = LabelStudioError,
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._session = session
        self._timeout = timeout
        self._error = error
        self.uses_refresh = jwt_claims(api_key) is not None
        self._access_token: str | None = None
        self._access_expires_at = 0.0
        self._lock = threading.Lock()

    def header(self) -> dict[str, str]:
        """The header to send with a request to Label Studio."""
        if not self.uses_refresh:
            return {"Authorization": f"Token {self._api_key}"}
        with self._lock:
            if self._access_token is None or time.time() >= self._access_expires_at:
                self._refresh()
            return {"Authorization": f"Bearer {self._access_token}"}

    def forget_access_token(self) -> None:
        """Drop the cached access token, e.g. after Label Studio answered 401."""
        with self._lock:
            self._access_token = None

    def _refresh(self) -> None:
        """Exchange the personal access token for a fresh access token."""
        url = self._base_url + TOKEN_REFRESH_PATH
        try:
            response = self._session.post(
                url, json={"refresh": self._api_key}, timeout=self._timeout
            )
        except requests.RequestException as error:
            raise self._error(
                f"cannot refresh the Label Studio access token at {url}: {error}"
            ) from error
        try:
            body = response.json() if response.ok else None
        except ValueError:
            body = None
        access = body.get("access") if isinstance(body, dict) else None
        if not isinstance(access, str):
            raise self._error(
                f"Label Studio refused the personal access token at {url} (HTTP {response.status_code}); "
                "check LABEL_STUDIO_API_KEY"
            )
        expiry = (jwt_claims(access) or {}).get("exp")
        self._access_token = access
        self._access_expires_at = (
            float(expiry) - _TOKEN_EXPIRY_MARGIN_S
            if isinstance(expiry, (int, float))
            else float("inf")
        )
        logger.debug("refreshed the Label Studio access token")
