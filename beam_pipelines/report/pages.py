"""The report's pages: view models built from traces, rendered with autoescaping Jinja2.

All model and tool text reaches a page through Jinja2's autoescape or through Pygments (which
escapes the code it highlights); nothing from a trace is ever marked safe as it is. The pages
carry a Content-Security-Policy that allows only the report's own inline script (by hash) and
its own images, so even a mistake in escaping could not run a script from a trace.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JsonLexer, PythonLexer

from beam_pipelines.agent.protocols import attached_images
from beam_pipelines.agent.records import (
    LETTERS,
    Observation,
    Step,
    Trajectory,
    answer_row,
    safe_key,
)
from beam_pipelines.report.assets import ImageCopier
from beam_pipelines.report.crops import Crop, step_turns, trajectory_crops

PAGES = "trajectories"
#: Crop colours, one per turn (cycled).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def page_name(job_id: str) -> str:
    """The file name of a job's page: a safe, unique key of its id."""
    return f"{safe_key(job_id)}.html"


def _highlight(text: str, lexer: Any) -> Markup:
    # Pygments escapes every token it writes; noclasses gives inline styles (no stylesheet).
    formatter = HtmlFormatter(noclasses=True, style="default", wrapcode=True)
    return Markup(highlight(text, lexer, formatter))


def highlight_code(code: str) -> Markup:
    return _highlight(code, PythonLexer())


def highlight_json(value: Any) -> Markup:
    """Arguments as JSON: on one line when short (a bbox), indented otherwise."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > 100:
        text = json.dumps(value, indent=2, ensure_ascii=False)
    return _highlight(text, JsonLexer())


# --------------------------------------------------------------------------------------------
# View models


@dataclass(frozen=True)
class ShownImage:
    """An image on a page: its copy's relative path (None when unreadable) and its source."""

    src: str | None
    label: str
    width: int
    height: int
    uri: str


@dataclass(frozen=True)
class CallView:
    """One tool call of a turn, what it returned, and the images it produced."""

    tool: str
    code: Markup | None
    arguments: Markup | None
    output: str
    error: str | None
    not_run: str | None
    images: list[ShownImage]
    crops: list[Crop]


@dataclass(frozen=True)
class TurnView:
    """One assistant turn: reasoning, then tool calls, a format error, or the answer."""

    number: int
    think: str
    latency_s: float
    tokens: int
    calls: list[CallView] = field(default_factory=list)
    format_error: str | None = None
    answer: str | None = None
    raw: str | None = None
    reply: str | None = None
    colour: str = PALETTE[0]
    note: str | None = None


@dataclass(frozen=True)
class OptionView:
    """One multiple-choice option and whether it is the truth and/or the model's choice."""

    letter: str
    text: str
    truth: bool
    chosen: bool


@dataclass(frozen=True)
class CropView:
    """A crop box as the page's SVG draws it, in pixels of the original."""

    x: float
    y: float
    width: float
    height: float
    label: str
    colour: str
    failed: bool


@dataclass(frozen=True)
class JobImageView:
    """One job image with the crop boxes taken from it; ``anchor`` is its figure's id
    (``job-image``, then ``job-image-2``, ... for a multi-image job's others)."""

    image: ShownImage | None
    crops: list[CropView]
    anchor: str
    font_size: float


@dataclass(frozen=True)
class TrajectoryView:
    """Everything one trajectory page shows."""

    id: str
    status: str
    error_class: str | None
    error: str | None
    model: str
    protocol: str
    question: str
    options: list[OptionView]
    truth: str | None
    answer: str | None
    choice: str | None
    correct: bool | None
    images: list[JobImageView]
    turns: list[TurnView]
    tools: list[str]
    started_at: str
    finished_at: str | None
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int

    @property
    def turn_count(self) -> int:
        return len(self.turns)


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        images = sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
        suffix = f"\n[{images} image part{'s' if images != 1 else ''}]" if images else ""
        return "\n".join(t for t in texts if t) + suffix
    return ""


