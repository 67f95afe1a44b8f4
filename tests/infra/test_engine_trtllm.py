"""The `trtllm` engine's translation, without TensorRT-LLM: config parameters -> LLM API
arguments, sampling -> `SamplingParams` arguments, messages with images -> the LLM API's
multimodal input, `RequestOutput` -> contract results, and requests in flight through a fake
`LLM` (`generate_async`).

The argument names checked below were read from TensorRT-LLM's source (`llmapi/llm_args.py`:
`TorchLlmArgs`, `KvCacheConfig`, `MoeConfig`, `CudaGraphConfig`; `sampling_params.py`:
`SamplingParams`; `executor/result.py`: `CompletionOutput`), so a renamed argument shows here.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from contract import GenerationRequest, GenerationResult, Sampling, parse_request
from engine_trtllm import (
    IMAGE_PLACEHOLDER,
    TRTLLMEngine,
    chat_renderer,
    checkpoint_quantization,
    from_parameters,
    llm_settings,
    multimodal_input,
    sampling_kwargs,
    template_messages,
    to_result,
)
from engines import ConfigError, Instance
from PIL import Image

TORCH_LLM_ARGS = {
    "model",
    "dtype",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "moe_expert_parallel_size",
    "moe_tensor_parallel_size",
    "enable_attention_dp",
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
    "enable_chunked_prefill",
    "trust_remote_code",
    "kv_cache_config",
    "moe_config",
    "cuda_graph_config",
}
KV_CACHE_CONFIG = {"enable_block_reuse", "free_gpu_memory_fraction", "dtype", "max_tokens"}
CUDA_GRAPH_CONFIG = {"batch_sizes", "max_batch_size", "enable_padding"}
SAMPLING_PARAMS = {
    "max_tokens",
    "stop",
    "include_stop_str_in_output",
    "top_k",
    "top_p",
    "temperature",
    "seed",
    "add_special_tokens",
    "detokenize",
    "skip_special_tokens",
}


def _settings(**parameters: str) -> Any:
    return llm_settings({"checkpoint": "/models/r1v4", **parameters}, Path("/repo/agent_vlm"))


# -- parameters -> LLM(...) -----------------------------------------------------------------


def test_default_settings_are_llm_api_arguments() -> None:
    settings = _settings()
    assert settings.model == "/models/r1v4"
    assert set(settings.llm) | {"model", "kv_cache_config", "moe_config"} <= TORCH_LLM_ARGS
    assert settings.llm == {
        "dtype": "auto",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "enable_attention_dp": False,
        "max_batch_size": 64,
        "max_num_tokens": 8192,
        "enable_chunked_prefill": True,
        "trust_remote_code": False,
    }
    assert settings.kv_cache == {
        "enable_block_reuse": True,
        "free_gpu_memory_fraction": 0.85,
        "dtype": "auto",
    }
    assert set(settings.kv_cache) <= KV_CACHE_CONFIG
    assert settings.moe == {"backend": "CUTLASS"}
    assert settings.cuda_graph is None
    assert settings.quantization == "none"
    assert settings.chat_template is None


def test_parallel_fp8_and_cuda_graph_settings() -> None:
    settings = _settings(
        tensor_parallel_size="4",
        moe_expert_parallel_size="4",
        moe_tensor_parallel_size="1",
        enable_attention_dp="true",
        moe_backend="DEEPGEMM",
        quantization="fp8",
        kv_cache_dtype="fp8",
        max_seq_len="32768",
        cuda_graph_max_batch_size="32",
        enable_block_reuse="false",
        chat_template="templates/keep_think.jinja",
    )
    assert settings.llm["tensor_parallel_size"] == 4
    assert settings.llm["moe_expert_parallel_size"] == 4
    assert settings.llm["moe_tensor_parallel_size"] == 1
    assert settings.llm["enable_attention_dp"] is True
    assert settings.llm["max_seq_len"] == 32768
    assert settings.moe == {"backend": "DEEPGEMM"}
    assert settings.kv_cache["dtype"] == "fp8"
    assert settings.kv_cache["enable_block_reuse"] is False
    assert settings.quantization == "fp8"
    assert settings.cuda_graph == {"max_batch_size": 32, "enable_padding": True}
    assert set(settings.cuda_graph) <= CUDA_GRAPH_CONFIG
    assert settings.chat_template == "/repo/agent_vlm/templates/keep_think.jinja"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"checkpoint": ""}, "'checkpoint' is required"),
        ({"max_batch_size": "0"}, "must be >= 1"),
        ({"moe_backend": "cutlass"}, "'moe_backend' must be one of"),
        ({"quantization": "int4"}, "'quantization' must be one of"),
        ({"kv_cache_dtype": "int8"}, "'kv_cache_dtype' must be one of"),
        ({"dtype": "float32"}, "'dtype' must be one of"),
        ({"free_gpu_memory_fraction": "0"}, r"must be in \(0, 1\]"),
        ({"free_gpu_memory_fraction": "most"}, "must be a number"),
        ({"enable_block_reuse": "maybe"}, "true or false"),
        ({"cuda_graph_max_batch_size": "128"}, "must not exceed 'max_batch_size'"),
        (
            {
                "tensor_parallel_size": "2",
                "moe_expert_parallel_size": "2",
                "moe_tensor_parallel_size": "2",
            },
            "must equal tensor_parallel_size",
        ),
        ({"tensor_parallel_size": "4", "moe_expert_parallel_size": "3"}, "must divide"),
        (
            {"moe_expert_paralel_size": "2"},
            r"does not know parameters \['moe_expert_paralel_size'\]",
        ),
    ],
)
def test_invalid_settings_are_refused(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        llm_settings({"checkpoint": "/m", **parameters}, Path("."))


# -- the checkpoint's quantization -----------------------------------------------------------


def test_checkpoint_quantization(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl_moe"}))
    assert checkpoint_quantization(tmp_path) == "none"
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
        )
    )
    assert checkpoint_quantization(tmp_path) == "fp8"
    (tmp_path / "hf_quant_config.json").write_text(
        json.dumps({"quantization": {"quant_algo": "NVFP4"}})
    )
    with pytest.raises(ConfigError, match="quantized as 'NVFP4'"):
        checkpoint_quantization(tmp_path)
    (tmp_path / "hf_quant_config.json").write_text(
        json.dumps({"quantization": {"quant_algo": "FP8_BLOCK_SCALES"}})
    )
    assert checkpoint_quantization(tmp_path) == "fp8"


def test_a_config_that_misstates_the_checkpoint_fails_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no HF checkpoint"):
        from_parameters(tmp_path, {"checkpoint": str(tmp_path)}, Instance())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl_moe"}))
    with pytest.raises(ConfigError, match=r"'quantization' is 'fp8' but checkpoint .* is 'none'"):
        from_parameters(tmp_path, {"checkpoint": str(tmp_path), "quantization": "fp8"}, Instance())


# -- sampling -> SamplingParams(...) -------------------------------------------------------


def test_greedy_sampling_is_top_k_one() -> None:
    kwargs = sampling_kwargs(Sampling(max_tokens=64, temperature=0.0, top_p=0.5, seed=7))
    assert kwargs == {
        "max_tokens": 64,
        "add_special_tokens": False,
        "include_stop_str_in_output": True,
        "detokenize": True,
        "skip_special_tokens": True,
        "top_k": 1,
        "seed": 7,
    }
    assert set(kwargs) <= SAMPLING_PARAMS


def test_sampling_with_temperature_top_p_stop_and_seed() -> None:
    sampling = Sampling(
        max_tokens=8192, temperature=0.2, top_p=0.95, seed=3, stop=("</tool_call>", "</answer>")
    )
    kwargs = sampling_kwargs(sampling)
    assert kwargs["temperature"] == 0.2
    assert kwargs["top_p"] == 0.95
    assert kwargs["seed"] == 3
    assert kwargs["stop"] == ["</tool_call>", "</answer>"]
    assert kwargs["include_stop_str_in_output"] is True
    assert "top_k" not in kwargs
    assert set(kwargs) <= SAMPLING_PARAMS
    assert "seed" not in sampling_kwargs(Sampling(temperature=1.0))


# -- messages -> multimodal input ----------------------------------------------------------


def _image(colour: str) -> Image.Image:
    return Image.new("RGB", (32, 24), colour)


def _trajectory() -> list[dict[str, Any]]:
    first, crop = _image("red"), _image("blue")
    return [
        {"role": "system", "content": "Answer the user's question."},
        {
            "role": "user",
            "content": [{"type": "image", "image": first}, {"type": "text", "text": "Q?"}],
        },
        {
            "role": "assistant",
            "content": '<think>zoom</think><tool_call>{"name": "code"}</tool_call>',
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<observation>{}</observation>"},
                {"type": "image", "image": crop},
            ],
        },
    ]


@pytest.fixture(scope="module")
def render() -> Any:
    """The random test checkpoint's tokenizer and ChatML template (Qwen-VL placeholders)."""
    from random_checkpoint import CHAT_TEMPLATE, build_tokenizer

    return chat_renderer(build_tokenizer(), CHAT_TEMPLATE)


