"""Fetch task images the way Label Studio shows them: relative URLs from Label Studio with its API
key, absolute URLs only from hosts we trust, within size, pixel and time limits.

The fetcher is the one place the backend reaches out to the network, so it is also where server-side
request forgery is stopped: no file:// or other schemes, no hosts beyond Label Studio and an
allow-list, and never a link-local or cloud metadata address, whatever the allow-list says.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image

from mlcdseg.errors import ImageDecodeError, ImageFetchError
from mlcdseg.labelstudio.auth import LabelStudioAuth
from mlcdseg.labelstudio.image_cache import DEFAULT_CACHE_BYTES, DecodedImageCache
from mlcdseg.labelstudio.transfer_deadline import TransferDeadline, watch_connections
from mlcdseg.masks.images import load_image
from mlcdseg.urls import origin

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure")
#: Cloud instance metadata services outside 169.254.0.0/16 (that whole block is refused anyway).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024
_NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")

Resolver = Callable[[str, int], Iterable[str]]


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every IP address `host` resolves to (IPv4 and IPv6), as strings."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]


def is_forbidden_address(address: str) -> bool:
    """True for link-local (169.254/16, fe80::/10) and cloud metadata addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip in METADATA_ADDRESSES


def _sendable_url(shown_url: str, url: str) -> str:
    """`url` exactly as requests sends it (quoted, IDNA host); ImageFetchError when malformed."""
    try:
        return requests.Request("GET", url).prepare().url
    except (requests.RequestException, ValueError) as error:
        raise ImageFetchError(f"image {shown_url}: {url!r} is not a valid URL: {error}") from None


