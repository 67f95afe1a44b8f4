"""Job images by URI: files, http(s) through the web guard (a loopback server, let past the
guard by its explicit allowance), and every other scheme as `unsupported_uri`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from beam_pipelines.io.image_uris import PUBLIC_IMAGES, ImageReadError, ImageSource

from .helpers import Loopback, png

IMAGE = png()


@pytest.fixture
def web() -> Iterator[Loopback]:
    server = Loopback(
        {
            "/cup.png": (200, {"Content-Type": "image/png"}, IMAGE),
            "/untyped": (200, {}, IMAGE),
            "/moved": (302, {"Location": "/cup.png"}, b""),
            "/inside": (302, {"Location": "http://10.1.2.3/secret.png"}, b""),
            "/metadata": (302, {"Location": "http://169.254.169.254/latest/"}, b""),
            "/page": (200, {"Content-Type": "text/html"}, b"<html>no image</html>"),
            "/big.png": (200, {"Content-Type": "image/png"}, b"\x89PNG" + b"\0" * 5000),
            "/broken": (500, {}, b"oops"),
        }
    )
    yield server
    server.close()


def error_class(source: ImageSource, uri: str) -> str:
    with pytest.raises(ImageReadError) as caught:
        source.read(uri)
    return caught.value.error_class


def test_files_are_read_and_bad_paths_are_failure_classes(tmp_path: Path) -> None:
    path = tmp_path / "cup.png"
    path.write_bytes(IMAGE)
    assert PUBLIC_IMAGES.read(str(path)) == IMAGE
    assert PUBLIC_IMAGES.read(f"file://{path}") == IMAGE
    assert error_class(PUBLIC_IMAGES, str(tmp_path / "nope.png")) == "image_missing"
    assert error_class(PUBLIC_IMAGES, f"{tmp_path}/a\x00b.png") == "image_unreadable"


@pytest.mark.parametrize(
    "uri",
    ["ftp://example.com/a.png", "data:image/png;base64,AAAA", "s4://b/k", "http://[::1", "x:\x00"],
)
def test_schemes_nothing_reads_are_unsupported(uri: str) -> None:
    assert error_class(PUBLIC_IMAGES, uri) == "unsupported_uri"


@pytest.mark.integration  # a loopback HTTP server
def test_an_http_image_is_fetched_through_the_guard(web: Loopback) -> None:
    allowed = ImageSource(allow_hosts=["127.0.0.1"], max_bytes=4096)
    assert allowed.read(f"{web.url}/cup.png") == IMAGE
    assert allowed.read(f"{web.url}/untyped") == IMAGE
    assert allowed.read(f"{web.url}/moved") == IMAGE  # a redirect, checked again
    assert error_class(allowed, f"{web.url}/missing.png") == "image_missing"
    assert error_class(allowed, f"{web.url}/page") == "image_unreadable"
    assert error_class(allowed, f"{web.url}/big.png") == "image_too_large"
    assert error_class(allowed, f"{web.url}/broken") == "image_unreadable"


@pytest.mark.integration  # a loopback HTTP server
def test_private_loopback_and_metadata_addresses_are_refused(web: Loopback) -> None:
    allowed = ImageSource(allow_hosts=["127.0.0.1"])
    # A redirect from an allowed host into the private network or to the metadata service is
    # refused before any connection is made.
    assert error_class(allowed, f"{web.url}/inside") == "image_blocked"
    assert error_class(allowed, f"{web.url}/metadata") == "image_blocked"
    requests = len(web.requests)
    # Without the allowance, loopback itself is refused, and nothing is sent.
    assert error_class(PUBLIC_IMAGES, f"{web.url}/cup.png") == "image_blocked"
    assert error_class(PUBLIC_IMAGES, "http://169.254.169.254/latest/meta-data") == "image_blocked"
    assert error_class(PUBLIC_IMAGES, "http://metadata.google.internal/x.png") == "image_blocked"
    assert len(web.requests) == requests
