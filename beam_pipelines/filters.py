"""Trajectory filters: which sampled trajectories are good enough to train on, and why not.

A filter is a small named object: `check(trajectory) -> reason | None`. `None` keeps the
trajectory; a reason (a sentence for people) rejects it. `FilterChain` runs filters in order
and stops at the first rejection, so the cheap checks come first and the expensive ones
(replaying tools, asking a judge) see only trajectories that passed everything before them;
each rejection records the filter's name and its reason. `dedup` works on all the trajectories
of one source job together and runs last.

Filters, by name (each rejects a trajectory when ...):

- `answer`: it did not answer, the job has no ground truth, or the answer is wrong (option
  letter; normalised exact match for free-form answers);
- `format`: an assistant turn does not parse under the trajectory's protocol, or the loop
  counted a format error;
- `tool_error`: a tool call failed (a sandbox error, bad arguments, an unreadable tool image);
- `recrop` (optional): a tool call repeats an earlier one (same arguments or same image);
- `final_think`: the last reasoning step is empty or does not name the answer it gives;
- `replay`: re-running a recorded image-tool call gives another observation (text, error, or
  images: content hash, or a perceptual distance for lossy formats);
- `judge`: an image-reasoning judge finds a tool-produced image that does not show what the
  reasoning after it says;
- `dedup`: an earlier sample of the same job made exactly the same turns.

Judges are pluggable (`ImageJudge`): `MarkerJudge` is the documented heuristic for the
synthetic "zoom to read" task; `ModelJudge` asks a served model through the pipeline's model
client (Triton, OpenAI-compatible or scripted).
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from beam_pipelines import synthetic
from beam_pipelines.agent import loop
from beam_pipelines.agent.images import encode_png, load_image, sha256_hex
from beam_pipelines.agent.protocols import attached_images
from beam_pipelines.agent.records import (
    LETTERS,
    ImageRef,
    Observation,
    Trajectory,
    _normalise,
    parse_choice,
)
from beam_pipelines.io.files import read_bytes

#: Tools whose calls are deterministic given the image and arguments, so replay is meaningful.
REPLAYABLE_TOOLS = ("code", "image_zoom_in_tool")


@dataclass(frozen=True)
class Rejection:
    """Why a trajectory was not kept: the filter that rejected it and its reason."""

    filter: str
    reason: str


class WorkerResource(ABC):
    """A named part of the filter pipeline that may hold resources (tools, clients)."""

    name: ClassVar[str]

    def setup(self) -> None:
        """Acquire resources (called once per worker before first use)."""
        return None

    def teardown(self) -> None:
        """Release what `setup` acquired."""
        return None


class TrajectoryFilter(WorkerResource):
    """One named check of a whole trajectory."""

    @abstractmethod
    def check(self, traj: Trajectory) -> str | None:
        """The reason to reject `traj`, or None to keep it."""


# --------------------------------------------------------------------------------------------
# Cheap checks on the trace alone


class AnswerMatches(TrajectoryFilter):
    """The final answer matches the job's ground truth (the same rule as answer rows)."""

    name = "answer"

    def check(self, traj: Trajectory) -> str | None:
        job = traj.job
        if traj.status != "answered" or traj.final is None:
            return f"no answer (status {traj.status})"
        if job.answer is None:
            return "the job has no ground truth to check the answer against"
        answer = traj.final.answer
        if job.options:
            choice = parse_choice(answer, job.options)
            if choice is None:
                return f"the answer {answer[:80]!r} names no option"
            if choice != job.answer:
                return f"answered {choice}, the ground truth is {job.answer}"
            return None
        if _normalise(answer) != _normalise(job.answer):
            return f"answered {answer[:80]!r}, the ground truth is {job.answer[:80]!r}"
        return None


