"""Online providers against a loopback server that speaks Serper's and Brave's API shapes.

No real internet: ``base_url`` points each provider at the test's own server on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from search_web import LoopbackWeb, Reply, Request

from tools.base import ToolContext, ToolUnavailableError
from tools.registry import build_tools, run_tool

pytestmark = pytest.mark.integration

KEY = "sk-test-0123456789"
CONTEXT = ToolContext(image=b"")


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    monkeypatch.setenv("BRAVE_API_KEY", KEY)


def serper_search(request: Request) -> Reply:
    if request.headers.get("x-api-key") != KEY:
        return Reply(401, {"message": "Unauthorized."})
    body = request.json()
    organic = [
        {"title": f"{body['q']} result {i}", "link": f"https://r{i}.example/", "snippet": f"s{i}"}
        for i in range(body["num"] + 2)
    ]
    return Reply(200, {"searchParameters": body, "organic": organic})


def text_tool(web: LoopbackWeb, provider: str = "serper", **settings: Any) -> Any:
    settings = {"provider": provider, "base_url": web.url, "cache": None, **settings}
    return build_tools(["text_search"], text_search=settings)


def test_serper_search_returns_r1v4_results(web: LoopbackWeb) -> None:
    web.route("/search", serper_search)
    result = run_tool(
        text_tool(web, max_results=2), "text_search", {"queries": ["kestrel"]}, CONTEXT
    )
    assert result.ok, result.error
    assert json.loads(result.text) == [
        {"title": "kestrel result 0", "url": "https://r0.example/", "snippet": "s0"},
        {"title": "kestrel result 1", "url": "https://r1.example/", "snippet": "s1"},
    ]
    assert web.requests[0].method == "POST"
    assert web.requests[0].json() == {"q": "kestrel", "num": 2}


def test_brave_search_returns_plain_text_results(web: LoopbackWeb) -> None:
    def brave(request: Request) -> Reply:
        assert request.headers["x-subscription-token"] == KEY
        assert request.query == {"q": ["heron & co"], "count": ["3"]}
        results = [
            {
                "title": "The <strong>Heron</strong>",
                "url": "https://h.example/",
                "description": "All about <strong>herons</strong> &amp; egrets.",
            },
            {"title": "no url"},
        ]
        return Reply(200, {"type": "search", "web": {"results": results}})

    web.route("/res/v1/web/search", brave)
    tools = text_tool(web, "brave", max_results=3)
    result = run_tool(tools, "text_search", {"queries": ["heron & co"]}, CONTEXT)
    assert json.loads(result.text) == [
        {"title": "The Heron", "url": "https://h.example/", "snippet": "All about herons & egrets."}
    ]


def test_serper_lens_publishes_the_image_and_returns_matches(
    web: LoopbackWeb, tmp_path: Path
) -> None:
    published = tmp_path / "published"
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buffer, format="PNG")
    png = buffer.getvalue()

    def lens(request: Request) -> Reply:
        url = request.json()["url"]
        assert url.startswith(f"{web.url}/published/") and url.endswith(".png")
        assert (published / url.rsplit("/", 1)[1]).read_bytes() == png
        matches = [
            {
                "title": "Red square",
                "source": "Example",
                "link": "https://e.example/p",
                "imageUrl": "https://e.example/red.png",
                "thumbnailUrl": "https://t/x.jpg",
            },
        ]
        return Reply(200, {"organic": matches})

    web.route("/lens", lens)
    tools = build_tools(
        ["image_search"],
        image_search={
            "provider": "serper",
            "base_url": web.url,
            "cache": None,
            "publish_to": str(published),
            "publish_base_url": f"{web.url}/published",
        },
    )
    result = run_tool(tools, "image_search", {"image_paths": ["image"]}, ToolContext(image=png))
    assert json.loads(result.text) == [
        {
            "title": "Red square",
            "source": "https://e.example/red.png",
            "link": "https://e.example/p",
        }
    ]


def test_server_errors_are_retried_then_succeed(web: LoopbackWeb) -> None:
    answers = iter([Reply(503, "busy"), Reply(429, "slow down", {"Retry-After": "0"})])
    web.route("/search", lambda r: next(answers, None) or serper_search(r))
    tools = text_tool(web, retry_initial_s=0.01)
    result = run_tool(tools, "text_search", {"queries": ["q"]}, CONTEXT)
    assert result.ok, result.error
    assert web.calls("/search") == 3


def test_persistent_failure_is_an_observation_after_the_retries(web: LoopbackWeb) -> None:
    web.route("/search", Reply(502, "bad gateway"))
    tools = text_tool(web, retry_initial_s=0.01, max_attempts=3)
    result = run_tool(tools, "text_search", {"queries": ["q"]}, CONTEXT)
    assert result.error_type == "execution"
    assert "HTTP 502" in result.error
    assert web.calls("/search") == 3


def test_auth_errors_are_not_retried_and_the_key_is_redacted(web: LoopbackWeb) -> None:
    web.route("/search", Reply(403, {"message": f"key {KEY} is not valid"}))
    result = run_tool(text_tool(web), "text_search", {"queries": ["q"]}, CONTEXT)
    assert "HTTP 403" in result.error
    assert KEY not in result.error and "[REDACTED]" in result.error
    assert web.calls("/search") == 1


def test_a_response_that_is_not_json_is_an_observation(web: LoopbackWeb) -> None:
    web.route("/search", Reply(200, "<html>oops</html>", {"Content-Type": "text/html"}))
    result = run_tool(text_tool(web), "text_search", {"queries": ["q"]}, CONTEXT)
    assert "not JSON" in result.error


def test_a_slow_api_times_out(web: LoopbackWeb) -> None:
    web.route("/search", Reply(200, {"organic": []}, delay_s=2.0))
    tools = text_tool(web, timeout_s=0.3, max_attempts=1)
    started = time.monotonic()
    result = run_tool(tools, "text_search", {"queries": ["q"]}, CONTEXT)
    assert "did not answer within 0.3 s" in result.error
    assert time.monotonic() - started < 1.5


def test_a_missing_key_is_not_the_models_problem(
    web: LoopbackWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERPER_API_KEY")
    with pytest.raises(ToolUnavailableError, match="SERPER_API_KEY"):
        run_tool(text_tool(web), "text_search", {"queries": ["q"]}, CONTEXT)
    assert web.requests == []


def test_the_cache_answers_repeated_and_rerun_requests(web: LoopbackWeb, tmp_path: Path) -> None:
    web.route("/search", serper_search)
    cache = str(tmp_path / "results")
    tools = text_tool(web, cache=cache)
    first = run_tool(tools, "text_search", {"queries": ["Codebook  K"]}, CONTEXT)
    again = run_tool(tools, "text_search", {"queries": ["codebook k"]}, CONTEXT)
    rerun = run_tool(
        text_tool(web, cache=cache), "text_search", {"queries": ["codebook k"]}, CONTEXT
    )
    assert first.text == again.text == rerun.text
    assert web.calls("/search") == 1
    entries = list((tmp_path / "results").rglob("*.json"))
    assert len(entries) == 1 and KEY not in entries[0].read_text()


def test_auto_cache_lands_in_the_cache_folder(web: LoopbackWeb, cache_folder: Path) -> None:
    web.route("/search", serper_search)
    tools = text_tool(web, cache="auto")
    run_tool(tools, "text_search", {"queries": ["x"]}, CONTEXT)
    assert list((cache_folder / "results").rglob("*.json"))


def test_requests_are_rate_limited(web: LoopbackWeb) -> None:
    web.route("/search", serper_search)
    tools = text_tool(web, rate_per_s=10.0, burst=1)
    started = time.monotonic()
    result = run_tool(tools, "text_search", {"queries": ["a", "b", "c", "d", "e"]}, CONTEXT)
    elapsed = time.monotonic() - started
    assert result.ok and web.calls("/search") == 5
    assert elapsed >= 0.35  # five requests at ten a second, one token at a time
