"""Test helpers: small images, jobs and trajectories built with the real agent core, and a
loopback HTTP server."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

from beam_pipelines.agent import loop
from beam_pipelines.agent.images import encode_png, sha256_hex
from beam_pipelines.agent.records import ImageRef, Job, Observation, ToolSpec, Trajectory

USAGE = {"prompt_tokens": 1, "completion_tokens": 1}


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    return encode_png(Image.new("RGB", (width, height), colour))


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def started(
    tmp_path: Path,
    job_id: str = "job-1",
    answer: str | None = "B",
    tools: tuple[str, ...] = ("code",),
) -> Trajectory:
    """A trajectory at turn 0 whose images exist on disk."""
    image = tmp_path / f"{sha256_hex(job_id.encode())[:8]}.png"
    data = png()
    image.write_bytes(data)
    ref = ImageRef(uri=str(image), sha256=sha256_hex(data), width=64, height=48)
    job = Job(id=job_id, image=str(image), question="Which?", options=("x", "y"), answer=answer)
    return loop.start(
        job, "r1v4", [ToolSpec(t) for t in tools], ref, ref, model="test", sampling={}
    )


def answered(traj: Trajectory, letter: str = "B") -> Trajectory:
    out, calls = loop.advance(
        traj,
        f"<think>sure</think><answer>{letter}</answer>",
        finish_reason="stop",
        usage={"prompt_tokens": 10, "completion_tokens": 5},
        latency_s=0.1,
    )
    assert out.status == "answered" and not calls
    return out


def code_call(traj: Trajectory, code: str) -> Trajectory:
    body = json.dumps({"name": "code", "arguments": {"code": code}})
    out, calls = loop.advance(
        traj,
        f"<think>look closer</think><tool_call>{body}</tool_call>",
        finish_reason="stop",
        usage={"prompt_tokens": 10, "completion_tokens": 5},
        latency_s=0.1,
    )
    assert calls, out.steps
    return out


def say(traj: Trajectory, text: str) -> Trajectory:
    out, _ = loop.advance(traj, text, finish_reason="stop", usage=USAGE, latency_s=0.0)
    return out


def call(traj: Trajectory, code: str, think: str = "look closer") -> Trajectory:
    body = json.dumps({"name": "code", "arguments": {"code": code}})
    return say(traj, f"<think>{think}</think><tool_call>{body}</tool_call>")


def observe(traj: Trajectory, *images: ImageRef, error: str | None = None) -> Trajectory:
    calls = loop.pending_calls(traj)
    obs = Observation(text="", images=images, error=error, tool="code")
    return loop.observe(traj, calls, [obs], [list(images) if error is None else []])


def stored(tmp_path: Path, image: Image.Image, name: str) -> ImageRef:
    data = encode_png(image)
    path = tmp_path / f"{name}.png"
    path.write_bytes(data)
    return ImageRef(str(path), sha256_hex(data), image.width, image.height)


#: path -> (status, headers, body)
Routes = dict[str, tuple[int, dict[str, str], bytes]]


class Loopback:
    """An HTTP server on 127.0.0.1 answering fixed routes (404 elsewhere), counting requests."""

    def __init__(self, routes: Routes) -> None:
        requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                status, headers, body = routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