class FormatValid(TrajectoryFilter):
    """Every assistant turn parses under the trajectory's protocol."""

    name = "format"

    def check(self, traj: Trajectory) -> str | None:
        if traj.format_errors:
            return f"{traj.format_errors} malformed turn(s) during the run"
        protocol = loop.protocol_of(traj)
        turns = [m for m in traj.messages if m.get("role") == "assistant"]
        for number, message in enumerate(turns, start=1):
            content = message.get("content")
            parsed = protocol.parse(content if isinstance(content, str) else "", traj.tools)
            if parsed.error is not None:
                return f"turn {number}: {parsed.error}"
            if not parsed.think:
                return f"turn {number}: empty reasoning"
        return None


class NoToolError(TrajectoryFilter):
    """No tool call failed (sandbox errors, bad arguments, unreadable tool images)."""

    name = "tool_error"

    def check(self, traj: Trajectory) -> str | None:
        for number, step in enumerate(traj.steps, start=1):
            if step.tool_call is None:
                continue
            if step.observation is None:
                return f"step {number}: {step.tool_call.name} was never run ({step.error})"
            if step.observation.error is not None:
                error = step.observation.error[:200]
                return f"step {number}: {step.tool_call.name} failed: {error}"
        return None


class NoRepeatedCrop(TrajectoryFilter):
    """No tool call repeats an earlier one (same arguments, or the same output image)."""

    name = "recrop"

    def check(self, traj: Trajectory) -> str | None:
        calls: dict[str, int] = {}
        images: dict[str, int] = {}
        for number, step in enumerate(traj.steps, start=1):
            if step.tool_call is None:
                continue
            key = json.dumps([step.tool_call.name, step.tool_call.arguments], sort_keys=True)
            if key in calls:
                return f"step {number} repeats the call of step {calls[key]}"
            calls[key] = number
            for image in step.observation.images if step.observation else ():
                if image.sha256 in images:
                    return f"step {number} produced the same image as step {images[image.sha256]}"
                images[image.sha256] = number
        return None


