"""The `trtllm` engine: TensorRT-LLM's LLM API (PyTorch backend) for Qwen3-VL-MoE checkpoints.

`tensorrt_llm.LLM` is the PyTorch-backend LLM (from TensorRT-LLM 1.0 on); it loads an HF
checkpoint directly, with no engine build step.

Skywork-R1V4 is a Qwen3-VL-30B-A3B fine-tune; TensorRT-LLM's PyTorch backend serves that
architecture (`Qwen3VLMoeForConditionalGeneration`, model type `qwen3_vl_moe`) with its fused
MoE kernels. Every request goes to the executor on arrival (`LLM.generate_async`) and is
answered when its output is done: the executor runs one in-flight batch across all requests
(each joins and leaves it per iteration), and KV-cache block reuse lets the turns of one
trajectory (each turn's prompt is the previous turn's prompt plus the model's answer and an
observation) reuse their shared prefix, images included (TensorRT-LLM hashes image content
into the reuse key).

Images go through the LLM API's multimodal input path, the same one
`tensorrt_llm.inputs.default_multimodal_input_loader` builds: a prompt rendered with the
checkpoint's chat template, in which every image part is the model's image placeholder
(`<|vision_start|><|image_pad|><|vision_end|>` for the Qwen-VL family), and
`multi_modal_data={"image": [PIL images in prompt order]}`; the model's input processor runs
the checkpoint's HF processor over both.

The translation (parameters -> `LLM(...)` arguments, sampling -> `SamplingParams` arguments,
messages -> multimodal input, output -> `GenerationResult`) is plain Python below and is
tested without TensorRT-LLM; `tensorrt_llm` is imported only when an engine is built.

Parameters (strings in the model config; unknown keys are refused; default in brackets):

- `checkpoint` [required]: HF checkpoint directory, absolute or relative to the model dir.
- `chat_template` [""]: a Jinja file to use instead of the checkpoint's chat template.
- `dtype` [auto]: `auto` (the checkpoint's), `bfloat16`, `float16`.
- `quantization` [none]: `none` or `fp8`, what the checkpoint must be (checked at load). FP8
  weights come pre-quantized in the checkpoint (NVIDIA ModelOpt, or HF fine-grained FP8).
- `kv_cache_dtype` [auto]: `auto` (the model's dtype) or `fp8`.
- `tensor_parallel_size` [1]: GPUs the model is split over (attention and, by default, MoE).
- `pipeline_parallel_size` [1]: pipeline stages.
- `moe_expert_parallel_size` [0]: experts spread over this many GPUs (0: TensorRT-LLM derives
  it); `moe_tensor_parallel_size` [0]: each expert split over this many GPUs (0: derived).
  With both set, their product must equal `tensor_parallel_size`.
- `enable_attention_dp` [false]: data-parallel attention (pairs with expert parallelism).
- `moe_backend` [CUTLASS]: `MoeConfig.backend` (CUTLASS on Hopper, TRTLLM on Blackwell,
  DEEPGEMM for FP8 block-scale checkpoints).
- `max_batch_size` [64]: sequences in flight in the executor; `max_num_tokens` [8192]: tokens
  per executor iteration; `max_seq_len` [0]: longest prompt + completion (0: the
  checkpoint's); `enable_chunked_prefill` [true].
- `enable_block_reuse` [true]: KV-cache prefix reuse across requests;
  `free_gpu_memory_fraction` [0.85]: share of the memory left after loading given to the
  KV cache.
- `cuda_graph_max_batch_size` [0]: decode CUDA graphs up to this batch size (0: the default).
- `trust_remote_code` [false]: allow code shipped in the checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import Done, GenerationRequest, GenerationResult, Sampling, apply_stop, image_parts
from engines import ConfigError, Instance, parse_bool, parse_int, resolve_path, take_parameters

DEFAULTS = {
    "checkpoint": "",
    "chat_template": "",
    "dtype": "auto",
    "quantization": "none",
    "kv_cache_dtype": "auto",
    "tensor_parallel_size": "1",
    "pipeline_parallel_size": "1",
    "moe_expert_parallel_size": "0",
    "moe_tensor_parallel_size": "0",
    "enable_attention_dp": "false",
    "moe_backend": "CUTLASS",
    "max_batch_size": "64",
    "max_num_tokens": "8192",
    "max_seq_len": "0",
    "enable_chunked_prefill": "true",
    "enable_block_reuse": "true",
    "free_gpu_memory_fraction": "0.85",
    "cuda_graph_max_batch_size": "0",
    "trust_remote_code": "false",
}
DTYPES = ("auto", "bfloat16", "float16")
QUANTIZATIONS = ("none", "fp8")
KV_CACHE_DTYPES = ("auto", "fp8")
# `MoeConfig.backend` values across recent TensorRT-LLM releases; a release rejects the ones it
# does not have when the engine is built.
MOE_BACKENDS = ("AUTO", "CUTLASS", "TRTLLM", "WIDEEP", "CUTEDSL", "DEEPGEMM", "VANILLA", "TRITON")
# What the Qwen-VL chat templates render for an image part, and what the model's input
# processor expands into the image's visual tokens.
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
# CompletionOutput.finish_reason -> the contract's; anything else ('timeout', 'cancelled',
# None) is an error.
FINISH_REASONS = {"stop": "stop", "length": "length"}
# Job-level MPI variables a server started under mpirun would pass down; the LLM API must start
# its own MPI session for tensor/expert-parallel workers (as NVIDIA's Triton LLM-API model does).
_MPI_JOB_VARIABLES = (
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_NODE_RANK",
    "OMPI_UNIVERSE_SIZE",
    "PMIX_RANK",
    "PMIX_NAMESPACE",
    "PMI_RANK",
    "PMI_SIZE",
)

TemplateRenderer = Callable[[list[dict[str, Any]]], str]


@dataclass(frozen=True)
class LLMSettings:
    """Validated engine settings, split the way the LLM API takes them.

    `llm` are `LLM(...)` keyword arguments other than the nested configs; `kv_cache`,
    `moe` and `cuda_graph` are the keyword arguments of `KvCacheConfig`, `MoeConfig` and
    `CudaGraphConfig` (`cuda_graph=None` keeps TensorRT-LLM's default).
    """

    model: str
    llm: Mapping[str, Any]
    kv_cache: Mapping[str, Any]
    moe: Mapping[str, Any]
    cuda_graph: Mapping[str, Any] | None
    quantization: str
    chat_template: str | None


def llm_settings(parameters: Mapping[str, str], model_dir: Path) -> LLMSettings:
    """Validate the engine's config parameters and translate them into LLM API arguments."""
    params = take_parameters(parameters, DEFAULTS, "trtllm")
    checkpoint = resolve_path(params["checkpoint"], model_dir)
    dtype = _choice(params, "dtype", DTYPES)
    quantization = _choice(params, "quantization", QUANTIZATIONS)
    kv_cache_dtype = _choice(params, "kv_cache_dtype", KV_CACHE_DTYPES)
    moe_backend = _choice(params, "moe_backend", MOE_BACKENDS)

    tp = parse_int(params["tensor_parallel_size"], "tensor_parallel_size", minimum=1)
    pp = parse_int(params["pipeline_parallel_size"], "pipeline_parallel_size", minimum=1)
    moe_ep = parse_int(params["moe_expert_parallel_size"], "moe_expert_parallel_size", minimum=0)
    moe_tp = parse_int(params["moe_tensor_parallel_size"], "moe_tensor_parallel_size", minimum=0)
    _check_moe_parallelism(tp, moe_ep, moe_tp)

    max_batch_size = parse_int(params["max_batch_size"], "max_batch_size", minimum=1)
    max_num_tokens = parse_int(params["max_num_tokens"], "max_num_tokens", minimum=1)
    max_seq_len = parse_int(params["max_seq_len"], "max_seq_len", minimum=0)
    graph_batch = parse_int(
        params["cuda_graph_max_batch_size"], "cuda_graph_max_batch_size", minimum=0
    )
    if graph_batch > max_batch_size:
        raise ConfigError(
            f"parameter 'cuda_graph_max_batch_size' ({graph_batch}) must not exceed "
            f"'max_batch_size' ({max_batch_size})"
        )
    fraction = _fraction(params["free_gpu_memory_fraction"], "free_gpu_memory_fraction")

    llm: dict[str, Any] = {
        "dtype": dtype,
        "tensor_parallel_size": tp,
        "pipeline_parallel_size": pp,
        "enable_attention_dp": parse_bool(params["enable_attention_dp"], "enable_attention_dp"),
        "max_batch_size": max_batch_size,
        "max_num_tokens": max_num_tokens,
        "enable_chunked_prefill": parse_bool(
            params["enable_chunked_prefill"], "enable_chunked_prefill"
        ),
        "trust_remote_code": parse_bool(params["trust_remote_code"], "trust_remote_code"),
    }
    if moe_ep:
        llm["moe_expert_parallel_size"] = moe_ep
    if moe_tp:
        llm["moe_tensor_parallel_size"] = moe_tp
    if max_seq_len:
        llm["max_seq_len"] = max_seq_len
    kv_cache = {
        "enable_block_reuse": parse_bool(params["enable_block_reuse"], "enable_block_reuse"),
        "free_gpu_memory_fraction": fraction,
        "dtype": kv_cache_dtype,
    }
    cuda_graph = {"max_batch_size": graph_batch, "enable_padding": True} if graph_batch else None
    template = params["chat_template"]
    return LLMSettings(
        model=str(checkpoint),
        llm=llm,
        kv_cache=kv_cache,
        moe={"backend": moe_backend},
        cuda_graph=cuda_graph,
        quantization=quantization,
        chat_template=str(resolve_path(template, model_dir)) if template else None,
    )


def checkpoint_quantization(checkpoint: Path) -> str:
    """`fp8` or `none`: what the checkpoint's weights are, from its quantization config.

    Reads ModelOpt's `hf_quant_config.json` (`quantization.quant_algo`, e.g. `FP8`,
    `FP8_BLOCK_SCALES`) or `config.json`'s `quantization_config` (`quant_method: fp8` for HF
    fine-grained FP8, or `quant_algo` for ModelOpt). Other quantizations raise `ConfigError`.
    """
    algorithm: str | None = None
    modelopt = checkpoint / "hf_quant_config.json"
    if modelopt.exists():
        algorithm = (_read_json(modelopt).get("quantization") or {}).get("quant_algo")
    config_file = checkpoint / "config.json"
    if algorithm is None and config_file.exists():
        quantization = _read_json(config_file).get("quantization_config") or {}
        algorithm = quantization.get("quant_algo") or quantization.get("quant_method")
    if not algorithm:
        return "none"
    if str(algorithm).upper().startswith("FP8"):
        return "fp8"
    raise ConfigError(
        f"checkpoint {checkpoint} is quantized as {algorithm!r}; this engine is configured for "
        f"{' or '.join(QUANTIZATIONS)} only"
    )


def sampling_kwargs(sampling: Sampling) -> dict[str, Any]:
    """`SamplingParams` keyword arguments for one request's sampling.

    Temperature 0 is greedy, written as `top_k=1` with no temperature or top_p: every
    TensorRT-LLM release treats that as greedy (older ones ignore `temperature=0`).
    Stop strings are kept in the output, as the contract's `text` includes them.
    """
    kwargs: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "add_special_tokens": False,  # the prompt is a rendered chat template
        "include_stop_str_in_output": True,
        "detokenize": True,
        "skip_special_tokens": True,
    }
    if sampling.stop:
        kwargs["stop"] = list(sampling.stop)
    if sampling.greedy:
        kwargs["top_k"] = 1
    else:
        kwargs["temperature"] = sampling.temperature
        kwargs["top_p"] = sampling.top_p
    if sampling.seed is not None:
        kwargs["seed"] = sampling.seed
    return kwargs


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as a chat template sees them: image parts keep only their type."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": "image"} if p["type"] == "image" else dict(p) for p in content]
        rendered.append({**message, "content": content})
    return rendered


