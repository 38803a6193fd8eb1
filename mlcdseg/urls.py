"""URL checks shared by the backend settings, the commands and the image fetcher: which host a URL reaches."""

from __future__ import annotations

from urllib.parse import urlsplit

from urllib3.util import parse_url

#: What is_http_url accepts, worded to follow "... is not".
HTTP_URL_DESCRIPTION = "an http(s) URL with a host and a valid port, e.g. http://localhost:8080"


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL as urllib3 connects to it, the scheme's default port filled in.

    Lower case, an IPv6 host without brackets. Parsed as urllib3 parses it to connect, not with
    urlsplit: the two disagree on URLs such as 'http://evil.example\\@labelstudio/' (urlsplit: host
    labelstudio, urllib3: evil.example), and a host we check must be the host we connect to.
    ValueError for a malformed URL.
    """
    parts = parse_url(url)
    scheme = (parts.scheme or "").lower()
    host = (parts.host or "").lower().strip("[]")
    return scheme, host, parts.port or (443 if scheme == "https" else 80)


def is_http_url(url: str) -> bool:
    """True for an http(s) URL with a host (and a valid port) that urlsplit and urllib3 agree on."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port outside 0..65535 or not a number
        _, connected_host, _ = origin(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket or a bad port
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and connected_host == parts.hostname
    )
