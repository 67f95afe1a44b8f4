"""``web_visit`` over HTTP against a loopback server: pages, redirects, limits and SSRF.

The fetcher is allowed to reach 127.0.0.1 only (``allow_hosts``), and every request it sends
passes a guard transport that fails the test if it would connect anywhere else: a redirect
towards a private address must be refused before any connection is made.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from search_web import LoopbackWeb, Reply

from tools.base import ToolContext
from tools.registry import build_tools, run_tool
from tools.search.http_pages import HttpPages
from tools.search.results import BlockedURLError, ProviderError

pytestmark = pytest.mark.integration

PAGE = (
    "<html><head><title>Kestrel notes</title></head><body><article><h1>Kestrels</h1>"
    "<p>The kestrel hovers over open fields while it hunts for voles and insects.</p>"
    "<p>Its wings beat fast, and it keeps its head perfectly still in the wind.</p>"
    "</article></body></html>"
)


class GuardTransport(httpx.BaseTransport):
    """Sends only to 127.0.0.1; records every address a request went to."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.hosts: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        assert request.url.host == "127.0.0.1", f"tried to connect to {request.url.host}"
        return self.inner.handle_request(request)


@pytest.fixture
def guard() -> GuardTransport:
    return GuardTransport()


def pages(guard: GuardTransport, **settings: Any) -> HttpPages:
    return HttpPages(allow_hosts=["127.0.0.1"], transport=guard, **settings)


def html(body: str, **headers: str) -> Reply:
    return Reply(200, body, {"Content-Type": "text/html; charset=utf-8", **headers})


def test_a_page_is_fetched_pinned_and_extracted(web: LoopbackWeb, guard: GuardTransport) -> None:
    web.route("/kestrel", html(PAGE))
    page = pages(guard).fetch(f"{web.url}/kestrel")
    assert page.title == "Kestrel notes"
    assert "hovers over open fields" in page.text and not page.truncated
    assert web.requests[0].headers["host"] == f"127.0.0.1:{web.port}"


def test_plain_text_and_untyped_text_are_read(web: LoopbackWeb, guard: GuardTransport) -> None:
    web.route("/plain", Reply(200, "just some text", {"Content-Type": "text/plain"}))
    web.route("/untyped", Reply(200, "<p>untyped but html</p>"))
    assert pages(guard).fetch(f"{web.url}/plain").text == "just some text"
    assert "untyped but html" in pages(guard).fetch(f"{web.url}/untyped").text


