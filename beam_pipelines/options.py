"""Options of the annotate pipeline: parsed once at the edge, a frozen config below it.

`AnnotateOptions` is the `PipelineOptions` subclass the command line goes through, so every
standard Beam option (`--runner`, `--project`, `--temp_location`, ...) passes through
unchanged. `AnnotateConfig` is the plain, picklable record that transforms and DoFns receive;
nothing below `annotate.py` looks at `PipelineOptions`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines.agent.protocols import PROTOCOLS as PROTOCOL_CLASSES
from beam_pipelines.io.files import normalize, read_bytes
from beam_pipelines.model_client.base import (
    ImageBudget,
    ModelEndpoint,
    RetryPolicy,
    parse_endpoint,
)
from tools.registry import build_tools

#: The in-process portable runner: the DirectRunner's Prism path downloads a Go binary and
#: cannot run offline, while FnApiRunner runs the same portable graph inside this process.
DEFAULT_RUNNER = "FnApiRunner"
PROTOCOLS = tuple(PROTOCOL_CLASSES)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class AnnotateOptions(PipelineOptions):
    """`python -m beam_pipelines annotate` options (underscores and dashes both accepted)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        # Not `required=True`: every PipelineOptions subclass parses every pipeline's flags in
        # this process, so a required flag would break unrelated pipelines. Checked below.
        parser.add_argument(
            "--input",
            default=None,
            help="jobs: a JSONL or Parquet file, a glob of them, or a folder of images "
            "(with --prompt); local, file:// or gs://",
        )
        parser.add_argument("--output", default=None, help="output root (local or gs://)")
        parser.add_argument(
            "--prompt",
            default=None,
            help="the question asked of every image when --input is a folder of images",
        )
        parser.add_argument(
            "--endpoint",
            default=None,
            help="the model server: triton:HOST:PORT (Triton gRPC, the agent_vlm contract), "
            "openai:URL (an OpenAI-compatible chat completions API, e.g. "
            "openai:https://host/v1, with --model) or scripted:call (in-process, for tests); "
            "without it a local Triton with the tiny model is started for the run",
        )
        parser.add_argument(
            "--triton_url",
            "--triton-url",
            dest="triton_url",
            default=None,
            help="host:port of Triton's gRPC endpoint (the same as --endpoint triton:HOST:PORT)",
        )
        parser.add_argument("--model_name", "--model-name", "--model", default="agent_vlm")
        parser.add_argument(
            "--api_key_env",
            "--api-key-env",
            default="OPENAI_API_KEY",
            help="the environment variable holding the openai: endpoint's API key (keys are "
            "never options)",
        )
        parser.add_argument("--max_turns", "--max-turns", type=int, default=16)
        parser.add_argument(
            "--max_in_flight",
            "--max-in-flight",
            type=int,
            default=64,
            help="model requests one worker process keeps in flight (all turns together)",
        )
        parser.add_argument("--protocol", choices=PROTOCOLS, default="r1v4")
        parser.add_argument(
            "--tools",
            default=None,
            help="comma-separated tool names (default: the protocol's own tool set)",
        )
        parser.add_argument(
            "--tool_config",
            "--tool-config",
            default=None,
            help="settings of the enabled tools: a JSON object {tool: {setting: value}}, or "
            "the path (local or gs://) of a JSON file holding one; docs/tools.md lists the "
            "settings (API keys are read from the environment, never from options)",
        )
        parser.add_argument(
            "--tool_option",
            "--tool-option",
            action="append",
            default=None,
            metavar="TOOL.SETTING=VALUE",
            help="one tool setting, e.g. text_search.provider=serper (repeatable; wins over "
            "--tool_config); VALUE is read as JSON when it is JSON, else taken as text",
        )
        parser.add_argument("--limit", type=int, default=None, help="read only the first N jobs")
        parser.add_argument("--run_id", "--run-id", default=None, help="default: a timestamp")
        parser.add_argument(
            "--max_pixels",
            "--max-pixels",
            type=int,
            default=None,
            help="lower the pixel budget of image views below the one the model server states "
            "(required where the server states none, as OpenAI-compatible servers)",
        )
        parser.add_argument("--max_tokens", "--max-tokens", type=int, default=None)
        parser.add_argument("--temperature", type=float, default=None)
        parser.add_argument(
            "--request_timeout_s",
            "--request-timeout-s",
            type=float,
            default=120.0,
            help="deadline of one model request",
        )
        parser.add_argument(
            "--max_attempts",
            "--max-attempts",
            type=int,
            default=4,
            help="tries per model request on UNAVAILABLE / DEADLINE_EXCEEDED",
        )
        parser.add_argument("--retry_initial_s", "--retry-initial-s", type=float, default=0.5)
        parser.add_argument("--retry_max_s", "--retry-max-s", type=float, default=8.0)
        parser.add_argument(
            "--tool_workers",
            "--tool-workers",
            type=int,
            default=4,
            help="tool calls run at once per tool kind in one worker",
        )
        parser.add_argument("--tool_timeout_s", "--tool-timeout-s", type=float, default=60.0)
        parser.add_argument(
            "--shard_max_rows",
            "--shard-max-rows",
            type=int,
            default=256,
            help="jobs per output shard; a shard is also written every --shard_max_age_s",
        )
        parser.add_argument("--shard_max_age_s", "--shard-max-age-s", type=float, default=10.0)
        parser.add_argument(
            "--incremental",
            nargs="?",
            const="true",
            default="false",
            choices=("true", "false"),
            help="read only the input files that no earlier run under --output read (new or "
            "changed ones), and skip ids by the output root's index of answered ids instead of "
            "reading every answer shard: a scheduled run over a growing corpus then costs its "
            "new inputs plus the index (docs/deployment.md, 'The incremental model'); "
            "--incremental alone is --incremental=true",
        )
        parser.add_argument(
            "--detach",
            action="store_true",
            help="submit the pipeline and return without waiting (remote runners, flex "
            "templates); the manifest then stays `submitted` and no summary is printed",
        )
        parser.add_argument(
            "--progress",
            choices=("auto", "on", "off"),
            default="auto",
            help="live progress display (auto: on when stderr is a terminal and the runner "
            "is local)",
        )