def _mentions(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words (case and spacing folded)."""
    phrase = _normalise(phrase)
    if not phrase:
        return False
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", _normalise(text)) is not None


class FinalThinkAgrees(TrajectoryFilter):
    """The last reasoning step names the answer it leads to.

    With options: the chosen option's text, or its letter as a word; free-form: the answer
    text. A reasoning step that names no answer at all is rejected too: it does not support
    the answer it precedes.
    """

    name = "final_think"

    def check(self, traj: Trajectory) -> str | None:
        if traj.final is None:
            return "no final reasoning step"
        think = traj.final.think.strip()
        if not think:
            return "the final reasoning step is empty"
        answer = traj.final.answer
        if traj.job.options:
            choice = parse_choice(answer, traj.job.options)
            if choice is None:
                return f"the answer {answer[:80]!r} names no option"
            option = traj.job.options[LETTERS.index(choice)]
            if _mentions(think, option) or re.search(rf"\b{choice}\b", think):
                return None
            return f"the final reasoning does not name the answer {choice} ({option!r})"
        if _mentions(think, answer):
            return None
        return f"the final reasoning does not name the answer {answer[:80]!r}"


# --------------------------------------------------------------------------------------------
# Replay: planning-execution consistency


def normalised_png(png: bytes) -> bytes:
    """A tool image as the pipeline stores it (decoded safely, re-encoded as plain RGB PNG)."""
    return encode_png(load_image(png))


class ToolReplay(TrajectoryFilter):
    """Re-run every recorded call of a replayable tool; the new observation must match.

    The context is rebuilt as the call saw it: the original image (read again from its URI),
    the sub-images of earlier steps, the model's view size. Text and error must be equal;
    images are compared by the SHA-256 of their normalised PNG (`compare="hash"`), or by a
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
        from tools.base import ToolContext
        from tools.registry import run_tool

        self.setup()
        assert self._tools is not None
        original: bytes | None = None
        earlier: list[ImageRef] = []
        for number, step in enumerate(traj.steps, start=1):
            call, recorded = step.tool_call, step.observation
            if call is None or recorded is None:
                continue
            if call.name in self._tools:
                if original is None:
                    original = read_bytes(traj.original.uri)
                context = ToolContext(
                    image=original,
                    sub_images=tuple(read_bytes(ref.uri) for ref in earlier),
                    view_size=(traj.view.width, traj.view.height),
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
            fresh = normalised_png(png)
            if self.compare == "hash":
                if sha256_hex(fresh) != ref.sha256:
                    return f"image {index} differs (content hash)"
            else:
                distance = perceptual_distance(read_bytes(ref.uri), fresh)
                if distance > self.max_distance:
                    return f"image {index} differs (perceptual distance {distance})"
        return None


def perceptual_distance(a: bytes, b: bytes) -> int:
    """Hamming distance of the two images' perceptual hashes (0: alike; 64: unrelated)."""
    import imagehash

    return int(imagehash.phash(load_image(a)) - imagehash.phash(load_image(b)))


# --------------------------------------------------------------------------------------------
# Image-reasoning consistency


@dataclass(frozen=True)
class ImageClaim:
    """One tool-produced image and the reasoning that follows it."""

    step: int
    image: ImageRef
    view: str | None
    reasoning: str


def image_claims(traj: Trajectory) -> list[ImageClaim]:
    """Every image a successful tool call showed, with the reasoning of the next turn."""
    thinks = [s.think for s in traj.steps] + [traj.final.think if traj.final else ""]
    views = _observation_views(traj)
    claims: list[ImageClaim] = []
    shown = 0
    for number, step in enumerate(traj.steps, start=1):
        if step.tool_call is None or step.observation is None:
            continue
        for image in step.observation.images[: attached_images(step.observation)]:
            view = views[shown] if shown < len(views) else None
            shown += 1
            claims.append(ImageClaim(number, image, view, thinks[number]))
    return claims


def _observation_views(traj: Trajectory) -> list[str]:
    """The view URIs of observation images, in order (what the model was shown)."""
    uris: list[str] = []
    for message in traj.messages[2:]:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            uris += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return uris


class ImageJudge(WorkerResource):
    """Decides whether one tool-produced image shows what the reasoning after it says."""

    @abstractmethod
    def judge(self, traj: Trajectory, claim: ImageClaim) -> str | None:
        """Why the image and the reasoning disagree, or None when they agree."""


class ImageReasoningConsistency(TrajectoryFilter):
    """Every tool-produced image agrees with the reasoning that follows it (per the judge)."""

    name = "judge"

    def __init__(self, judge: ImageJudge) -> None:
        self.judge = judge

    def setup(self) -> None:
        self.judge.setup()

    def teardown(self) -> None:
        self.judge.teardown()

    def check(self, traj: Trajectory) -> str | None:
        for claim in image_claims(traj):
            problem = self.judge.judge(traj, claim)
            if problem:
                return f"step {claim.step} ({self.judge.name}): {problem}"
        return None


MARKER_COLOURS, MARKER_SHAPES = synthetic.COLOURS, synthetic.SHAPES
_NAMED_MARKER = re.compile(
    rf"\b({'|'.join(MARKER_COLOURS)})\s+({'|'.join(MARKER_SHAPES)}|marker)\b", re.IGNORECASE
)
_READ_CHARACTER = re.compile(r"\b(?:holds|reads|shows|contains)\s+(?:an?\s+)?\"?([A-Z])\b")


class MarkerJudge(ImageJudge):
    """The heuristic judge of the synthetic "zoom to read" task (`beam_pipelines/synthetic.py`).

    The reasoning after a crop names a marker ("The zoomed yellow square holds X."). The crop
    must show it: at least `min_fraction` of its pixels within `tolerance` (RGB distance) of
    that marker colour (the scenes' clutter is pale and grey, so only markers are saturated).
    When the job's `meta.target` (which the corpus writes) is the marker named, its shape and
    character are known too: the reasoning must give the target's shape, and a character it
    reads off a crop that shows the target must be the target's. Reasoning that names no
    marker makes no claim about the image and passes.
    """

    name = "marker"

    def __init__(self, min_fraction: float = 0.04, tolerance: float = 60.0) -> None:
        self.min_fraction = min_fraction
        self.tolerance = tolerance

    def judge(self, traj: Trajectory, claim: ImageClaim) -> str | None:
        named = _NAMED_MARKER.search(claim.reasoning)
        if named is None:
            return None
        colour, shape = named.group(1).lower(), named.group(2).lower()
        png = read_bytes(claim.image.uri)
        fraction = colour_fraction(png, MARKER_COLOURS[colour], self.tolerance)
        if fraction < self.min_fraction:
            return (
                f"the reasoning names the {colour} {shape}, but the image shows no {colour} "
                f"marker ({fraction:.1%} {colour} pixels)"
            )
        target = traj.job.meta.get("target")
        if not isinstance(target, Mapping) or target.get("colour") != colour:
            return None
        if shape != "marker" and shape != target.get("shape"):
            return f"the {colour} marker is a {target.get('shape')}, the reasoning says {shape}"
        read = _READ_CHARACTER.search(claim.reasoning[named.start() :])
        if read and read.group(1) != target.get("char"):
            return (
                f"the image shows the {colour} {target.get('shape')} holding "
                f"{target.get('char')}, the reasoning reads {read.group(1)}"
            )
        return None


def colour_fraction(png: bytes, colour: tuple[int, int, int], tolerance: float = 60.0) -> float:
    """The share of an image's pixels within `tolerance` (Euclidean RGB) of `colour`."""
    import numpy as np

    pixels = np.asarray(load_image(png), dtype=np.float32).reshape(-1, 3)
    if not len(pixels):
        return 0.0
    distance = np.linalg.norm(pixels - np.asarray(colour, dtype=np.float32), axis=1)
    return float((distance <= tolerance).mean())


JUDGE_PROMPT = (
    "You check a visual reasoning step. Look at the image and read the reasoning that was "
    "written after seeing it. Reply <answer>yes</answer> if the image shows what the "
    "reasoning says about it, else <answer>no</answer>."
)
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """yes -> True, no -> False, from a judge's reply (inside `<answer>` when it has one)."""
    answer = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.DOTALL)
    body = answer.group(1) if answer else re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)
    found = _VERDICT.search(body)
    return None if found is None else found.group(1).lower() == "yes"