def test_template_messages_keep_only_the_image_type() -> None:
    messages = template_messages(_trajectory())
    assert messages[1]["content"][0] == {"type": "image"}
    assert messages[3]["content"][1] == {"type": "image"}
    assert messages[0]["content"] == "Answer the user's question."


def test_multimodal_input_puts_images_in_prompt_order(render: Any) -> None:
    messages = _trajectory()
    prompt = multimodal_input(messages, render)
    text = prompt["prompt"]
    assert text.count(IMAGE_PLACEHOLDER) == 2
    assert text.index(IMAGE_PLACEHOLDER) < text.index("Q?") < text.index("<observation>")
    assert text.rindex(IMAGE_PLACEHOLDER) > text.index("<observation>")
    assert text.rstrip().endswith("<|im_start|>assistant")
    images = prompt["multi_modal_data"]["image"]
    assert [image.getpixel((0, 0)) for image in images] == [(255, 0, 0), (0, 0, 255)]
    assert set(prompt) == {"prompt", "multi_modal_data"}


def test_text_only_input_has_no_multimodal_data(render: Any) -> None:
    messages = [{"role": "user", "content": "hello"}]
    assert multimodal_input(messages, render) == {"prompt": render(messages)}


def test_a_template_that_drops_images_is_an_error() -> None:
    with pytest.raises(ValueError, match="rendered 0 image placeholders for 2 images"):
        multimodal_input(_trajectory(), lambda messages: "no images here")


