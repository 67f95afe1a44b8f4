"""Agent protocols: how the model is prompted, how its turns are parsed, how results come back.

A protocol is a small object (docs/formats.md, "The agent protocols"): a system prompt that
lists only the enabled tools, the user turn's text, a parser that turns one assistant turn into
a tool call, an answer or a format error, and the renderer of observation turns. The loop
(``beam_pipelines.agent.loop``) only talks to this interface, so adding a protocol means adding
a class here and an entry in ``PROTOCOLS``.

A protocol knows no tool's header: it renders the headers it is given (``tools.base.ToolSpec``,
built from the tool classes and their settings by ``tools.registry.tool_specs``), and its
parser checks only the turn's grammar and that the tool is enabled. The arguments are checked
once, against the tool's schema, where the call is run (``tools.registry.run_tool``).

Three protocols exist:

- ``r1v4`` (default): Skywork-R1V4. Its texts are FROZEN (docs/architecture.md): the embedded
  tiny model was trained on them, and ``tests/agent/test_prompts_golden.py`` pins them.
- ``r1v4-release``: the same turns, prompted with the system prompt of the R1V4 report's Table 1
  (the released wording, for R1V4 itself; ``tests/agent/test_r1v4_release.py`` pins it).
- ``zoom``: DeepEyes / Qwen function calling with ``image_zoom_in_tool``, whose header states
  the tool's coordinate convention (its ``coordinates`` setting).

``parse`` never raises. Every malformed turn becomes ``ParsedTurn.error``, a message written
for the model to act on, which the loop sends back as an observation.
"""

from __future__ import annotations

import ast
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tools.base import ToolSpec
from tools.schema import example_arguments

from .records import LETTERS, Job, Observation, ToolCall

#: Generation stops at the end of an action (sent to the server as stop strings).
STOP = ("</tool_call>", "</answer>")

# End-of-turn tokens some servers leave in the text; harmless after an action.
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>")


@dataclass(frozen=True)
class ParsedTurn:
    """One assistant turn, understood: an answer, tool calls, or a format error."""

    think: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    answer: str | None = None
    error: str | None = None


class AgentProtocol(ABC):
    """The interface the loop uses; see the module docstring."""

    name: ClassVar[str]
    #: The protocol's tool set by name, in prompt order (what ``parse`` accepts by default).
    known_tools: ClassVar[tuple[str, ...]] = ()
    stop: tuple[str, ...] = STOP

    def options(self) -> dict[str, Any]:
        """Keyword options that rebuild this instance with ``get_protocol(name, **options)``."""
        return {}

    @abstractmethod
    def system_prompt(self, tools: Sequence[ToolSpec], images: int = 1) -> str:
        """The system prompt, listing exactly ``tools``, rendered from their headers, for a job
        of ``images`` images (the tools' headers are already those for that many)."""

    @abstractmethod
    def user_text(self, job: Job) -> str:
        """The text part of the first user turn (the job's image parts come before it)."""

    @abstractmethod
    def parse(self, text: str, tools: Sequence[ToolSpec | str] | None = None) -> ParsedTurn:
        """Understand one assistant turn; never raises. ``tools``: enabled tools (names/specs)."""

    @abstractmethod
    def render_observation(self, results: Sequence[Observation], first_image_index: int) -> str:
        """The observation turn's text; result images are named from ``first_image_index``."""

    @abstractmethod
    def render_format_error(self, message: str) -> str:
        """The observation turn's text that tells the model its last turn was malformed."""


# --------------------------------------------------------------------------------------------
# Shared pieces


def options_text(job: Job) -> str:
    """The question, then the lettered options and the instruction, as frozen for r1v4."""
    if not job.options:
        return job.question
    lines = [job.question, "Options:"]
    lines += [f"{letter}. {option}" for letter, option in zip(LETTERS, job.options, strict=False)]
    lines.append("Answer with the option's letter.")
    return "\n".join(lines)


def attached_images(result: Observation) -> int:
    """How many images of a result are shown to the model (none when the call failed)."""
    return 0 if result.error is not None else len(result.images)


def _result_text(result: Observation, first_index: int) -> str:
    parts = [result.text.strip()] if result.text.strip() else []
    parts += [f"<sub-image {first_index + i}>" for i in range(attached_images(result))]
    return "\n".join(parts)


