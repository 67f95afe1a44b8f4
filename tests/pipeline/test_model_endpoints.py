"""The same corpus through the Triton client and the OpenAI-compatible client, on the same
served tiny model (the gateway in front of Triton): the same answers, so the same accuracy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from beam_pipelines.demo import DEMO_TOOLS
from beam_pipelines.serve import TritonServer

from .runs import annotate_run, run_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_openai_path_answers_as_the_triton_path_does(
    tmp_path: Path, triton: TritonServer, gateway: Callable[..., str]
) -> None:
    from beam_pipelines.synthetic import write_corpus

    jobs = write_corpus(tmp_path / "corpus", 6, seed=11, search_fraction=0.3)
    openai_url = gateway(f"triton:{triton.grpc_url}")
    answers = {}
    runs = (
        ("triton", triton.grpc_url, ()),
        # OpenAI-compatible servers state no image budget: the tiny model's, given
        ("openai", f"openai:{openai_url}", ("--max_pixels=16384",)),
    )
    for name, endpoint, budget in runs:
        result = annotate_run(
            jobs, tmp_path / name, endpoint, *DEMO_TOOLS, "--max_turns=6", *budget
        )
        rows, failures = run_rows(result)
        assert failures == [], failures
        answers[name] = {row["id"]: (row["answer"], row["correct"]) for row in rows}
    assert len(answers["triton"]) == 6
    assert answers["openai"] == answers["triton"]
    assert sum(correct for _, correct in answers["triton"].values()) >= 4
