"""A canary API key behind a hostile provider on loopback: it never comes back, in any form.

The provider (a loopback server speaking Serper's API) echoes the key it was sent in every
transformation an attacker might try (another case, base64 at every alignment, URL-encoded,
hex) in its results and in its error bodies. What the tool returns, the error the model reads
and the log must hold none of them. Settings refuse URLs with credentials and never echo a
value in an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from search_web import LoopbackWeb, Reply, Request

from tools.base import ToolContext
from tools.registry import build_tools, run_tool
from tools.search.http_api import redact
from tools.search.settings import ImageSearchSettings, TextSearchSettings, WebVisitSettings

pytestmark = pytest.mark.integration

CANARY = "ck-Canary/Key+7Zq=Wp9-Xv3!mN8_tR2"
CONTEXT = ToolContext(image=b"")


def echoes(key: str) -> dict[str, str]:
    raw = key.encode()
    forms = {
        "exact": key,
        "upper": key.upper(),
        "lower": key.lower(),
        "swapcase": key.swapcase(),
        "quote": quote(key, safe=""),
        "quote_plus": quote_plus(key),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
    }
    for offset in range(3):  # the key inside a longer base64 text, at each alignment
        prefix = b"user=" + b"x" * offset + b":"
        forms[f"b64_{offset}"] = base64.b64encode(prefix + raw + b"@api").decode()
        forms[f"b64url_{offset}"] = base64.urlsafe_b64encode(prefix + raw).decode()
    forms["basic_auth"] = "Basic " + base64.b64encode(b"api:" + raw).decode()
    return forms


def leaked(text: str, key: str = CANARY) -> list[str]:
    """Which forms of ``key`` are in ``text`` (decoding base64 runs found in it too)."""
    found = [name for name, form in echoes(key).items() if form in text]
    lowered = text.lower()
    found += ["any-case"] if key.lower() in lowered else []
    found += ["quoted"] if quote(key, safe="").lower() in lowered else []
    for word in text.replace('"', " ").split():
        for candidate in (word, word + "=", word + "=="):
            try:
                decoded = base64.b64decode(candidate, altchars=b"-_", validate=False)
            except (binascii.Error, ValueError):
                continue
            if key.encode() in decoded:
                found.append("decodable base64")
    return found


def hostile_search(request: Request) -> Reply:
    key = request.headers.get("x-api-key", "")
    organic = [
        {"title": f"{name}: {form}", "link": f"https://evil.example/?k={form}", "snippet": form}
        for name, form in echoes(key).items()
    ]
    return Reply(200, {"organic": organic, key: "a key as a JSON key"})


@pytest.fixture(autouse=True)
def canary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_API_KEY", CANARY)


def tool(web: LoopbackWeb) -> Any:
    settings = {"provider": "serper", "base_url": web.url, "cache": None,
                "api_key_env": "CANARY_API_KEY", "max_results": 50, "max_attempts": 1}  # fmt: skip
    return build_tools(["text_search"], text_search=settings)


def test_the_detector_finds_every_echo():
    for name, form in echoes(CANARY).items():
        assert leaked(f"xx {form} yy"), name


def test_results_echoing_the_key_are_redacted(web: LoopbackWeb, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    web.route("/search", hostile_search)
    result = run_tool(tool(web), "text_search", {"queries": ["kestrel"]}, CONTEXT)
    assert result.ok, result.error
    assert web.requests[0].headers["x-api-key"] == CANARY  # the provider did get the key
    assert leaked(result.text) == []
    assert "[REDACTED]" in result.text
    assert len(json.loads(result.text)) >= 5  # the results still arrive (repeated URLs dropped)
    assert leaked(caplog.text) == []


@pytest.mark.parametrize("status", [401, 403, 502])
def test_errors_echoing_the_key_are_redacted(web: LoopbackWeb, caplog, status: int) -> None:
    caplog.set_level(logging.DEBUG)
    for name, form in echoes(CANARY).items():
        web.route("/search", Reply(status, {"message": f"bad key ({name}) {form}"}))
        result = run_tool(tool(web), "text_search", {"queries": ["q"]}, CONTEXT)
        assert result.error_type == "execution"
        assert leaked(result.error) == [], name
    assert leaked(caplog.text) == []


def test_redact_keeps_other_text():
    assert redact("hello world", (CANARY,)) == "hello world"
    assert redact(f"a {CANARY.upper()} b", (CANARY,)) == "a [REDACTED] b"
    assert redact("x", ("",)) == "x"


@pytest.mark.parametrize(
    ("cls", "settings", "name"),
    [
        (TextSearchSettings, {"base_url": f"https://u:{CANARY}@api.example/"}, "base_url"),
        (ImageSearchSettings, {"base_url": f"http://{CANARY}@127.0.0.1:9/"}, "base_url"),
        (
            ImageSearchSettings,
            {
                "provider": "serper",
                "publish_to": "gs://b/p",
                "publish_base_url": f"https://u:{CANARY}@cdn.example/",
            },
            "publish_base_url",
        ),
        (WebVisitSettings, {"cache": f"https://u:{CANARY}@cache.example/x"}, "cache"),
        (
            WebVisitSettings,
            {"summarize": {"endpoint": f"triton:u:{CANARY}@127.0.0.1:8001"}},
            "summarize.endpoint",
        ),
    ],
)
def test_settings_refuse_urls_with_credentials_and_never_echo_them(cls, settings, name):
    with pytest.raises(ValueError) as error:
        cls(**settings)
    message = str(error.value)
    assert message.startswith(f"{name} must not hold credentials") and leaked(message) == []


@pytest.mark.parametrize("cls", [TextSearchSettings, ImageSearchSettings, WebVisitSettings])
def test_a_bad_provider_is_not_echoed(cls):
    with pytest.raises(ValueError) as error:
        cls(provider=CANARY)
    assert "provider must be one of" in str(error.value) and leaked(str(error.value)) == []