def multimodal_input(
    messages: Sequence[Mapping[str, Any]], render: TemplateRenderer
) -> dict[str, Any]:
    """The LLM API prompt for one request: `{"prompt": ...}` plus `multi_modal_data` when the
    messages hold images (PIL images, in the order their placeholders appear)."""
    prompt = render(template_messages(messages))
    images = image_parts(messages)
    found = prompt.count(IMAGE_PLACEHOLDER)
    if found != len(images):
        raise ValueError(
            f"the chat template rendered {found} image placeholders for {len(images)} images"
        )
    if not images:
        return {"prompt": prompt}
    return {"prompt": prompt, "multi_modal_data": {"image": list(images)}}


def to_result(output: Any, sampling: Sampling) -> GenerationResult:
    """A `GenerationResult` from one `RequestOutput` (its first completion)."""
    completion = output.outputs[0]
    reason = FINISH_REASONS.get(str(completion.finish_reason))
    if reason is None:
        return GenerationResult.failure(f"generation ended with {completion.finish_reason!r}")
    # The stop string ends the text (TensorRT-LLM keeps it, and decoding may add characters
    # of the tokens that completed it); the contract wants nothing after it.
    text, hit = apply_stop(str(completion.text), sampling.stop)
    return GenerationResult(
        text=text,
        finish_reason="stop" if hit else reason,  # type: ignore[arg-type]
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(completion.token_ids or ()),
    )