@dataclass(frozen=True)
class AnnotateConfig:
    """Everything the annotate transforms need, resolved from the options."""

    input: str
    output: str
    run_id: str
    endpoint: ModelEndpoint
    protocol: str = "r1v4"
    tools: tuple[str, ...] = ("code",)
    #: Per-tool settings for `tools.registry.build_tools`: `{tool: {setting: value}}`.
    tool_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_turns: int = 16
    limit: int | None = None
    prompt: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    tool_workers: int = 4
    tool_timeout_s: float = 60.0
    max_pixels: int = 16384
    model_label: str = "agent_vlm"
    shard_max_rows: int = 256
    shard_max_age_s: float = 10.0
    #: Read only new input files; skip ids by the output root's index (`io/incremental.py`).
    incremental: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus a short random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def parse_tools(value: str) -> tuple[str, ...]:
    """`"code, text_search"` -> `("code", "text_search")`; `""` -> no tools at all."""
    return tuple(t.strip() for t in value.split(",") if t.strip())


#: Tools enabled when `--tools` is not given: R1V4's General mode, its released DeepResearch
#: prompt's four, and zoom's fixed tool.
DEFAULT_TOOLS = {
    "r1v4": ("code",),
    # the released DeepResearch prompt: every tool, in its Table 1 order
    "r1v4-release": ("image_search", "text_search", "web_visit", "code"),
    "zoom": ("image_zoom_in_tool",),
}
DEFAULT_SAMPLING = {"max_tokens": 1024, "temperature": 0.0}
#: Setting names that would hold a secret (`api_key_env` names a variable, it holds none).
_SECRET_SETTING = re.compile(r"(?:^|_)(?:api_?key|key|token|secret|password|credentials?)(?:$|_)")


