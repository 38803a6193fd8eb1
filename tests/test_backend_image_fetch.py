"""ImageFetcher against a local HTTP server that plays Label Studio (auth, token refresh, redirects)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from mlcdseg.errors import ImageFetchError
from mlcdseg.labelstudio.image_fetch import ImageFetcher, is_forbidden_address

LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def make_jwt(payload: dict) -> str:
    """An unsigned JWT-shaped token (the fetcher never verifies signatures, Label Studio does)."""

    def segment(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(payload)}.c2lnbmF0dXJl"


PERSONAL_ACCESS_TOKEN = make_jwt({"token_type": "refresh", "exp": time.time() + 3600, "user_id": 1})


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sample_image() -> Image.Image:
    """A 40×30 RGB image with a red rectangle: small and exact to compare pixel by pixel."""
    pixels = np.full((30, 40, 3), 128, dtype=np.uint8)
    pixels[5:15, 10:30] = (255, 0, 0)
    return Image.fromarray(pixels, mode="RGB")




@dataclass
class FakeLabelStudio:
    """State of the fake server: what it serves, who may see it, what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)
    access_lifetime_s: float = 300.0
    refresh_calls: int = 0
    requests: list[tuple[str, str | None]] = field(
        default_factory=list
    )  # (path with query, Authorization)
    base_url: str = ""

    def authorised(self, header: str | None) -> bool:
        if header == f"Token {LEGACY_TOKEN}":
            return True
        return (
            header is not None and header.startswith("Bearer ") and header[7:] in self.access_tokens
        )


def _handler(state: FakeLabelStudio, other_base_url: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def _send(
            self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self._send(302, b"", "text/plain", {"Location": location})

        def do_POST(self) -> None:
            if self.path != "/api/token/refresh/":
                self._send(404, b"{}", "application/json")
                return
            state.refresh_calls += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body.get("refresh") != PERSONAL_ACCESS_TOKEN:
                self._send(401, b'{"detail": "Token is invalid or expired"}', "application/json")
                return
            access = make_jwt(
                {
                    "token_type": "access",
                    "exp": time.time() + state.access_lifetime_s,
                    "n": state.refresh_calls,
                }
            )
            state.access_tokens.add(access)
            self._send(200, json.dumps({"access": access}).encode(), "application/json")

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Authorization")))
            parts = urlsplit(self.path)
            if parts.path == "/slow":
                time.sleep(1.5)
                try:
                    self._send(200, png_bytes(sample_image()), "image/png")
                except OSError:
                    pass  # the client gave up long ago, as it should
            elif parts.path == "/public/red.png":
                self._send(200, png_bytes(sample_image()), "image/png")
            elif parts.path == "/redirect-out":
                self._redirect(other_base_url[0] + "/public/red.png")
            elif parts.path == "/redirect-in":
                self._redirect("/data/upload/1/red.png")
            elif parts.path == "/redirect-loop":
                self._redirect("/redirect-loop")
            elif parts.path == "/redirect-metadata":
                self._redirect("http://169.254.169.254/latest/meta-data/")
            elif parts.path == "/redirect-file":
                self._redirect("file:///etc/passwd")
            elif parts.path == "/chunked-big":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()  # no Content-Length: HTTP/1.0 body until close
                try:
                    for _ in range(64):
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass  # the client hung up, as it should
            elif not state.authorised(self.headers.get("Authorization")):
                self._send(
                    401,
                    b'{"detail": "Authentication credentials were not provided."}',
                    "application/json",
                )
            elif parts.path == "/data/local-files/":
                name = parse_qs(parts.query).get("d", [""])[0]
                self._serve_file("local:" + name)
            else:
                self._serve_file(parts.path)

        def _serve_file(self, key: str) -> None:
            if key not in state.files:
                self._send(404, b"not found", "text/plain")
                return
            body = state.files[key]
            content_type = (
                "text/html"
                if key.endswith(".html")
                else ("application/octet-stream" if key.endswith(".bin") else "image/png")
            )
            self._send(200, body, content_type)

    return Handler


@dataclass
class Servers:
    label_studio: FakeLabelStudio
    other: FakeLabelStudio


@pytest.fixture()
def servers() -> Iterator[Servers]:
    """Fake Label Studio at http://127.0.0.1:<port> and another host at http://localhost:<port>."""
    label_studio, other = FakeLabelStudio(), FakeLabelStudio()
    other_url: list[str] = []
    running = []
    for state, host in ((label_studio, "127.0.0.1"), (other, "localhost")):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, other_url))
        server.daemon_threads = True
        state.base_url = f"http://{host}:{server.server_address[1]}"
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        running.append(server)
    other_url.append(other.base_url)
    label_studio.files.update(
        {
            "/data/upload/1/red.png": png_bytes(sample_image()),
            "local:dataset1/img1.png": png_bytes(sample_image()),
            "/data/upload/1/page.html": b"<html>login</html>",
            "/data/upload/1/noise.bin": b"\x00\x01 definitely not an image " * 10,
            "/data/upload/1/huge.png": png_bytes(Image.new("L", (2000, 1500))),
        }
    )
    yield Servers(label_studio, other)
    for server in running:
        server.shutdown()
        server.server_close()


