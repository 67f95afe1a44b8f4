"""Reading a job's image from its URI, whatever the URI is, as bytes or as a failure class.

- Paths, `file://`, `gs://` and every other scheme Beam has a filesystem for: through Beam's
  FileSystems.
- `http://` and `https://`: through the web fetcher's guard (`tools.search.http_pages
  .GuardedHttp`, the one `web_visit` uses): public addresses only (no private, loopback or
  metadata address, every redirect checked again), at most `max_bytes`, within `timeout_s`.
- Anything else: `unsupported_uri`.

Every problem with one URI is an `ImageReadError` whose `error_class` names it, so that it
becomes that job's failure row; none of them can stop a run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.io.files import normalize, read_bytes
from tools.search.http_pages import GuardedHttp
from tools.search.results import BlockedURLError, ProviderError

HTTP_SCHEMES = ("http", "https")
#: The most bytes an image is fetched over HTTP (the safe loader then bounds its pixels).
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_FETCH_TIMEOUT_S = 60.0


class ImageReadError(OSError):
    """The job's image could not be read (missing file, no permission, storage error)."""

    error_class = "image_unreadable"


class ImageMissingError(ImageReadError):
    error_class = "image_missing"


class UnsupportedURIError(ImageReadError):
    """A URI no filesystem and no fetcher reads (`ftp://`, `data:`, ...)."""

    error_class = "unsupported_uri"


class ImageBlockedError(ImageReadError):
    """An http(s) URL the guard refuses: a private, loopback or metadata address."""

    error_class = "image_blocked"


class ImageTooLargeToFetchError(ImageReadError):
    error_class = "image_too_large"


def _accept_image(url: str, media_type: str) -> None:
    if media_type.startswith(("text/", "application/json", "application/xml")):
        raise ProviderError(f"{url} is not an image (its content type is {media_type}).")


class ImageSource:
    """Reads job images (see the module docstring); picklable, so every worker has one.

    `allow_hosts` lets named hosts past the address check (the guard's explicit allowance;
    tests use it for their loopback server).
    """

    def __init__(
        self,
        allow_hosts: Iterable[str] = (),
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
    ) -> None:
        self._http = GuardedHttp(
            allow_hosts=allow_hosts,
            max_bytes=max_bytes + 1,  # one byte over the cap tells "too large" from "exactly"
            timeout_s=timeout_s,
            accept="image/*,*/*;q=0.5",
        )
        self.max_bytes = max_bytes

    def read(self, uri: str) -> bytes:
        """The bytes at `uri`; an `ImageReadError` with its class when they cannot be had."""
        try:
            scheme = urlsplit(uri).scheme.lower()
        except ValueError as e:
            raise UnsupportedURIError(f"not a URI: {uri[:300]!r} ({e})") from e
        if scheme in HTTP_SCHEMES:
            return self._fetch(uri)
        path = normalize(uri)
        try:
            FileSystems.get_filesystem(path)
        except ValueError as e:
            raise UnsupportedURIError(f"no filesystem reads {uri[:300]!r}: {e}") from e
        local = FileSystems.get_scheme(path) is None
        if local and scheme not in ("", "file") and not _is_file(path):
            # `data:...`, `mailto:...`: Beam would take them for local file names.
            raise UnsupportedURIError(f"{uri[:300]!r} is a {scheme}: URI, which nothing reads")
        return _read_file(uri)

    def _fetch(self, url: str) -> bytes:
        try:
            fetched = self._http.get(url, _accept_image)
        except BlockedURLError as e:
            raise ImageBlockedError(str(e)) from e
        except ProviderError as e:
            if "HTTP 404" in str(e) or "HTTP 410" in str(e):
                raise ImageMissingError(f"no such image: {url} ({e})") from e
            raise ImageReadError(f"cannot fetch {url}: {e}") from e
        if fetched.truncated:
            raise ImageTooLargeToFetchError(
                f"{url} is over the {self.max_bytes} bytes an image may have"
            )
        return fetched.body


def _is_file(path: str) -> bool:
    try:
        return os.path.isfile(path)
    except ValueError:  # a NUL in the name
        return False


def _read_file(uri: str) -> bytes:
    try:
        return read_bytes(uri)
    except FileNotFoundError as e:
        raise ImageMissingError(f"no such image: {uri}") from e
    except (BeamIOError, OSError, ValueError) as e:
        text = str(e)
        if "No such file" in text or "Not found" in text or "404" in text:
            raise ImageMissingError(f"no such image: {uri}") from e
        raise ImageReadError(f"cannot read {uri}: {text[:300]}") from e


#: Job images from files, object stores and public http(s) URLs: what the pipeline reads with.
PUBLIC_IMAGES = ImageSource()
