"""The three tools end to end on the offline corpus, their errors, settings and SSRF answers."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tools.base import Tool, ToolContext, ToolUnavailableError
from tools.registry import build_tools, run_tool
from tools.search.corpus import Corpus, codebook, codebook_url
from tools.search.results import WebPage

NAMES = ["text_search", "image_search", "web_visit"]


@pytest.fixture
def tools(corpus: Corpus) -> dict[str, Tool]:
    root = str(corpus.root)
    return build_tools(
        NAMES,
        text_search={"corpus": root, "max_results": 3},
        image_search={"corpus": root},
        web_visit={"corpus": root},
    )


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def call(tools: dict[str, Tool], name: str, arguments: dict[str, Any], **context: Any) -> Any:
    return run_tool(tools, name, arguments, ToolContext(**{"image": b"", **context}))


def test_headers_and_kinds(tools: dict[str, Tool]) -> None:
    for name, tool in tools.items():
        assert isinstance(tool, Tool) and tool.name == name and tool.kind == "io"
    assert tools["text_search"].parameters["properties"]["queries"]["maxItems"] == 5
    assert tools["web_visit"].parameters["required"] == ["urls"]


def test_search_then_visit_answers_a_codebook_question(
    tools: dict[str, Tool], corpus: Corpus
) -> None:
    word = codebook(corpus.spec.seed)["K"]
    found = call(tools, "text_search", {"queries": ["codebook symbol K"]})
    hits = json.loads(found.text)
    assert set(hits[0]) == {"title", "url", "snippet"}
    assert hits[0]["url"] == codebook_url("K")
    page = call(tools, "web_visit", {"urls": [hits[0]["url"]], "goal": "codeword of K"})
    assert f"the symbol K stands for the codeword {word}" in page.text


def test_several_queries_give_one_list_without_repeats(tools: dict[str, Tool]) -> None:
    result = call(
        tools, "text_search", {"queries": ["codebook symbol A", "codebook symbol A", "Q"]}
    )
    urls = [hit["url"] for hit in json.loads(result.text)]
    assert urls[0] == codebook_url("A")
    assert len(urls) == len(set(urls)) <= 6


def test_image_search_finds_a_sub_image_crop(tools: dict[str, Tool], corpus: Corpus) -> None:
    plate = corpus.plates[4]
    picture = Image.open(corpus.root / plate.file)
    crop = picture.crop((50, 40, 50 + picture.width // 2, 40 + picture.height // 2))
    crop = crop.resize((crop.width * 2, crop.height * 2))  # a zoom tool enlarges its crops
    result = call(
        tools,
        "image_search",
        {"image_paths": ["<sub-image 1>"]},
        image=png(Image.new("RGB", (64, 64))),
        sub_images=(png(crop),),
    )
    hits = json.loads(result.text)
    assert hits[0] == {"title": plate.title, "source": plate.image_url, "link": plate.page_url}


def test_image_search_of_the_original(tools: dict[str, Tool], corpus: Corpus) -> None:
    plate = corpus.plates[0]
    result = call(
        tools,
        "image_search",
        {"image_paths": ["image"]},
        image=(corpus.root / plate.file).read_bytes(),
    )
    assert json.loads(result.text)[0]["link"] == plate.page_url


def test_image_search_of_any_image_of_a_multi_image_job(
    tools: dict[str, Tool], corpus: Corpus
) -> None:
    first, second = corpus.plates[0], corpus.plates[1]
    images = {"image": (corpus.root / first.file).read_bytes()}
    images["more_images"] = ((corpus.root / second.file).read_bytes(),)
    for path, plate in [("images[1]", second), ("images[0]", first), ("image", first)]:
        result = call(tools, "image_search", {"image_paths": [path]}, **images)
        assert json.loads(result.text)[0]["link"] == plate.page_url, path
    wrong = call(tools, "image_search", {"image_paths": ["images[2]"]}, **images)
    assert wrong.error_type == "arguments"
    assert '"images[i]" for i from 0 to 1' in wrong.error


@pytest.mark.parametrize(
    ("name", "arguments", "words"),
    [
        ("text_search", {"queries": []}, "at least 1 item"),
        ("text_search", {"queries": ["  "]}, "empty"),
        ("text_search", {"queries": ["a"] * 6}, "at most 5 item"),
        ("text_search", {"query": "a"}, "missing the required field 'queries'"),
        ("image_search", {"image_paths": ["<sub-image 3>"]}, "no sub-images exist yet"),
        ("image_search", {"image_paths": ["photo.jpg"]}, 'use "image"'),
        ("web_visit", {"urls": ["http://corpus.invalid/x"], "goal": 3}, "must be a string"),
    ],
)
def test_bad_calls_are_argument_errors(
    tools: dict[str, Tool], name: str, arguments: dict[str, Any], words: str
) -> None:
    result = call(tools, name, arguments)
    assert result.error_type == "arguments" and words in result.error


def test_an_unreadable_image_is_the_models_problem(tools: dict[str, Tool]) -> None:
    result = call(tools, "image_search", {"image_paths": ["image"]}, image=b"garbage")
    assert result.error_type == "arguments" and "could not be read" in result.error


def test_web_visit_outside_the_corpus(tools: dict[str, Tool]) -> None:
    alone = call(tools, "web_visit", {"urls": ["https://example.com/"]})
    assert alone.error_type == "execution" and "not in the offline corpus" in alone.error
    mixed = call(tools, "web_visit", {"urls": ["https://example.com/", codebook_url("B")]})
    assert mixed.ok
    assert "[could not be read: https://example.com/ is not in the offline corpus" in mixed.text
    assert "symbol B stands for" in mixed.text


def test_web_visit_keeps_to_its_budget(corpus: Corpus) -> None:
    tools = build_tools(["web_visit"], web_visit={"corpus": str(corpus.root), "max_chars": 200})
    urls = [codebook_url("C"), codebook_url("D")]
    result = call(tools, "web_visit", {"urls": urls, "goal": "codeword"})
    for section in result.text.split("\n\n---\n\n"):
        assert len(section) <= 200 + 40  # each URL gets its share, plus the header lines
    assert "page cut" in result.text


class FakeSummarizer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def summarize(self, page: WebPage, goal: str, budget_chars: int) -> str:
        self.calls.append((page.url, goal, budget_chars))
        return f"The page names the codeword. ({len(page.text)} chars read)"


def test_long_pages_go_to_the_summary_hook_when_there_is_a_goal(corpus: Corpus) -> None:
    tools = build_tools(["web_visit"], web_visit={"corpus": str(corpus.root), "max_chars": 200})
    tool: Any = tools["web_visit"]
    tool.provider  # noqa: B018 - build the provider, then put a summariser beside it
    tool._summarizer = FakeSummarizer()
    result = call(tools, "web_visit", {"urls": [codebook_url("E")], "goal": "codeword of E"})
    assert "[summary for the goal]\nThe page names the codeword." in result.text
    assert tool._summarizer.calls[0][:2] == (codebook_url("E"), "codeword of E")
    call(tools, "web_visit", {"urls": [codebook_url("E")]})  # no goal: no summary
    assert len(tool._summarizer.calls) == 1


def test_tools_pickle_and_work_after(tools: dict[str, Tool]) -> None:
    call(tools, "text_search", {"queries": ["plate"]})  # providers built and loaded
    copies = pickle.loads(pickle.dumps(tools))
    result = call(copies, "text_search", {"queries": ["codebook symbol Z"]})
    assert json.loads(result.text)[0]["url"] == codebook_url("Z")


def test_settings_are_checked_when_the_tool_is_built() -> None:
    with pytest.raises(ValueError, match="text_search"):
        build_tools(["text_search"], text_search={"provder": "serper"})
    with pytest.raises(ValueError, match="provider must be one of"):
        build_tools(["text_search"], text_search={"provider": "bing"})
    with pytest.raises(ValueError, match="publish_to"):
        build_tools(["image_search"], image_search={"provider": "serper"})
    with pytest.raises(ValueError, match="summarize"):
        build_tools(["web_visit"], web_visit={"summarize": {"host": "x"}})


def test_building_a_tool_touches_nothing(cache_folder: Path) -> None:
    build_tools(NAMES)  # headers only: no corpus built, no key needed
    build_tools(["text_search"], text_search={"provider": "serper"})
    assert not cache_folder.exists()


def test_a_missing_corpus_is_unavailable(tmp_path: Path) -> None:
    tools = build_tools(["text_search"], text_search={"corpus": str(tmp_path)})
    with pytest.raises(ToolUnavailableError, match="no usable search corpus"):
        call(tools, "text_search", {"queries": ["x"]})


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
        ("http://[::1]:8080/", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/iam/", "the cloud metadata address"),
        ("http://10.20.30.40/", "10.20.30.40 is a private-network address"),
        ("http://intranet.corp.example/", "resolves to 10.1.1.1, which is a private-network"),
        ("http://localhost:5000/", "which is a loopback address"),
    ],
)
def test_ssrf_attempts_are_refused_with_a_clear_observation(
    url: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = __import__("tools.search.netguard", fromlist=["system_resolver"]).system_resolver

    def resolver(host: str, port: int) -> list[str]:
        return ["10.1.1.1"] if host == "intranet.corp.example" else real(host, port)

    monkeypatch.setattr("tools.search.netguard.system_resolver", resolver)
    tools = build_tools(["web_visit"], web_visit={"provider": "http", "cache": None})
    result = call(tools, "web_visit", {"urls": [url]})
    assert result.error_type == "execution"
    assert result.error.startswith(f"Refused to visit {url}")
    assert words in result.error and "Only public web addresses can be visited." in result.error
