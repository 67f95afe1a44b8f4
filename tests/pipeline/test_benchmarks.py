"""Benchmark loaders on small fixtures in each native format, and scorers against results
computed by hand."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from beam_pipelines.benchmarks import Prediction, get_benchmark
from beam_pipelines.benchmarks.judge import ChoiceJudge
from beam_pipelines.benchmarks.mme_realworld import extract_letter
from beam_pipelines.benchmarks.vstar import shuffled
from beam_pipelines.model_client.base import Completion, ModelEndpoint
from beam_pipelines.model_client.channel import ModelChannel

from .helpers import png


def write_tsv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- V* ----------------------------------------------------------------------------------------


def vstar_folder(root: Path) -> Path:
    """Three questions: two attribute (4 options), one spatial (2 options)."""
    items = {
        "direct_attributes/sa_1": (
            "What is the color of the cup?",
            ["white", "red", "blue", "black"],
        ),
        "direct_attributes/sa_2": (
            "What is the material of the bag?",
            ["leather", "cloth", "plastic", "paper"],
        ),
        "relative_position/sa_3": (
            "Is the dog on the left or right of the cat?",
            ["left", "right"],
        ),
    }
    for name, (question, options) in items.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.jpg").write_bytes(png())
        record = {
            "target_object": ["x"],
            "bbox": [[1, 2, 3, 4]],
            "question": question,
            "options": options,
        }
        (root / f"{name}.json").write_text(json.dumps(record))
    return root


def test_vstar_loader_shuffles_with_a_seed_and_keeps_the_answer(tmp_path: Path) -> None:
    root = vstar_folder(tmp_path / "vstar_bench")
    bench = get_benchmark("vstar")
    jobs = bench.load(str(root), str(tmp_path / "images"), seed=3)
    assert [j["id"] for j in jobs] == [
        "vstar/direct_attributes/sa_1",
        "vstar/direct_attributes/sa_2",
        "vstar/relative_position/sa_3",
    ]
    first = jobs[0]
    # The correct option (options[0] in the file) is where the answer letter says.
    assert first["options"]["ABCD".index(first["answer"])] == "white"
    assert sorted(first["options"]) == sorted(["white", "red", "blue", "black"])
    assert first["image"].endswith("sa_1.jpg")
    assert [j["meta"]["category"] for j in jobs] == ["attribute", "attribute", "spatial"]
    # Deterministic per seed; over many seeds the answer is not always A.
    assert bench.load(str(root), str(tmp_path / "images"), seed=3) == jobs
    letters = {shuffled(["a", "b", "c", "d"], seed, "q")[1] for seed in range(40)}
    assert letters == {"A", "B", "C", "D"}


def test_vstar_from_vlmevalkits_tsv_keeps_its_fixed_option_order(tmp_path: Path) -> None:
    image = b64(png(20, 20, (9, 9, 9)))
    rows = [
        {"index": "0", "image": image, "question": "Colour of the cup?", "A": "red",
         "B": "white", "C": "blue", "D": "black", "answer": "B", "category": "direct_attributes"},
        {"index": "1", "image": "0", "question": "Is the dog left of the cat?", "A": "yes",
         "B": "no", "C": "", "D": "", "answer": "A", "category": "relative_position"},
    ]  # fmt: skip
    tsv = write_tsv(tmp_path / "VStarBench.tsv", rows)
    bench = get_benchmark("vstar")
    jobs = bench.load(str(tsv), str(tmp_path / "img"), seed=3)
    assert [j["options"] for j in jobs] == [["red", "white", "blue", "black"], ["yes", "no"]]
    assert [j["answer"] for j in jobs] == ["B", "A"]
    assert bench.load(str(tsv), str(tmp_path / "img"), seed=4) == jobs  # no seed involved
    assert jobs[1]["image"] == jobs[0]["image"]
    scores = bench.score([Prediction(jobs[0], "B"), Prediction(jobs[1], "no")])
    assert scores == {"attribute": 1.0, "spatial": 0.0, "overall": 0.5}


def test_vstar_scores_letters_with_the_category_breakdown(tmp_path: Path) -> None:
    jobs = get_benchmark("vstar").load(str(vstar_folder(tmp_path / "v")), str(tmp_path), 0)
    right = [j["answer"] for j in jobs]
    # attribute: 1 of 2 right (the second answers with another option's text); spatial: right
    # by naming the option's text.
    wrong_text = next(o for o in jobs[1]["options"] if o != "leather")
    spatial_text = jobs[2]["options"]["AB".index(right[2])]
    predictions = [
        Prediction(jobs[0], f"({right[0]})"),
        Prediction(jobs[1], wrong_text),
        Prediction(jobs[2], spatial_text),
    ]
    scores = get_benchmark("vstar").score(predictions)
    assert scores == {"attribute": 0.5, "spatial": 1.0, "overall": pytest.approx(2 / 3)}
    # No answer (a failure row) is a wrong answer.
    none = get_benchmark("vstar").score([Prediction(j, None) for j in jobs])
    assert none == {"attribute": 0.0, "spatial": 0.0, "overall": 0.0}


# -- HR-Bench ----------------------------------------------------------------------------------


def hrbench_rows(image: bytes) -> list[dict[str, str]]:
    """Two cycles of two questions (one FSP, one FCP); later rows refer to row 0's image."""
    rows = []
    for index, (cycle, category, answer) in enumerate(
        [("c0", "FSP", "A"), ("c0", "FCP", "B"), ("c1", "FSP", "C"), ("c1", "FCP", "D")]
    ):
        rows.append(
            {
                "index": str(index),
                "image": b64(image) if index == 0 else "0",
                "question": f"question {index}?",
                "A": "alpha",
                "B": "beta",
                "C": "gamma",
                "D": "delta",
                "answer": answer,
                "category": category,
                "cycle_category": cycle,
            }
        )
    return rows


