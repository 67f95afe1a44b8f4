"""An OpenAI-compatible chat completions server in front of any model client endpoint.

`python -m beam_pipelines.openai_gateway --endpoint triton:127.0.0.1:8001 --port 8000` serves
`POST /v1/chat/completions` and `GET /v1/models` on 127.0.0.1, answering each request through
the model client (so the local `agent_vlm` — the tiny model, or any Triton deployment — can be
driven the way vLLM, SGLang or a hosted R1V4 endpoint is: `annotate --endpoint
openai:http://127.0.0.1:8000/v1`). It behaves as those servers do where they differ from the
Triton contract: the matched stop string is left out of `content` and named in the choice's
`stop_reason`; a transient failure behind it is HTTP 503, a malformed request 400.

One thread per connection (`ThreadingHTTPServer`), each waiting on the shared channel, whose
in-flight budget and retries are the pipeline's own.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from beam_pipelines.model_client.base import (
    DEADLINE_EXCEEDED,
    UNAVAILABLE,
    ModelEndpoint,
    ModelError,
    ModelReply,
)
from beam_pipelines.model_client.channel import ModelChannel, complete
from beam_pipelines.model_client.openai import SAMPLING_FIELDS

#: Largest request body read (a few full-budget images as data: URLs fit easily).
MAX_BODY_BYTES = 64 * 1024 * 1024


def sampling_of(body: dict[str, Any]) -> dict[str, Any]:
    """The contract's sampling JSON from a chat completions request."""
    sampling = {k: body[k] for k in SAMPLING_FIELDS if body.get(k) is not None}
    if "max_completion_tokens" in body and "max_tokens" not in sampling:
        sampling["max_tokens"] = body["max_completion_tokens"]
    stop = sampling.get("stop")
    if isinstance(stop, str):
        sampling["stop"] = [stop]
    return sampling


def completion_body(model: str, reply: ModelReply, stops: Sequence[str]) -> dict[str, Any]:
    """A chat completion as OpenAI-compatible servers write it."""
    text, matched = reply.text, None
    for stop in stops:
        if reply.finish_reason == "stop" and stop and text.endswith(stop):
            text, matched = text[: -len(stop)], stop
            break
    usage = dict(reply.usage)
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reply.finish_reason,
                "stop_reason": matched,
            }
        ],
        "usage": usage,
    }


class Gateway(ThreadingHTTPServer):
    """The HTTP server; `channel` answers every request for `model`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], channel: ModelChannel, model: str) -> None:
        super().__init__(address, Handler)
        self.channel = channel
        self.model = model


class Handler(BaseHTTPRequestHandler):
    server: Gateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None  # one line per request would drown a run's output

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}", "not_found")
            return
        model = {"id": self.server.model, "object": "model", "owned_by": "beam-agentic-vlm"}
        self._send(HTTPStatus.OK, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}", "not_found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self._error(HTTPStatus.BAD_REQUEST, "a JSON body is required", "invalid_request")
            return
        try:
            body = json.loads(self.rfile.read(length))
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages must be a non-empty list")
        except (ValueError, KeyError, TypeError) as e:
            self._error(HTTPStatus.BAD_REQUEST, f"bad request: {e}", "invalid_request")
            return
        if body.get("model") not in (None, self.server.model):
            message = f"model {body.get('model')!r} is not served (serving {self.server.model})"
            self._error(HTTPStatus.NOT_FOUND, message, "model_not_found")
            return
        sampling = sampling_of(body)
        outcome = complete(self.server.channel, messages, sampling)
        if isinstance(outcome, ModelError):
            status = (
                HTTPStatus.SERVICE_UNAVAILABLE
                if outcome.code in (UNAVAILABLE, DEADLINE_EXCEEDED)
                else HTTPStatus.BAD_GATEWAY
            )
            self._error(status, f"{outcome.code or 'error'}: {outcome.message}", "upstream")
            return
        stops = sampling.get("stop") or []
        self._send(HTTPStatus.OK, completion_body(self.server.model, outcome, stops))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.openai_gateway")
    parser.add_argument("--endpoint", required=True, help="KIND:URL, e.g. triton:127.0.0.1:8001")
    parser.add_argument("--model", default="agent_vlm", help="the model behind the endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-in-flight", "--max_in_flight", type=int, default=64)
    args = parser.parse_args(argv)
    channel = ModelChannel(
        ModelEndpoint.at(args.endpoint, args.model, max_in_flight=args.max_in_flight)
    )
    server = Gateway((args.host, args.port), channel, args.model)
    print(f"serving {args.model} at http://{args.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        channel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