def fetcher_for(
    servers: Servers, api_key: str | None = LEGACY_TOKEN, **options: object
) -> ImageFetcher:
    return ImageFetcher(servers.label_studio.base_url, api_key, **options)


def assert_is_test_image(image: Image.Image) -> None:
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(sample_image()))


def test_upload_path_is_fetched_from_label_studio_with_the_legacy_token(servers: Servers) -> None:
    image = fetcher_for(servers).fetch("/data/upload/1/red.png")
    assert_is_test_image(image)
    assert servers.label_studio.requests == [("/data/upload/1/red.png", f"Token {LEGACY_TOKEN}")]


def test_local_files_path_keeps_its_query(servers: Servers) -> None:
    assert_is_test_image(fetcher_for(servers).fetch("/data/local-files/?d=dataset1/img1.png"))


def test_missing_api_key_gives_an_error_that_says_to_set_it(servers: Servers) -> None:
    with pytest.raises(
        ImageFetchError, match=r"/data/upload/1/red.png.*HTTP 401.*set LABEL_STUDIO_API_KEY"
    ):
        fetcher_for(servers, api_key=None).fetch("/data/upload/1/red.png")


def test_wrong_legacy_token_gives_an_error_that_says_to_check_it(servers: Servers) -> None:
    with pytest.raises(ImageFetchError, match=r"HTTP 401.*check LABEL_STUDIO_API_KEY"):
        fetcher_for(servers, api_key="f" * 40).fetch("/data/upload/1/red.png")


def test_personal_access_token_is_exchanged_once_and_sent_as_bearer(servers: Servers) -> None:
    fetcher = fetcher_for(servers, api_key=PERSONAL_ACCESS_TOKEN, cache_size=0)
    assert_is_test_image(fetcher.fetch("/data/upload/1/red.png"))
    assert_is_test_image(fetcher.fetch("/data/local-files/?d=dataset1/img1.png"))
    assert servers.label_studio.refresh_calls == 1
    headers = [header for _, header in servers.label_studio.requests]
    assert all(
        header.startswith("Bearer ") and header[7:] in servers.label_studio.access_tokens
        for header in headers
    )
    assert PERSONAL_ACCESS_TOKEN not in " ".join(headers)  # the refresh token itself never goes out


def test_revoked_access_token_is_refreshed_once_and_the_request_retried(servers: Servers) -> None:
    fetcher = fetcher_for(servers, api_key=PERSONAL_ACCESS_TOKEN, cache_size=0)
    fetcher.fetch("/data/upload/1/red.png")
    servers.label_studio.access_tokens.clear()  # Label Studio forgets it: the next use answers 401
    assert_is_test_image(fetcher.fetch("/data/upload/1/red.png"))
    assert servers.label_studio.refresh_calls == 2


def test_access_token_near_expiry_is_refreshed_before_use(servers: Servers) -> None:
    servers.label_studio.access_lifetime_s = 10.0  # inside the fetcher's 30 s safety margin
    fetcher = fetcher_for(servers, api_key=PERSONAL_ACCESS_TOKEN, cache_size=0)
    fetcher.fetch("/data/upload/1/red.png")
    fetcher.fetch("/data/upload/1/red.png")
    assert servers.label_studio.refresh_calls == 2
    assert len(servers.label_studio.requests) == 2  # no 401 round trip was needed


def test_refused_personal_access_token_gives_a_clear_error(servers: Servers) -> None:
    other_token = make_jwt({"token_type": "refresh", "user_id": 2})
    with pytest.raises(
        ImageFetchError, match=r"refused the personal access token.*HTTP 401.*LABEL_STUDIO_API_KEY"
    ):
        fetcher_for(servers, api_key=other_token).fetch("/data/upload/1/red.png")


