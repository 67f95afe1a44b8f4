"""The ``code`` tool: run the model's Python on the full-resolution image, in a sandbox.

The code sees ``image`` (the original, RGB PIL image), ``images`` (every original of the job,
in the order the model was shown them: ``images[0]`` is ``image``, and a multi-image job's
others follow), the images earlier calls produced as
``sub_image_1``, ``sub_image_2``, ... (and the dict ``sub_images``), and ``save_image(img)``,
which returns an image to the model; any image file the code saves in its working directory
comes back too, in saving order, as PNG. The result text is what the code printed; when the
code fails, the error holds its output, the traceback and the reason (time, memory, ...).

How the sandbox protects the host, and its limits, are described in ``tools.sandbox``.
"""

from __future__ import annotations

from typing import Any

from tools.base import Tool, ToolArgumentsError, ToolContext, ToolExecutionError, ToolResult
from tools.sandbox import Sandbox, SandboxConfig, SandboxOutcome


class CodeTool(Tool):
    """Runs model-written Python in ``tools.sandbox.Sandbox`` (bubblewrap or fallback).

    Settings are ``SandboxLimits`` and ``SandboxConfig`` fields given flat, e.g.
    ``CodeTool(wall_s=5, pool_size=4, require_strong=True)``. Nothing starts until the first
    call (or ``warm()``); the tool pickles without its pool and rebuilds it when next used.
    """

    name = "code"
    title = "Code execution"
    # FROZEN (docs/architecture.md): the tiny model was trained on this text.
    description = (
        "run Python on the full-resolution image. `image` is the original image as a PIL "
        "image, earlier sub-images are `sub_image_1`, `sub_image_2`, ...; call "
        "`save_image(img)` to see an image."
    )
    kind = "cpu"
    parameters: dict[str, Any] = {  # noqa: RUF012 - a class-level constant, never mutated
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python code to run"}},
        "required": ["code"],
        "additionalProperties": False,
    }

    def __init__(self, *, sandbox: Sandbox | None = None, **settings: Any) -> None:
        if sandbox is not None and settings:
            raise TypeError("give either a sandbox or sandbox settings, not both")
        self._config = sandbox.config if sandbox else SandboxConfig.from_settings(**settings)
        self._sandbox = sandbox

    def description_for(self, images: int) -> str:
        if images == 1:
            return self.description
        return (
            f"run Python on the full-resolution images. `images` is the list of the {images} "
            "images as PIL images, in the order they were shown (`image` is `images[0]`), "
            "earlier sub-images are `sub_image_1`, `sub_image_2`, ...; call `save_image(img)` "
            "to see an image."
        )

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self._config)
        return self._sandbox

    @property
    def protection(self) -> str:
        """``"bubblewrap"`` or ``"fallback"`` (probes the machine on first use)."""
        return self.sandbox.protection

    def warm(self) -> None:
        """Start the sandbox pool now (e.g. in a DoFn's setup) instead of at the first call."""
        self.sandbox.warm()

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        code = arguments["code"]
        if not code.strip():
            return ToolResult.failure(ToolArgumentsError("The code is empty: write some Python."))
        outcome = self.sandbox.run(
            code,
            context.image,
            context.sub_images,
            more_images=context.more_images,
            wall_s=context.timeout_s,
            max_images=context.max_images,
        )
        return to_result(outcome)

    def __getstate__(self) -> dict[str, Any]:
        # Processes and threads do not pickle; a copy builds its own pool when first used.
        return {"_config": self._config, "_sandbox": None}


def to_result(outcome: SandboxOutcome) -> ToolResult:
    """The tool result of a sandbox run: stdout (plus notes), or an error for the model."""
    notes = "\n".join(f"[{note}]" for note in outcome.notes)
    if outcome.ok:
        text = "\n".join(part for part in (outcome.stdout.rstrip("\n"), notes) if part)
        return ToolResult(text=text, images=outcome.images)
    output = "\n".join(p for p in (outcome.stdout.rstrip("\n"), outcome.stderr.rstrip("\n")) if p)
    message = "\n".join(part for part in (output, outcome.reason or "", notes) if part)
    return ToolResult.failure(ToolExecutionError(message), text=output)
