"""``web_visit`` over HTTP, safely: the page text of a public web URL, bounded in every way.

``HttpPages.fetch(url)`` (steps 1-3 and 5 are ``GuardedHttp``'s, which the pipeline's job
images at http(s) URLs go through as well):

1. checks and resolves the URL with ``NetworkPolicy`` (``tools.search.netguard``): only public
   addresses, unless the host is explicitly allowed;
2. connects to *the checked address* (the request goes to the IP, with the original ``Host``
   header and TLS server name, so the certificate is still verified for the name): no second
   DNS lookup can swap the address;
3. follows at most ``max_redirects`` redirects by hand, each hop checked again from step 1;
4. accepts only text-like media types (HTML, XHTML, XML, plain text, Markdown, CSV, JSON), and
   refuses a body that is binary whatever its declared type;
5. reads at most ``max_bytes`` within ``timeout_s`` for the whole fetch, redirects included,
   however slowly the server trickles bytes. It asks for ``identity`` encoding; a server that
   compresses anyway may use ``gzip`` and ``deflate``, stacked as it likes, and each layer is
   decoded to at most ``max_bytes`` too (the page is cut there): a small compressed body
   cannot become a large one in memory. Other encodings (``br``, ``zstd``, ...) are refused;
6. extracts the text (``tools.search.extract``).

Connections are not kept alive, so a connection made for one host name is never reused for
another. Proxies from the environment are ignored (they would defeat the address pinning).
Connection errors, timeouts, 429 and 5xx are retried once by default (``RetryPolicy``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from tools.search.extract import content_text
from tools.search.http_api import USER_AGENT, RetryPolicy, retry_delay
from tools.search.netguard import NetworkPolicy, Resolver, Target
from tools.search.results import ProviderError, WebPage

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_LIKE = (
    *HTML_TYPES,
    "text/plain",
    "text/markdown",
    "text/csv",
    "text/xml",
    "application/xml",
    "application/json",
)
REDIRECTS = (301, 302, 303, 307, 308)
SNIFF_BYTES = 4096


class _Cut(Exception):
    """Internal: the fetch ran out of time."""


@dataclass(frozen=True)
class Fetched:
    """A body fetched by `GuardedHttp` (content encodings undone): from where (after
    redirects), its type, and whether it was cut at `max_bytes` (`declared` is the server's
    Content-Length, when it gave one)."""

    url: str
    media_type: str
    charset: str | None
    body: bytes
    truncated: bool
    declared: str = ""


class GuardedHttp:
    """GET of a public URL, bounded in every way (steps 1, 2, 3 and 5 of the module docstring).

    `get(url, accept)` calls `accept(url, media_type)` before any of the body is read, so a
    caller refuses what it cannot use without downloading it. `HttpPages` reads pages with it;
    the pipeline reads job images at http(s) URLs with it (`beam_pipelines.io.image_uris`).
    """

    def __init__(
        self,
        *,
        allow_hosts: Iterable[str] = (),
        max_bytes: int = 2_000_000,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 5.0,
        max_redirects: int = 5,
        retry: RetryPolicy | None = None,
        resolver: Resolver | None = None,
        transport: httpx.BaseTransport | None = None,
        accept: str = "*/*",
    ) -> None:
        if max_bytes < 1 or timeout_s <= 0 or max_redirects < 0:
            raise ValueError("max_bytes >= 1, timeout_s > 0, max_redirects >= 0")
        self.policy = NetworkPolicy(allow_hosts, resolver)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_redirects = max_redirects
        self.retry = retry or RetryPolicy(max_attempts=2, initial_s=0.5, max_s=2.0)
        self.accept = accept
        self._transport = transport
        self._client: httpx.Client | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_transport": None}

    def client(self) -> httpx.Client:
        if self._client is None:  # a benign race: at worst two clients, both usable
            self._client = httpx.Client(
                transport=self._transport,
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept": self.accept,
                    "Accept-Encoding": "identity",
                },
            )
        return self._client

    def get(self, url: str, accept: Callable[[str, str], None]) -> Fetched:
        """The body at `url`; `ProviderError` (`BlockedURLError` when refused) otherwise."""
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._follow(url, deadline, accept)
            except _Retryable as error:
                wait = retry_delay(self.retry, attempt, error.status)
                if wait is None or time.monotonic() + wait >= deadline:
                    raise ProviderError(str(error)) from error
                time.sleep(wait)

    def _follow(self, url: str, deadline: float, accept: Callable[[str, str], None]) -> Fetched:
        current = url
        for _ in range(self.max_redirects + 1):
            target = self.policy.resolve(current)
            location, fetched = self._get(target, deadline, accept)
            if fetched is not None:
                return fetched
            current = urljoin(current, location)
        raise ProviderError(f"{url} redirected more than {self.max_redirects} times.")

    def _get(
        self, target: Target, deadline: float, accept: Callable[[str, str], None]
    ) -> tuple[str, Fetched | None]:
        """One request: ``(redirect location, None)`` or ``("", fetched)``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderError(f"{target.url} took longer than {self.timeout_s:g} s.")
        address = f"[{target.address}]" if ":" in target.address else target.address
        pinned = f"{target.scheme}://{address}:{target.port}{target.path}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        timeout = httpx.Timeout(remaining, connect=min(self.connect_timeout_s, remaining))
        request = self.client().build_request(
            "GET",
            pinned,
            headers={"Host": target.host_header},
            timeout=timeout,
            extensions=extensions,
        )
        try:
            response = self.client().send(request, stream=True)
        except httpx.TimeoutException as error:
            raise _Retryable(f"{target.url} did not answer in time.", None) from error
        except httpx.HTTPError as error:
            raise _Retryable(
                f"{target.url} could not be reached ({type(error).__name__}).", None
            ) from error
        try:
            return self._read(target, response, deadline, accept)
        finally:
            response.close()

    def _read(
        self,
        target: Target,
        response: httpx.Response,
        deadline: float,
        accept: Callable[[str, str], None],
    ) -> tuple[str, Fetched | None]:
        status = response.status_code
        if status in REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise ProviderError(f"{target.url} redirected without saying where to.")
            return location, None
        if status >= 400:
            raise _Retryable(f"{target.url} answered HTTP {status}.", status)
        if status != 200:
            raise ProviderError(f"{target.url} answered HTTP {status} without a body.")
        media_type, charset = _content_type(response.headers.get("content-type", ""))
        accept(target.url, media_type)
        declared = response.headers.get("content-length", "")
        encodings = _encodings(response.headers.get_list("content-encoding"))
        unknown = [e for e in encodings if e not in _DECODERS]
        if unknown:
            raise ProviderError(
                f"{target.url} was sent in an unsupported content encoding ({unknown[0][:20]})."
            )
        body, cut = self._body(target, response, deadline)
        for encoding in reversed(encodings):  # the last one applied is undone first
            body, layer_cut = _decode_layer(body, encoding, self.max_bytes)
            if layer_cut is None:
                raise ProviderError(f"{target.url} sent a damaged {encoding} body.")
            cut = cut or layer_cut
        return "", Fetched(target.url, media_type, charset, body, cut, declared)

    def _body(
        self, target: Target, response: httpx.Response, deadline: float
    ) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_raw():  # as sent: decoded above, within the cap
                chunks.append(chunk)
                size += len(chunk)
                if size >= self.max_bytes:
                    return b"".join(chunks)[: self.max_bytes], True
                if time.monotonic() > deadline:
                    raise _Cut
        except _Cut:
            raise ProviderError(
                f"{target.url} was too slow: it did not arrive within {self.timeout_s:g} s."
            ) from None
        except httpx.TimeoutException as error:
            raise _Retryable(f"{target.url} stopped sending.", None) from error
        except httpx.HTTPError as error:
            raise _Retryable(
                f"{target.url} broke off while sending ({type(error).__name__}).", None
            ) from error
        return b"".join(chunks), False


