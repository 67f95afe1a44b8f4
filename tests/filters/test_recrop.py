"""The `recrop` filter: a call that repeats an earlier call's arguments or output image."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from pipeline.helpers import answered, call, observe, started, stored

from beam_pipelines.filters import NoRepeatedCrop


def test_recrop_filter(tmp_path: Path) -> None:
    crop = stored(tmp_path, Image.new("RGB", (8, 8), (1, 2, 3)), "crop")
    ok = answered(observe(call(started(tmp_path), "save_image(image)"), crop))
    assert NoRepeatedCrop().check(ok) is None
    twice = observe(call(ok_prefix := observe(call(started(tmp_path), "a"), crop), "b"), crop)
    assert NoRepeatedCrop().check(answered(twice)) == "step 2 produced the same image as step 1"
    same_call = observe(call(ok_prefix, "a"), stored(tmp_path, Image.new("RGB", (9, 9)), "o"))
    assert NoRepeatedCrop().check(answered(same_call)) == "step 2 repeats the call of step 1"