def tool_names(options: PipelineOptions) -> tuple[str, ...]:
    """The enabled tools: `--tools`, else the protocol's own."""
    o = options.view_as(AnnotateOptions)
    return parse_tools(o.tools) if o.tools is not None else DEFAULT_TOOLS[o.protocol]


def tool_settings_from_options(options: PipelineOptions) -> dict[str, dict[str, Any]]:
    """`--tool_config` with the `--tool_option`s on top, checked against the enabled tools.

    The check builds the tools, which only reads their settings (no corpus, index, network
    or key is touched), so an unknown tool or setting, a bad value, or settings for a tool
    that `--tools` does not enable fail here, before a server starts or a worker runs.
    A malformed option is reported by its name, never its value (it might be a mistyped
    secret).
    """
    o = options.view_as(AnnotateOptions)
    settings = _tool_config(o.tool_config) if o.tool_config else {}
    for item in o.tool_option or ():
        tool, setting, value = _tool_option(item)
        settings.setdefault(tool, {})[setting] = value
    for tool, values in settings.items():
        for setting in values:
            if setting != "api_key_env" and _SECRET_SETTING.search(setting):
                raise ValueError(
                    f"tool setting {tool}.{setting}: API keys are read from the environment "
                    "variable that api_key_env names, never from options"
                )
    try:
        build_tools(tool_names(options), **settings)
    except ValueError as e:
        raise ValueError(f"--tool_config/--tool_option: {e}") from None
    return settings


