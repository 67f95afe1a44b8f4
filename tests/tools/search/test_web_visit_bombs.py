"""``web_visit`` against compression bombs and ports: decoded bytes are capped, whatever the
server stacks, and an ``allow_hosts`` entry with a port allows that port only."""

from __future__ import annotations

import functools
import gzip
import tracemalloc
import zlib

import httpx
import pytest
from search_web import LoopbackWeb, Reply

from tools.search.http_pages import HttpPages
from tools.search.netguard import NetworkPolicy, allow_entry
from tools.search.results import BlockedURLError, ProviderError
from tools.search.settings import WebVisitSettings

pytestmark = pytest.mark.integration

TEXT = "<html><title>Bomb</title><body><p>" + "a" * 200 + "</p></body></html>"


class LoopbackOnly(httpx.BaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1", f"tried to connect to {request.url.host}"
        return self.inner.handle_request(request)


def fetcher(web: LoopbackWeb, **settings) -> HttpPages:
    return HttpPages(allow_hosts=[f"127.0.0.1:{web.port}"], transport=LoopbackOnly(), **settings)


@functools.cache
def bomb(levels: int) -> bytes:
    """700 MiB of spaces, gzipped ``levels`` times (made in pieces, so that this process never
    holds them): under a megabyte on the wire, a few hundred bytes from two levels on."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + 15)
    piece = b" " * (1 << 20)
    data = b"".join(packer.compress(piece) for _ in range(700)) + packer.flush()
    for _ in range(levels - 1):
        data = gzip.compress(data, 9)
    return data


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_stacked_gzip_bombs_are_decoded_within_the_cap(web: LoopbackWeb, levels: int) -> None:
    body = bomb(levels)
    encoding = ", ".join(["gzip"] * levels)
    web.route(
        "/bomb", Reply(200, body, {"Content-Type": "text/plain", "Content-Encoding": encoding})
    )
    tracemalloc.start()
    try:
        page = fetcher(web, max_bytes=100_000).fetch(f"{web.url}/bomb")
        peak_mib = tracemalloc.get_traced_memory()[1] >> 20
    finally:
        tracemalloc.stop()
    assert page.truncated and "[... page cut" in page.text
    assert peak_mib < 50, f"decoding took {peak_mib} MiB at its peak"
    assert web.requests[-1].headers.get("accept-encoding") == "identity"


def test_gzip_and_deflate_pages_still_read(web: LoopbackWeb) -> None:
    web.route(
        "/gz",
        Reply(
            200,
            gzip.compress(TEXT.encode()),
            {"Content-Type": "text/html", "Content-Encoding": "gzip"},
        ),
    )
    web.route(
        "/deflate",
        Reply(
            200,
            zlib.compress(TEXT.encode()),
            {"Content-Type": "text/html", "Content-Encoding": "deflate"},
        ),
    )
    for path in ("/gz", "/deflate"):
        page = fetcher(web).fetch(f"{web.url}{path}")
        assert page.title == "Bomb" and "a" * 200 in page.text and not page.truncated


@pytest.mark.parametrize("encoding", ["zstd", "br", "gzip, zstd", "compress"])
def test_other_encodings_are_refused(web: LoopbackWeb, encoding: str) -> None:
    web.route(
        "/z",
        Reply(
            200,
            b"\x28\xb5\x2f\xfd" + bytes(64),
            {"Content-Type": "text/plain", "Content-Encoding": encoding},
        ),
    )
    with pytest.raises(ProviderError, match="unsupported content encoding"):
        fetcher(web).fetch(f"{web.url}/z")


def test_a_damaged_gzip_body_is_an_error(web: LoopbackWeb) -> None:
    web.route(
        "/bad",
        Reply(200, b"not gzip at all", {"Content-Type": "text/plain", "Content-Encoding": "gzip"}),
    )
    with pytest.raises(ProviderError, match="damaged gzip body"):
        fetcher(web).fetch(f"{web.url}/bad")


def test_allow_hosts_with_a_port_allows_that_port_only(web: LoopbackWeb) -> None:
    web.route("/p", Reply(200, TEXT, {"Content-Type": "text/html"}))
    assert fetcher(web).fetch(f"{web.url}/p").title == "Bomb"
    other = web.port + 1 if web.port < 65535 else web.port - 1
    with pytest.raises(BlockedURLError, match="loopback"):
        fetcher(web).fetch(f"http://127.0.0.1:{other}/p")
    policy = NetworkPolicy([f"[::1]:{web.port}", "LocalHost"])
    assert policy.allows("::1", web.port) and not policy.allows("::1", web.port + 1)
    assert policy.allows("localhost", 1) and policy.allows("localhost", 65535)


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("example.org", ("example.org", None)),
        ("Example.org:8080", ("example.org", 8080)),
        ("[::1]:80", ("::1", 80)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    ],
)
def test_allow_entries(entry, parsed):
    assert allow_entry(entry) == parsed


@pytest.mark.parametrize("entry", ["host:0", "host:99999", "host:x", "[::1]x", ":80", ""])
def test_bad_allow_entries_are_refused_without_echoing_them(entry):
    with pytest.raises(ValueError) as error:
        WebVisitSettings(provider="http", allow_hosts=(entry,))
    assert "host, host:port or [ipv6]:port" in str(error.value)
    if entry:
        assert entry not in str(error.value)
