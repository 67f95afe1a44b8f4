"""`replay`: planning-execution consistency. Re-running a recorded image-tool call must give
the observation the trace holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from beam_pipelines.agent import loop
from beam_pipelines.agent.images import load_image, sha256_hex
from beam_pipelines.agent.protocols import attached_images
from beam_pipelines.agent.records import ImageRef, Observation, Trajectory
from beam_pipelines.filters.base import TrajectoryFilter
from beam_pipelines.io.files import read_bytes
from beam_pipelines.io.image_uris import PUBLIC_IMAGES, ImageSource

#: Tools whose calls are deterministic given the image and arguments, so replay is meaningful.
REPLAYABLE_TOOLS = ("code", "image_zoom_in_tool")


def pixel_digest(png: bytes) -> str:
    """SHA-256 of an image's size and decoded RGB pixels (through the safe loader): equal for
    equal pixels whatever the encoder, its zlib level or metadata, so traces written by an
    older version (stored re-encoded) compare equal to a replay's fresh output."""
    image = load_image(png)
    size = f"{image.width}x{image.height}:".encode()
    return sha256_hex(size + image.tobytes())


def perceptual_distance(a: bytes, b: bytes) -> int:
    """Hamming distance of the two images' perceptual hashes (0: alike; 64: unrelated)."""
    import imagehash

    return int(imagehash.phash(load_image(a)) - imagehash.phash(load_image(b)))


class ToolReplay(TrajectoryFilter):
    """Re-run every recorded call of a replayable tool; the new observation must match.

    The context is rebuilt as the call saw it: the original images (read again from their URIs,
    by `source`, the way the run's tools read them: a file, an object, a public http(s) URL),
    the sub-images of earlier steps, the model's view size. Text and error must be equal;
    images are compared by the SHA-256 of their decoded pixels (`compare="hash"`), or by a
    perceptual hash distance of at most `max_distance` bits (`compare="perceptual"`: for tools
    whose output is lossy or not bit-exact). Calls of other tools (search, web pages) are not
    replayed: their results change with the world. `settings` are the run's tool settings
    (`--tool_config`), so a tool is rebuilt as the run had it.
    """

    name = "replay"

    def __init__(
        self,
        tools: Sequence[str] = REPLAYABLE_TOOLS,
        compare: str = "hash",
        max_distance: int = 4,
        timeout_s: float = 60.0,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        source: ImageSource = PUBLIC_IMAGES,
    ) -> None:
        if compare not in ("hash", "perceptual"):
            raise ValueError(f"replay comparison must be 'hash' or 'perceptual', not {compare!r}")
        self.tool_names = tuple(tools)
        self.settings = {
            name: dict(values) for name, values in (settings or {}).items() if name in tools
        }
        self.compare = compare
        self.max_distance = max_distance
        self.timeout_s = timeout_s
        self.source = source
        self._tools: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tools": None}  # built per worker, never pickled

    def setup(self) -> None:
        from tools.registry import build_tools

        if self._tools is None:
            settings = {name: dict(values) for name, values in self.settings.items()}
            if "code" in self.tool_names:
                settings["code"] = {**settings.get("code", {}), "pool_size": 1}
            self._tools = build_tools(self.tool_names, **settings)

    def teardown(self) -> None:
        for tool in (self._tools or {}).values():
            close = getattr(tool, "close", None)
            if close is not None:
                close()
        self._tools = None

    def check(self, traj: Trajectory) -> str | None:
        from tools.registry import run_tool

        self.setup()
        assert self._tools is not None
        originals: list[bytes] | None = None
        earlier: list[ImageRef] = []
        for number, step in enumerate(traj.steps, start=1):
            call, recorded = step.tool_call, step.observation
            if call is None or recorded is None:
                continue
            if call.name in self._tools:
                if originals is None:
                    originals = [self.source.read(ref.uri) for ref in traj.originals]
                context = loop.tool_context(
                    traj,
                    originals,
                    [read_bytes(ref.uri) for ref in earlier],
                    timeout_s=self.timeout_s,
                )
                result = run_tool(self._tools, call.name, dict(call.arguments), context)
                problem = self._compare(recorded, result.text, result.error, result.images)
                if problem:
                    return f"step {number} ({call.name}): {problem}"
            earlier += recorded.images[: attached_images(recorded)]
        return None

    def _compare(
        self, recorded: Observation, text: str, error: str | None, images: Sequence[bytes]
    ) -> str | None:
        if (recorded.error is None) != (error is None):
            was = "failed" if recorded.error is not None else "succeeded"
            return f"the recorded call {was}, the replay did not"
        if recorded.error is not None:
            return None  # both failed; the message may name paths or timings
        if text.strip() != recorded.text.strip():
            return f"the output text differs ({recorded.text[:60]!r} vs {text[:60]!r})"
        if len(images) != len(recorded.images):
            return f"{len(recorded.images)} image(s) recorded, {len(images)} on replay"
        for index, (ref, png) in enumerate(zip(recorded.images, images, strict=True), start=1):
            stored = read_bytes(ref.uri)
            if self.compare == "hash":
                recorded_intact = sha256_hex(stored) == ref.sha256
                if not recorded_intact or pixel_digest(png) != pixel_digest(stored):
                    return f"image {index} differs (content hash)"
            else:
                distance = perceptual_distance(stored, png)
                if distance > self.max_distance:
                    return f"image {index} differs (perceptual distance {distance})"
        return None
