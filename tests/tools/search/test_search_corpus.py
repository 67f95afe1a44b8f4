"""The generated corpus: deterministic, self-consistent, and searchable by text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tools.search.corpus import (
    BASE_URL,
    Corpus,
    CorpusSpec,
    build_corpus,
    codebook,
    codebook_url,
    default_corpus,
    open_corpus,
)
from tools.search.text_index import LocalTextSearch, match_expression


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_seed_builds_the_same_corpus(tmp_path: Path) -> None:
    spec = CorpusSpec(seed=3, plates=3, articles=5)
    one, two = build_corpus(tmp_path / "a", spec), build_corpus(tmp_path / "b", spec)
    assert digest(one.pages_path) == digest(two.pages_path)
    for plate in one.plates:
        assert digest(one.root / plate.file) == digest(two.root / plate.file)
    other = build_corpus(tmp_path / "c", CorpusSpec(seed=4, plates=3, articles=5))
    assert digest(other.pages_path) != digest(one.pages_path)


def test_codebook_pages_state_the_codebook(corpus: Corpus) -> None:
    book = codebook(corpus.spec.seed, corpus.spec.symbols)
    assert len(set(book.values())) == len(book) == 36
    pages = {d.url: d for d in corpus.documents()}
    for symbol, word in book.items():
        page = pages[codebook_url(symbol)]
        assert f"the symbol {symbol} stands for the codeword {word}." in page.html
    assert all(url.startswith(BASE_URL + "/") for url in pages)


def test_every_symbol_is_found_first_by_a_codebook_query(corpus: Corpus) -> None:
    search = LocalTextSearch(corpus.text_index_path)
    book = codebook(corpus.spec.seed, corpus.spec.symbols)
    for symbol, word in book.items():
        hits = search.search(f"codebook symbol {symbol}", 3)
        assert hits[0].url == codebook_url(symbol), symbol
        assert word in hits[0].snippet


def test_queries_are_never_fts_syntax(corpus: Corpus) -> None:
    search = LocalTextSearch(corpus.text_index_path)
    for query in ['"unbalanced', "a AND OR NOT", "NEAR(x y)", "title:plate*", "^-)(", "'; DROP"]:
        search.search(query, 5)  # no error
    assert search.search("?!", 5) == []
    assert match_expression('say "hi"') == '"say" OR "hi"'


def test_results_rank_the_named_page_first(corpus: Corpus) -> None:
    search = LocalTextSearch(corpus.text_index_path)
    plate = corpus.plates[7]
    hits = search.search(plate.title, 5)
    assert hits[0].url == plate.page_url
    assert len(hits) == 5 and len({h.url for h in hits}) == 5


def test_default_corpus_is_built_once_in_the_cache_folder(
    cache_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = CorpusSpec(plates=2, articles=3)
    first = default_corpus(spec)
    assert first.root.is_relative_to(cache_folder)
    manifest = json.loads((first.root / "manifest.json").read_text())
    assert manifest["spec"]["plates"] == 2

    def no_rebuild(*args: object, **kwargs: object) -> Corpus:
        raise AssertionError("rebuilt")

    monkeypatch.setattr("tools.search.corpus.build_corpus", no_rebuild)
    assert default_corpus(spec).root == first.root


def test_open_corpus_of_an_empty_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_corpus(tmp_path)
