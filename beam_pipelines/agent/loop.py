"""The agent loop's step function: the one implementation of the loop logic.

The Beam pipeline (one stage per turn) and the serving evaluation (a plain async loop) both
drive a job with the same three calls::

    traj = start(job, protocol, tools, original, view, model=..., sampling=...)
    # a multi-image job adds more_originals=..., more_views=...
    while not traj.done:
        text, finish_reason, usage, latency = <generate from traj.messages>
        traj, calls = advance(traj, text, finish_reason=..., usage=..., latency_s=...)
        if calls:
            observations, views = <run the tools, store images and their model views>
            traj = observe(traj, calls, observations, views)

Every function is pure: it takes a ``Trajectory`` and returns a new one. All the state the
next step needs (protocol and its options, enabled tools, budgets, the format-error count,
the calls waiting for results, the sub-image numbering) is in the record, so the trace *is*
the state and a job can move between workers at any turn.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tools.base import ToolContext, ToolSpec
from tools.registry import specs_for_images

from .protocols import AgentProtocol, attached_images, get_protocol
from .records import Final, ImageRef, Job, Observation, Step, ToolCall, Trajectory, Usage

DEFAULT_MAX_TURNS = 16
DEFAULT_MAX_FORMAT_ERRORS = 3

#: ``error_class`` of the terminal states the loop itself decides.
FORMAT_ERROR_CLASS = "format"
MAX_TURNS_ERROR_CLASS = "max_turns"
MODEL_ERROR_CLASS = "model"


def _timestamp(now: float | None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat()


def _image_part(ref: ImageRef) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": ref.uri}}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def protocol_of(traj: Trajectory) -> AgentProtocol:
    """The protocol instance a trajectory was started with."""
    return get_protocol(traj.protocol, **traj.protocol_options)


def start(
    job: Job,
    protocol: AgentProtocol | str,
    tools: Sequence[ToolSpec],
    original: ImageRef,
    view: ImageRef,
    *,
    model: str,
    sampling: Mapping[str, Any],
    max_turns: int = DEFAULT_MAX_TURNS,
    max_format_errors: int = DEFAULT_MAX_FORMAT_ERRORS,
    now: float | None = None,
    more_originals: Sequence[ImageRef] = (),
    more_views: Sequence[ImageRef] = (),
) -> Trajectory:
    """A new trajectory: the system prompt and the user turn (the job images' views, then text).

    ``tools`` are the enabled tools' headers (``ToolSpec``s from ``tools.registry.tool_specs``);
    the prompt lists exactly these. The protocol's stop strings are added to ``sampling``
    unless it already names some.

    A multi-image job gives its other images and their views as ``more_originals`` and
    ``more_views``: the user turn holds every view, in the job's order, then the text (Qwen-VL
    chat style: consecutive image parts, no labels), and the tools' headers are those for that
    many images (``tools.registry.specs_for_images``).
    """
    if max_turns < 1 or max_format_errors < 1:
        raise ValueError("max_turns and max_format_errors must be at least 1")
    views = (view, *more_views)
    if len(more_originals) != len(more_views) or len(views) != len(job.uris):
        raise ValueError(
            f"job {job.id!r} has {len(job.uris)} images; got {1 + len(more_originals)} "
            f"originals and {len(views)} views"
        )
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    specs = specs_for_images(tuple(tools), len(views))
    sampling = dict(sampling)
    sampling.setdefault("stop", list(proto.stop))
    messages = (
        {"role": "system", "content": proto.system_prompt(specs, len(views))},
        {
            "role": "user",
            "content": [*(_image_part(v) for v in views), _text_part(proto.user_text(job))],
        },
    )
    return Trajectory(
        job=job,
        protocol=proto.name,
        model=model,
        sampling=sampling,
        original=original,
        view=view,
        more_originals=tuple(more_originals),
        more_views=tuple(more_views),
        messages=messages,
        started_at=_timestamp(now),
        protocol_options=proto.options(),
        tools=specs,
        max_turns=max_turns,
        max_format_errors=max_format_errors,
    )


def pending_calls(traj: Trajectory) -> list[ToolCall]:
    """The tool calls of the last turn that still wait for their observations."""
    if traj.done:
        return []
    calls: list[ToolCall] = []
    for step in reversed(traj.steps):
        if step.tool_call is None or step.observation is not None:
            break
        calls.append(step.tool_call)
    return calls[::-1]


def next_image_index(traj: Trajectory) -> int:
    """The ``N`` of the next ``<sub-image N>``: images shown so far in observation turns, + 1."""
    shown = 0
    for message in traj.messages[2:]:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            shown += sum(1 for part in content if part.get("type") == "image_url")
    return shown + 1


def sub_images(traj: Trajectory) -> list[ImageRef]:
    """Full-resolution originals of ``<sub-image 1>``, ``<sub-image 2>``, ... in order.

    What the code tool exposes as ``sub_image_N`` and ``image_search`` resolves.
    """
    images: list[ImageRef] = []
    for step in traj.steps:
        if step.observation is not None and step.tool_call is not None:
            images += step.observation.images[: attached_images(step.observation)]
    return images


def tool_context(
    traj: Trajectory,
    originals: Sequence[bytes],
    sub_images: Sequence[bytes],
    *,
    timeout_s: float | None = None,
) -> ToolContext:
    """What a tool call of ``traj`` reads: ``originals`` are the bytes of ``traj.originals``
    (every job image, in order), ``sub_images`` those of ``sub_images(traj)`` so far; the view
    sizes are the trajectory's (the frame of pixel coordinates in the model's view)."""
    if len(originals) != len(traj.originals):
        raise ValueError(f"{len(traj.originals)} originals expected, got {len(originals)}")
    sizes = [(v.width, v.height) for v in traj.views]
    return ToolContext(
        image=originals[0],
        sub_images=tuple(sub_images),
        view_size=sizes[0],
        timeout_s=timeout_s,
        more_images=tuple(originals[1:]),
        more_view_sizes=tuple(sizes[1:]),
    )


def _finish(traj: Trajectory, now: float | None, **changes: Any) -> Trajectory:
    return dataclasses.replace(traj, finished_at=_timestamp(now), **changes)


def fail(
    traj: Trajectory, error_class: str, message: str, *, now: float | None = None
) -> Trajectory:
    """End a trajectory as failed for a reason outside the loop (model or tool errors)."""
    if traj.done:
        raise ValueError(f"trajectory {traj.id!r} is already {traj.status}")
    return _finish(traj, now, status="failed", error_class=error_class, error=message)


_TRUNCATED = (
    "Your reply was cut off at the token limit before it finished an action. Keep your "
    "reasoning shorter and end with one complete <tool_call>...</tool_call> or "
    "<answer>...</answer>."
)


def advance(
    traj: Trajectory,
    text: str,
    *,
    finish_reason: str,
    usage: Usage | Mapping[str, int],
    latency_s: float,
    now: float | None = None,
) -> tuple[Trajectory, list[ToolCall]]:
    """Take one model output: answer, tool calls to run, or a format error.

    Returns the new trajectory and the calls the caller must run and pass to ``observe``
    (empty when the trajectory finished or a format error was sent back to the model).
    """
    if traj.done:
        raise ValueError(f"trajectory {traj.id!r} is already {traj.status}")
    if pending_calls(traj):
        raise ValueError(f"trajectory {traj.id!r} waits for observations; call observe first")
    turn_usage = usage if isinstance(usage, Usage) else Usage.from_dict(usage)
    traj = dataclasses.replace(
        traj,
        messages=(*traj.messages, {"role": "assistant", "content": text}),
        usage=traj.usage + turn_usage,
    )
    tokens = turn_usage.completion_tokens

    if finish_reason == "error":
        # The caller retries server errors; one that reaches the loop ends the job.
        return fail(traj, MODEL_ERROR_CLASS, f"model server error: {text[:500]}", now=now), []

    protocol = protocol_of(traj)
    parsed = protocol.parse(text, traj.tools)
    error = parsed.error
    if finish_reason == "length" and (error or not any(s in text for s in protocol.stop)):
        error = _TRUNCATED

    if error is not None:
        return _format_error(traj, protocol, parsed.think, error, latency_s, tokens, now), []

    if parsed.answer is not None:
        final = Final(think=parsed.think, answer=parsed.answer)
        return _finish(traj, now, status="answered", final=final), []

    calls = list(parsed.tool_calls)
    out_of_turns = traj.turns >= traj.max_turns
    steps = tuple(
        Step(
            think=parsed.think,
            tool_call=call,
            observation=None,
            # One turn's latency and tokens are booked on its first call.
            latency_s=latency_s if i == 0 else 0.0,
            tokens=tokens if i == 0 else 0,
            error="not run: turn budget exhausted" if out_of_turns else None,
        )
        for i, call in enumerate(calls)
    )
    traj = dataclasses.replace(traj, steps=traj.steps + steps)
    if out_of_turns:
        return _out_of_turns(traj, now), []
    return traj, calls


def _out_of_turns(traj: Trajectory, now: float | None) -> Trajectory:
    return _finish(
        traj,
        now,
        status="max_turns",
        error_class=MAX_TURNS_ERROR_CLASS,
        error=f"no answer within {traj.max_turns} turns",
    )


def _format_error(
    traj: Trajectory,
    protocol: AgentProtocol,
    think: str,
    error: str,
    latency_s: float,
    tokens: int,
    now: float | None,
) -> Trajectory:
    count = traj.format_errors + 1
    capped = count >= traj.max_format_errors
    out_of_turns = traj.turns >= traj.max_turns
    # The observation exists only when the model gets to read it (the job goes on).
    observation = (
        None if capped or out_of_turns else Observation(text="", error=error, tool="format")
    )
    step = Step(
        think=think,
        tool_call=None,
        observation=observation,
        latency_s=latency_s,
        tokens=tokens,
        error=error,
    )
    traj = dataclasses.replace(traj, steps=(*traj.steps, step), format_errors=count)
    if capped:
        return _finish(
            traj,
            now,
            status="failed",
            error_class=FORMAT_ERROR_CLASS,
            error=f"{count} malformed turns; last: {error}",
        )
    if out_of_turns:
        return _out_of_turns(traj, now)
    message = {"role": "user", "content": [_text_part(protocol.render_format_error(error))]}
    return dataclasses.replace(traj, messages=(*traj.messages, message))


def observe(
    traj: Trajectory,
    tool_calls: Sequence[ToolCall],
    observations: Sequence[Observation],
    views: Sequence[Sequence[ImageRef]],
) -> Trajectory:
    """Record the results of the last turn's calls and add the observation turn.

    ``observations[i]`` answers ``tool_calls[i]``; ``views[i]`` are the model views of
    ``observations[i].images`` (same order). The turn's text names the images
    ``<sub-image N>`` (numbered across the whole trajectory) and one image part per shown
    image follows, pointing at its view. A failed call shows no images.
    """
    pending = pending_calls(traj)
    if not pending:
        raise ValueError(f"trajectory {traj.id!r} has no tool calls waiting for observations")
    if list(tool_calls) != pending:
        raise ValueError("tool_calls are not the calls the last turn made")
    if not len(observations) == len(views) == len(pending):
        raise ValueError(
            f"expected {len(pending)} observations and view lists, "
            f"got {len(observations)} and {len(views)}"
        )

    results: list[Observation] = []
    image_parts: list[dict[str, Any]] = []
    for call, obs, obs_views in zip(pending, observations, views, strict=True):
        if not obs.tool:
            obs = dataclasses.replace(obs, tool=call.name)
        shown = attached_images(obs)
        if shown and len(obs_views) != shown:
            raise ValueError(f"{call.name}: {len(obs.images)} images but {len(obs_views)} views")
        image_parts += [_image_part(v) for v in list(obs_views)[:shown]]
        results.append(obs)

    protocol = protocol_of(traj)
    text = protocol.render_observation(results, next_image_index(traj))
    message = {"role": "user", "content": [_text_part(text), *image_parts]}

    done = len(traj.steps) - len(pending)
    filled = tuple(
        dataclasses.replace(step, observation=obs)
        for step, obs in zip(traj.steps[done:], results, strict=True)
    )
    return dataclasses.replace(
        traj, steps=traj.steps[:done] + filled, messages=(*traj.messages, message)
    )


def to_trace(traj: Trajectory) -> dict[str, Any]:
    """The trace object (docs/formats.md fields first); ``from_trace`` restores the state."""
    return traj.to_dict()


def from_trace(trace: Mapping[str, Any]) -> Trajectory:
    """The trajectory a trace records (to resume it, score it, or export it)."""
    return Trajectory.from_dict(trace)
