"""Benchmark loaders on small fixtures in each native format, and scorers against results
computed by hand."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from beam_pipelines.agent.records import Job
from beam_pipelines.benchmarks import Prediction, get_benchmark
from beam_pipelines.benchmarks.judge import ChoiceJudge, read_verdict
from beam_pipelines.benchmarks.mme_realworld import extract_letter
from beam_pipelines.benchmarks.search_qa import (
    best_f1,
    exact_match,
    f1_score,
    normalize_answer,
    reference_answers,
)
from beam_pipelines.benchmarks.vstar import shuffled
from beam_pipelines.model_client.base import CallError, Completion, ModelEndpoint
from beam_pipelines.model_client.channel import ModelChannel

from .helpers import jpeg, png


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
    judge = ModelChannel(ModelEndpoint("judge"), client)
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


# -- MMSearch and FVQA: answer matching as the references compute it -------------------------


def test_answers_are_normalised_as_squad_and_the_references_do() -> None:
    """Cases checked against MMSearch's `normalize_answer` and MMSearch-R1's (the same code)."""
    assert normalize_answer("The Eiffel Tower.") == "eiffel tower"
    assert normalize_answer("THE\tBeatles!!") == "beatles"
    assert normalize_answer("  an   apple  ") == "apple"
    assert normalize_answer("A.I.") == "ai"  # punctuation goes first: no article left
    assert normalize_answer("A") == ""
    assert normalize_answer("theatre") == "theatre"  # articles are whole words
    assert normalize_answer("1,000 km") == "1000 km"
    assert normalize_answer("3.14") == "314"  # decimal points too
    assert normalize_answer("Rock-and-roll") == "rockandroll"
    assert normalize_answer("U.S.A") == "usa"
    assert normalize_answer("l’Étoile") == "l’étoile"  # only ASCII punctuation goes


def test_f1_follows_mmsearchs_token_f1() -> None:
    assert f1_score("Eiffel Tower", "the Eiffel Tower") == 1.0
    # 1 token in common, precision 1/3, recall 1/2.
    assert f1_score("Tower in Paris", "Eiffel Tower") == pytest.approx(0.4)
    assert f1_score("paris paris", "paris") == pytest.approx(2 / 3)  # a repeat counts once
    assert f1_score("the", "Paris") == 0.0  # nothing left of the answer
    assert f1_score("a", "the") == 1.0  # both empty: they agree
    assert f1_score(None, "Paris") == 0.0
    assert f1_score("Grok 2", "Grok-2") == 0.0  # "grok2" is one token
    assert f1_score("1,000", "1000") == 1.0
    # lmms-eval's end-to-end score: the best over gt_answer and its alternatives.
    assert best_f1("Grok 2", ["Grok-2", "Grok 2"]) == 1.0
    assert best_f1("the Tower", ["Eiffel Tower", "Tower"]) == 1.0


def test_exact_match_against_ground_truth_and_candidates() -> None:
    """Cases checked against MMSearch-R1's `em_check`."""
    assert exact_match("NamUs", ["namus"])
    assert exact_match("Spain.", ["Kingdom of Spain", "Spain"])
    assert exact_match("the U.S.", ["US"])
    assert not exact_match("Kingdom of Spain", ["Spain"])  # exact, not contained
    assert not exact_match("2024-09-29", ["2024-09-29 to 2024-10-04"])
    assert exact_match("", ["the"])  # both normalise to nothing, as there
    assert not exact_match(None, ["the"])  # no answer row


def test_reference_answers_are_listed_as_mmsearch_r1s_reward_manager_lists_them() -> None:
    flag = "\U0001f1ea\U0001f1f8"
    candidates = json.dumps(["Kingdom of Spain", "ESP", flag])
    assert reference_answers("Spain", candidates, "r") == ["Spain", "Kingdom of Spain", "ESP", flag]
    assert reference_answers("namus", "[]", "r") == ["namus"]
    assert reference_answers(["x", "y"], ["z", 3, None], "r") == ["x", "y", "z"]  # strings only
    with pytest.raises(ValueError, match="r: candidate_answers is not a JSON list"):
        reference_answers("x", "['single quotes']", "r")
    with pytest.raises(ValueError, match="r: no reference answer"):
        reference_answers(None, None, "r")


