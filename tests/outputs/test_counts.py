"""RunCounts: a run's counts from its rows, answer rows once per id, every failure row."""

from pathlib import Path

from beam_pipelines.outputs.counts import RunCounts, count_run
from beam_pipelines.outputs.layout import OutputLayout

from .test_readers import answer, write_answers


def test_answers_count_once_per_id_and_every_failure_counts() -> None:
    counts = RunCounts()
    assert counts.add_answer(answer("a", correct=True, prompt_tokens=10, tool_calls=2))
    assert not counts.add_answer(answer("a", correct=True, prompt_tokens=10, tool_calls=2))
    counts.add_answer(answer("b", correct=False, completion_tokens=4))
    counts.add_answer(answer("c", status="max_turns"))
    for error_class in ("model", "invalid_json", "model", None):
        counts.add_failure({"error_class": error_class})
    assert (counts.answered, counts.max_turns, counts.failed, counts.finished) == (2, 1, 4, 7)
    assert (counts.graded, counts.correct, counts.accuracy) == (2, 1, 0.5)
    assert (counts.prompt_tokens, counts.completion_tokens, counts.tool_calls) == (12, 6, 2)
    assert counts.duplicate_rows == 1
    recorded = counts.to_dict()
    assert list(recorded["failures_by_class"]) == ["model", "invalid_json", "unknown"]
    assert recorded["finished"] == 7 and recorded["accuracy"] == 0.5


def test_a_run_is_counted_from_its_shards(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path), "r")
    write_answers(Path(layout.answers_dir) / "part-1.parquet", [answer("a"), answer("b")])
    write_answers(Path(layout.answers_dir) / "part-2.parquet", [answer("b")])
    failures = Path(layout.failures_dir) / "part-1.jsonl"
    failures.parent.mkdir(parents=True)
    failures.write_text('{"id": "c", "error_class": "image_missing"}\n')
    counts = count_run(layout)
    assert (counts.answered, counts.failed, counts.duplicate_rows) == (2, 1, 1)
    assert count_run(OutputLayout(str(tmp_path), "empty")).finished == 0