def _clip(text: str, limit: int = 60) -> str:
    text = text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_FENCE = re.compile(r"^```[\w+-]*\n(.*?)\n?```$", re.DOTALL)


class _Unparsable(Exception):
    """Internal: a turn is malformed; the message is for the model."""


class TaggedProtocol(AgentProtocol):
    """``<think>…</think>`` then one ``<tool_call>{json}</tool_call>`` or ``<answer>…</answer>``.

    Both built-in protocols share this turn grammar; they differ in prompts, tools, and how
    results are rendered. Subclasses may accept extra action tags through ``legacy_tags``.
    """

    #: Old one-tag-per-tool actions: tag -> (tool name, how to read the tag's content).
    legacy_tags: ClassVar[Mapping[str, tuple[str, Callable[[str], dict[str, Any]]]]] = {}

    # -- parsing ---------------------------------------------------------------------------

    def parse(self, text: str, tools: Sequence[ToolSpec | str] | None = None) -> ParsedTurn:
        think = ""
        try:
            think, rest = self._split_think(text if isinstance(text, str) else str(text))
            return self._parse_action(think, rest, self._enabled(tools))
        except _Unparsable as e:
            return ParsedTurn(think=think, error=str(e))
        except Exception as e:  # parse must never raise on model text
            return ParsedTurn(think=think, error=f"Your reply could not be read ({e!r}).")

    def _enabled(self, tools: Sequence[ToolSpec | str] | None) -> list[str]:
        return [ToolSpec.of(t).name for t in (self.known_tools if tools is None else tools)]

    def _split_think(self, text: str) -> tuple[str, str]:
        body = text.strip()
        for token in _END_TOKENS:
            if body.endswith(token):
                body = body[: -len(token)].rstrip()
        if not body:
            raise _Unparsable(
                "Your reply was empty. Reply with <think>your reasoning</think> followed by "
                "either <tool_call>...</tool_call> or <answer>...</answer>."
            )
        if body.startswith("</think>") and "</think>" in body[len("</think>") :]:
            # R1V4 sometimes opens its reasoning with </think> (the R1V4 report, Figures 5-7);
            # a second </think> closing it leaves no doubt about what was meant.
            body = "<think>" + body[len("</think>") :]
        if not body.startswith("<think>"):
            raise _Unparsable(
                "Your reply must start with <think>: put your reasoning inside "
                "<think>...</think>, then give either <tool_call>...</tool_call> or "
                "<answer>...</answer>."
            )
        end = body.find("</think>")
        if end < 0:
            raise _Unparsable(
                "Your reasoning was not closed: write </think> after your reasoning, then give "
                "either <tool_call>...</tool_call> or <answer>...</answer>."
            )
        return body[len("<think>") : end].strip(), body[end + len("</think>") :].strip()

    def _parse_action(self, think: str, rest: str, tools: list[str]) -> ParsedTurn:
        if rest.startswith("<tool_call>"):
            body, after = _take(rest, "<tool_call>", "</tool_call>")
            self._check_after(after, "</tool_call>")
            call = self._read_call(body, tools)
            return ParsedTurn(think=think, tool_calls=(call,))
        if rest.startswith("<answer>"):
            body, after = _take(rest, "<answer>", "</answer>")
            self._check_after(after, "</answer>")
            if not body.strip():
                raise _Unparsable(
                    "Your <answer> is empty: put your final answer inside <answer>...</answer>."
                )
            return ParsedTurn(think=think, answer=body.strip())
        for tag, (tool, read) in self.legacy_tags.items():
            if rest.startswith(f"<{tag}>"):
                body, after = _take(rest, f"<{tag}>", f"</{tag}>")
                self._check_after(after, f"</{tag}>")
                call = ToolCall(tool, read(body))
                self._check_call(call, tools)
                return ParsedTurn(think=think, tool_calls=(call,))
        if not rest:
            raise _Unparsable(
                "After </think> give exactly one action: "
                '<tool_call>{"name": ..., "arguments": {...}}</tool_call> to use a tool, or '
                "<answer>...</answer> to give your final answer."
            )
        if "<tool_call>" in rest or "<answer>" in rest:
            raise _Unparsable(
                f"Found text between </think> and your action ({_clip(rest)!r}): keep all "
                "reasoning inside <think>...</think> and start <tool_call> or <answer> right "
                "after </think>."
            )
        raise _Unparsable(
            f"Your reply has neither a <tool_call> nor an <answer> after </think> "
            f"(found {_clip(rest)!r}). Give exactly one action: "
            '<tool_call>{"name": ..., "arguments": {...}}</tool_call> or <answer>...</answer>.'
        )

    @staticmethod
    def _check_after(after: str, closing: str) -> None:
        if not after:
            return
        if after.startswith("<tool_call>") and closing == "</tool_call>":
            raise _Unparsable(
                "You made more than one tool call in one turn. Call one tool per turn, wait for "
                "its result, then continue."
            )
        if after.startswith("<answer>") or (
            after.startswith("<tool_call>") and closing == "</answer>"
        ):
            raise _Unparsable(
                "You gave both a tool call and an answer in one turn. Either call a tool or "
                "answer, not both."
            )
        raise _Unparsable(
            f"Found text after {closing} ({_clip(after)!r}): end your reply right after {closing}."
        )

    def _read_call(self, body: str, tools: list[str]) -> ToolCall:
        raw = body.strip()
        fenced = _FENCE.match(raw)
        if fenced:
            raw = fenced.group(1).strip()
        try:
            # strict=False: literal newlines inside strings (code!) are unambiguous; accept.
            value = json.loads(raw, strict=False)
        except (ValueError, RecursionError) as e:
            if _python_literal(raw):
                raise _Unparsable(
                    "Your tool call uses single quotes or Python syntax, which is not JSON. Use "
                    'double quotes around every key and string: {"name": "...", "arguments": '
                    "{...}}."
                ) from None
            where = getattr(e, "msg", str(e))
            raise _Unparsable(
                f"The tool call is not valid JSON ({where}). Write exactly one JSON object: "
                '{"name": "<tool name>", "arguments": {...}}, with double-quoted strings.'
            ) from None
        if not isinstance(value, dict):
            raise _Unparsable(
                'The tool call must be a JSON object {"name": "<tool name>", "arguments": {...}}.'
            )
        name, arguments = value.get("name"), value.get("arguments")
        if not isinstance(name, str) or not name:
            raise _Unparsable('The tool call needs a "name": the name of the tool to call.')
        if "arguments" not in value:
            raise _Unparsable(f'The call to {name!r} needs "arguments": an object.')
        if not isinstance(arguments, dict):
            raise _Unparsable(
                f'The "arguments" of the call to {name!r} must be a JSON object, not '
                f"{type(arguments).__name__}."
            )
        call = ToolCall(name=name, arguments=arguments)
        self._check_call(call, tools)
        return call

    @staticmethod
    def _check_call(call: ToolCall, tools: list[str]) -> None:
        # The arguments are the tool's to check, where the call is run (run_tool).
        if call.name in tools:
            return
        if not tools:
            raise _Unparsable(
                f"Unknown tool {call.name!r}: no tools are available here; answer with "
                "<answer>...</answer>."
            )
        raise _Unparsable(f"Unknown tool {call.name!r}. Available tools: {', '.join(tools)}.")