class HttpPages:
    """``PageProvider`` that fetches public web pages (see the module docstring)."""

    name = "http"

    def __init__(self, **settings: Any) -> None:
        """`GuardedHttp`'s settings (`allow_hosts`, `max_bytes`, `timeout_s`, ...)."""
        self.http = GuardedHttp(
            accept="text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1", **settings
        )

    def fetch(self, url: str) -> WebPage:
        fetched = self.http.get(url, _accept_text)
        body = fetched.body
        if _looks_binary(body[:SNIFF_BYTES]):
            raise ProviderError(f"{fetched.url} holds binary data, not a text page.")
        text = _decode(body, fetched.charset)
        media_type = fetched.media_type
        if not media_type:
            media_type = "text/html" if text.lstrip()[:1] == "<" else "text/plain"
        title, content = content_text(text, media_type, fetched.url)
        if fetched.truncated:
            size = f"{fetched.declared} bytes" if fetched.declared.isdigit() else "more"
            limit = self.http.max_bytes
            content += f"\n[... page cut: only the first {limit} bytes of {size} read]"
        return WebPage(url=fetched.url, title=title, text=content, truncated=fetched.truncated)


def _accept_text(url: str, media_type: str) -> None:
    if media_type and media_type not in TEXT_LIKE:
        raise ProviderError(
            f"{url} is not a text page (its content type is {media_type}); only "
            "web pages and text can be read."
        )


#: zlib window bits per encoding (gzip header; zlib wrapper, with a raw fallback for deflate).
_DECODERS = {"gzip": (16 + 15,), "x-gzip": (16 + 15,), "deflate": (15, -15)}


def _encodings(values: list[str]) -> list[str]:
    """Content-Encoding layers in the order the server applied them, ``identity`` dropped."""
    found = [part.strip().lower() for value in values for part in value.split(",")]
    return [e for e in found if e and e != "identity"]


def _decode_layer(data: bytes, encoding: str, limit: int) -> tuple[bytes, bool | None]:
    """One encoding undone, at most ``limit`` bytes of output: (bytes, cut), or
    (b"", None) when the data is not in that encoding."""
    for wbits in _DECODERS[encoding]:
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(data, limit)
        except zlib.error:
            continue
        return out, bool(decoder.unconsumed_tail) or len(out) >= limit
    return b"", None


class _Retryable(ProviderError):
    """A failure worth another try (connection, timeout, 429/5xx), with its HTTP status."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def _content_type(value: str) -> tuple[str, str | None]:
    media_type, _, rest = value.partition(";")
    charset = None
    for parameter in rest.split(";"):
        name, _, setting = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = setting.strip().strip("\"'") or None
    return media_type.strip().lower(), charset


def _looks_binary(head: bytes) -> bool:
    if not head:
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 9 or 13 < b < 32)
    return controls > len(head) // 20


def _decode(body: bytes, charset: str | None) -> str:
    if charset:
        try:
            return body.decode(charset, errors="replace")
        except LookupError:
            pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start >= len(body) - 3:  # a character cut in two at the size limit
            return body[: error.start].decode("utf-8")
        return body.decode("cp1252", errors="replace")
