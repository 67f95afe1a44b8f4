"""The `tool_error` filter: a failed tool call rejects the trajectory."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from pipeline.helpers import answered, call, observe, started, stored

from beam_pipelines.filters import NoToolError


def test_tool_error_filter(tmp_path: Path) -> None:
    crop = stored(tmp_path, Image.new("RGB", (8, 8), (1, 2, 3)), "crop")
    ok = answered(observe(call(started(tmp_path), "save_image(image)"), crop))
    assert NoToolError().check(ok) is None
    failed = answered(observe(call(started(tmp_path), "1/0"), error="ZeroDivisionError"))
    assert NoToolError().check(failed) == "step 1: code failed: ZeroDivisionError"