def _take(text: str, opening: str, closing: str) -> tuple[str, str]:
    """Content of a leading ``opening…closing`` element and what follows it.

    A missing closing tag at the very end is accepted: servers that honour stop strings may
    leave the stop string out of the text.
    """
    inner = text[len(opening) :]
    end = inner.find(closing)
    if end < 0:
        return inner, ""
    return inner[:end], inner[end + len(closing) :].strip()


def _python_literal(text: str) -> bool:
    if "'" not in text or len(text) > 100_000:
        return False
    try:
        return isinstance(ast.literal_eval(text), dict)
    except Exception:  # any failure means "not a Python literal"
        return False


# --------------------------------------------------------------------------------------------
# r1v4


def _read_code(body: str) -> dict[str, Any]:
    code = body.strip("\n")
    fenced = _FENCE.match(code.strip())
    return {"code": fenced.group(1) if fenced else code}


def _reader(key: str) -> Callable[[str], dict[str, Any]]:
    """Old search/visit tags held a JSON value or one item per line."""

    def read(body: str) -> dict[str, Any]:
        text = body.strip()
        try:
            value = json.loads(text)
        except ValueError:
            return {key: [line.strip() for line in text.splitlines() if line.strip()]}
        if isinstance(value, dict):
            return value
        return {key: value if isinstance(value, list) else [value]}

    return read


