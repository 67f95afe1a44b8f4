"""Fixtures of the search tool tests: one small built corpus, a loopback HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from search_web import LoopbackWeb

from tools.search.corpus import Corpus, CorpusSpec, build_corpus

#: Small enough to build in a few seconds, large enough for ranking and the image index.
TEST_SPEC = CorpusSpec(seed=0, plates=24, articles=40)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("search") / "corpus", TEST_SPEC)


@pytest.fixture
def web() -> Iterator[LoopbackWeb]:
    server = LoopbackWeb()
    yield server
    server.close()


@pytest.fixture
def cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache folder for this test (``"auto"`` caches and default corpora land here)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("BEAM_AGENTIC_VLM_CACHE", str(folder))
    return folder
