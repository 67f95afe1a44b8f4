"""The search tools' settings, checked once, and the providers they build.

Settings arrive flat, per tool, through ``build_tools(..., text_search={...})``; unknown keys
are errors (a frozen dataclass's constructor rejects them). ``provider`` picks the provider:

- ``text_search``: ``"offline"`` (default), ``"serper"``, ``"brave"``;
- ``image_search``: ``"offline"`` (default), ``"serper"`` (Google Lens);
- ``web_visit``: ``"offline"`` (default), ``"http"``.

``corpus`` is the folder of a built corpus (``tools.search.corpus.build_corpus``); None means
the default corpus, built once per machine in the cache folder. ``cache`` is where online
results are kept: ``"auto"`` (default) is ``<cache folder>/results`` for online providers and
no cache for offline ones, None turns caching off, and anything else is a folder or a
``gs://bucket/prefix``. API keys are read from the environment variable ``api_key_env``
(``SERPER_API_KEY`` / ``BRAVE_API_KEY`` by default) at request time, never from settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tools.base import Chat, ToolUnavailableError
from tools.search import brave, serper
from tools.search.cache import CachedImageSearch, CachedPages, CachedTextSearch, ResultCache
from tools.search.corpus import Corpus, cache_dir, default_corpus, open_corpus
from tools.search.http_api import ApiClient, ApiKey, RetryPolicy
from tools.search.netguard import allow_entry
from tools.search.providers import (
    ImageSearchProvider,
    PageProvider,
    PageSummarizer,
    TextSearchProvider,
)
from tools.search.storage import open_storage
from tools.search.summary import ModelSummarizer

TEXT_PROVIDERS = ("offline", "serper", "brave")
IMAGE_PROVIDERS = ("offline", "serper")
PAGE_PROVIDERS = ("offline", "http")
#: ``web_visit``'s ``summarize`` settings: the model server (``KIND:URL`` as annotate's
#: ``--endpoint``), its model name, the request deadline and the page text sent at most.
SUMMARIZE_SETTINGS = ("endpoint", "model", "timeout_s", "max_page_chars")


@dataclass(frozen=True)
class ApiSettings:
    """What every online search provider shares."""

    api_key_env: str | None = None
    base_url: str | None = None
    rate_per_s: float = 5.0
    burst: int = 5
    timeout_s: float = 20.0
    max_attempts: int = 4
    retry_initial_s: float = 0.5
    cache: str | None = "auto"
    cache_max_age_s: float | None = None


def _check(provider: str, known: tuple[str, ...], s: Any) -> None:
    if provider not in known:
        raise ValueError(f"provider must be one of {', '.join(known)}")  # never the value
    if s.max_results < 1:
        raise ValueError("max_results must be >= 1")
    _refuse_credentials(s)


def _refuse_credentials(s: Any) -> None:
    """No setting may carry credentials in a URL (``https://user:key@host``): settings are
    recorded in manifests and logs; keys come from the environment. Names the setting only."""
    values = [(f.name, getattr(s, f.name)) for f in fields(s)]
    if isinstance(getattr(s, "summarize", None), Mapping):
        values += [(f"summarize.{k}", v) for k, v in s.summarize.items()]
    for name, value in values:
        if not isinstance(value, str) or ("://" not in value and not name.endswith("endpoint")):
            continue
        # Anywhere, not only before the first "/": a password may hold a "/" itself.
        if "@" in value:
            raise ValueError(
                f"{name} must not hold credentials (user:password@ in the URL); put keys in "
                "the environment and name the variable with api_key_env"
            )


@dataclass(frozen=True)
class TextSearchSettings(ApiSettings):
    provider: str = "offline"
    corpus: str | None = None
    max_results: int = 5
    max_queries: int = 5

    def __post_init__(self) -> None:
        _check(self.provider, TEXT_PROVIDERS, self)


@dataclass(frozen=True)
class ImageSearchSettings(ApiSettings):
    provider: str = "offline"
    corpus: str | None = None
    max_results: int = 5
    max_images: int = 3
    min_score: float = 0.85
    #: serper: where query images are published (storage URI) and the URL that serves it.
    publish_to: str | None = None
    publish_base_url: str | None = None

    def __post_init__(self) -> None:
        _check(self.provider, IMAGE_PROVIDERS, self)
        if self.provider == "serper" and not (self.publish_to and self.publish_base_url):
            raise ValueError(
                "image_search with serper needs publish_to and publish_base_url: Lens takes an "
                "image URL, so query images must be published where it can fetch them"
            )


@dataclass(frozen=True)
class WebVisitSettings:
    provider: str = "offline"
    corpus: str | None = None
    max_chars: int = 6000
    max_urls: int = 3
    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = 2_000_000
    timeout_s: float = 20.0
    max_redirects: int = 5
    cache: str | None = "auto"
    cache_max_age_s: float | None = None
    #: e.g. {"endpoint": "triton:127.0.0.1:8001", "model": "agent_vlm"}: summarise long pages
    #: for the goal with that served model.
    summarize: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.provider not in PAGE_PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PAGE_PROVIDERS)}")
        if self.max_chars < 200 or self.max_urls < 1:
            raise ValueError("max_chars >= 200 and max_urls >= 1")
        if isinstance(self.allow_hosts, str):
            raise ValueError("allow_hosts is a list of host names")
        object.__setattr__(self, "allow_hosts", tuple(self.allow_hosts))
        for entry in self.allow_hosts:
            allow_entry(entry)  # its error names the forms, never the value
        if self.summarize is not None:
            unknown = set(self.summarize) - set(SUMMARIZE_SETTINGS)
            if unknown:
                raise ValueError(f"unknown summarize setting(s): {', '.join(sorted(unknown))}")
            if not self.summarize.get("endpoint"):
                raise ValueError('summarize needs an "endpoint", e.g. "triton:127.0.0.1:8001"')
        _refuse_credentials(self)


def corpus_of(folder: str | None) -> Corpus:
    if folder is None:
        return default_corpus()
    try:
        return open_corpus(folder)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise ToolUnavailableError(f"no usable search corpus in {folder}: {error}") from error


def result_cache(cache: str | None, max_age_s: float | None) -> ResultCache | None:
    """The cache a setting names (``"auto"``: the default folder), or None."""
    if not cache:
        return None
    uri = str(cache_dir() / "results") if cache == "auto" else cache
    return ResultCache(open_storage(uri), max_age_s)


def api_client(name: str, s: ApiSettings, default_url: str, key_env: str, header: str) -> ApiClient:
    return ApiClient(
        name,
        s.base_url or default_url,
        ApiKey(s.api_key_env or key_env),
        header,
        timeout_s=s.timeout_s,
        retry=RetryPolicy(
            max_attempts=s.max_attempts,
            initial_s=s.retry_initial_s,
            max_s=max(8.0, s.retry_initial_s),
        ),
        rate_per_s=s.rate_per_s,
        burst=s.burst,
    )


def text_provider(s: TextSearchSettings) -> TextSearchProvider:
    if s.provider == "offline":
        from tools.search.text_index import LocalTextSearch

        provider: TextSearchProvider = LocalTextSearch(corpus_of(s.corpus).text_index_path)
        cache = result_cache(None if s.cache == "auto" else s.cache, s.cache_max_age_s)
    else:
        if s.provider == "serper":
            client = api_client(
                "serper", s, serper.DEFAULT_BASE_URL, serper.DEFAULT_KEY_ENV, "X-API-KEY"
            )
            provider = serper.SerperTextSearch(client)
        else:
            client = api_client(
                "brave", s, brave.DEFAULT_BASE_URL, brave.DEFAULT_KEY_ENV, "X-Subscription-Token"
            )
            provider = brave.BraveTextSearch(client)
        cache = result_cache(s.cache, s.cache_max_age_s)
    return CachedTextSearch(provider, cache) if cache else provider


def image_provider(s: ImageSearchSettings) -> ImageSearchProvider:
    if s.provider == "offline":
        from tools.search.image_index import LocalImageSearch

        index = corpus_of(s.corpus).image_index_path
        provider: ImageSearchProvider = LocalImageSearch(index, min_score=s.min_score)
        cache = result_cache(None if s.cache == "auto" else s.cache, s.cache_max_age_s)
    else:
        client = api_client(
            "serper", s, serper.DEFAULT_BASE_URL, serper.DEFAULT_KEY_ENV, "X-API-KEY"
        )
        assert s.publish_to and s.publish_base_url  # checked by the settings
        publisher = serper.ImagePublisher(open_storage(s.publish_to), s.publish_base_url)
        provider = serper.SerperImageSearch(client, publisher)
        cache = result_cache(s.cache, s.cache_max_age_s)
    return CachedImageSearch(provider, cache) if cache else provider


def page_provider(s: WebVisitSettings) -> PageProvider:
    if s.provider == "offline":
        from tools.search.local_pages import LocalPages

        provider: PageProvider = LocalPages(corpus_of(s.corpus).pages_path)
        cache = result_cache(None if s.cache == "auto" else s.cache, s.cache_max_age_s)
    else:
        from tools.search.http_pages import HttpPages

        provider = HttpPages(
            allow_hosts=s.allow_hosts,
            max_bytes=s.max_bytes,
            timeout_s=s.timeout_s,
            max_redirects=s.max_redirects,
        )
        cache = result_cache(s.cache, s.cache_max_age_s)
    return CachedPages(provider, cache) if cache else provider


def summarizer(s: WebVisitSettings, chat: Chat | None) -> PageSummarizer | None:
    """The goal summariser, when ``summarize`` is set and a model was attached to ask."""
    if s.summarize is None or chat is None:
        return None
    return ModelSummarizer(chat, max_page_chars=int(s.summarize.get("max_page_chars", 24_000)))
