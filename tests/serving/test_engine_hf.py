"""The `hf` engine in process, on the random tiny Qwen3-VL-MoE checkpoint of the session:
one padded batch gives what each request gives alone, seeds, stop strings, usage."""

from __future__ import annotations

import json
from pathlib import Path

import engine_hf
import pytest
from contract import GenerationRequest, Sampling, parse_request
from engines import ConfigError, Instance

from .support import image_message, sample_image


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> engine_hf.HFEngine:
    return engine_hf.from_parameters(Path("."), {"checkpoint": str(tiny_checkpoint)}, Instance())


def _request(text: str, image: bool = True, **sampling: object) -> GenerationRequest:
    messages = image_message(text, sample_image() if image else None)
    return parse_request(json.dumps(messages), json.dumps({"max_tokens": 12, **sampling}))


def test_greedy_batch_equals_each_request_alone(engine: engine_hf.HFEngine) -> None:
    # Different prompt lengths and image/no image: left padding must not change anything.
    requests = [
        _request("What colour is the square?"),
        _request("hi", image=False),
        _request("A much longer question about the picture, with many more words in it."),
    ]
    batched = engine.generate(requests)
    alone = [engine.generate([r])[0] for r in requests]
    assert batched == alone
    assert all(r.finish_reason in ("stop", "length") and r.error is None for r in batched)


def test_usage_counts_real_tokens(engine: engine_hf.HFEngine) -> None:
    short, long = _request("hi", image=False), _request("hi " * 40, image=False)
    results = engine.generate([short, long])
    processor = engine.processor
    for request, result in zip([short, long], results, strict=True):
        prompt = processor.render(request.messages)
        expected = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert result.prompt_tokens == expected
    assert results[0].prompt_tokens < results[1].prompt_tokens
    assert results[0].completion_tokens == 12 or results[0].finish_reason == "stop"


def test_image_tokens_count_as_prompt_tokens(engine: engine_hf.HFEngine) -> None:
    with_image, without = engine.generate(
        [_request("same text"), _request("same text", image=False)]
    )
    # 64x48 resizes to 64x64: (64/16)^2 patches / merge 2x2 = 4 image tokens, plus
    # <|vision_start|> and <|vision_end|>.
    assert with_image.prompt_tokens - without.prompt_tokens == 4 + 2


def test_max_tokens_ends_with_length(engine: engine_hf.HFEngine) -> None:
    short, longer = engine.generate(
        [_request("count", image=False, max_tokens=3), _request("count", image=False, max_tokens=9)]
    )
    assert (short.finish_reason, short.completion_tokens) == ("length", 3)
    assert (longer.finish_reason, longer.completion_tokens) == ("length", 9)
    assert longer.text.startswith(short.text)


def test_stop_string_ends_generation_and_is_included(engine: engine_hf.HFEngine) -> None:
    full = engine.generate([_request("talk", max_tokens=24)])[0]
    assert len(full.text) >= 12, full.text
    stop = full.text[6:9]
    cut = full.text[: full.text.index(stop) + len(stop)]
    stopped = engine.generate([_request("talk", max_tokens=24, stop=["\x01never", stop])])[0]
    assert stopped.text == cut
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < full.completion_tokens


def test_stop_strings_are_per_request(engine: engine_hf.HFEngine) -> None:
    full = engine.generate([_request("talk", max_tokens=24)])[0]
    stop = full.text[4:7]
    with_stop, without = engine.generate(
        [_request("talk", max_tokens=24, stop=[stop]), _request("talk", max_tokens=24)]
    )
    assert with_stop.finish_reason == "stop" and with_stop.text.endswith(stop)
    assert without == full


def test_seed_reproduces_a_sample_whatever_the_batch(engine: engine_hf.HFEngine) -> None:
    sampled = _request("tell me", temperature=1.0, seed=7, max_tokens=16)
    alone = engine.generate([sampled])[0]
    again = engine.generate([sampled])[0]
    in_batch = engine.generate(
        [_request("other", temperature=1.0, seed=1), sampled, _request("x", image=False)]
    )[1]
    assert alone == again == in_batch
    other_seed = engine.generate([_request("tell me", temperature=1.0, seed=8, max_tokens=16)])
    assert other_seed[0].text != alone.text


def test_sampling_differs_from_greedy_and_top_p_narrows_it(engine: engine_hf.HFEngine) -> None:
    greedy = engine.generate([_request("q", max_tokens=16)])[0]
    hot = engine.generate([_request("q", max_tokens=16, temperature=2.0, seed=3)])[0]
    assert hot.text != greedy.text
    # top_p so small that only the most likely token survives: sampling becomes greedy.
    nucleus = engine.generate([_request("q", max_tokens=16, temperature=2.0, top_p=1e-6, seed=3)])
    assert nucleus[0].text == greedy.text


def test_sampling_without_seed_still_works(engine: engine_hf.HFEngine) -> None:
    result = engine.generate([_request("q", temperature=0.7, seed=None)])[0]
    assert result.finish_reason in ("stop", "length")


def test_template_failure_fails_only_that_request(engine: engine_hf.HFEngine) -> None:
    good = _request("fine")
    # Engines also receive requests built in process: a message without content cannot be
    # rendered, and only that request fails.
    broken = GenerationRequest(
        messages=[{"role": "user", "content": [{"type": "image", "image": sample_image()}]}] * 2
        + [{"role": "user", "content": None}],
        sampling=Sampling(max_tokens=4),
    )
    results = engine.generate([good, broken])
    assert results[0] == engine.generate([good])[0]
    assert results[1].finish_reason == "error"
    assert "chat template error" in (results[1].error or "")


def test_prompt_log_records_what_the_model_receives(tiny_checkpoint: Path, tmp_path: Path) -> None:
    parameters = {"checkpoint": str(tiny_checkpoint), "prompt_log": "prompts.jsonl"}
    logging = engine_hf.from_parameters(tmp_path, parameters, Instance())  # relative: model dir
    requests = [_request("with a picture"), _request("without", image=False)]
    results = logging.generate(requests)
    logged = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert [entry["prompt"] for entry in logged] == [
        logging.processor.render(request.messages) for request in requests
    ]
    # The 64 x 48 image as the processor kept it: 64 x 64, 4 merged 2 x 2 patches of 16 px.
    assert [entry["images"] for entry in logged] == [[{"height": 64, "width": 64, "tokens": 4}], []]
    assert [entry["prompt_tokens"] for entry in logged] == [r.prompt_tokens for r in results]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"checkpoint": "/nonexistent/ckpt"}, "checkpoint directory not found"),
        ({"checkpoint": "x", "dtype": "int8"}, "'dtype' must be auto or one of"),
        ({"checkpoint": "x", "threads": "2"}, r"does not know parameters \['threads'\]"),
    ],
)
def test_bad_parameters(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        engine_hf.from_parameters(Path("."), parameters, Instance())
