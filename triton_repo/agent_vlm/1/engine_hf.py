"""The `hf` engine: any local Qwen3-VL-family checkpoint through Hugging Face transformers.

The checkpoint directory is loaded with `AutoModelForImageTextToText.from_pretrained` and its
own tokenizer, image processor and chat template. All requests of a dynamic batch are
generated as one left-padded batch by `model.generate`; per-request sampling happens in a
logits processor (each row has its own temperature, top_p and `torch.Generator`, so a seed
reproduces a sample whatever else is in the batch) and per-request ends (EOS, stop strings,
`max_tokens`) in a stopping criterion that stops each row on its own.

Inputs are assembled the way `Qwen3VLProcessor` does it for images (each image pad of the
rendered template expanded to the image's number of merged patches, `mm_token_type_ids`
marking them), from `AutoTokenizer` and `AutoImageProcessor`: transformers 5 cannot build
`Qwen3VLProcessor` without torchvision, which this environment cannot install beside its
CPU torch build.

Parameters: `checkpoint` (required), `device` (`auto`: the Triton instance's device),
`dtype` (`auto`: bfloat16 on GPU, float32 on CPU), `attn_implementation` (`sdpa`),
`torch_threads` (0: torch's default), `prompt_log` (empty: off; else a file, absolute or
relative to the model's directory, to which every request's prompt is appended as the model
receives it, one JSON line each: `prompt`, the chat template's rendering with one image pad
per image; `images`, the `height`, `width` and `tokens` each image was processed to;
`prompt_tokens`. For checking a checkpoint's chat template and image budget against what the
model was trained on).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from contract import GenerationRequest, GenerationResult, Sampling, apply_stop, image_parts
from engines import ConfigError, Instance, parse_int, resolve_path, take_parameters
from PIL import Image

DEFAULTS = {
    "checkpoint": "",
    "device": "auto",
    "dtype": "auto",
    "attn_implementation": "sdpa",
    "torch_threads": "0",
    "prompt_log": "",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
IMAGE_TOKEN = "<|image_pad|>"
_PLACEHOLDER = "\x00image\x00"


@dataclass
class PromptBatch:
    """Model inputs for a batch, and each row's prompt length in real tokens."""

    inputs: dict[str, torch.Tensor]
    prompt_tokens: list[int]