class ModelJudge(ImageJudge):
    """Asks a vision-language model at `endpoint` (`KIND:URL`: any `ModelClient` endpoint).

    The request is one user turn with the image (its model view, as the agent saw it) and
    the reasoning; the reply must say yes or no. No verdict counts as a disagreement: a
    trajectory is kept for training only when the judge vouches for it. Requests go through
    the model client's channel, with its retries and deadline.
    """

    name = "model"

    def __init__(
        self, endpoint: str, model_name: str = "agent_vlm", timeout_s: float = 120.0
    ) -> None:
        self.endpoint = endpoint
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._channel: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_channel": None}  # a client per worker, never pickled

    def setup(self) -> None:
        from beam_pipelines.model_client.base import ModelEndpoint, parse_endpoint
        from beam_pipelines.model_client.channel import ModelChannel

        if self._channel is None:
            kind, url = parse_endpoint(self.endpoint)
            endpoint = ModelEndpoint(
                url, self.model_name, timeout_s=self.timeout_s, max_in_flight=4, kind=kind
            )
            self._channel = ModelChannel(endpoint)

    def teardown(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def request(self, claim: ImageClaim) -> list[dict[str, Any]]:
        """The judge's chat messages for one claim (image parts as data: URLs)."""
        import base64

        png = read_bytes(claim.view or claim.image.uri)
        url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        text = f"Reasoning: {claim.reasoning}\nDoes the image show what the reasoning says?"
        return [
            {"role": "system", "content": JUDGE_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": text},
                ],
            },
        ]

    def judge(self, traj: Trajectory, claim: ImageClaim) -> str | None:
        from beam_pipelines.model_client.base import ModelError
        from beam_pipelines.model_client.channel import complete

        self.setup()
        sampling = {"max_tokens": 64, "temperature": 0.0, "stop": ["</answer>"]}
        reply = complete(self._channel, self.request(claim), sampling)
        if isinstance(reply, ModelError):
            return f"the judge could not be asked ({reply.error_class}: {reply.message[:120]})"
        verdict = parse_verdict(reply.text)
        if verdict is None:
            return f"the judge gave no verdict ({reply.text[:60]!r})"
        return None if verdict else "the judge finds that the image does not show it"