# -- outputs -> results, and a batch through a fake LLM ------------------------------------


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]


def test_to_result_maps_finish_reasons_and_usage() -> None:
    output = FakeRequestOutput([1] * 40, [FakeCompletion("<answer>B</answer>", [5] * 6, "stop")])
    result = to_result(output, Sampling(stop=("</answer>",)))
    assert (result.text, result.finish_reason) == ("<answer>B</answer>", "stop")
    assert (result.prompt_tokens, result.completion_tokens) == (40, 6)
    assert (
        to_result(
            FakeRequestOutput([1], [FakeCompletion("abc", [1, 2, 3], "length")]), Sampling()
        ).finish_reason
        == "length"
    )
    for reason in ("timeout", "cancelled", None):
        failed = to_result(FakeRequestOutput([1], [FakeCompletion("", [], reason)]), Sampling())
        assert failed.finish_reason == "error"
        assert str(reason) in (failed.error or "")


def test_to_result_cuts_text_after_the_stop_string() -> None:
    output = FakeRequestOutput(
        [1], [FakeCompletion("<tool_call>{}</tool_call> tail", [1] * 9, "stop")]
    )
    result = to_result(output, Sampling(stop=("</tool_call>",)))
    assert result.text == "<tool_call>{}</tool_call>"


class FakeOutput:
    """What `generate_async` returns: awaited through `aresult`, released by the test."""

    def __init__(self, output: Any) -> None:
        self.output = output
        self.released = threading.Event()

    async def aresult(self) -> Any:
        while not self.released.is_set():
            await asyncio.sleep(0.001)
        if isinstance(self.output, Exception):
            raise self.output
        return self.output


@dataclass
class FakeLLM:
    """Records what `generate_async` receives; answers each prompt with its number of images,
    once the test releases it."""

    calls: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    pending: list[FakeOutput] = field(default_factory=list)
    shut_down: bool = False

    def generate_async(self, inputs: dict[str, Any], sampling_params: Any) -> FakeOutput:
        self.calls.append((inputs, sampling_params))
        images = len(inputs.get("multi_modal_data", {}).get("image", []))
        output = FakeOutput(
            FakeRequestOutput([0] * 10, [FakeCompletion(f"{images} images", [1, 2], "stop")])
        )
        self.pending.append(output)
        return output

    def shutdown(self) -> None:
        self.shut_down = True