class VisionChatProcessor:
    """Turns chat messages with PIL image parts into Qwen-VL model inputs."""

    def __init__(self, tokenizer: Any, image_processor: Any, chat_template: str | None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    @classmethod
    def load(cls, checkpoint: Path) -> VisionChatProcessor:
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        image_processor = AutoImageProcessor.from_pretrained(checkpoint)
        return cls(tokenizer, image_processor, _chat_template(checkpoint, tokenizer))

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text for `messages`, ending with the assistant generation prompt."""
        # The template needs only each part's type; the pixels go to the image processor.
        light = [
            {
                **m,
                "content": m["content"]
                if isinstance(m["content"], str)
                else [{"type": "image"} if p["type"] == "image" else p for p in m["content"]],
            }
            for m in messages
        ]
        text = self.tokenizer.apply_chat_template(
            light, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        expected = len(image_parts(messages))
        if text.count(IMAGE_TOKEN) != expected:
            raise ValueError(
                f"the chat template rendered {text.count(IMAGE_TOKEN)} image pads for "
                f"{expected} images"
            )
        return text

    def batch(self, prompts: Sequence[str], images: Sequence[Image.Image]) -> PromptBatch:
        """Tokenize rendered prompts (left-padded) with the images they reference, in order."""
        inputs: dict[str, torch.Tensor] = {}
        counts: list[int] = []
        if images:
            vision = self.image_processor(images=list(images), return_tensors="pt")
            inputs["pixel_values"] = vision["pixel_values"]
            inputs["image_grid_thw"] = vision["image_grid_thw"]
            counts = [int(g.prod()) // self.merge_size**2 for g in vision["image_grid_thw"]]
        expanded = []
        remaining = iter(counts)
        for prompt in prompts:
            pieces = prompt.split(IMAGE_TOKEN)
            text = pieces[0]
            for piece in pieces[1:]:
                text += IMAGE_TOKEN * next(remaining) + piece
            expanded.append(text)
        encoded = self.tokenizer(
            expanded,
            padding=True,
            padding_side="left",
            add_special_tokens=False,
            return_tensors="pt",
        )
        inputs["input_ids"] = encoded["input_ids"]
        inputs["attention_mask"] = encoded["attention_mask"]
        inputs["mm_token_type_ids"] = (encoded["input_ids"] == self.image_token_id).int()
        return PromptBatch(inputs, [int(n) for n in encoded["attention_mask"].sum(dim=1)])


class RowState:
    """Per-row sampling settings and finish bookkeeping, shared by the sampler and stopper."""

    def __init__(
        self, samplings: Sequence[Sampling], eos_ids: set[int], pad_id: int, device: str
    ) -> None:
        self.samplings = list(samplings)
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.finish_reason: list[str | None] = [None] * len(samplings)
        self.length: list[int] = [0] * len(samplings)
        self.generators = []
        for sampling in samplings:
            generator = torch.Generator(device=device)
            if sampling.seed is None:
                generator.seed()
            else:
                generator.manual_seed(sampling.seed)
            self.generators.append(generator)


class RowSampler:
    """A logits processor that picks each row's next token with that row's own settings.

    It returns logits that are `-inf` except at the chosen token, so whatever `generate` does
    next (greedy argmax) selects exactly that token.
    """

    def __init__(self, state: RowState) -> None:
        self.state = state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        chosen = torch.full((scores.shape[0],), self.state.pad_id, dtype=torch.long)
        for row, sampling in enumerate(self.state.samplings):
            if self.state.finish_reason[row] is None:
                chosen[row] = _pick(scores[row], sampling, self.state.generators[row])
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.to(scores.device)[:, None], 0.0)
        return out


class RowStopper:
    """A stopping criterion that ends each row at EOS, a stop string, or its `max_tokens`."""

    def __init__(self, state: RowState, prompt_width: int, tokenizer: Any) -> None:
        self.state = state
        self.prompt_width = prompt_width
        self.tokenizer = tokenizer
        longest = max((len(s) for p in state.samplings for s in p.stop), default=0)
        # Every token decodes to at least one character of a stop string it helps complete.
        self.window = 2 * longest + 4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        generated = input_ids[:, self.prompt_width :].tolist()
        state = self.state
        for row, tokens in enumerate(generated):
            if state.finish_reason[row] is not None or not tokens:
                continue
            sampling = state.samplings[row]
            if tokens[-1] in state.eos_ids:
                state.finish_reason[row], state.length[row] = "stop", len(tokens) - 1
            elif sampling.stop and _contains_any(
                self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=True),
                sampling.stop,
            ):
                state.finish_reason[row], state.length[row] = "stop", len(tokens)
            elif len(tokens) >= sampling.max_tokens:
                state.finish_reason[row], state.length[row] = "length", len(tokens)
        done = [reason is not None for reason in state.finish_reason]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFEngine:
    """Generates each dynamic batch with one `model.generate` call."""

    def __init__(
        self,
        model: Any,
        processor: VisionChatProcessor,
        device: str,
        prompt_log: Path | None = None,
    ) -> None:
        from transformers import GenerationConfig

        self.model = model
        self.processor = processor
        self.device = device
        self.prompt_log = prompt_log
        tokenizer = processor.tokenizer
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(int(tokenizer.eos_token_id))
        if not eos_ids:
            raise ConfigError("the checkpoint defines no EOS token")
        self.eos_ids = eos_ids
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(eos_ids))
        # Sampling comes from each request alone: drop the checkpoint's sampling defaults
        # (temperature, top_k, repetition penalties) so that they never apply silently.
        self.model.generation_config = GenerationConfig(
            eos_token_id=sorted(eos_ids), pad_token_id=self.pad_id, do_sample=False
        )

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        device: str,
        dtype: torch.dtype,
        attn_implementation: str,
        prompt_log: Path | None = None,
    ) -> HFEngine:
        from transformers import AutoModelForImageTextToText

        if not checkpoint.is_dir():
            raise ConfigError(f"checkpoint directory not found: {checkpoint}")
        processor = VisionChatProcessor.load(checkpoint)
        model = AutoModelForImageTextToText.from_pretrained(
            checkpoint, dtype=dtype, attn_implementation=attn_implementation
        )
        return cls(model.to(device).eval(), processor, device, prompt_log)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        rows: list[tuple[int, str, list[Image.Image]]] = []
        for index, request in enumerate(requests):
            try:
                prompt = self.processor.render(request.messages)
            except Exception as exc:  # a template that cannot render this request fails it alone
                results[index] = GenerationResult.failure(f"chat template error: {exc}")
                continue
            rows.append((index, prompt, image_parts(request.messages)))
        if rows:
            samplings = [requests[index].sampling for index, _, _ in rows]
            generated = self._generate_batch(
                [prompt for _, prompt, _ in rows],
                [image for _, _, images in rows for image in images],
                samplings,
            )
            for (index, _, _), result in zip(rows, generated, strict=True):
                results[index] = result
        return [r if r is not None else GenerationResult.failure("not generated") for r in results]

    @torch.inference_mode()
    def _generate_batch(
        self, prompts: list[str], images: list[Image.Image], samplings: list[Sampling]
    ) -> list[GenerationResult]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        batch = self.processor.batch(prompts, images)
        if self.prompt_log is not None:
            self._log_prompts(prompts, batch)
        inputs = {name: tensor.to(self.device) for name, tensor in batch.inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        state = RowState(samplings, self.eos_ids, self.pad_id, self.device)
        prompt_width = int(inputs["input_ids"].shape[1])
        output = self.model.generate(
            **inputs,
            max_new_tokens=max(s.max_tokens for s in samplings),
            logits_processor=LogitsProcessorList([RowSampler(state)]),
            stopping_criteria=StoppingCriteriaList(
                [RowStopper(state, prompt_width, self.processor.tokenizer)]
            ),
        )
        results = []
        for row, sampling in enumerate(samplings):
            length = state.length[row] if state.finish_reason[row] else sampling.max_tokens
            tokens = output[row, prompt_width : prompt_width + length].tolist()
            text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
            text, hit = apply_stop(text, sampling.stop)
            reason = "stop" if hit else state.finish_reason[row] or "length"
            results.append(
                GenerationResult(
                    text=text,
                    finish_reason=reason,  # type: ignore[arg-type]
                    prompt_tokens=batch.prompt_tokens[row],
                    completion_tokens=len(tokens),
                )
            )
        return results

    def _log_prompts(self, prompts: list[str], batch: PromptBatch) -> None:
        """Append each row's prompt, image sizes and token count to `prompt_log`."""
        grids = batch.inputs.get("image_grid_thw")
        sizes = iter([] if grids is None else grids.tolist())
        patch = int(getattr(self.processor.image_processor, "patch_size", 1))
        merge = self.processor.merge_size
        lines = []
        for row, prompt in enumerate(prompts):
            images = []
            for _ in range(prompt.count(IMAGE_TOKEN)):
                frames, height, width = next(sizes)
                images.append(
                    {
                        "height": height * patch,
                        "width": width * patch,
                        "tokens": frames * height * width // merge**2,
                    }
                )
            record = {"prompt": prompt, "images": images, "prompt_tokens": batch.prompt_tokens[row]}
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        with self.prompt_log.open("a", encoding="utf-8") as log:
            log.write("".join(lines))


def from_parameters(model_dir: Path, parameters: Mapping[str, str], instance: Instance) -> HFEngine:
    """Build the engine from config parameters (see the module docstring)."""
    params = take_parameters(parameters, DEFAULTS, "hf")
    device = instance.torch_device() if params["device"] == "auto" else params["device"]
    if params["dtype"] == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif params["dtype"] in DTYPES:
        dtype = DTYPES[params["dtype"]]
    else:
        raise ConfigError(f"parameter 'dtype' must be auto or one of {sorted(DTYPES)}")
    threads = parse_int(params["torch_threads"], "torch_threads", minimum=0)
    if threads:
        torch.set_num_threads(threads)
    checkpoint = resolve_path(params["checkpoint"], model_dir)
    prompt_log = resolve_path(params["prompt_log"], model_dir) if params["prompt_log"] else None
    return HFEngine.load(checkpoint, device, dtype, params["attn_implementation"], prompt_log)


def _pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """One token from a row's logits: argmax at temperature 0, else nucleus sampling."""
    if sampling.greedy:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def _contains_any(text: str, needles: Sequence[str]) -> bool:
    return any(needle in text for needle in needles)


def _chat_template(checkpoint: Path, tokenizer: Any) -> str | None:
    """The checkpoint's chat template: `chat_template.jinja`, `chat_template.json`, or the
    tokenizer's own."""
    jinja = checkpoint / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    legacy = checkpoint / "chat_template.json"
    if legacy.exists():
        return json.loads(legacy.read_text(encoding="utf-8"))["chat_template"]
    if getattr(tokenizer, "chat_template", None):
        return None  # apply_chat_template uses the tokenizer's
    raise ConfigError(f"checkpoint {checkpoint} has no chat template")