class TRTLLMEngine:
    """Hands each request to the executor as it arrives (an `InFlightEngine`); an event loop
    thread awaits the outputs and answers each request when its output is done."""

    def __init__(
        self,
        llm: Any,
        render: TemplateRenderer,
        sampling_params: Callable[..., Any],
    ) -> None:
        self.llm = llm
        self.render = render
        self.sampling_params = sampling_params
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="trtllm-outputs", daemon=True
        )
        self._thread.start()

    def submit(self, requests: Sequence[tuple[GenerationRequest, Done]]) -> None:
        for request, done in requests:
            try:
                prompt = multimodal_input(request.messages, self.render)
            except Exception as exc:  # a request the template cannot render fails alone
                done(GenerationResult.failure(f"chat template error: {exc}"))
                continue
            params = self.sampling_params(**sampling_kwargs(request.sampling))
            try:
                output = self.llm.generate_async(prompt, sampling_params=params)
            except Exception as exc:  # the executor refused this request
                done(GenerationResult.failure(f"engine error: {type(exc).__name__}: {exc}"))
                continue
            asyncio.run_coroutine_threadsafe(_answer(output, request.sampling, done), self._loop)

    def close(self) -> None:
        """Stop the executor and its workers (requests in flight end with its error), then
        the event loop."""
        self.llm.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