def test_redirect_inside_label_studio_is_followed_with_auth(servers: Servers) -> None:
    assert_is_test_image(fetcher_for(servers).fetch("/redirect-in"))
    assert servers.label_studio.requests[-1] == ("/data/upload/1/red.png", f"Token {LEGACY_TOKEN}")


def test_redirect_from_label_studio_to_storage_is_followed_without_auth(servers: Servers) -> None:
    assert_is_test_image(fetcher_for(servers).fetch("/redirect-out"))
    assert servers.other.requests == [("/public/red.png", None)]


def test_absolute_url_on_a_host_that_is_not_allowed_is_refused(servers: Servers) -> None:
    url = servers.other.base_url + "/public/red.png"
    with pytest.raises(
        ImageFetchError, match=r"'localhost' is neither Label Studio nor in MLCDSEG_ALLOWED_HOSTS"
    ):
        fetcher_for(servers).fetch(url)
    assert servers.other.requests == []


def test_absolute_url_on_an_allowed_host_is_fetched_without_the_api_key(servers: Servers) -> None:
    url = servers.other.base_url + "/public/red.png"
    assert_is_test_image(fetcher_for(servers, allowed_hosts=["localhost"]).fetch(url))
    assert servers.other.requests == [("/public/red.png", None)]


def test_absolute_url_of_label_studio_itself_is_fetched_with_auth(servers: Servers) -> None:
    assert_is_test_image(
        fetcher_for(servers).fetch(servers.label_studio.base_url + "/data/upload/1/red.png")
    )
    assert servers.label_studio.requests[-1][1] == f"Token {LEGACY_TOKEN}"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x.png",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_even_when_allowed(url: str) -> None:
    fetcher = ImageFetcher(
        None,
        None,
        allowed_hosts=["169.254.169.254", "[fe80::1]", "fe80::1", "::ffff:169.254.169.254"],
    )
    with pytest.raises(
        ImageFetchError, match=r"link-local or cloud metadata address; refused|neither Label Studio"
    ):
        fetcher.fetch(url)


def test_allowed_host_name_that_resolves_to_the_metadata_service_is_refused() -> None:
    fetcher = ImageFetcher(
        None,
        None,
        allowed_hosts=["images.example.com"],
        resolver=lambda host, port: ["169.254.169.254"],
    )
    with pytest.raises(ImageFetchError, match=r"resolves to 169.254.169.254.*refused"):
        fetcher.fetch("http://images.example.com/a.png")


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("169.254.169.254", True),
        ("169.254.0.1", True),
        ("fe80::1%eth0", True),
        ("::ffff:169.254.1.1", True),
        ("fd00:ec2::254", True),
        ("100.100.100.200", True),
        ("127.0.0.1", False),
        ("10.0.0.5", False),
        ("::1", False),
        ("93.184.216.34", False),
    ],
)
def test_forbidden_addresses(address: str, forbidden: bool) -> None:
    assert is_forbidden_address(address) is forbidden


def test_redirect_to_the_metadata_service_is_refused(servers: Servers) -> None:
    with pytest.raises(ImageFetchError, match=r"169.254.169.254.*refused"):
        fetcher_for(servers).fetch("/redirect-metadata")


def test_redirect_to_a_file_url_is_refused(servers: Servers) -> None:
    with pytest.raises(ImageFetchError, match=r"refused to follow 'file:///etc/passwd'"):
        fetcher_for(servers).fetch("/redirect-file")


def test_endless_redirects_stop(servers: Servers) -> None:
    with pytest.raises(ImageFetchError, match=r"more than 5 redirects"):
        fetcher_for(servers).fetch("/redirect-loop")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", r"file:// scheme is refused"),
        ("ftp://example.com/a.png", r"ftp:// scheme is refused"),
        ("s3://bucket/images/a.png", r"Use pre-signed URLs"),
        ("gs://bucket/a.png", r"Use pre-signed URLs"),
        ("azure-blob://container/a.png", r"Use pre-signed URLs"),
        ("images/a.png", r"not a URL"),
    ],
)
def test_urls_that_are_never_fetched(url: str, message: str) -> None:
    with pytest.raises(ImageFetchError, match=message) as raised:
        ImageFetcher("http://127.0.0.1:9", LEGACY_TOKEN).fetch(url)
    assert url in str(raised.value)


