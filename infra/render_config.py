#!/usr/bin/env python3
"""Fill a Triton model-config template: `${name}` placeholders from values, nothing else.

In the spirit of TensorRT-LLM's `triton_backend` `fill_template.py`, and stricter: a value
whose key names no placeholder of the template is refused (a typo must fail the deployment,
not silently leave the default in place), and so is a placeholder left without a value. Values
are scalars (strings, numbers, booleans) and must not contain quotes, backslashes or control
characters, so a value can never break out of the pbtxt string it is written into.

    python infra/render_config.py infra/triton/templates/skywork_r1v4_trtllm.pbtxt \\
        --values infra/triton/values/skywork_r1v4_trtllm/h100x1-bf16.json \\
        --set checkpoint=/models/skywork-r1v4 \\
        -o triton_repo/agent_vlm/configs/skywork_r1v4_trtllm.pbtxt

Values files are JSON objects; later files and `--set KEY=VALUE` override earlier ones.
`--check` also parses the result as a Triton `ModelConfig` (needs `tritonclient`). Only the
standard library is needed otherwise, so the Triton container's entrypoint can run it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FORBIDDEN = re.compile(r'["\\\x00-\x1f\x7f]')


class RenderError(ValueError):
    """A template, values file or value that cannot be rendered; the message says why."""


def placeholders(template: str) -> set[str]:
    """The placeholder names of `template`; a `$` that starts no `${name}` is an error."""
    stray = template.count("$") - len(PLACEHOLDER.findall(template))
    if stray:
        raise RenderError(f"template has {stray} '$' that start no ${{name}} placeholder")
    return set(PLACEHOLDER.findall(template))


def format_value(key: str, value: object) -> str:
    """A value as it is written into the template (booleans as `true`/`false`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if not isinstance(value, str):
        raise RenderError(f"value of {key!r} must be a string, number or boolean, got {value!r}")
    if _FORBIDDEN.search(value):
        raise RenderError(
            f"value of {key!r} must not contain quotes, backslashes or control characters"
        )
    return value


def render(template: str, values: Mapping[str, object]) -> str:
    """`template` with every placeholder replaced; unknown keys and missing values raise."""
    names = placeholders(template)
    unknown = sorted(set(values) - names)
    if unknown:
        raise RenderError(f"unknown keys {unknown}; the template's placeholders: {sorted(names)}")
    missing = sorted(names - set(values))
    if missing:
        raise RenderError(f"placeholders without a value: {missing}")
    formatted = {key: format_value(key, value) for key, value in values.items()}
    return PLACEHOLDER.sub(lambda match: formatted[match.group(1)], template)


def load_values(files: Iterable[Path | str], assignments: Iterable[str] = ()) -> dict[str, object]:
    """Merge JSON values files in order, then `KEY=VALUE` assignments (values as strings)."""
    values: dict[str, object] = {}
    for file in files:
        try:
            data = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RenderError(f"cannot read values file {file}: {exc}") from exc
        if not isinstance(data, dict):
            raise RenderError(f"values file {file} must hold a JSON object")
        values.update(data)
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not PLACEHOLDER.fullmatch("${" + key + "}"):
            raise RenderError(
                f"--set takes KEY=VALUE with KEY a placeholder name, got {assignment!r}"
            )
        values[key] = value
    return values


def check_model_config(text: str) -> None:
    """Parse `text` as a Triton `ModelConfig` (protobuf text format); raise on failure."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise RenderError(f"--check needs tritonclient[grpc] installed: {exc}") from exc
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise RenderError(f"the rendered config is not a valid Triton ModelConfig: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("--values", type=Path, action="append", default=[], metavar="FILE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets")
    parser.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    parser.add_argument("--check", action="store_true", help="parse as a Triton ModelConfig")
    args = parser.parse_args(argv)
    try:
        text = render(
            args.template.read_text(encoding="utf-8"), load_values(args.values, args.sets)
        )
        if args.check:
            check_model_config(text)
    except (RenderError, OSError) as exc:
        print(f"render_config: {exc}", file=sys.stderr)
        return 2
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
