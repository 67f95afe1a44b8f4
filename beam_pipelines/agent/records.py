"""The records every part of the product exchanges (docs/formats.md, a contract).

Jobs come in, trajectories advance turn by turn, and every job ends as one answer row (Parquet,
``answer_schema()``) plus one trace, or as one ``Failure`` (a ``FailedJob`` when it had started:
the failure row with its partial trajectory, on its way to the writer). All records are frozen
dataclasses; those that are stored have a lossless ``to_dict()`` / ``from_dict()`` JSON round
trip, because they cross process boundaries (Beam workers, the Triton client, the sandbox) and
end up in object storage.

``Job.from_dict`` is the one place where untrusted input is validated; it raises ``InputError``
with a machine-readable ``error_class`` that becomes the failure row's class.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa

from tools.base import ToolSpec

#: The states a trajectory moves through; the last three are final.
Status = Literal["running", "answered", "max_turns", "failed"]
STATUSES: tuple[str, ...] = ("running", "answered", "max_turns", "failed")

#: A question larger than this (UTF-8 bytes) is an input error: it would not fit a prompt and
#: one over-long row must not take a worker down.
MAX_QUESTION_BYTES = 64 * 1024

#: An id longer than this (UTF-8 bytes) is an input error (`invalid_id`).
MAX_ID_BYTES = 512

#: Option lists are lettered A..Z.
MIN_OPTIONS, MAX_OPTIONS = 2, 26
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: A job lists at most this many images (`images`); more is an input error (`too_many_images`).
#: Every image is a view in the first user turn, each up to the model's pixel budget.
MAX_IMAGES = 16

_JOB_KEYS = ("id", "image", "images", "question", "options", "answer", "meta")


class InputError(ValueError):
    """A job line that cannot become a ``Job``; ``error_class`` names the kind of problem."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