def _exchanges(traj: Trajectory) -> list[tuple[str, str | None]]:
    """Each assistant message's raw text with the user message that answered it, if any."""
    messages = list(traj.messages)
    out: list[tuple[str, str | None]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        reply = None
        if i + 1 < len(messages) and messages[i + 1].get("role") == "user":
            reply = _text_of(messages[i + 1])
        out.append((_text_of(message), reply))
    return out


def _images(
    observation: Observation, first: int, copier: ImageCopier, prefix: str
) -> list[ShownImage]:
    """A call's images, labelled as the model knew them (a failed call's are not shown)."""
    shown = attached_images(observation)
    images = []
    for i, ref in enumerate(observation.images):
        label = f"sub-image {first + i}" if i < shown else "not shown to the model"
        src = copier.copy(ref)
        images.append(
            ShownImage(prefix + src if src else None, label, ref.width, ref.height, ref.uri)
        )
    return images


def _call_view(step: Step, crops: list[Crop], images: list[ShownImage]) -> CallView:
    call, obs = step.tool_call, step.observation
    assert call is not None
    code = call.arguments.get("code") if call.name == "code" else None
    return CallView(
        tool=call.name,
        code=highlight_code(code) if isinstance(code, str) else None,
        arguments=None if isinstance(code, str) else highlight_json(call.arguments),
        output=obs.text if obs is not None else "",
        error=obs.error if obs is not None else None,
        not_run=step.error if obs is None else None,
        images=images,
        crops=crops,
    )


def _turn_views(
    traj: Trajectory, crops: list[Crop], copier: ImageCopier, prefix: str
) -> list[TurnView]:
    """The assistant turns in order: tool-call and format-error turns, then the answer."""
    exchanges = _exchanges(traj)

    def new_turn(number: int, **fields: Any) -> TurnView:
        raw, reply = exchanges[number - 1] if number - 1 < len(exchanges) else (None, None)
        colour = PALETTE[(number - 1) % len(PALETTE)]
        return TurnView(number=number, raw=raw, reply=reply, colour=colour, **fields)

    turns: dict[int, TurnView] = {}
    sub_image = 1
    for index, (step, number) in enumerate(zip(traj.steps, step_turns(traj.steps), strict=True)):
        if number not in turns:
            turns[number] = new_turn(
                number, think=step.think, latency_s=step.latency_s, tokens=step.tokens
            )
        if step.tool_call is None:
            turns[number] = dataclasses.replace(
                turns[number], format_error=step.error or "malformed turn"
            )
            continue
        images: list[ShownImage] = []
        if step.observation is not None:
            images = _images(step.observation, sub_image, copier, prefix)
            sub_image += attached_images(step.observation)
        turns[number].calls.append(_call_view(step, [c for c in crops if c.call == index], images))
    ordered = [turns[k] for k in sorted(turns)]
    if traj.final is not None:
        ordered.append(
            new_turn(
                len(ordered) + 1,
                think=traj.final.think,
                latency_s=0.0,
                tokens=0,
                answer=traj.final.answer,
            )
        )
    # An assistant message with no step: the model server failed on that turn.
    for number in range(len(ordered) + 1, len(exchanges) + 1):
        ordered.append(
            new_turn(number, think="", latency_s=0.0, tokens=0, note="the job ended on this turn")
        )
    return ordered


def build_view(traj: Trajectory, copier: ImageCopier, prefix: str = "../") -> TrajectoryView:
    """The page model of one trajectory; images are copied as a side effect."""
    crops = trajectory_crops(traj, step_turns(traj.steps))
    turns = _turn_views(traj, crops, copier, prefix)
    job = traj.job
    row = answer_row(traj, None)  # choice and correctness exactly as the answer row has them
    choice, correct = row["choice"], row["correct"]
    letters = LETTERS[: len(job.options)]
    options = [
        OptionView(letter, text, job.answer == letter, choice == letter)
        for letter, text in zip(letters, job.options, strict=True)
    ]
    return TrajectoryView(
        id=traj.id,
        status=traj.status,
        error_class=traj.error_class,
        error=traj.error,
        model=traj.model,
        protocol=traj.protocol,
        question=job.question,
        options=options,
        truth=job.answer,
        answer=traj.final.answer if traj.final else None,
        choice=choice,
        correct=correct,
        images=_job_images(traj, crops, copier, prefix),
        turns=turns,
        tools=sorted({s.tool_call.name for s in traj.steps if s.tool_call is not None}),
        started_at=traj.started_at,
        finished_at=traj.finished_at,
        prompt_tokens=traj.usage.prompt_tokens,
        completion_tokens=traj.usage.completion_tokens,
        tool_calls=row["tool_calls"],
    )


def _job_images(
    traj: Trajectory, crops: list[Crop], copier: ImageCopier, prefix: str
) -> list[JobImageView]:
    """Every job image (its original, or its stored view when the original cannot be read)
    with the crop boxes drawn on it."""
    several = len(traj.originals) > 1
    views = []
    for index, (ref, view) in enumerate(zip(traj.originals, traj.views, strict=True)):
        src = copier.copy(ref, reencode=True)
        if src is None:  # the job image moved or is unreadable: the stored model view instead
            src = copier.copy(view)
        label = f"job image {index + 1}" if several else "job image"
        shown = ShownImage(prefix + src, label, ref.width, ref.height, ref.uri) if src else None
        boxes = [
            CropView(
                x=c.box.x0,
                y=c.box.y0,
                width=max(c.box.width, 1.0),
                height=max(c.box.height, 1.0),
                label=f"{c.turn}",
                colour=PALETTE[(c.turn - 1) % len(PALETTE)],
                failed=c.failed,
            )
            for c in crops
            if c.image == index
        ]
        anchor = "job-image" if index == 0 else f"job-image-{index + 1}"
        font_size = max(12.0, max(ref.width, ref.height) / 45)
        views.append(JobImageView(shown, boxes, anchor, font_size))
    return views


# --------------------------------------------------------------------------------------------
# Rendering


@cache
def environment() -> Environment:
    """The Jinja2 environment: autoescape on for every template, undefined names are errors."""
    env = Environment(
        loader=PackageLoader("beam_pipelines.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = lambda v: "-" if v is None else f"{v:.2f} s"
    env.filters["thousands"] = lambda v: f"{v:,}"
    env.filters["percent"] = lambda v: "-" if v is None else f"{v:.1%}"
    return env


@cache
def list_script() -> Markup:
    """The index page's script (filter, search, pages); served inline, allowed by its hash.

    It is the package's own file, so it is marked safe; it must not contain `</script`.
    """
    text = resources.files("beam_pipelines.report").joinpath("templates/list.js").read_text()
    if "</script" in text.lower():
        raise ValueError("list.js must not contain '</script'")
    return Markup(text)


def script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def content_security_policy(script: str | None) -> str:
    """No network, no plugins, no frames; the one inline script by hash; own images only."""
    scripts = f"'{script_hash(script)}'" if script else "'none'"
    return (
        "default-src 'none'; "
        f"script-src {scripts}; "
        "style-src 'unsafe-inline'; "
        "img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'"
    )


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