def test_hrbench_loader_decodes_images_and_resolves_references(tmp_path: Path) -> None:
    tsv = write_tsv(tmp_path / "hr_bench_4k.tsv", hrbench_rows(png(32, 24)))
    jobs = get_benchmark("hrbench4k").load(str(tsv), str(tmp_path / "images"), 0)
    assert [j["id"] for j in jobs] == [f"hrbench4k-{i}" for i in range(4)]
    assert {j["image"] for j in jobs} == {str(tmp_path / "images" / "0.png")}
    assert Path(jobs[0]["image"]).read_bytes() == png(32, 24)
    assert jobs[1]["options"] == ["alpha", "beta", "gamma", "delta"] and jobs[1]["answer"] == "B"
    assert jobs[2]["meta"] == {
        "benchmark": "hrbench4k",
        "index": "2",
        "category": "FSP",
        "cycle_category": "c1",
    }


def test_hrbench_averages_fsp_and_fcp_over_cycles(tmp_path: Path) -> None:
    rows = hrbench_rows(png())
    # Three cycles: c0 has 2 FSP + 1 FCP, c1 has 1 FSP + 1 FCP.
    rows.append({**rows[0], "index": "4", "image": "0", "answer": "B", "cycle_category": "c0"})
    tsv = write_tsv(tmp_path / "hr.tsv", rows)
    jobs = get_benchmark("hrbench8k").load(str(tsv), str(tmp_path / "img"), 0)
    answers = {
        "hrbench8k-0": "A",  # c0 FSP right
        "hrbench8k-1": "beta",  # c0 FCP right (the option's text)
        "hrbench8k-2": "D",  # c1 FSP wrong
        "hrbench8k-3": "D",  # c1 FCP right
        "hrbench8k-4": "A",  # c0 FSP wrong
    }
    scores = get_benchmark("hrbench8k").score([Prediction(j, answers[j["id"]]) for j in jobs])
    # By hand: c0: FSP 1/2, FCP 1/1, all 2/3; c1: FSP 0/1, FCP 1/1, all 1/2.
    assert scores == {
        "FCP": pytest.approx(1.0),
        "FSP": pytest.approx((0.5 + 0.0) / 2),
        "overall": pytest.approx((2 / 3 + 1 / 2) / 2),
    }