def test_the_judges_verdict_is_read_as_r1v4s_judge_script_reads_it() -> None:
    """`post_process` of `o3-mini-judge.py`, then `"yes" in correct`: quirks included."""
    assert read_verdict("reasoning: the same city.\ncorrect: yes")
    assert read_verdict("Correct: yes")  # the field name in any case
    assert read_verdict("**correct:** yes")
    assert read_verdict("correct:\nyes")  # the space after the colon may be a newline
    assert not read_verdict("correct: Yes")  # the verdict is matched in lower case
    assert not read_verdict("correct: no")
    assert not read_verdict("yes")  # no field, no verdict
    # The first "correct:" counts, even inside "incorrect:" in the reasoning.
    assert not read_verdict("reasoning: Paris is incorrect: it is Lyon.\ncorrect: yes")


class VerdictClient:
    """A judge that answers by the response it is shown (`replies`), or fails the call for a
    response not listed; records the prompts (a pure-logic fake)."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    def send(self, messages: Any, sampling: Any, timeout_s: float, done: Any) -> None:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        response = prompt.split("[response]: ", 1)[1].split("\n", 1)[0]
        if response not in self.replies:
            done(None, CallError("INVALID_ARGUMENT", "no"))
            return
        done(Completion(self.replies[response], "stop", {"prompt_tokens": 1}), None)

    def describe(self, timeout_s: float) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        return None


def parquet_image(data: bytes | None, path: str | None = None) -> dict[str, Any]:
    return {"bytes": data, "path": path}


IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


MMSEARCH_COLUMNS = (
    "sample_id",
    "query",
    "query_image",
    "area",
    "subfield",
    "gt_answer",
    "alternative_gt_answers",
)


def mmsearch_parquet(root: Path) -> Path:
    """Four end2end rows: image bytes, no image (text-only), an image by relative path, and a
    JPEG; `image_search_result` is there, as in the release, and not read."""
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "k0.png").write_bytes(png(30, 20, (0, 9, 0)))
    rows = [
        ("news_0", "Which company released this model?", parquet_image(png()), "news",
         "technology", "xAI", ["x.AI"]),
        ("news_1", "Who won the race yesterday?", None, "news", "sports", "Lando Norris", []),
        ("knowledge_0", "What is this building?", parquet_image(None, "imgs/k0.png"),
         "knowledge", "architecture", "the Eiffel Tower", []),
        ("knowledge_1", "Which film is this frame from?",
         parquet_image(jpeg(Image.new("RGB", (8, 8)))), "knowledge", "anime", "Spirited Away",
         ["Sen to Chihiro no Kamikakushi"]),
    ]  # fmt: skip
    columns = {name: [row[i] for row in rows] for i, name in enumerate(MMSEARCH_COLUMNS)}
    table = pa.table(
        {
            **columns,
            "query_image": pa.array(columns["query_image"], IMAGE_TYPE),
            "image_search_result": pa.array([parquet_image(png())] * len(rows), IMAGE_TYPE),
            "timestamp": ["2024-09-01"] * len(rows),
            "gt_requery": ["a requery"] * len(rows),
        }
    )
    path = root / "end2end.parquet"
    pq.write_table(table, path)
    return path


def test_mmsearch_loader_reads_the_end2end_parquet_and_skips_text_only_questions(
    tmp_path: Path,
) -> None:
    bench = get_benchmark("mmsearch")
    jobs = bench.load(str(mmsearch_parquet(tmp_path / "mmsearch")), str(tmp_path / "img"), 0)
    ids = ["mmsearch/news_0", "mmsearch/knowledge_0", "mmsearch/knowledge_1"]
    assert [j["id"] for j in jobs] == ids
    assert bench.skipped == {"without an image": 1}
    assert Path(jobs[0]["image"]).read_bytes() == png()
    assert Path(jobs[1]["image"]).read_bytes() == png(30, 20, (0, 9, 0))  # by its path
    assert jobs[2]["image"].endswith("knowledge_1.jpg")
    assert jobs[0]["question"] == "Which company released this model?"
    assert jobs[0]["answer"] == "xAI"
    assert jobs[2]["meta"] == {
        "benchmark": "mmsearch",
        "sample_id": "knowledge_1",
        "area": "knowledge",
        "subfield": "anime",
        "timestamp": "2024-09-01",
        "answers": ["Spirited Away", "Sen to Chihiro no Kamikakushi"],
    }


def test_mmsearch_scores_exact_match_and_f1_by_area_and_subfield(tmp_path: Path) -> None:
    bench = get_benchmark("mmsearch")
    jobs = bench.load(str(mmsearch_parquet(tmp_path / "m")), str(tmp_path / "img"), 0)
    answers = ["x.ai", "Eiffel Tower in Paris", None]
    scores = bench.score([Prediction(j, a) for j, a in zip(jobs, answers, strict=True)])
    # news_0 exact (an alternative), F1 1; knowledge_0 not exact, F1 2/3 (precision 2/4,
    # recall 2/2); knowledge_1 unanswered: 0.
    assert scores == {
        "overall": pytest.approx(1 / 3),
        "news": 1.0,
        "knowledge": 0.0,
        "f1": pytest.approx((1 + 2 / 3 + 0) / 3),
        "f1 news": 1.0,
        "f1 knowledge": pytest.approx(1 / 3),
        "f1 anime": 0.0,
        "f1 architecture": pytest.approx(2 / 3),
        "f1 technology": 1.0,
    }
    assert list(scores)[:4] == ["overall", "news", "knowledge", "f1"]


def test_mmsearch_judge_sees_the_query_the_answer_and_gt_answer(tmp_path: Path) -> None:
    client = VerdictClient({"Elon Musk's xAI": "reasoning: same company\ncorrect: yes"})
    bench = get_benchmark("mmsearch", ModelChannel(ModelEndpoint("judge"), client))
    jobs = bench.load(str(mmsearch_parquet(tmp_path / "m")), str(tmp_path / "img"), 0)
    answers = ["Elon Musk's xAI", None, ""]
    scores = bench.score([Prediction(j, a) for j, a in zip(jobs, answers, strict=True)])
    (prompt,) = client.prompts  # nothing or an empty answer is wrong without asking
    assert prompt.startswith("Judge whether the following [response] to [question] is correct")
    assert "[question]: Which company released this model?" in prompt
    assert "[response]: Elon Musk's xAI\n" in prompt
    assert "[correct_answer]: xAI\n" in prompt  # gt_answer alone, as R1V4's judge saw it
    assert prompt.endswith("or if the extracted answer is incorrect.")
    assert scores["overall"] == pytest.approx(1 / 3) and scores["news"] == 1.0
    assert scores["overall (exact)"] == 0.0 and scores["judge failed"] == 0.0
    assert scores["f1"] == pytest.approx(1 / 3 * 0.5)  # F1 of "elon musks xai" against "xai"


def fvqa_parquet(path: Path, categories: bool = True) -> Path:
    """Seven rows as the release has them; the last three have two images, none, and more
    than a job may list."""
    flag = "\U0001f1f2\U0001f1f9"
    rows = [
        ("fvqa_test_0", "What is the name of the system shown in the image?", [png()],
         "namus", "[]", "search_free"),
        ("fvqa_test_1", "<image>What country does this building belong to?",
         [jpeg(Image.new("RGB", (8, 8)))], "Malta",
         json.dumps(["Malta", "mt", "Republic of Malta", "MLT", flag]), "search_free"),
        ("fvqa_test_2", "What country does this town belong to?", [png(9, 9)], "Hungary",
         '["HUN"]', "search_required"),
        ("fvqa_test_3", "Which city is this facility in?", [png(7, 7)], "Sochi", '["Sochi"]',
         "search_required"),
        ("fvqa_test_4", "Which is older?", [png(), png(5, 5)], "left", "[]", "search_required"),
        ("fvqa_test_5", "Who built it?", [], "Eiffel", "[]", "search_required"),
        ("fvqa_test_6", "Which frame is blurred?", [png(4 + i, 4) for i in range(17)], "3",
         "[]", "search_required"),
    ]  # fmt: skip
    reward_type = pa.struct(
        [("candidate_answers", pa.string()), ("ground_truth", pa.string()), ("style", pa.string())]
    )
    columns = {
        "prompt": [[{"content": r[1], "role": "user"}] for r in rows],
        "images": pa.array([[parquet_image(d) for d in r[2]] for r in rows], pa.list_(IMAGE_TYPE)),
        "reward_model": pa.array(
            [{"candidate_answers": r[4], "ground_truth": r[3], "style": "rule"} for r in rows],
            reward_type,
        ),
        "data_source": ["mmsearch_r1/fvqa_test"] * len(rows),
        "image_urls": pa.nulls(len(rows)),
        "data_id": [r[0] for r in rows],
    }
    if categories:
        columns["category"] = [r[5] for r in rows]
    pq.write_table(pa.table(columns), path)
    return path


def test_fvqa_loader_reads_the_verl_parquet_and_counts_what_it_skips(tmp_path: Path) -> None:
    bench = get_benchmark("fvqa")
    jobs = bench.load(str(fvqa_parquet(tmp_path / "fvqa_test.parquet")), str(tmp_path / "i"), 0)
    assert [j["id"] for j in jobs] == [f"fvqa/fvqa_test_{i}" for i in range(5)]
    assert bench.skipped == {"without an image": 1, "with more than 16 images": 1}
    assert Path(jobs[0]["image"]).read_bytes() == png()
    assert jobs[0]["image"] == str(tmp_path / "i" / "fvqa_test_0.png")
    assert "images" not in jobs[0]
    # Two images: an `images` job, in the row's order, each written as a single image is.
    pair = jobs[4]
    assert "image" not in pair
    assert pair["images"] == [str(tmp_path / "i" / "fvqa_test_4" / f"{i}.png") for i in (0, 1)]
    assert [Path(uri).read_bytes() for uri in pair["images"]] == [png(), png(5, 5)]
    assert Job.from_dict(pair).images == tuple(pair["images"])
    assert not (tmp_path / "i" / "fvqa_test_6").exists()  # over the cap: nothing written
    assert jobs[1]["question"] == "What country does this building belong to?"  # no <image>
    assert jobs[1]["answer"] == "Malta"
    assert jobs[1]["meta"] == {
        "benchmark": "fvqa",
        "data_id": "fvqa_test_1",
        "data_source": "mmsearch_r1/fvqa_test",
        "answers": ["Malta", "Malta", "mt", "Republic of Malta", "MLT", "\U0001f1f2\U0001f1f9"],
        "category": "search_free",
    }


def test_fvqa_scores_exact_match_per_category(tmp_path: Path) -> None:
    bench = get_benchmark("fvqa")
    jobs = bench.load(str(fvqa_parquet(tmp_path / "f.parquet")), str(tmp_path / "i"), 0)
    answers = ["NamUs", "the Republic of Malta.", "hun", None, "Left."]
    scores = bench.score([Prediction(j, a) for j, a in zip(jobs, answers, strict=True)])
    assert scores == {"overall": 0.8, "search_required": pytest.approx(2 / 3), "search_free": 1.0}
    # Without a category column (the released test file may have none): overall alone.
    plain = bench.load(str(fvqa_parquet(tmp_path / "p.parquet", False)), str(tmp_path / "i"), 0)
    assert bench.score([Prediction(j, a) for j, a in zip(plain, answers, strict=True)]) == {
        "overall": 0.8
    }


def test_fvqa_judge_decides_and_exact_match_is_reported_beside(tmp_path: Path) -> None:
    client = VerdictClient(
        {"NamUs": "correct: yes", "Malta, in Europe": "reasoning: same\ncorrect: yes"}
    )
    bench = get_benchmark("fvqa", ModelChannel(ModelEndpoint("judge"), client))
    jobs = bench.load(str(fvqa_parquet(tmp_path / "f.parquet")), str(tmp_path / "i"), 0)
    # The judge fails on Budapest; the two-image question has no answer.
    answers = ["NamUs", "Malta, in Europe", "Budapest", None, None]
    scores = bench.score([Prediction(j, a) for j, a in zip(jobs, answers, strict=True)])
    assert len(client.prompts) == 3
    assert "[correct_answer]: namus\n" in client.prompts[0]
    assert scores == {
        "overall": 0.4,
        "search_required": 0.0,
        "search_free": 1.0,
        "overall (exact)": 0.2,
        "search_required (exact)": 0.0,
        "search_free (exact)": 0.5,
        "judge failed": 0.2,
    }


def test_a_search_benchmark_file_without_its_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), path)
    with pytest.raises(ValueError, match="no column prompt, images, reward_model"):
        get_benchmark("fvqa").load(str(path), str(tmp_path / "i"), 0)
    with pytest.raises(ValueError, match="no column query, query_image, gt_answer"):
        get_benchmark("mmsearch").load(str(path), str(tmp_path / "i"), 0)


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


def test_jsonl_benchmark_resolves_every_image_of_an_images_job(tmp_path: Path) -> None:
    line = {"id": "d", "images": ["b.png", "/abs/a.png", "gs://b/c.png"], "question": "q"}
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({**line, "answer": "x"}) + "\n")
    (job,) = get_benchmark("jsonl").load(str(path), str(tmp_path / "img"), 0)
    assert "image" not in job
    assert job["images"] == [str(tmp_path / "b.png"), "/abs/a.png", "gs://b/c.png"]


def test_unknown_benchmark() -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("mmmu")