def _tool_config(value: str) -> dict[str, dict[str, Any]]:
    """The object `--tool_config` holds inline, or the one in the file it names."""
    text = value
    if value.lstrip()[:1] not in ("{", "["):  # JSON inline, else a file
        try:
            text = read_bytes(value).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--tool_config: cannot read {value}: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:  # the message says where, never what
        raise ValueError(f"--tool_config is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError('--tool_config must be a JSON object {"tool": {"setting": value}}')
    return {tool: dict(values) for tool, values in data.items()}


def _tool_option(item: str) -> tuple[str, str, Any]:
    """`tool.setting=value` -> (tool, setting, value): the value parsed as JSON if it is."""
    key, equals, raw = item.partition("=")
    tool, dot, setting = key.strip().partition(".")
    if not (equals and dot and tool and setting):
        got = f"got {key.strip()!r}" if equals else "got no '='"  # never echo a value
        raise ValueError(
            f"--tool_option takes TOOL.SETTING=VALUE, e.g. text_search.provider=serper; {got}"
        )
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return tool, setting, value


def endpoint_address(options: PipelineOptions) -> str | None:
    """`--endpoint`, or `--triton_url` as `triton:HOST:PORT`; None when neither is given."""
    o = options.view_as(AnnotateOptions)
    if o.endpoint and o.triton_url:
        raise ValueError("give --endpoint or --triton_url, not both")
    return o.endpoint or (f"triton:{o.triton_url}" if o.triton_url else None)


def config_from_options(
    options: PipelineOptions,
    endpoint: str | None = None,
    *,
    model_label: str | None = None,
    model_budget: ImageBudget | None = None,
    tool_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> AnnotateConfig:
    """Validate the options and build the config.

    `endpoint` (`KIND:URL`, or a bare Triton `host:port`) overrides `--endpoint` (a server
    the command started); `model_label` and `model_budget` are what the server says about
    its model: views get the stated `max_pixels`, which `--max_pixels` may only lower; with
    no stated budget `--max_pixels` is required (no guessing: a model sent views smaller than
    its processor takes is blind to what it was trained to see). `tool_settings` are those
    `tool_settings_from_options` already read and checked (else they are read here).
    """
    o = options.view_as(AnnotateOptions)
    if not o.input or not o.output:
        raise ValueError("--input and --output are required")
    address = endpoint or endpoint_address(options)
    if not address:
        raise ValueError("no model server: pass --endpoint or let the command start one")
    kind, url = parse_endpoint(address)
    for name, value, low in (
        ("max_turns", o.max_turns, 1),
        ("max_in_flight", o.max_in_flight, 1),
        ("max_attempts", o.max_attempts, 1),
        ("tool_workers", o.tool_workers, 1),
        ("shard_max_rows", o.shard_max_rows, 1),
    ):
        if value < low:
            raise ValueError(f"--{name} must be at least {low}, got {value}")
    if o.limit is not None and o.limit < 0:
        raise ValueError(f"--limit must not be negative, got {o.limit}")
    if o.incremental == "true" and o.limit is not None:
        raise ValueError("--incremental reads whole files: it cannot take --limit")
    run_id = o.run_id or new_run_id()
    if not _RUN_ID.match(run_id):
        raise ValueError(f"--run_id {run_id!r}: use letters, digits, '.', '_' and '-'")
    sampling: dict[str, Any] = dict(DEFAULT_SAMPLING)
    if o.max_tokens is not None:
        sampling["max_tokens"] = o.max_tokens
    if o.temperature is not None:
        sampling["temperature"] = o.temperature
    return AnnotateConfig(
        input=normalize(o.input),
        output=normalize(o.output).rstrip("/"),
        run_id=run_id,
        endpoint=ModelEndpoint(
            kind=kind,
            url=url,
            model_name=o.model_name,
            api_key_env=o.api_key_env,
            timeout_s=o.request_timeout_s,
            max_in_flight=o.max_in_flight,
            retry=RetryPolicy(
                max_attempts=o.max_attempts, initial_s=o.retry_initial_s, max_s=o.retry_max_s
            ),
        ),
        protocol=o.protocol,
        tools=tool_names(options),
        tool_settings=(
            {tool: dict(values) for tool, values in tool_settings.items()}
            if tool_settings is not None
            else tool_settings_from_options(options)
        ),
        max_turns=o.max_turns,
        limit=o.limit,
        prompt=o.prompt,
        sampling=sampling,
        tool_workers=o.tool_workers,
        tool_timeout_s=o.tool_timeout_s,
        max_pixels=view_pixels(o.max_pixels, model_budget, address),
        model_label=model_label or o.model_name,
        shard_max_rows=o.shard_max_rows,
        shard_max_age_s=o.shard_max_age_s,
        incremental=o.incremental == "true",
    )


def view_pixels(asked: int | None, budget: ImageBudget | None, address: str) -> int:
    """The views' pixel budget: the model's stated `max_pixels`, or `--max_pixels` below it."""
    if asked is not None and asked < 1:
        raise ValueError(f"--max_pixels must be at least 1, got {asked}")
    if budget is None:
        if asked is None:
            raise ValueError(
                f"{address} states no image budget (its processor's max_pixels): pass "
                "--max_pixels with the model's own, e.g. 12845056 for a Qwen2.5-VL processor"
            )
        return asked
    if asked is not None and asked > budget.max_pixels:
        raise ValueError(
            f"--max_pixels {asked} is above the model's budget ({budget.max_pixels} pixels, "
            f"stated by {address}): it can only lower it"
        )
    return asked or budget.max_pixels


def with_default_runner(argv: Sequence[str]) -> list[str]:
    """`argv` plus `--runner FnApiRunner` unless a runner was given."""
    args = list(argv)
    if any(a == "--runner" or a.startswith("--runner=") for a in args):
        return args
    return [*args, f"--runner={DEFAULT_RUNNER}"]


def is_local_runner(options: PipelineOptions) -> bool:
    """True for runners that execute inside this process (progress display, local server)."""
    runner = (options.view_as(StandardOptions).runner or DEFAULT_RUNNER).lower()
    return any(name in runner for name in ("fnapirunner", "directrunner"))
