"""The seam between the pipeline and a model server: what a client is, what it returns.

A `ModelClient` sends one chat request (OpenAI messages with images inlined as `data:` URLs,
and the contract's sampling JSON) and calls back once with a `Completion` or the exception
that ended the attempt. It knows its wire format and names its failures with gRPC's status
codes (`CallError.code`: `UNAVAILABLE` and `DEADLINE_EXCEEDED` are transient); everything
else — retries, deadlines, the in-flight budget, image inlining — lives once, in
`channel.py`, whatever the server is. Implementations: `triton.TritonClient` (gRPC, the
`agent_vlm` tensors), `openai.OpenAIClient` (chat completions over HTTP) and
`scripted.ScriptedClient` (in-process, for tests and benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Error classes of failure rows written for model calls.
UNAVAILABLE_CLASS = "model_unavailable"
DEADLINE_CLASS = "model_deadline"
MODEL_CALL_CLASS = "model_call_error"
#: The codes every client maps its transient errors to (gRPC's names).
UNAVAILABLE, DEADLINE_EXCEEDED = "UNAVAILABLE", "DEADLINE_EXCEEDED"
#: Endpoint kinds: `--endpoint KIND:ADDRESS`.
KINDS = ("triton", "openai", "scripted")


@dataclass(frozen=True)
class RetryPolicy:
    """How model requests are retried: exponential backoff, capped, on transient codes."""

    max_attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 8.0
    retryable: tuple[str, ...] = (UNAVAILABLE, DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class ModelEndpoint:
    """Where and how to call the model.

    `kind` picks the client: `triton` (`url` is the gRPC `host:port`), `openai` (`url` is the
    API base, e.g. `https://host/v1`; the key is read from the environment variable
    `api_key_env` names, never stored here) or `scripted` (`url` names a script).
    """

    url: str
    model_name: str = "agent_vlm"
    timeout_s: float = 120.0
    max_in_flight: int = 64
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    kind: str = "triton"
    api_key_env: str = "OPENAI_API_KEY"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown endpoint kind {self.kind!r}; one of {', '.join(KINDS)}")

    @classmethod
    def at(cls, address: str, model_name: str = "agent_vlm", **settings: Any) -> ModelEndpoint:
        """The endpoint an `--endpoint` value (`KIND:URL`, or a bare Triton `host:port`)
        names, serving `model_name`."""
        kind, url = parse_endpoint(address)
        return cls(url, model_name, kind=kind, **settings)

    @property
    def address(self) -> str:
        """`KIND:URL`, the form `--endpoint` takes."""
        return f"{self.kind}:{self.url}"


def parse_endpoint(value: str) -> tuple[str, str]:
    """`--endpoint` -> `(kind, url)`: `triton:host:port`, `openai:https://host/v1`,
    `scripted:NAME`; a bare `host:port` is a Triton server."""
    kind, colon, rest = value.partition(":")
    if colon and kind in KINDS:
        if not rest:
            raise ValueError(f"--endpoint {value!r}: nothing after {kind}:")
        return kind, rest
    if "://" in value:
        raise ValueError(f"--endpoint {value!r}: say which protocol, e.g. openai:{value}")
    return "triton", value


@dataclass(frozen=True)
class Completion:
    """What a server returned for one request (the contract's outputs)."""

    text: str
    finish_reason: str
    usage: dict[str, int]


@dataclass(frozen=True)
class ModelReply:
    """One generation: the server's completion plus what the client measured."""

    text: str
    finish_reason: str
    usage: dict[str, int]
    latency_s: float
    attempts: int


@dataclass(frozen=True)
class ModelError:
    """A request that failed for good: after its retries, or at once when not retryable."""

    error_class: str
    code: str
    message: str
    attempts: int


#: The model config parameters that state an `ImageBudget`, in its fields' order.
BUDGET_KEYS = ("min_pixels", "max_pixels", "patch_size", "merge_size")


@dataclass(frozen=True)
class ImageBudget:
    """The image budget a served model states: what its processor keeps of an image (views
    are downscaled to `max_pixels`; `patch_size` x `merge_size` is one visual token's side)."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> ImageBudget | None:
        """The budget a Triton model config's parameters state; None unless all four are
        integers."""
        try:
            return cls(*(int(parameters[key]) for key in BUDGET_KEYS))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about the model: a label for traces and its image budget (None
    where the server states none, as OpenAI-compatible servers never do)."""

    label: str
    budget: ImageBudget | None


class CallError(Exception):
    """A failed attempt and its status code in gRPC's names (`UNAVAILABLE`, ...; '' if none)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BadResponseError(ValueError):
    """The server answered, but not in the contract's shape (never retried)."""


#: `done(completion, None)` or `done(None, error)`, called once per `send`, on any thread.
Done = Callable[[Completion | None, BaseException | None], None]


class ModelClient(Protocol):
    """One connection to a model server, shared by a worker's threads."""

    def send(
        self,
        messages: Sequence[Mapping[str, Any]],
        sampling: Mapping[str, Any],
        timeout_s: float,
        done: Done,
    ) -> None:
        """Start one request; `done` gets the completion, or the `CallError` (any other
        exception counts as not retryable) that ended the attempt."""
        ...

    def describe(self, timeout_s: float) -> ModelInfo:
        """Ask the server about the model (raises `CallError` when it cannot)."""
        ...

    def close(self) -> None: ...


def usage_of(raw: Mapping[str, Any] | None) -> dict[str, int]:
    """The contract's `usage` from a server's: prompt and completion token counts."""
    raw = raw or {}
    return {
        "prompt_tokens": int(raw.get("prompt_tokens") or 0),
        "completion_tokens": int(raw.get("completion_tokens") or 0),
    }


def retry_delay(policy: RetryPolicy, code: str, attempt: int) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when it must not be retried.

    `attempt` counts the tries made so far (1 after the first). Exponential from
    `initial_s`, doubling per try, capped at `max_s`.
    """
    if code not in policy.retryable or attempt >= policy.max_attempts:
        return None
    return min(policy.max_s, policy.initial_s * (2 ** (attempt - 1)))


def error_class_of(code: str) -> str:
    return {UNAVAILABLE: UNAVAILABLE_CLASS, DEADLINE_EXCEEDED: DEADLINE_CLASS}.get(
        code, MODEL_CALL_CLASS
    )
