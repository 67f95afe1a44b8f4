"""Incremental runs (`--incremental`, `io/incremental.py`): each run reads only the input files
no earlier run read, skips ids by the output root's done index (never reading answer shards),
and marks its files read only when it ended without failures a rerun may fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st

from beam_pipelines import annotate
from beam_pipelines.annotate import AnnotateResult
from beam_pipelines.io.incremental import _SortedIds

from .helpers import png
from .runs import FAST, all_answers, run_rows


def _day(folder: Path, name: str, ids: list[str], image: Path) -> Path:
    path = folder / f"{name}.jsonl"
    lines = [json.dumps({"id": i, "image": str(image), "question": f"What is {i}?"}) for i in ids]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _run(tmp_path: Path, run_id: str, *extra: str) -> AnnotateResult:
    return annotate.run(
        [
            f"--input={tmp_path / 'in'}/*.jsonl",
            f"--output={tmp_path / 'out'}",
            "--max_pixels=16384",
            "--tools=",
            "--incremental",
            f"--run_id={run_id}",
            *FAST,
            *extra,
        ]
    )


def _manifest(result: AnnotateResult) -> dict[str, Any]:
    return json.loads(Path(result.layout.manifest).read_text())


def test_each_run_reads_only_new_files_and_skips_ids_by_the_index(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    image = tmp_path / "image.png"
    image.write_bytes(png())
    scripted = "--endpoint=scripted:call"
    _day(tmp_path / "in", "day-0", ["a", "b", "c"], image)
    first = _run(tmp_path, "r1", scripted)
    assert sorted(r["id"] for r in run_rows(first)[0]) == ["a", "b", "c"]
    assert _manifest(first)["incremental"]["new_files"] == 1
    assert Path(first.layout.inputs_read).is_file()

    # A new day, with an id already answered: only day-1 is read, `a` is skipped by the index.
    _day(tmp_path / "in", "day-1", ["d", "a", "e"], image)
    second = _run(tmp_path, "r2", scripted)
    assert sorted(r["id"] for r in run_rows(second)[0]) == ["d", "e"]
    assert second.metrics["jobs_skipped_done"] == 1
    plan = _manifest(second)["incremental"]
    assert (plan["input_files"], plan["new_files"], plan["index_ids"]) == (2, 1, 3)

    # Nothing new: no job runs.
    third = _run(tmp_path, "r3", scripted)
    assert third.state == "DONE" and third.summary.counts.finished == 0
    assert _manifest(third)["incremental"]["new_files"] == 0

    # A changed file is read again; its answered ids are skipped.
    _day(tmp_path / "in", "day-0", ["a", "b", "c", "f"], image)
    fourth = _run(tmp_path, "r4", scripted)
    assert [r["id"] for r in run_rows(fourth)[0]] == ["f"]
    assert fourth.metrics["jobs_skipped_done"] == 3
    ids = [r["id"] for r in all_answers(tmp_path / "out")]
    assert sorted(ids) == ["a", "b", "c", "d", "e", "f"]  # no job answered twice


def test_a_run_whose_server_was_too_slow_leaves_its_files_to_the_next(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    image = tmp_path / "image.png"
    image.write_bytes(png())
    _day(tmp_path / "in", "day-0", ["a", "b"], image)
    slow = ("--endpoint=scripted:call,delay_s=5", "--request_timeout_s=0.2", "--max_attempts=1")
    down = _run(tmp_path, "down", *slow)
    answers, failures = run_rows(down)
    assert answers == [] and {f["error_class"] for f in failures} == {"model_deadline"}
    assert not Path(down.layout.inputs_read).exists()

    back = _run(tmp_path, "back", "--endpoint=scripted:call")
    assert sorted(r["id"] for r in run_rows(back)[0]) == ["a", "b"]
    assert Path(back.layout.inputs_read).is_file()


IDS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)  # UTF-8 only


@given(st.lists(IDS, unique=True), IDS)
def test_the_index_sorted_by_arrow_is_searched_by_python_comparison(
    ids: list[str], probe: str
) -> None:
    array = pa.array(ids, pa.string())
    index = _SortedIds(array.take(pc.sort_indices(array)))
    assert (probe in index) == (probe in ids)
    assert all(i in index for i in ids)
