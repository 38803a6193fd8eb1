"""Checks of the Label Studio URL a user gives, shared by the backend settings and the commands."""

from __future__ import annotations

from urllib.parse import urlsplit

from urllib3.util import parse_url

#: What is_http_url accepts, worded to follow "... is not".
HTTP_URL_DESCRIPTION = "an http(s) URL with a host and a valid port, e.g. http://localhost:8080"


def is_http_url(url: str) -> bool:
    """True for an http(s) URL with a host (and a valid port) that urlsplit and urllib3 agree on."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port outside 0..65535 or not a number
        connected_host = (parse_url(url).host or "").lower().strip("[]")
    except ValueError:  # e.g. an unclosed IPv6 bracket or a bad port
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and connected_host == parts.hostname
    )