class ImageFetcher:
    """Downloads and decodes task images; thread-safe, with an LRU cache of decoded images bounded
    both in images (cache_size) and in bytes of pixels (cache_bytes).

    `fetch(url)` returns an RGB PIL image with EXIF orientation applied. Cached images are shared
    between callers: treat them as read-only.
    """

    def __init__(
        self,
        label_studio_url: str | None = None,
        api_key: str | None = None,
        *,
        allowed_hosts: Iterable[str] = (),
        max_bytes: int = 50 * 1024 * 1024,
        max_pixels: int = 64_000_000,
        timeout: float = 30.0,
        cache_size: int = 8,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        session: requests.Session | None = None,
        resolver: Resolver = resolve_addresses,
    ) -> None:
        self._label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self._allowed_hosts = frozenset(host.lower() for host in allowed_hosts)
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._timeout = timeout
        self._resolver = resolver
        self._session = session or requests.Session()
        # Cookies would carry one task's session state into the next request: keep none.
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        if isinstance(self._session, requests.Session):
            watch_connections(self._session)
        self._auth = (
            LabelStudioAuth(self._label_studio_url, api_key, self._session, timeout, ImageFetchError)
            if self._label_studio_url and api_key
            else None
        )
        self._cache = DecodedImageCache(cache_size, cache_bytes)

    def fetch(self, url: str) -> Image.Image:
        """The decoded image at a task URL; ImageFetchError naming the URL and the reason."""
        cached = self._cache.get(url)
        if cached is not None:
            return cached
        absolute_url = self._absolute_url(url)
        data, content_type = self._download(url, absolute_url)
        image = self._decode(url, data, content_type)
        self._cache.put(url, image)
        return image

    def cache_info(self) -> dict[str, int]:
        """Counters of the decoded-image cache (see DecodedImageCache.info)."""
        return self._cache.info()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def _absolute_url(self, url: str) -> str:
        """The http(s) URL to download a task URL from; refuses cloud, file and other schemes."""
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as error:  # e.g. an unclosed IPv6 bracket
            raise ImageFetchError(f"image {url}: not a valid URL: {error}") from None
        if scheme in CLOUD_SCHEMES:
            raise ImageFetchError(
                f"image {url}: {scheme}:// storage URLs cannot be fetched by the backend; enable "
                '"Use pre-signed URLs" (or proxy mode) in the Label Studio cloud storage settings'
            )
        if scheme in ("http", "https"):
            return url
        if scheme:
            raise ImageFetchError(
                f"image {url}: the {scheme}:// scheme is refused; only http(s) URLs are fetched"
            )
        if not url.startswith("/"):
            raise ImageFetchError(
                f"image {url}: not a URL; expected http(s)://… or a Label Studio path like /data/upload/…"
            )
        if self._label_studio_url is None:
            raise ImageFetchError(
                f"image {url}: a Label Studio path needs LABEL_STUDIO_URL to be set"
            )
        return self._label_studio_url + url

    def _is_label_studio(self, url: str) -> bool:
        return self._label_studio_url is not None and origin(url) == origin(
            self._label_studio_url
        )

    def _check_target(self, url: str, shown_url: str, *, redirected_by_label_studio: bool) -> None:
        """Refuse a URL whose host is not trusted or resolves to a forbidden address."""
        try:
            scheme, host, port = origin(url)
        except ValueError as error:
            raise ImageFetchError(
                f"image {shown_url}: {url!r} is not a valid URL: {error}"
            ) from None
        if scheme not in ("http", "https") or not host:
            raise ImageFetchError(
                f"image {shown_url}: refused to follow {url!r}; only http(s) URLs are fetched"
            )
        trusted = (
            self._is_label_studio(url) or host in self._allowed_hosts or redirected_by_label_studio
        )
        if not trusted:
            raise ImageFetchError(
                f"image {shown_url}: host {host!r} is neither Label Studio nor in MLCDSEG_ALLOWED_HOSTS"
            )
        try:
            addresses = list(self._resolver(host, port))
        except (OSError, UnicodeError) as error:
            raise ImageFetchError(
                f"image {shown_url}: cannot resolve host {host!r}: {error}"
            ) from error
        forbidden = [address for address in addresses if is_forbidden_address(address)]
        if forbidden:
            raise ImageFetchError(
                f"image {shown_url}: host {host!r} resolves to {forbidden[0]}, a link-local or cloud "
                "metadata address; refused"
            )

    def _download(self, shown_url: str, url: str) -> tuple[bytes, str]:
        """The body and content type at `url`, following checked redirects, within the limits."""
        with TransferDeadline(time.monotonic() + self._timeout) as deadline:
            return self._download_within(shown_url, url, deadline.deadline)

    def _download_within(self, shown_url: str, url: str, deadline: float) -> tuple[bytes, str]:
        """_download's work, inside the TransferDeadline that cuts the connection at `deadline`."""
        redirected_by_label_studio = False
        retried_auth = False
        for _ in range(MAX_REDIRECTS + 1):
            url = _sendable_url(shown_url, url)  # check exactly what will be sent
            self._check_target(
                url, shown_url, redirected_by_label_studio=redirected_by_label_studio
            )
            response = self._get(shown_url, url, deadline)
            with response:
                if (
                    response.status_code == 401
                    and self._auth
                    and self._auth.uses_refresh
                    and not retried_auth
                ):
                    self._auth.forget_access_token()
                    retried_auth = True
                    continue
                if response.is_redirect:
                    redirected_by_label_studio = self._is_label_studio(url)
                    location = response.headers["Location"]
                    try:
                        url = urljoin(url, location)
                    except ValueError as error:
                        raise ImageFetchError(
                            f"image {shown_url}: {url} redirects to a malformed URL {location!r}: "
                            f"{error}"
                        ) from None
                    continue
                self._raise_for_status(shown_url, url, response)
                content_type = (
                    response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                )
                if content_type.startswith(_NOT_IMAGE_TYPES):
                    raise ImageFetchError(
                        f"image {shown_url}: the server answered with {content_type}, not an image"
                        + (
                            " (a login page? check LABEL_STUDIO_API_KEY)"
                            if "html" in content_type
                            else ""
                        )
                    )
                return self._read_body(shown_url, response, deadline), content_type
        raise ImageFetchError(f"image {shown_url}: more than {MAX_REDIRECTS} redirects")

    def _get(self, shown_url: str, url: str, deadline: float) -> requests.Response:
        headers = self._auth.header() if self._auth and self._is_label_studio(url) else {}
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            return self._session.get(
                url, headers=headers, stream=True, timeout=remaining, allow_redirects=False
            )
        except requests.RequestException as error:
            if isinstance(error, requests.Timeout) or time.monotonic() > deadline:
                raise ImageFetchError(
                    f"image {shown_url}: no answer within {self._timeout:g} s"
                ) from error
            raise ImageFetchError(f"image {shown_url}: cannot download {url}: {error}") from error

    def _raise_for_status(self, shown_url: str, url: str, response: requests.Response) -> None:
        if response.status_code == 200:
            return
        hint = ""
        if response.status_code in (401, 403) and self._is_label_studio(url):
            hint = "; check LABEL_STUDIO_API_KEY" if self._auth else "; set LABEL_STUDIO_API_KEY"
        raise ImageFetchError(
            f"image {shown_url}: {url} answered HTTP {response.status_code} {response.reason}{hint}"
        )

    def _read_body(self, shown_url: str, response: requests.Response, deadline: float) -> bytes:
        """The whole body, aborting as soon as it passes the byte limit or the deadline."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise ImageFetchError(
                f"image {shown_url}: {int(declared)} bytes is more than MLCDSEG_MAX_IMAGE_BYTES={self._max_bytes}"
            )
        too_slow = f"image {shown_url}: download took longer than {self._timeout:g} s; aborted"
        body = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                body += chunk
                if len(body) > self._max_bytes:
                    raise ImageFetchError(
                        f"image {shown_url}: more than MLCDSEG_MAX_IMAGE_BYTES={self._max_bytes} bytes; download aborted"
                    )
                if time.monotonic() > deadline:
                    raise ImageFetchError(too_slow)
        except (requests.RequestException, OSError) as error:
            if time.monotonic() > deadline:
                raise ImageFetchError(too_slow) from error
            raise ImageFetchError(f"image {shown_url}: download broke off: {error}") from error
        if time.monotonic() > deadline:  # cut short by the TransferDeadline without an error
            raise ImageFetchError(too_slow)
        return bytes(body)

    def _decode(self, shown_url: str, data: bytes, content_type: str) -> Image.Image:
        """Decode to RGB with EXIF applied; the pixel limit is checked from the header first."""
        try:
            return load_image(data, max_pixels=self._max_pixels)
        except ImageDecodeError as error:
            raise ImageFetchError(
                f"image {shown_url} (served as {content_type or 'no content type'}): {error}"
            ) from error
