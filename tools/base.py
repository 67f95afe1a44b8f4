"""The tool contract: what every agent tool is, what it receives and what it returns.

A tool is a small object with a header the model sees (``name``, ``description``,
``parameters`` as a JSON schema in the shape OpenAI/Qwen function calling takes) and a ``run``
method. Everything a call needs arrives in a ``ToolContext`` (the full-resolution original
image, the images earlier calls produced, per-call limits); everything it produces leaves in a
``ToolResult`` (text, full-resolution PNG images, or an error).

Two kinds of failure are kept apart, as in smolagents:

- the *model* made a mistake: a bad call (``ToolArgumentsError``: the arguments do not fit
  the tool) or a call that failed while running (``ToolExecutionError``: the code raised, timed
  out, the box lies outside the image). Both come back as ``ToolResult(error=...)`` with a
  message written for the model to read and act on; ``error_type`` says which.
- the *tool itself* cannot work (``ToolUnavailableError``: no sandbox can be started, a
  required protection is missing). That is not the model's fault and it cannot fix it, so it
  is raised to the caller, which turns it into a failure row instead of an observation.

This module imports nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

ToolKind = Literal["cpu", "io"]
ErrorType = Literal["arguments", "execution"]


class ToolError(Exception):
    """A problem the model caused and can fix; ``str(error)`` is addressed to the model."""

    error_type: ClassVar[ErrorType]


class ToolArgumentsError(ToolError):
    """A bad call: the arguments do not fit the tool's schema or meaning."""

    error_type: ClassVar[ErrorType] = "arguments"


class ToolExecutionError(ToolError):
    """A well-formed call that failed while running (exception, time limit, bad region...)."""

    error_type: ClassVar[ErrorType] = "execution"


class ToolUnavailableError(RuntimeError):
    """The tool cannot run at all here (infrastructure, not the model): raised, never shown."""


@dataclass(frozen=True)
class ToolResult:
    """What one call returned.

    ``text`` is what the model reads; ``images`` are PNG bytes of the full-resolution images
    the call produced, in order (they become the next ``<sub-image N>``); ``error`` is set when
    the call failed, with a message for the model, and ``error_type`` says whether the call was
    malformed (``"arguments"``) or failed while running (``"execution"``).
    """

    text: str
    images: tuple[bytes, ...] = ()
    error: str | None = None
    error_type: ErrorType | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, error: ToolError, text: str = "") -> ToolResult:
        """The result of a call that raised ``error``."""
        return cls(text=text, error=str(error), error_type=error.error_type)


@dataclass(frozen=True)
class ToolContext:
    """Everything a call may read besides its arguments.

    ``image`` is the job's ORIGINAL image, encoded bytes exactly as read from storage (PNG,
    JPEG, ...); tools decode it at full resolution. ``sub_images`` are the PNG images earlier
    tool calls of the trajectory produced: index 0 is ``<sub-image 1>``. ``view_size`` is the
    (width, height) of the image as the model was shown it, for tools that take pixel
    coordinates in the model's frame (None: the original's own pixels). ``timeout_s`` caps this
    call's wall clock below the tool's own limit (for example the rest of a job's budget), and
    ``max_images`` caps how many images this call may return (for example what is left of a
    trajectory's image budget); None leaves the tool's own limits.
    """

    image: bytes
    sub_images: tuple[bytes, ...] = ()
    view_size: tuple[int, int] | None = None
    timeout_s: float | None = None
    max_images: int | None = None


@runtime_checkable
class Tool(Protocol):
    """An agent tool.

    ``kind`` names the executor pool the tool belongs in: ``"cpu"`` for CPU-bound tools (the
    code sandbox, zoom), ``"io"`` for tools that wait on the network (search, web pages).

    ``run`` validates its arguments and returns a ``ToolResult`` for everything the model
    caused (see the module docstring); it raises only ``ToolUnavailableError`` (or a bug).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    kind: ToolKind

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult: ...