# --------------------------------------------------------------------------------------------
# Chains and dedup

#: Filter names in their default order (cheap first); `recrop` is off unless asked for.
DEFAULT_FILTERS = ("answer", "format", "tool_error", "final_think", "replay", "judge", "dedup")
FILTER_NAMES = (
    "answer",
    "format",
    "tool_error",
    "recrop",
    "final_think",
    "replay",
    "judge",
    "dedup",
)
DEDUP = "dedup"


def signature(traj: Trajectory) -> str:
    """What makes two trajectories the same: the exact sequence of the model's turns."""
    turns = [m.get("content") for m in traj.messages if m.get("role") == "assistant"]
    return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """A trajectory and, when it is not kept, the rejection."""

    trajectory: Trajectory
    rejection: Rejection | None = None

    @property
    def kept(self) -> bool:
        return self.rejection is None


class FilterChain:
    """Filters in order, first rejection wins; then `dedup` within each source job."""

    def __init__(self, filters: Sequence[TrajectoryFilter], dedup: bool = True) -> None:
        names = [f.name for f in filters]
        if len(set(names)) != len(names):
            raise ValueError(f"a filter is listed twice: {names}")
        self.filters = tuple(filters)
        self.dedup = dedup

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.filters) + ((DEDUP,) if self.dedup else ())

    def setup(self) -> None:
        for f in self.filters:
            f.setup()

    def teardown(self) -> None:
        for f in self.filters:
            f.teardown()

    def check(self, traj: Trajectory) -> Rejection | None:
        """The first rejection, or None. A check that fails (an image that cannot be read
        again, a tool that cannot start) rejects the trajectory under that filter's name: a
        trajectory nobody could check is not kept, and the reason says so."""
        for f in self.filters:
            try:
                reason = f.check(traj)
            except Exception as e:
                reason = f"the check failed: {type(e).__name__}: {str(e)[:300]}"
            if reason is not None:
                return Rejection(f.name, reason)
        return None

    def apply(self, trajectories: Iterable[Trajectory]) -> list[Verdict]:
        """Verdicts for the trajectories of one source job (dedup keeps the lowest sample)."""
        ordered = sorted(trajectories, key=_sample_order)
        verdicts = [Verdict(t, self.check(t)) for t in ordered]
        if not self.dedup:
            return verdicts
        first: dict[str, str] = {}
        out = []
        for verdict in verdicts:
            if verdict.kept:
                key = signature(verdict.trajectory)
                if key in first:
                    reason = f"the same turns as {first[key]}"
                    verdict = Verdict(verdict.trajectory, Rejection(DEDUP, reason))
                else:
                    first[key] = verdict.trajectory.id
            out.append(verdict)
        return out


def _sample_order(traj: Trajectory) -> tuple[int, str]:
    sample = traj.job.meta.get("sample")
    return (sample if isinstance(sample, int) else 0, traj.id)


def build_chain(
    names: Sequence[str],
    judge: ImageJudge | None = None,
    replay_compare: str = "hash",
    tool_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> FilterChain:
    """A chain from filter names (see `FILTER_NAMES`), in the order given; `dedup` runs last.

    `tool_settings` are the run's (replay rebuilds the tools with them)."""
    unknown = [n for n in names if n not in FILTER_NAMES]
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; known: {', '.join(FILTER_NAMES)}")
    simple: dict[str, type[TrajectoryFilter]] = {
        "answer": AnswerMatches,
        "format": FormatValid,
        "tool_error": NoToolError,
        "recrop": NoRepeatedCrop,
        "final_think": FinalThinkAgrees,
    }
    filters: list[TrajectoryFilter] = []
    for name in names:
        if name in simple:
            filters.append(simple[name]())
        elif name == "replay":
            filters.append(ToolReplay(compare=replay_compare, settings=tool_settings))
        elif name == "judge":
            filters.append(ImageReasoningConsistency(judge or MarkerJudge()))
    return FilterChain(filters, dedup=DEDUP in names)
