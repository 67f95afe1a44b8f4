"""The SFT export: OpenAI-style messages with image parts plus an `images` list, loadable by
pyarrow's JSON reader and by Hugging Face `datasets`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.json as pj
from PIL import Image

from beam_pipelines.sft_export import sft_record

from .helpers import answered, call, observe, started, stored


def trajectories(tmp_path: Path) -> list:
    crop = stored(tmp_path, Image.new("RGB", (8, 8), (9, 9, 9)), "crop")
    with_tool = answered(observe(call(started(tmp_path, "a#0"), "save_image(image)"), crop))
    meta = {"source_id": "a", "sample": 0, "seed": 1}
    with_tool = dataclasses.replace(with_tool, job=dataclasses.replace(with_tool.job, meta=meta))
    return [with_tool, answered(started(tmp_path, "b"))]


def test_rows_have_uniform_parts_and_images_in_order(tmp_path: Path) -> None:
    first, second = (sft_record(t) for t in trajectories(tmp_path))
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    for message in first["messages"]:
        assert isinstance(message["content"], list)
        assert {p["type"] for p in message["content"]} <= {"text", "image_url"}
    assert first["messages"][2]["content"][0]["text"].startswith("<think>look closer</think>")
    # The job's view, then the crop's view: the image parts, in order.
    assert len(first["images"]) == 2 and first["images"][1].endswith("crop.png")
    assert first["answer"] == "B" and first["source_id"] == "a" and first["sample"] == 0
    assert second["source_id"] == "b" and second["sample"] == 0 and len(second["images"]) == 1


def test_the_file_loads_with_pyarrow_and_datasets(tmp_path: Path) -> None:
    rows = [sft_record(t) for t in trajectories(tmp_path)]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    table = pj.read_json(path)
    assert table.num_rows == 2
    assert table.column("images").to_pylist() == [r["images"] for r in rows]

    import datasets

    loaded = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.num_rows == 2
    message = loaded[0]["messages"][1]
    assert message["role"] == "user"
    assert message["content"][0]["image_url"]["url"] == rows[0]["images"][0]
    assert message["content"][1]["text"].startswith("Which?")