class LetterClient:
    """Answers every request with `reply`, recording the prompts (a pure-logic fake)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    def send(self, messages: Any, sampling: Any, timeout_s: float, done: Any) -> None:
        self.prompts.append(messages[-1]["content"])
        done(Completion(self.reply, "stop", {"prompt_tokens": 1, "completion_tokens": 1}), None)

    def describe(self, timeout_s: float) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        return None


def test_hrbench_asks_the_judge_only_what_exact_matching_cannot_read(tmp_path: Path) -> None:
    tsv = write_tsv(tmp_path / "hr.tsv", hrbench_rows(png()))
    client = LetterClient(" b.")
    judge = ChoiceJudge(ModelChannel(ModelEndpoint("judge"), client))
    jobs = get_benchmark("hrbench4k", judge).load(str(tsv), str(tmp_path / "img"), 0)
    answers = ["A", "I would say the second one, beta-ish", None, "D"]
    scores = get_benchmark("hrbench4k", judge).score(
        [Prediction(j, a) for j, a in zip(jobs, answers, strict=True)]
    )
    assert len(client.prompts) == 1  # "A" and "D" matched exactly; no answer asks nothing
    assert "Answer: I would say the second one" in client.prompts[0]
    assert "B. beta" in client.prompts[0]
    # c0: FSP right, FCP right only with the judge; c1: FSP unanswered, FCP right.
    assert scores["overall"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["overall (exact)"] == pytest.approx((0.5 + 0.5) / 2)
    assert scores["FCP"] == 1.0 and scores["FCP (exact)"] == 0.5


def test_a_judge_that_names_no_option_reads_nothing() -> None:
    for reply in ("Z", "none of them", ""):
        judge = ChoiceJudge(ModelChannel(ModelEndpoint("judge"), LetterClient(reply)))
        assert judge.choose("q?", ["yes", "no"], "maybe") is None


# -- MME-RealWorld -----------------------------------------------------------------------------


def test_mme_realworld_letter_extraction_follows_vlmevalkit() -> None:
    """As VLMEvalKit e8e78f0 reads the text inside <answer>: stripped and upper-cased first."""
    assert extract_letter("B") == "B"
    assert extract_letter(" (c) ") == "C"  # upper-cased, then the first A-E capital
    assert extract_letter("d") == "D"
    assert extract_letter("The answer is C") == "E"  # prefixes no longer match: THE -> E
    assert extract_letter("xyz") == ""
    long_text = "it is probably some kind of small metal thing in the hand of one tourist"
    assert extract_letter(long_text) == "B"  # the first A-E of the upper-cased text
    assert extract_letter("") == "A"  # an empty answer matches "(A)" first, as there
    assert extract_letter(None) == ""


def test_mme_realworld_loader_and_perception_reasoning_scores(tmp_path: Path) -> None:
    image = png(20, 20, (1, 2, 3))
    rows = []
    spec = [
        ("Perception/Monitoring", "A", "A"),
        ("Perception/Monitoring", "B", "b"),
        ("Perception/OCR with Complex Context", "C", "D"),
        ("Reasoning/Autonomous_Driving", "E", "(E) none"),
        (
            "Reasoning/Autonomous_Driving",
            "A",
            "I cannot tell at all from this image what it is really",
        ),
    ]
    for index, (category, answer, _) in enumerate(spec):
        rows.append(
            {
                "index": str(index),
                "image": b64(image) if index == 0 else "0",
                "question": f"q{index}",
                "multi-choice options": "['(A) a', '(B) b', '(C) c', '(D) d', '(E) e']",
                "answer": answer,
                "category": category,
                "l2-category": "vehicle/attribute/color",
            }
        )
    tsv = write_tsv(tmp_path / "MME_RealWorld_Lite.tsv", rows)
    bench = get_benchmark("mme-realworld")
    jobs = bench.load(str(tsv), str(tmp_path / "img"), 0)
    assert jobs[0]["options"] == ["a", "b", "c", "d", "e"]  # from "multi-choice options"
    assert jobs[3]["meta"]["category"] == "Reasoning/Autonomous_Driving"
    scores = bench.score([Prediction(j, s[2]) for j, s in zip(jobs, spec, strict=True)])
    # Perception 2/3, Reasoning 1/2, overall 3/5.
    assert scores == {
        "perception": pytest.approx(2 / 3),
        "reasoning": pytest.approx(1 / 2),
        "overall": pytest.approx(3 / 5),
        "Perception/Monitoring": 1.0,
        "Perception/OCR with Complex Context": 0.0,
        "Reasoning/Autonomous_Driving": 0.5,
    }


def test_mme_realworld_reads_option_columns_when_present(tmp_path: Path) -> None:
    row = {
        "index": "7",
        "image": b64(png()),
        "question": "q",
        "A": "one",
        "B": "two",
        "C": "three",
        "D": "four",
        "E": "five",
        "answer": "C",
        "category": "Perception/Remote Sensing",
        "l2-category": "x",
    }
    jobs = get_benchmark("mme-realworld").load(
        str(write_tsv(tmp_path / "m.tsv", [row])), str(tmp_path), 0
    )
    assert jobs[0]["options"] == ["one", "two", "three", "four", "five"]


def test_a_dangling_image_reference_is_an_error(tmp_path: Path) -> None:
    rows = hrbench_rows(png())[1:]  # row 0, which holds the image, is missing
    tsv = write_tsv(tmp_path / "hr.tsv", rows)
    with pytest.raises(ValueError, match="refers to row '0'"):
        get_benchmark("hrbench4k").load(str(tsv), str(tmp_path / "img"), 0)


# -- JSONL -------------------------------------------------------------------------------------


def test_jsonl_benchmark_resolves_relative_images_and_scores_by_category(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    lines = [
        {
            "id": "1",
            "image": "a.png",
            "question": "q",
            "options": ["x", "y"],
            "answer": "B",
            "meta": {"category": "k1"},
        },
        {
            "id": "2",
            "image": "a.png",
            "question": "q",
            "answer": "Paris",
            "meta": {"category": "k2"},
        },
        {"id": "3", "image": "a.png", "question": "q", "answer": "4", "meta": {"category": "k2"}},
    ]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    bench = get_benchmark("jsonl")
    jobs = bench.load(str(path), str(tmp_path / "img"), 0)
    assert jobs[0]["image"] == str(tmp_path / "a.png")
    scores = bench.score(
        [Prediction(jobs[0], "y"), Prediction(jobs[1], " paris. "), Prediction(jobs[2], "5")]
    )
    assert scores == {"k1": 1.0, "k2": 0.5, "overall": pytest.approx(2 / 3)}


def test_unknown_benchmark() -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("mmmu")