def test_label_studio_path_without_label_studio_url_says_what_to_set() -> None:
    with pytest.raises(
        ImageFetchError, match=r"/data/upload/1/a.png: a Label Studio path needs LABEL_STUDIO_URL"
    ):
        ImageFetcher(None, None).fetch("/data/upload/1/a.png")


def test_declared_size_over_the_limit_is_refused_before_download(servers: Servers) -> None:
    with pytest.raises(ImageFetchError, match=r"bytes is more than MLCDSEG_MAX_IMAGE_BYTES=100"):
        fetcher_for(servers, max_bytes=100).fetch("/data/upload/1/red.png")


def test_undeclared_body_over_the_limit_is_aborted_while_streaming(servers: Servers) -> None:
    with pytest.raises(
        ImageFetchError, match=r"more than MLCDSEG_MAX_IMAGE_BYTES=200000 bytes; download aborted"
    ):
        fetcher_for(servers, max_bytes=200_000).fetch("/chunked-big")


def test_html_answer_is_not_an_image_and_hints_at_login(servers: Servers) -> None:
    with pytest.raises(
        ImageFetchError,
        match=r"page.html: the server answered with text/html, not an image \(a login page",
    ):
        fetcher_for(servers).fetch("/data/upload/1/page.html")


def test_bytes_that_are_not_an_image_are_refused(servers: Servers) -> None:
    with pytest.raises(
        ImageFetchError, match=r"noise.bin \(served as application/octet-stream\).*not an image"
    ):
        fetcher_for(servers).fetch("/data/upload/1/noise.bin")


def test_image_over_the_pixel_limit_is_refused(servers: Servers) -> None:
    with pytest.raises(ImageFetchError, match=r"huge.png.*2000.1500.*over the limit of 1000000"):
        fetcher_for(servers, max_pixels=1_000_000).fetch("/data/upload/1/huge.png")


def test_404_names_the_url_and_status(servers: Servers) -> None:
    with pytest.raises(ImageFetchError, match=r"/data/upload/1/missing.png.*HTTP 404"):
        fetcher_for(servers).fetch("/data/upload/1/missing.png")


def test_slow_server_times_out(servers: Servers) -> None:
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match=r"/slow: no answer within 0.3 s"):
        fetcher_for(servers, timeout=0.3).fetch("/slow")
    assert time.monotonic() - started < 1.4


def test_unreachable_host_is_an_image_fetch_error() -> None:
    with pytest.raises(ImageFetchError, match=r"cannot download"):
        ImageFetcher("http://127.0.0.1:9", LEGACY_TOKEN, timeout=2).fetch("/data/upload/1/a.png")


def test_exif_orientation_is_applied(servers: Servers) -> None:
    landscape = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    landscape.save(buffer, format="JPEG", exif=exif)
    servers.label_studio.files["/data/upload/1/phone.jpg"] = buffer.getvalue()
    assert fetcher_for(servers).fetch("/data/upload/1/phone.jpg").size == (20, 40)


def test_repeated_url_is_downloaded_once(servers: Servers) -> None:
    fetcher = fetcher_for(servers)
    first = fetcher.fetch("/data/upload/1/red.png")
    second = fetcher.fetch("/data/upload/1/red.png")
    assert second is first
    assert len(servers.label_studio.requests) == 1
    info = fetcher.cache_info()
    assert (info["hits"], info["misses"], info["size"], info["capacity"]) == (1, 1, 1, 8)
    assert info["bytes"] == first.width * first.height * 3


def test_cache_evicts_the_least_recently_used_image(servers: Servers) -> None:
    fetcher = fetcher_for(servers, cache_size=1)
    for url in (
        "/data/upload/1/red.png",
        "/data/local-files/?d=dataset1/img1.png",
        "/data/upload/1/red.png",
    ):
        fetcher.fetch(url)
    assert len(servers.label_studio.requests) == 3
    assert fetcher.cache_info()["size"] == 1


def test_zero_cache_size_turns_the_cache_off(servers: Servers) -> None:
    fetcher = fetcher_for(servers, cache_size=0)
    fetcher.fetch("/data/upload/1/red.png")
    fetcher.fetch("/data/upload/1/red.png")
    assert len(servers.label_studio.requests) == 2


def test_concurrent_fetches_all_succeed(servers: Servers) -> None:
    fetcher = fetcher_for(servers, api_key=PERSONAL_ACCESS_TOKEN, cache_size=0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        images = list(pool.map(fetcher.fetch, ["/data/upload/1/red.png"] * 16))
    for image in images:
        assert_is_test_image(image)
    assert servers.label_studio.refresh_calls == 1