class R1V4(TaggedProtocol):
    """The Skywork-R1V4 protocol (frozen texts; see the module docstring)."""

    name = "r1v4"
    # The prompt order is FROZEN (docs/architecture.md).
    known_tools = ("code", "text_search", "image_search", "web_visit")
    legacy_tags: ClassVar[Mapping[str, tuple[str, Callable[[str], dict[str, Any]]]]] = {
        "code": ("code", _read_code),
        "text_search": ("text_search", _reader("queries")),
        "image_search": ("image_search", _reader("image_paths")),
        "web_content": ("web_visit", _reader("urls")),
    }

    #: How the output-format lines are introduced and marked, and the answer line's content.
    formats_heading: ClassVar[str] = "Output formats:"
    format_bullet: ClassVar[str] = ""
    answer_placeholder: ClassVar[str] = "..."

    def tool_line(self, spec: ToolSpec) -> tuple[str, dict[str, Any]]:
        """A tool's numbered line (without its number) and its output-format arguments."""
        return _r1v4_line(spec), example_arguments(spec.parameters, optional=True)

    def system_prompt(self, tools: Sequence[ToolSpec], images: int = 1) -> str:
        specs = _ordered(tools, self.known_tools)
        # FROZEN for one image; a multi-image job is told of "the provided images".
        basis = "Answer the user's question based on the provided image" + (
            "s" if images > 1 else ""
        )
        if not specs:
            return "\n".join(
                [
                    f"{basis}.",
                    "Output format:",
                    "<think>...</think><answer>...</answer>",
                    "YOU MUST include your reasoning within <think>...</think> before giving "
                    "the answer.",
                ]
            )
        lines = [f"{basis}. Here are some tools you can use if needed:"]
        formats = []
        for number, spec in enumerate(specs, start=1):
            line, example = self.tool_line(spec)
            lines.append(f"{number}. {line}")
            call = json.dumps({"name": spec.name, "arguments": example}, ensure_ascii=False)
            formats.append(f"{self.format_bullet}<think>...</think><tool_call>{call}</tool_call>")
        lines.append(
            "All search results, webpage contents, or code execution outputs will be placed "
            "within <observation>...</observation> and returned to you."
        )
        lines.append(self.formats_heading)
        lines += formats
        lines.append(
            f"{self.format_bullet}<think>...</think><answer>{self.answer_placeholder}</answer>"
        )
        lines.append(
            "YOU MUST include your reasoning within <think>...</think> before taking any action."
        )
        return "\n".join(lines)

    def user_text(self, job: Job) -> str:
        return options_text(job)

    def render_observation(self, results: Sequence[Observation], first_image_index: int) -> str:
        rendered, index = [], first_image_index
        for result in results:
            kind = result.tool or "code"
            if result.error is not None:
                payload: dict[str, Any] = {"error": result.error, "type": kind}
            else:
                payload = {"result": _result_text(result, index), "type": kind}
            index += attached_images(result)
            rendered.append(f"<observation>{json.dumps(payload, ensure_ascii=False)}</observation>")
        return "\n".join(rendered)

    def render_format_error(self, message: str) -> str:
        payload = json.dumps({"error": message, "type": "format"}, ensure_ascii=False)
        return f"<observation>{payload}</observation>"


def _r1v4_line(spec: ToolSpec) -> str:
    """``Title (name): description``, as R1V4 numbers its tools."""
    name = f"{spec.title} ({spec.name})" if spec.title else spec.name
    return f"{name}: {spec.description}" if spec.description else name


def _ordered(specs: Iterable[ToolSpec], known: Sequence[str]) -> list[ToolSpec]:
    """Known tools in the protocol's order, then the others in the order given."""
    specs = list(specs)
    rank = {name: i for i, name in enumerate(known)}
    return sorted(specs, key=lambda s: (rank.get(s.name, len(rank)), specs.index(s)))


# --------------------------------------------------------------------------------------------
# r1v4-release