@dataclass(frozen=True)
class FakeSamplingParams:
    kwargs: dict[str, Any]

    @classmethod
    def make(cls, **kwargs: Any) -> FakeSamplingParams:
        unknown = set(kwargs) - SAMPLING_PARAMS
        assert not unknown, unknown
        return cls(kwargs)


def _request(messages: list[dict[str, Any]], **sampling: Any) -> GenerationRequest:
    import base64
    import io

    def encode(part: dict[str, Any]) -> dict[str, Any]:
        if part["type"] != "image":
            return part
        buffer = io.BytesIO()
        part["image"].save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        return {"type": "image_url", "image_url": {"url": url}}

    wire = [
        {
            **m,
            "content": m["content"]
            if isinstance(m["content"], str)
            else [encode(p) for p in m["content"]],
        }
        for m in messages
    ]
    return parse_request(json.dumps(wire), json.dumps(sampling))


class Answers:
    """Collects each request's result by its index."""

    def __init__(self) -> None:
        self.results: dict[int, GenerationResult] = {}
        self.arrived = threading.Condition()

    def done(self, index: int) -> Callable[[GenerationResult], None]:
        def record(result: GenerationResult) -> None:
            with self.arrived:
                self.results[index] = result
                self.arrived.notify_all()

        return record

    def wait(self, count: int) -> dict[int, GenerationResult]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.results) >= count, timeout=10)
            return dict(self.results)


def test_each_request_goes_to_the_executor_on_arrival_and_is_answered_when_done(
    render: Any,
) -> None:
    llm = FakeLLM()
    engine = TRTLLMEngine(llm, render, FakeSamplingParams.make)
    answers = Answers()
    engine.submit(
        [
            (_request(_trajectory(), max_tokens=32, stop=["</tool_call>"]), answers.done(0)),
            (
                _request([{"role": "user", "content": "hi"}], temperature=0.7, seed=1),
                answers.done(1),
            ),
        ]
    )
    assert len(llm.calls) == 2  # both in flight before either is answered
    (first, first_params), (second, second_params) = llm.calls
    assert len(first["multi_modal_data"]["image"]) == 2 and "multi_modal_data" not in second
    assert first_params.kwargs["stop"] == ["</tool_call>"] and first_params.kwargs["top_k"] == 1
    assert second_params.kwargs["temperature"] == 0.7 and second_params.kwargs["seed"] == 1
    # The second finishes first and is answered without waiting for the first.
    llm.pending[1].released.set()
    assert answers.wait(1) == {1: GenerationResult("0 images", "stop", 10, 2)}
    llm.pending[0].released.set()
    assert answers.wait(2)[0] == GenerationResult("2 images", "stop", 10, 2)
    engine.close()
    assert llm.shut_down


def test_a_request_the_template_cannot_render_fails_alone(render: Any) -> None:
    def picky(messages: list[dict[str, Any]]) -> str:
        if messages[0]["role"] == "tool":
            raise ValueError("no tool turns first")
        return render(messages)

    llm = FakeLLM()
    engine = TRTLLMEngine(llm, picky, FakeSamplingParams.make)
    answers = Answers()
    engine.submit(
        [
            (_request([{"role": "tool", "content": "x"}]), answers.done(0)),
            (_request([{"role": "user", "content": "hi"}]), answers.done(1)),
        ]
    )
    assert answers.wait(1)[0].finish_reason == "error"
    assert "chat template error: no tool turns first" in (answers.results[0].error or "")
    assert len(llm.calls) == 1
    llm.pending[0].released.set()
    assert answers.wait(2)[1].text == "0 images"
    engine.close()


def test_a_request_the_executor_fails_fails_alone(render: Any) -> None:
    llm = FakeLLM()
    engine = TRTLLMEngine(llm, render, FakeSamplingParams.make)
    answers = Answers()
    engine.submit(
        [(_request([{"role": "user", "content": str(i)}]), answers.done(i)) for i in (0, 1)]
    )
    llm.pending[0].output = RuntimeError("request cancelled")
    for output in llm.pending:
        output.released.set()
    results = answers.wait(2)
    assert results[0].error == "engine error: RuntimeError: request cancelled"
    assert results[1].text == "0 images"
    engine.close()
