"""The tool contract: what every agent tool is, what it receives and what it returns.

A tool is a small class that declares its header once, as class attributes: ``name``,
``title``, ``description`` (what the model is told) and ``parameters`` (a JSON schema in the
shape OpenAI/Qwen function calling takes), checked when the class is defined, as smolagents'
``Tool.__init_subclass__`` does. ``spec()`` returns the header as data (``ToolSpec``), which is
all a protocol gets to render its prompt from. Settings that shape the header (zoom's
coordinate convention, the search tools' item limits) are applied by the constructor. ``run``
does the work: everything a call needs arrives in a ``ToolContext`` (the full-resolution
original image, the images earlier calls produced, per-call limits); everything it produces
leaves in a ``ToolResult`` (text, full-resolution PNG images, or an error).

Two kinds of failure are kept apart, as in smolagents:

- the *model* made a mistake: a bad call (``ToolArgumentsError``: the arguments do not fit
  the tool) or a call that failed while running (``ToolExecutionError``: the code raised, timed
  out, the box lies outside the image). Both come back as ``ToolResult(error=...)`` with a
  message written for the model to read and act on; ``error_type`` says which.
- the *tool itself* cannot work (``ToolUnavailableError``: no sandbox can be started, a
  required protection is missing). That is not the model's fault and it cannot fix it, so it
  is raised to the caller, which turns it into a failure row instead of an observation.

This module imports nothing beyond the standard library and ``tools.schema``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

from tools.schema import schema_problem

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

    A multi-image job's other originals are ``more_images`` (its second image first) and their
    views' sizes ``more_view_sizes``; ``images`` is every original, ``image`` first.
    """

    image: bytes
    sub_images: tuple[bytes, ...] = ()
    view_size: tuple[int, int] | None = None
    timeout_s: float | None = None
    max_images: int | None = None
    more_images: tuple[bytes, ...] = ()
    more_view_sizes: tuple[tuple[int, int] | None, ...] = ()

    @property
    def images(self) -> tuple[bytes, ...]:
        """Every original of the job, in the order the model was shown them."""
        return (self.image, *self.more_images)

    def view_size_of(self, index: int) -> tuple[int, int] | None:
        """``view_size`` of ``images[index]`` (None when not given)."""
        if index == 0:
            return self.view_size
        sizes = self.more_view_sizes
        return sizes[index - 1] if 0 < index <= len(sizes) else None


#: ``chat(messages, sampling) -> text``: one request to a served model (OpenAI chat messages,
#: the serving contract's sampling); raises on failure.
Chat = Callable[[list[dict[str, Any]], dict[str, Any]], str]


@runtime_checkable
class AsksModel(Protocol):
    """A tool that asks a served model (``web_visit``'s goal summaries): it names the model in
    its settings, and whoever runs it attaches a ``Chat`` that reaches it, so ``tools`` needs no
    model-server client of its own."""

    def model_settings(self) -> Mapping[str, Any] | None: ...

    def attach_chat(self, chat: Chat) -> None: ...


@dataclass(frozen=True)
class ToolSpec:
    """A tool's header as data: what a protocol renders and a trajectory records.

    ``name``, ``description``, ``parameters`` and ``title`` are the tool's header as built
    (``Tool.spec``); ``settings`` are the settings it was built with, as given
    (``tools.registry.tool_specs``), so a record says how its tools behaved (zoom's
    ``coordinates``, for one). A spec with a name alone stands for a tool nobody described.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, tool: ToolSpec | str) -> ToolSpec:
        """``tool`` itself, or the undescribed spec of a tool name."""
        return tool if isinstance(tool, ToolSpec) else cls(name=tool)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "parameters": self.parameters,
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ToolSpec:
        if "name" not in d:
            raise KeyError("ToolSpec: missing name")
        return cls(
            name=d["name"],
            description=d.get("description", ""),
            parameters=dict(d.get("parameters") or {}),
            title=d.get("title", ""),
            settings=dict(d.get("settings") or {}),
        )


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def header_problem(tool: type[Tool]) -> str | None:
    """What is wrong with a tool class's declared header, else None."""
    for attribute in ("name", "title", "description", "parameters", "kind"):
        if not hasattr(tool, attribute):
            return f"declares no {attribute}"
    if not isinstance(tool.name, str) or not _NAME.fullmatch(tool.name):
        return f"name {tool.name!r} is not an identifier"
    for attribute in ("title", "description"):
        text = getattr(tool, attribute)
        if not isinstance(text, str) or not text.strip():
            return f"{attribute} must be a non-empty string"
    if tool.kind not in get_args(ToolKind):
        return f"kind must be one of {get_args(ToolKind)}, not {tool.kind!r}"
    if not isinstance(tool.parameters, Mapping) or tool.parameters.get("type") != "object":
        return 'parameters must be a JSON schema of "type": "object"'
    return schema_problem(tool.parameters)


class Tool(ABC):
    """An agent tool.

    A subclass declares ``name`` (how the model calls it), ``title`` (how a prompt may name
    it, e.g. "Code execution"), ``description`` (what it does, for the model), ``parameters``
    (the JSON schema of its arguments, within ``tools.schema``'s subset) and ``kind``, the
    executor pool it belongs in: ``"cpu"`` for CPU-bound tools (the code sandbox, zoom),
    ``"io"`` for tools that wait on the network (search, web pages). A class with a bad or
    missing header is refused when it is defined (``TypeError``).

    ``run`` receives arguments that fit ``parameters`` (``tools.registry.run_tool`` checks
    them, once) and returns a ``ToolResult`` for everything the model caused (see the module
    docstring); it raises only ``ToolUnavailableError`` (or a bug).
    """

    name: str
    title: str
    description: str
    parameters: dict[str, Any]
    kind: ToolKind

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        problem = header_problem(cls)
        if problem is not None:
            raise TypeError(f"tool class {cls.__qualname__}: {problem}")

    def spec(self, images: int = 1) -> ToolSpec:
        """This tool's header, as its settings shaped it, for a job of ``images`` images."""
        return ToolSpec(
            self.name,
            self.description_for(images),
            dict(self.parameters_for(images)),
            self.title,
        )

    def description_for(self, images: int) -> str:
        """The description a job of ``images`` images is told; ``description`` for one.

        A tool that can work on any image of a multi-image job says how to choose it here.
        """
        return self.description

    def parameters_for(self, images: int) -> dict[str, Any]:
        """The arguments' schema for a job of ``images`` images (what calls are checked
        against); ``parameters`` for one."""
        return self.parameters

    @abstractmethod
    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult: ...