def _require_keys(d: Mapping[str, Any], keys: Sequence[str], record: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise KeyError(f"{record}: missing {', '.join(missing)}")


# --------------------------------------------------------------------------------------------
# Job


def job_content_id(image: str | Sequence[str], question: str) -> str:
    """The stable id of a job that has none: a hash of its image URI and question.

    ``image`` is the URI of an ``image`` job, or the URI list of an ``images`` job: the hash
    is of the JSON ``[image, question]``, so ``"a"`` and ``["a"]`` give different ids.
    """
    value = image if isinstance(image, str) else list(image)
    payload = json.dumps([value, question], ensure_ascii=False).encode("utf-8")
    return "h-" + hashlib.sha256(payload).hexdigest()[:24]


@dataclass(frozen=True)
class Job:
    """One image-question job: the unit the pipeline reads, joins on (``id``) and writes.

    ``image`` is the job's image, the first one of a multi-image job. ``images`` is the list of
    a job given with ``images`` (``image`` is then ``images[0]``), and empty for the common
    single-image form; ``uris`` is every image either way.
    """

    id: str
    image: str
    question: str
    options: tuple[str, ...] = ()
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.images and self.images[0] != self.image:
            raise ValueError(f"Job {self.id!r}: image must be images[0]")

    @property
    def uris(self) -> tuple[str, ...]:
        """Every image of the job, in order (the model sees them in this order)."""
        return self.images or (self.image,)

    def to_dict(self) -> dict[str, Any]:
        # A job keeps the form it was given in: `image` or `images`.
        images: dict[str, Any] = (
            {"images": list(self.images)} if self.images else {"image": self.image}
        )
        return {
            "id": self.id,
            **images,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
            "meta": self.meta,
        }

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> Job:
        """A job from its own ``to_dict()`` (a trace's ``job``), without validating it again."""
        images = tuple(d.get("images") or ())
        return cls(
            id=d["id"],
            image=images[0] if images else d["image"],
            question=d["question"],
            options=tuple(d.get("options") or ()),
            answer=d.get("answer"),
            meta=dict(d.get("meta") or {}),
            images=images,
        )

    @classmethod
    def from_json(cls, line: str | bytes, *, max_question_bytes: int = MAX_QUESTION_BYTES) -> Job:
        """Parse and validate one JSONL line; raises ``InputError`` (``invalid_json``...)."""
        try:
            d = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise InputError("invalid_json", f"not valid JSON: {e}") from None
        return cls.from_dict(d, max_question_bytes=max_question_bytes)

    @classmethod
    def from_dict(cls, d: Any, *, max_question_bytes: int = MAX_QUESTION_BYTES) -> Job:
        """Validate an input object (a docs/formats.md job, or the R1V4 API ``{image, question}``).

        Keys other than the job's own are kept in ``meta`` (existing ``meta`` keys win), so
        nothing a dataset carries is silently dropped.
        """
        if not isinstance(d, Mapping):
            raise InputError("invalid_json", f"a job must be a JSON object, got {_kind(d)}")
        raw_id = d.get("id")
        if raw_id is not None:
            _check_id(raw_id)
        _check_unicode(d)
        image, images = _image_fields(d)
        question = _required_str(d, "question")
        size = len(question.encode("utf-8", "surrogatepass"))
        if size > max_question_bytes:
            raise InputError(
                "question_too_long",
                f"question is {size} bytes, the limit is {max_question_bytes}",
            )

        if raw_id is not None:
            job_id = str(raw_id)
        else:
            job_id = job_content_id(images if images else image, question)

        options = _options(d.get("options"))
        answer = _answer(d.get("answer"), options)

        meta_in = d.get("meta")
        if meta_in is None:
            meta: dict[str, Any] = {}
        elif isinstance(meta_in, Mapping):
            meta = dict(meta_in)
        else:
            raise InputError("invalid_field", f"meta must be an object, got {_kind(meta_in)}")
        for key, value in d.items():
            if key not in _JOB_KEYS:
                meta.setdefault(key, value)
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise InputError("invalid_field", f"meta is not JSON-serialisable: {e}") from None
        return cls(
            id=job_id,
            image=image,
            question=question,
            options=options,
            answer=answer,
            meta=meta,
            images=images,
        )


def _check_id(raw: Any) -> None:
    """An id is text (or an integer) of 1 to `MAX_ID_BYTES` UTF-8 bytes, valid Unicode, with
    no control characters: it names rows, trace URIs and keys, so it must be printable and
    encodable everywhere."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise InputError("invalid_field", f"id must be a string, got {_kind(raw)}")
    text = str(raw)
    if not text.strip():
        raise InputError("invalid_field", "id is empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InputError(
            "invalid_id", f"id is not valid Unicode (a lone surrogate at {e.start})"
        ) from None
    if size > MAX_ID_BYTES:
        raise InputError("invalid_id", f"id is {size} bytes, the limit is {MAX_ID_BYTES}")
    control = next((i for i, c in enumerate(text) if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise InputError("invalid_id", f"id has a control character {text[control]!r} at {control}")


def _check_unicode(d: Mapping[str, Any]) -> None:
    """Every text of the job can be written as UTF-8 (JSON's ``"\\ud800"`` escapes decode to lone
    surrogates, which no UTF-8 writer or coder accepts)."""
    try:
        json.dumps(d, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end]
        raise InputError(
            "invalid_unicode", f"the job holds text that is not valid Unicode ({bad!r})"
        ) from None
    except (TypeError, ValueError, RecursionError):
        return  # not JSON at all: the field checks say what is wrong


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _required_str(d: Mapping[str, Any], key: str) -> str:
    if key not in d or d[key] is None:
        raise InputError("missing_field", f"missing field {key!r}")
    value = d[key]
    if not isinstance(value, str):
        raise InputError("invalid_field", f"{key} must be a string, got {_kind(value)}")
    if not value.strip():
        raise InputError("missing_field", f"field {key!r} is empty")
    return value


def _image_fields(d: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """``(image, images)``: a job has ``image`` (a URI) or ``images`` (a list of 1 to
    `MAX_IMAGES` URIs), exactly one of them; a null value counts as absent (a Parquet file
    that mixes both forms has both columns)."""
    raw = d.get("images")
    if raw is None:
        return _required_str(d, "image"), ()
    if d.get("image") is not None:
        raise InputError("invalid_field", "a job has either image or images, not both")
    if not isinstance(raw, list | tuple):
        raise InputError("invalid_field", f"images must be an array of URIs, got {_kind(raw)}")
    if not raw:
        raise InputError("missing_field", "field 'images' is empty")
    if len(raw) > MAX_IMAGES:
        raise InputError(
            "too_many_images", f"images has {len(raw)} entries, the limit is {MAX_IMAGES}"
        )
    for i, uri in enumerate(raw):
        if not isinstance(uri, str):
            raise InputError("invalid_field", f"images[{i}] must be a string, got {_kind(uri)}")
        if not uri.strip():
            raise InputError("missing_field", f"images[{i}] is empty")
    return raw[0], tuple(raw)


def _options(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise InputError("invalid_field", f"options must be an array, got {_kind(raw)}")
    if not raw:  # many datasets write [] for "no options"
        return ()
    if not MIN_OPTIONS <= len(raw) <= MAX_OPTIONS:
        raise InputError(
            "invalid_field",
            f"options must have {MIN_OPTIONS} to {MAX_OPTIONS} entries, got {len(raw)}",
        )
    for i, option in enumerate(raw):
        if not isinstance(option, str) or not option.strip():
            raise InputError("invalid_field", f"option {i} must be a non-empty string")
    return tuple(raw)


def _answer(raw: Any, options: tuple[str, ...]) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InputError("invalid_field", f"answer must be a string, got {_kind(raw)}")
    text = raw.strip()
    if not text:
        return None
    if not options:
        return raw
    letters = LETTERS[: len(options)]
    if len(text) == 1 and text.upper() in letters:
        return text.upper()
    # Some sources give the correct option's text instead of its letter.
    for letter, option in zip(letters, options, strict=True):
        if text == option.strip():
            return letter
    raise InputError(
        "invalid_field",
        f"answer {text[:40]!r} is neither an option letter {letters[0]}-{letters[-1]} "
        "nor one of the options",
    )


# --------------------------------------------------------------------------------------------
# Images, tools, observations


@dataclass(frozen=True)
class ImageRef:
    """An image stored once, content-addressed: where it is, its hash and its size."""

    uri: str
    sha256: str
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "sha256": self.sha256, "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageRef:
        _require_keys(d, ("uri", "sha256", "width", "height"), "ImageRef")
        return cls(uri=d["uri"], sha256=d["sha256"], width=int(d["width"]), height=int(d["height"]))


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for: a tool name and its JSON arguments."""

    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ToolCall:
        _require_keys(d, ("name", "arguments"), "ToolCall")
        return cls(name=d["name"], arguments=dict(d["arguments"]))


@dataclass(frozen=True)
class Observation:
    """What a tool returned: text, the full-resolution images it produced, or an error.

    ``images`` are the originals (what later tool calls read); the model sees their views.
    """

    text: str
    images: tuple[ImageRef, ...] = ()
    error: str | None = None
    tool: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "images": [i.to_dict() for i in self.images],
            "error": self.error,
            "tool": self.tool,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Observation:
        return cls(
            text=d.get("text", ""),
            images=tuple(ImageRef.from_dict(i) for i in d.get("images", ())),
            error=d.get("error"),
            tool=d.get("tool", ""),
        )


@dataclass(frozen=True)
class Step:
    """One assistant turn that did not answer: its reasoning, its call and what came back.

    A turn with a format error has ``tool_call=None`` and ``error`` set; a tool call whose
    observation has not arrived yet has ``observation=None`` (the loop is waiting on tools).
    """

    think: str
    tool_call: ToolCall | None
    observation: Observation | None
    latency_s: float
    tokens: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "think": self.think,
            "tool_call": self.tool_call.to_dict() if self.tool_call else None,
            "observation": self.observation.to_dict() if self.observation else None,
            "latency_s": self.latency_s,
            "tokens": self.tokens,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Step:
        call, obs = d.get("tool_call"), d.get("observation")
        return cls(
            think=d.get("think", ""),
            tool_call=ToolCall.from_dict(call) if call else None,
            observation=Observation.from_dict(obs) if obs else None,
            latency_s=float(d.get("latency_s", 0.0)),
            tokens=int(d.get("tokens", 0)),
            error=d.get("error"),
        )


@dataclass(frozen=True)
class Final:
    """The answering turn: its reasoning and the text inside ``<answer>``."""

    think: str
    answer: str

    def to_dict(self) -> dict[str, Any]:
        return {"think": self.think, "answer": self.answer}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Final:
        return cls(think=d.get("think", ""), answer=d["answer"])


@dataclass(frozen=True)
class Usage:
    """Token counts, summed over the turns of a trajectory."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Usage:
        d = d or {}
        return cls(int(d.get("prompt_tokens", 0)), int(d.get("completion_tokens", 0)))


# --------------------------------------------------------------------------------------------
# Trajectory


@dataclass(frozen=True)
class Trajectory:
    """A job on its way through the agent loop, and (when finished) its trace.

    Everything ``beam_pipelines.agent.loop`` needs to take the next step lives here (protocol
    name and options, enabled tools, budgets, counters), so a trajectory can be advanced by any
    worker from the record alone, and a trace is the full state.

    ``original`` and ``view`` are the job image and its model view, the first ones of a
    multi-image job; ``more_originals`` and ``more_views`` are the rest, in order (``originals``
    and ``views`` are all of them).
    """

    job: Job
    protocol: str
    model: str
    sampling: dict[str, Any]
    original: ImageRef
    view: ImageRef
    messages: tuple[dict[str, Any], ...] = ()
    steps: tuple[Step, ...] = ()
    final: Final | None = None
    usage: Usage = field(default_factory=Usage)
    status: Status = "running"
    format_errors: int = 0
    error_class: str | None = None
    error: str | None = None
    started_at: str = ""
    finished_at: str | None = None
    protocol_options: dict[str, Any] = field(default_factory=dict)
    tools: tuple[ToolSpec, ...] = ()
    max_turns: int = 16
    max_format_errors: int = 3
    more_originals: tuple[ImageRef, ...] = ()
    more_views: tuple[ImageRef, ...] = ()

    def __post_init__(self) -> None:
        if len(self.more_originals) != len(self.more_views):
            raise ValueError(f"Trajectory {self.job.id!r}: one view per original")

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def originals(self) -> tuple[ImageRef, ...]:
        """Every job image, in the order the model saw them."""
        return (self.original, *self.more_originals)

    @property
    def views(self) -> tuple[ImageRef, ...]:
        """The model view of every job image (``views[i]`` of ``originals[i]``)."""
        return (self.view, *self.more_views)

    @property
    def turns(self) -> int:
        """Assistant turns taken so far."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def done(self) -> bool:
        return self.status != "running"

    def to_dict(self) -> dict[str, Any]:
        # The docs/formats.md trace fields come first, in their documented order, so a trace reads
        # naturally; the rest is what makes the trace a resumable state.
        return {
            "id": self.job.id,
            "model": self.model,
            "protocol": self.protocol,
            "sampling": self.sampling,
            "status": self.status,
            "messages": list(self.messages),
            "steps": [s.to_dict() for s in self.steps],
            "final": self.final.to_dict() if self.final else None,
            "usage": self.usage.to_dict(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error_class": self.error_class,
            "error": self.error,
            "format_errors": self.format_errors,
            "job": self.job.to_dict(),
            "original": self.original.to_dict(),
            "view": self.view.to_dict(),
            # A multi-image job's trace lists every image; `original` and `view` are the first.
            **(
                {
                    "originals": [r.to_dict() for r in self.originals],
                    "views": [r.to_dict() for r in self.views],
                }
                if self.more_originals
                else {}
            ),
            "protocol_options": self.protocol_options,
            "tools": [t.to_dict() for t in self.tools],
            "max_turns": self.max_turns,
            "max_format_errors": self.max_format_errors,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trajectory:
        _require_keys(d, ("job", "protocol", "model", "original", "view", "messages"), "Trajectory")
        status = d.get("status", "running")
        if status not in STATUSES:
            raise ValueError(f"Trajectory: unknown status {status!r}")
        originals = [ImageRef.from_dict(r) for r in d.get("originals") or [d["original"]]]
        views = [ImageRef.from_dict(r) for r in d.get("views") or [d["view"]]]
        return cls(
            job=Job.from_record(d["job"]),
            protocol=d["protocol"],
            model=d["model"],
            sampling=dict(d.get("sampling") or {}),
            original=originals[0],
            view=views[0],
            more_originals=tuple(originals[1:]),
            more_views=tuple(views[1:]),
            messages=tuple(d["messages"]),
            steps=tuple(Step.from_dict(s) for s in d.get("steps", ())),
            final=Final.from_dict(d["final"]) if d.get("final") else None,
            usage=Usage.from_dict(d.get("usage")),
            status=status,
            format_errors=int(d.get("format_errors", 0)),
            error_class=d.get("error_class"),
            error=d.get("error"),
            started_at=d.get("started_at", ""),
            finished_at=d.get("finished_at"),
            protocol_options=dict(d.get("protocol_options") or {}),
            tools=tuple(ToolSpec.from_dict(t) for t in d.get("tools", ())),
            max_turns=int(d.get("max_turns", 16)),
            max_format_errors=int(d.get("max_format_errors", 3)),
        )


# --------------------------------------------------------------------------------------------
# Failure


@dataclass(frozen=True)
class Failure:
    """A dead-letter row: the whole input (or the raw line), where and why it failed."""

    input: dict[str, Any] | str
    stage: str
    error_class: str
    message: str
    attempts: int = 1
    trace_uri: str | None = None
    id: str | None = None

    @classmethod
    def from_error(
        cls,
        input: dict[str, Any] | str,
        stage: str,
        error: BaseException,
        *,
        attempts: int = 1,
        trace_uri: str | None = None,
        id: str | None = None,
    ) -> Failure:
        """A failure row for an exception; errors with an ``error_class`` keep it."""
        error_class = getattr(error, "error_class", None) or type(error).__name__
        return cls(
            input=input,
            stage=stage,
            error_class=error_class,
            message=str(error),
            attempts=attempts,
            trace_uri=trace_uri,
            id=id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "input": self.input,
            "stage": self.stage,
            "error_class": self.error_class,
            "message": self.message,
            "attempts": self.attempts,
            "trace_uri": self.trace_uri,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Failure:
        _require_keys(d, ("input", "stage", "error_class", "message"), "Failure")
        return cls(
            input=d["input"],
            stage=d["stage"],
            error_class=d["error_class"],
            message=d["message"],
            attempts=int(d.get("attempts", 1)),
            trace_uri=d.get("trace_uri"),
            id=d.get("id"),
        )


@dataclass(frozen=True)
class FailedJob:
    """A job that ended without an answer; `trajectory` is the partial one, if it started."""

    failure: Failure
    trajectory: Trajectory | None = None


# --------------------------------------------------------------------------------------------
# Answer rows


def answer_schema() -> pa.Schema:
    """The one Parquet schema of answer rows, for every run and every status."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("answer", pa.string()),
            pa.field("choice", pa.string()),
            pa.field("correct", pa.bool_()),
            pa.field("turns", pa.int32(), nullable=False),
            pa.field("tool_calls", pa.int32(), nullable=False),
            pa.field("prompt_tokens", pa.int64(), nullable=False),
            pa.field("completion_tokens", pa.int64(), nullable=False),
            pa.field("latency_s", pa.float64()),
            pa.field("model", pa.string(), nullable=False),
            pa.field("protocol", pa.string(), nullable=False),
            pa.field("trace_uri", pa.string()),
            pa.field("error", pa.string()),
        ]
    )


_LEADING_LETTER = re.compile(r"^[\(\[]?([A-Z])(?:[\)\]\.:,]|\s|$)")
_STATED_LETTER = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is|:)?\s*[\(\[]?([A-Z])\b(?![’'])")
_LONE_LETTER = re.compile(r"[\(\[]?([a-z])[\)\]\.]?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def parse_choice(answer: str | None, options: Sequence[str]) -> str | None:
    """The option letter an answer text names, or None.

    Accepts ``B``, ``b``, ``(B)``, ``B. red``, ``\\boxed{B}``, ``The answer is B`` and the exact
    text of an option; a lone capital at the start only counts when it is a valid letter (so "A red
    cup" with options A-D is read as A only because A is an option letter: models answering
    multiple choice start with the letter).
    """
    if not answer or not options:
        return None
    letters = LETTERS[: len(options)]
    text = answer.strip()
    boxed = _BOXED.search(text)
    if boxed:
        text = boxed.group(1).strip()
    m = _LEADING_LETTER.match(text) or _LONE_LETTER.fullmatch(text)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    folded = _normalise(text)
    for letter, option in zip(letters, options, strict=True):
        if folded == _normalise(option):
            return letter
    m = _STATED_LETTER.search(text)
    if m and m.group(1) in letters:
        return m.group(1)
    return None


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .!?:;\"'")


def _seconds_between(start: str, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        delta = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None
    return delta if math.isfinite(delta) else None


def answer_row(trajectory: Trajectory, trace_uri: str | None) -> dict[str, Any]:
    """The answer row of a finished trajectory, in ``answer_schema()``'s column order.

    ``choice`` is set when the job has options; ``correct`` when it has ground truth (letter
    match with options, normalised exact match for free text).
    """
    job = trajectory.job
    answer = trajectory.final.answer if trajectory.final else None
    choice = parse_choice(answer, job.options) if job.options else None
    correct: bool | None = None
    if job.answer is not None:
        if job.options:
            correct = choice == job.answer
        else:
            correct = answer is not None and _normalise(answer) == _normalise(job.answer)
    return {
        "id": job.id,
        "status": trajectory.status,
        "answer": answer,
        "choice": choice,
        "correct": correct,
        "turns": trajectory.turns,
        # Calls that ran; a call cut off by the turn budget has no observation.
        "tool_calls": sum(
            1 for s in trajectory.steps if s.tool_call is not None and s.observation is not None
        ),
        "prompt_tokens": trajectory.usage.prompt_tokens,
        "completion_tokens": trajectory.usage.completion_tokens,
        "latency_s": _seconds_between(trajectory.started_at, trajectory.finished_at),
        "model": trajectory.model,
        "protocol": trajectory.protocol,
        "trace_uri": trace_uri,
        "error": trajectory.error,
    }


# --------------------------------------------------------------------------------------------
# Object keys

_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_MAX = 64


def safe_key(job_id: str) -> str:
    """A safe, unique, stable object-name key for any id.

    A readable ASCII slug (no ``/``, no ``..``, no spaces, at most 64 characters) followed by
    16 hex digits of the SHA-256 of the exact id, so ids that slug alike ("a/b", "a b") still
    get different keys and the same id always gets the same key.
    """
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    ascii_id = unicodedata.normalize("NFKD", job_id).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_UNSAFE.sub("-", ascii_id)
    slug = re.sub(r"\.{2,}", ".", slug)
    slug = re.sub(r"-{2,}", "-", slug)[:_SLUG_MAX].strip(".-_")
    return f"{slug}-{digest}" if slug else digest