def test_redirects_are_followed_and_rechecked(web: LoopbackWeb, guard: GuardTransport) -> None:
    web.route("/old", Reply(301, "", {"Location": "/middle"}))
    web.route("/middle", Reply(302, "", {"Location": f"{web.url}/kestrel"}))
    web.route("/kestrel", html(PAGE))
    page = pages(guard).fetch(f"{web.url}/old")
    assert page.url == f"{web.url}/kestrel" and "kestrel" in page.text


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("http://10.0.0.1/admin", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]:{port}/kestrel", "loopback"),
        ("http://localhost:{port}/kestrel", "loopback"),
        ("http://[::ffff:192.168.0.1]/", "192.168.0.1"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_a_redirect_to_a_private_address_is_refused(
    web: LoopbackWeb, guard: GuardTransport, location: str, words: str
) -> None:
    web.route("/jump", Reply(302, "", {"Location": location.format(port=web.port)}))
    with pytest.raises(BlockedURLError, match=words):
        pages(guard).fetch(f"{web.url}/jump")
    assert guard.hosts == ["127.0.0.1"]  # the redirect itself, nothing after it


def test_redirect_loops_end(web: LoopbackWeb, guard: GuardTransport) -> None:
    web.route("/loop", Reply(302, "", {"Location": "/loop"}))
    with pytest.raises(ProviderError, match="redirected more than 3 times"):
        pages(guard, max_redirects=3).fetch(f"{web.url}/loop")
    assert web.calls("/loop") == 4


def test_oversize_pages_are_cut_at_the_byte_limit(web: LoopbackWeb, guard: GuardTransport) -> None:
    body = "<html><body>" + "<p>" + "word " * 400_000 + "</p></body></html>"
    web.route("/huge", html(body))
    page = pages(guard, max_bytes=50_000).fetch(f"{web.url}/huge")
    assert page.truncated
    assert len(page.text) < 60_000
    assert f"only the first 50000 bytes of {len(body)} bytes read" in page.text


def test_slow_pages_are_cut_off_at_the_deadline(web: LoopbackWeb, guard: GuardTransport) -> None:
    web.route(
        "/trickle", Reply(200, PAGE * 20, {"Content-Type": "text/html"}, chunk=20, delay_s=0.05)
    )
    with pytest.raises(ProviderError, match="too slow"):
        pages(guard, timeout_s=0.6).fetch(f"{web.url}/trickle")


def test_a_silent_server_times_out(web: LoopbackWeb, guard: GuardTransport) -> None:
    web.route("/silent", Reply(200, PAGE, {"Content-Type": "text/html"}, delay_s=3.0))
    with pytest.raises(ProviderError, match=r"in time|stopped sending|too slow"):
        pages(guard, timeout_s=0.5).fetch(f"{web.url}/silent")


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(200), "not a text page"),
        ("application/octet-stream", b"\x00\x01\x02", "not a text page"),
        ("application/pdf", b"%PDF-1.7", "not a text page"),
        ("text/html", b"<html>\x00\x00\x00\x01\x02binary\x00</html>", "binary data"),
        (None, bytes(range(256)) * 4, "binary data"),
    ],
)
def test_binary_content_is_refused(
    web: LoopbackWeb, guard: GuardTransport, content_type: str | None, body: bytes, words: str
) -> None:
    web.route("/blob", Reply(200, body, {"Content-Type": content_type} if content_type else {}))
    with pytest.raises(ProviderError, match=words):
        pages(guard).fetch(f"{web.url}/blob")


def test_http_errors_are_observations_and_5xx_is_retried(
    web: LoopbackWeb, guard: GuardTransport
) -> None:
    web.route("/missing", Reply(404, "nope"))
    with pytest.raises(ProviderError, match="HTTP 404"):
        pages(guard).fetch(f"{web.url}/missing")
    assert web.calls("/missing") == 1
    answers = iter([Reply(503, "busy")])
    web.route("/flaky", lambda r: next(answers, None) or html(PAGE))
    assert "kestrel" in pages(guard).fetch(f"{web.url}/flaky").text
    assert web.calls("/flaky") == 2


def test_the_tool_reads_pages_and_caches_them(web: LoopbackWeb, tmp_path: Any) -> None:
    web.route("/kestrel", html(PAGE))
    tools = build_tools(
        ["web_visit"],
        web_visit={"provider": "http", "allow_hosts": ["127.0.0.1"], "cache": str(tmp_path)},
    )
    call = {"urls": [f"{web.url}/kestrel"], "goal": "how does the kestrel hunt"}
    first = run_tool(tools, "web_visit", call, ToolContext(image=b""))
    second = run_tool(tools, "web_visit", call, ToolContext(image=b""))
    assert first.ok and first.text == second.text
    assert first.text.startswith(f"Title: Kestrel notes\nURL: {web.url}/kestrel\n")
    assert web.calls("/kestrel") == 1


def test_the_tool_without_allow_hosts_refuses_the_loopback_server(web: LoopbackWeb) -> None:
    web.route("/kestrel", html(PAGE))
    tools = build_tools(["web_visit"], web_visit={"provider": "http", "cache": None})
    result = run_tool(tools, "web_visit", {"urls": [f"{web.url}/kestrel"]}, ToolContext(b""))
    assert result.error_type == "execution" and "loopback" in result.error
    assert web.requests == []
    assert json.dumps(result.error)  # a plain string for the observation
