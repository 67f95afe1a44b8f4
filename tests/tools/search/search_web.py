"""A loopback HTTP server for the search tool tests (see ``conftest.web``).

``LoopbackWeb`` is a real HTTP server on 127.0.0.1 (a thread of the test process) whose routes
the test sets: ``web.route(path, handler)`` with ``handler(request) -> Reply`` (or a fixed
``Reply``). It records every request, so tests can count calls (cache hits, retries) and check
headers (API keys). Replies can be slow (``delay_s``) and trickle (``chunk``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: send the body in pieces of this many bytes, sleeping ``delay_s`` before each
    chunk: int | None = None
    delay_s: float = 0.0

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Reply]


class LoopbackWeb:
    """Routes by path; unknown paths answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def route(self, path: str, handler: Handler | Reply) -> None:
        self.routes[path] = handler if callable(handler) else (lambda _r, h=handler: h)

    def calls(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                request = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                web.requests.append(request)
                handler = web.routes.get(parts.path)
                reply = handler(request) if handler else Reply(404, "not found")
                payload = reply.payload()
                self.send_response(reply.status)
                headers = {"Content-Length": str(len(payload)), **reply.headers}
                if isinstance(reply.body, dict | list):
                    headers.setdefault("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if reply.chunk is None:
                        time.sleep(reply.delay_s)
                        self.wfile.write(payload)
                        return
                    for at in range(0, len(payload), reply.chunk):
                        time.sleep(reply.delay_s)
                        self.wfile.write(payload[at : at + reply.chunk])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _serve

        return Handler
