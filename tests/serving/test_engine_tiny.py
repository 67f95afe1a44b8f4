"""The `tiny` engine adapter over the project's own model runtime (`tiny_agent.runtime`), on a
random-initialised tiny model written by the test, in process and through Triton."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_tiny
import pytest
from contract import GenerationResult, parse_request
from engines import ConfigError, Instance

from beam_pipelines.serve import TritonServer, stage_model_repository

from .support import MODEL_DIR, generate_all, image_message, infer, sample_image


@pytest.fixture(scope="session")
def tiny_random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's architecture at toy width, random weights, saved like training does."""
    import torch

    from tiny_agent.chat import ChatProcessor, train_tokenizer
    from tiny_agent.model import TinyVLM, TinyVLMConfig
    from tiny_agent.runtime import save_checkpoint

    texts = ["<think>zoom in</think><answer>B</answer>", "What character is inside?"] * 8
    processor = ChatProcessor(train_tokenizer(texts, 300), grid=8, image_side=128)
    config = TinyVLMConfig(
        vocab_size=processor.tokenizer.get_vocab_size(),
        image_token_id=processor.image_id,
        d_model=32,
        n_layers=2,
        n_heads=2,
        d_expert=32,
        vision_channels=(8, 8, 16, 16),
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-random")
    save_checkpoint(TinyVLM(config).eval(), processor, directory)
    return directory


@pytest.fixture(scope="module")
def engine(tiny_random_checkpoint: Path) -> Iterator[engine_tiny.TinyEngine]:
    running = engine_tiny.from_parameters(
        MODEL_DIR, {"checkpoint": str(tiny_random_checkpoint)}, Instance()
    )
    yield running
    running.close()


def _request(text: str, **sampling: object):
    messages = json.dumps(image_message(text, sample_image()))
    return parse_request(messages, json.dumps({"max_tokens": 10, **sampling}))


def test_batch_results_match_each_request_alone(engine: engine_tiny.TinyEngine) -> None:
    requests = [_request("short"), _request("a longer question with more words"), _request("x")]
    batched = generate_all(engine, requests)
    assert batched == [generate_all(engine, [r])[0] for r in requests]
    for result in batched:
        assert isinstance(result, GenerationResult)
        assert result.finish_reason in ("stop", "length") and result.error is None
        assert result.prompt_tokens > 64  # the image alone is an 8x8 grid of tokens
        assert 0 <= result.completion_tokens <= 10


def test_seed_and_stop_strings_reach_the_runtime(engine: engine_tiny.TinyEngine) -> None:
    sampled = _request("q", temperature=1.0, seed=11, max_tokens=12)
    assert generate_all(engine, [sampled]) == generate_all(engine, [sampled])
    full = generate_all(engine, [_request("q", max_tokens=12)])[0]
    if len(full.text) >= 4 and full.finish_reason == "length":
        stop = full.text[2:4]
        stopped = generate_all(engine, [_request("q", max_tokens=12, stop=[stop])])[0]
        assert stopped.finish_reason == "stop"
        assert stopped.text == full.text[: full.text.index(stop) + len(stop)]


def test_requests_join_and_leave_the_running_batch(engine: engine_tiny.TinyEngine) -> None:
    """A short request that arrives while a long one decodes joins it, finishes first and is
    answered at once; both equal the same request alone."""
    long, short = _request("long", max_tokens=60), _request("short", max_tokens=1)
    alone = generate_all(engine, [long])[0], generate_all(engine, [short])[0]
    order: list[str] = []
    results: dict[str, GenerationResult] = {}
    finished = threading.Event()

    def done(name: str) -> Any:
        def record(result: GenerationResult) -> None:
            order.append(name)
            results[name] = result
            if len(results) == 2:
                finished.set()

        return record

    engine.submit([(long, done("long"))])
    while not engine.batch:  # the long request is decoding
        time.sleep(0.001)
    engine.submit([(short, done("short"))])
    assert finished.wait(120)
    assert order == ["short", "long"]
    assert (results["long"], results["short"]) == alone


def test_a_prompt_beyond_the_context_fails_alone(engine: engine_tiny.TinyEngine) -> None:
    huge = _request("word " * 2000)
    results = generate_all(engine, [huge, _request("fine")])
    assert results[0].finish_reason == "error" and "exceeds the context" in (results[0].error or "")
    assert results[1].finish_reason in ("stop", "length")


def test_unknown_parameters_are_refused(tiny_random_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="does not know parameters"):
        engine_tiny.from_parameters(
            MODEL_DIR, {"checkpoint": str(tiny_random_checkpoint), "dtype": "bf16"}, Instance()
        )


@pytest.mark.integration
def test_the_default_config_serves_the_tiny_engine(
    tmp_path: Path, tiny_random_checkpoint: Path
) -> None:
    """config.pbtxt as shipped, pointed at the random checkpoint: the Triton stub imports
    `tiny_agent` (installed, or from this checkout) and serves the contract."""
    import tritonclient.grpc as grpcclient

    repository = stage_model_repository(
        tmp_path / "repo", parameters={"checkpoint": str(tiny_random_checkpoint)}
    )
    with (
        TritonServer(repository, log_file=tmp_path / "server.log", startup_timeout_s=240) as server,
        grpcclient.InferenceServerClient(server.grpc_url) as client,
    ):
        reply = infer(client, image_message("What is it?", sample_image()), {"max_tokens": 6})
        assert reply.finish_reason in ("stop", "length")
        assert reply.usage["prompt_tokens"] > 64
        assert reply.usage["completion_tokens"] <= 6
        bad = infer(client, "not json", {"max_tokens": 6})
        assert bad.finish_reason == "error"


@pytest.mark.integration
@pytest.mark.skipif(
    not (MODEL_DIR / "tiny" / "model.safetensors").exists(),
    reason="needs the tiny model's weights: make train-tiny",
)
def test_the_shipped_tiny_weights_load_and_answer(tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    with (
        TritonServer(log_file=tmp_path / "server.log", startup_timeout_s=240) as server,
        grpcclient.InferenceServerClient(server.grpc_url) as client,
    ):
        reply = infer(client, image_message("What is it?", sample_image()), {"max_tokens": 32})
        assert reply.finish_reason in ("stop", "length") and reply.text