#: The R1V4 report's Table 1 ("System Prompt for Think with Image and Search Tasks"): each
#: tool's numbered line and the arguments of its output-format line, in the table's order.
#: The table's typesetting lost the JSON braces of the format lines (its Figures 6 and 7
#: show them) and turned ``'`` into a typographic apostrophe; both are restored here.
_TABLE_1: dict[str, tuple[str, dict[str, Any]]] = {
    "image_search": (
        "Image search. This will trigger a Google Lens search using the image to retrieve "
        "relevant information.",
        {"image_paths": ["local image path 1", "local image path 2"]},
    ),
    "text_search": (
        "Text search. This will trigger a Google Search using a carefully crafted query.",
        {"queries": ["your search query 1", "your search query 2"]},
    ),
    "web_visit": (
        "Web content. This will fetch the detailed webpage content for you to use as "
        "additional information.",
        {"urls": ["target url 1", "target url 2"]},
    ),
    "code": (
        "Code execution. You can write Python code inside <code>...</code> to perform image "
        "operations (such as cropping, resizing, rotating, color adjustment, denoising, "
        "enhancement, etc.) before further processing.",
        {"code": "your python code here"},
    ),
}


class R1V4Release(R1V4):
    """R1V4's turns prompted with the released system prompt (the R1V4 report, Table 1).

    With all four tools the prompt is Table 1's text. With fewer, it keeps the enabled tools'
    lines, renumbered; a tool Table 1 does not know is listed after them from its header, as
    ``r1v4`` lists it. Without tools it is ``r1v4``'s prompt: R1V4 released none for that case.
    The user turn, the parser and the observations are ``r1v4``'s.
    """

    name = "r1v4-release"
    known_tools = tuple(_TABLE_1)
    formats_heading = "Output format options:"
    format_bullet = "- "
    answer_placeholder = "your answer here"

    def tool_line(self, spec: ToolSpec) -> tuple[str, dict[str, Any]]:
        return _TABLE_1.get(spec.name) or super().tool_line(spec)


# --------------------------------------------------------------------------------------------
# zoom

ZOOM_TOOL = "image_zoom_in_tool"


class Zoom(TaggedProtocol):
    """DeepEyes / Qwen function calling with one fixed tool, ``image_zoom_in_tool``."""

    name = "zoom"
    known_tools = (ZOOM_TOOL,)

    def system_prompt(self, tools: Sequence[ToolSpec], images: int = 1) -> str:
        # The same for any number of images: a multi-image job's zoom header says how to choose.
        if not tools:
            return "You are a helpful assistant."
        functions = []
        for spec in tools:
            function = {
                "name": spec.name,
                "description": spec.description,
                "parameters": spec.parameters,
            }
            functions.append(json.dumps({"type": "function", "function": function}))
        return "\n".join(
            [
                "You are a helpful assistant.",
                "",
                "# Tools",
                "",
                "You may call one or more functions to assist with the user query.",
                "",
                "You are provided with function signatures within <tools></tools> XML tags:",
                "<tools>",
                *functions,
                "</tools>",
                "",
                "For each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:",
                "<tool_call>",
                '{"name": <function-name>, "arguments": <args-json-object>}',
                "</tool_call>",
            ]
        )

    def user_text(self, job: Job) -> str:
        # DeepEyes puts the format instruction in the user turn.
        return (
            options_text(job) + "\nThink first, call **image_zoom_in_tool** if needed, then "
            "answer. Format strictly as: <think>...</think> <tool_call>...</tool_call> (if "
            "tools needed) <answer>...</answer>"
        )

    def render_observation(self, results: Sequence[Observation], first_image_index: int) -> str:
        rendered, index = [], first_image_index
        for result in results:
            if result.error is not None:
                body = f"Error: {result.error}"
            else:
                body = _result_text(result, index)
            index += attached_images(result)
            rendered.append(f"<tool_response>\n{body}\n</tool_response>")
        return "\n".join(rendered)

    def render_format_error(self, message: str) -> str:
        return f"<tool_response>\nError: {message}\n</tool_response>"


# --------------------------------------------------------------------------------------------

PROTOCOLS: dict[str, type[AgentProtocol]] = {
    R1V4.name: R1V4,
    R1V4Release.name: R1V4Release,
    Zoom.name: Zoom,
}
DEFAULT_PROTOCOL = R1V4.name


def get_protocol(name: str = DEFAULT_PROTOCOL, **options: Any) -> AgentProtocol:
    """A protocol instance by name; unknown names and options are errors."""
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise ValueError(
            f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}"
        ) from None
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"protocol {name!r}: invalid options {sorted(options)}: {e}") from None