async def _answer(output: Any, sampling: Sampling, done: Done) -> None:
    """Wait for one request's output and answer it."""
    try:
        result = to_result(await output.aresult(), sampling)
    except Exception as exc:  # the request failed in the executor
        result = GenerationResult.failure(f"engine error: {type(exc).__name__}: {exc}")
    done(result)


def from_parameters(
    model_dir: Path, parameters: Mapping[str, str], instance: Instance
) -> TRTLLMEngine:
    """Build the engine. The LLM API places itself on the visible GPUs (its parallel sizes),
    so the Triton instance is `KIND_CPU` and `instance` is not used."""
    del instance
    settings = llm_settings(parameters, model_dir)
    checkpoint = Path(settings.model)
    if not (checkpoint / "config.json").exists():
        raise ConfigError(f"no HF checkpoint (config.json) in {checkpoint}")
    found = checkpoint_quantization(checkpoint)
    if found != settings.quantization:
        raise ConfigError(
            f"parameter 'quantization' is {settings.quantization!r} but checkpoint "
            f"{checkpoint} is {found!r}"
        )
    for variable in _MPI_JOB_VARIABLES:
        os.environ.pop(variable, None)

    from tensorrt_llm import LLM, SamplingParams
    from tensorrt_llm.llmapi import CudaGraphConfig, KvCacheConfig, MoeConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        checkpoint, trust_remote_code=settings.llm["trust_remote_code"]
    )
    render = chat_renderer(tokenizer, _chat_template(checkpoint, settings.chat_template))
    llm = LLM(
        model=settings.model,
        kv_cache_config=KvCacheConfig(**settings.kv_cache),
        moe_config=MoeConfig(**settings.moe),
        **(
            {"cuda_graph_config": CudaGraphConfig(**settings.cuda_graph)}
            if settings.cuda_graph
            else {}
        ),
        **settings.llm,
    )
    return TRTLLMEngine(llm, render, SamplingParams)


def chat_renderer(tokenizer: Any, chat_template: str | None) -> TemplateRenderer:
    """A renderer that applies `chat_template` (None: the tokenizer's) with a generation
    prompt."""

    def render(messages: list[dict[str, Any]]) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True
            )
        )

    return render


def _chat_template(checkpoint: Path, override: str | None) -> str | None:
    """The configured template file, else the checkpoint's (`chat_template.jinja`, then
    `chat_template.json`), else None: the tokenizer's own."""
    if override:
        path = Path(override)
        if not path.is_file():
            raise ConfigError(f"chat template file not found: {path}")
        return path.read_text(encoding="utf-8")
    jinja = checkpoint / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    legacy = checkpoint / "chat_template.json"
    if legacy.exists():
        return str(_read_json(legacy)["chat_template"])
    return None


def _check_moe_parallelism(tp: int, moe_ep: int, moe_tp: int) -> None:
    """TensorRT-LLM lays the experts over the tensor-parallel GPUs: moe_tp * moe_ep == tp."""
    if moe_ep and moe_tp and moe_ep * moe_tp != tp:
        raise ConfigError(
            f"moe_expert_parallel_size ({moe_ep}) x moe_tensor_parallel_size ({moe_tp}) must "
            f"equal tensor_parallel_size ({tp})"
        )
    for size, key in ((moe_ep, "moe_expert_parallel_size"), (moe_tp, "moe_tensor_parallel_size")):
        if size and tp % size:
            raise ConfigError(f"{key} ({size}) must divide tensor_parallel_size ({tp})")


def _choice(params: Mapping[str, str], key: str, allowed: Sequence[str]) -> str:
    value = params[key]
    if value not in allowed:
        raise ConfigError(f"parameter {key!r} must be one of {list(allowed)}, got {value!r}")
    return value


def _fraction(value: str, key: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"parameter {key!r} must be a number, got {value!r}") from None
    if not 0.0 < number <= 1.0:
        raise ConfigError(f"parameter {key!r} must be in (0, 1], got {number}")
    return number


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data
