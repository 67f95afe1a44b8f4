"""Qwen3-VL-30B-A3B's real shape on CPU: its processor, tokens and chat template served by the
`hf` engine through `tritonserver`, driven by annotate.

The checkpoint (`random_checkpoint.write_real_shape_checkpoint`) has Qwen3-VL-30B-A3B-Instruct's
published processor configs and chat template, its added tokens at their real ids, random
weights and tiny layers. The server is staged as `python -m beam_pipelines serve` stages it
(the budget comes from the checkpoint's processor config) and logs every prompt as the engine
builds it (`prompt_log`). What the model receives is checked against what upstream computes
from the committed upstream files, not against the project's own code:

- the view of a 3000 x 2000 job image has the size the real budget (65,536 to 16,777,216
  pixels, 32-pixel grid) gives, and the processor keeps it as it is: 1984 x 2976, 5,766 visual
  tokens, not a 128 x 128 view;
- the prompt the engine rendered is the upstream template's rendering of the conversation the
  pipeline sent (transformers' `render_jinja_template`, what `Qwen3VLProcessor.apply_chat_template`
  runs), and its token count is upstream's;
- a tool image comes back named `<sub-image 1>` in the observation, as an image part the
  template renders right after it. Random weights never write a tool call, so that turn is
  scripted: the trajectory of the annotate run is restarted with the model's first turn replaced
  by a `code` call, the real code tool runs it and stores its image at the served budget (what
  `ExecuteTools` does), and the next turn goes to the served model through the pipeline's model
  client (what `Generate` does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from beam_pipelines import annotate
from beam_pipelines.agent import loop
from beam_pipelines.agent.records import Trajectory
from beam_pipelines.annotate import AnnotateResult
from beam_pipelines.model_client.base import ModelEndpoint, ModelReply
from beam_pipelines.model_client.channel import ModelChannel, complete, inline_images
from beam_pipelines.serve import TritonServer, stage_model_repository
from beam_pipelines.transforms.execute_tools import ToolRuntime, run_turn
from beam_pipelines.transforms.images import ImageStore

from .runs import run_rows, trace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL_CODE = Path(__file__).resolve().parents[2] / "triton_repo" / "agent_vlm" / "1"
WIDTH, HEIGHT = 3000, 2000
IMAGE_PART = "<|vision_start|><|image_pad|><|vision_end|>"


def _random_checkpoint() -> Any:
    spec = importlib.util.spec_from_file_location(
        "random_checkpoint", MODEL_CODE / "random_checkpoint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


random_checkpoint = _random_checkpoint()
UPSTREAM = random_checkpoint.QWEN3_VL_FILES
TEMPLATE = json.loads((UPSTREAM / "chat_template.json").read_text(encoding="utf-8"))[
    "chat_template"
]
PROCESSOR = json.loads((UPSTREAM / "preprocessor_config.json").read_text(encoding="utf-8"))
MIN_PIXELS = PROCESSOR["size"]["shortest_edge"]
MAX_PIXELS = PROCESSOR["size"]["longest_edge"]
FACTOR = PROCESSOR["patch_size"] * PROCESSOR["merge_size"]  # one visual token's side


def smart_resize(width: int, height: int) -> tuple[int, int]:
    """(width, height) upstream's image processor resizes an image of this size to."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return w, h


def seen(width: int, height: int) -> dict[str, int]:
    """What the model receives of an image sent at `width` x `height`, as the prompt log has it."""
    w, h = smart_resize(width, height)
    return {"height": h, "width": w, "tokens": h * w // FACTOR**2}


@dataclass(frozen=True)
class Served:
    server: TritonServer
    prompt_log: Path

    def prompts(self) -> list[dict[str, Any]]:
        """Every prompt the engine built so far, in order."""
        lines = self.prompt_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]


@dataclass(frozen=True)
class Run:
    result: AnnotateResult
    trace: dict[str, Any]
    prompts: list[dict[str, Any]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint.write_real_shape_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def served(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("real-shape")
    prompt_log = root / "prompts.jsonl"
    repository = stage_model_repository(
        root / "repo",
        model_config_name="hf",
        parameters={
            "checkpoint": str(checkpoint),
            "dtype": "float32",
            "device": "cpu",
            "prompt_log": str(prompt_log),
        },
        instance_kind="KIND_CPU",
    )
    log_file = root / "tritonserver.log"
    with TritonServer(repository, log_file=log_file, startup_timeout_s=300) as server:
        yield Served(server, prompt_log)


@pytest.fixture(scope="module")
def tokenizer(checkpoint: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def job_image() -> Image.Image:
    """A 3000 x 2000 scene with a small sign in its lower right quarter."""
    image = Image.linear_gradient("L").resize((WIDTH, HEIGHT)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((2400, 1500, 2520, 1560), fill=(200, 20, 20))
    draw.text((2420, 1520), "STOP", fill=(255, 255, 255))
    return image


@pytest.fixture(scope="module")
def run(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("annotate")
    job_image().save(root / "scene.png")
    job = {
        "id": "scene",
        "image": str(root / "scene.png"),
        "question": "What does the sign say?",
        "options": ["STOP", "GO"],
    }
    (root / "jobs.jsonl").write_text(json.dumps(job) + "\n")
    result = annotate.run(
        [
            f"--input={root / 'jobs.jsonl'}",
            f"--output={root / 'out'}",
            f"--endpoint=triton:{served.server.grpc_url}",
            "--run_id=real-shape",
            "--max_turns=2",
            "--max_tokens=16",
            "--max_in_flight=2",
            "--progress=off",
        ]
    )
    answers, failures = run_rows(result)
    assert failures == [] and len(answers) == 1, failures
    # Random weights write no valid turn: two format errors, then the turn budget ends it.
    assert answers[0]["status"] == "max_turns" and answers[0]["turns"] == 2
    return Run(result, trace(answers[0]["trace_uri"]), served.prompts())


def conversation_before_turn(messages: Sequence[Mapping[str, Any]], turn: int) -> list[Any]:
    """The messages the model was sent for its `turn`-th reply (from 1)."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return list(messages[: assistant[turn - 1]])


def image_sizes(messages: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(width, height) of every image the messages send, in order."""
    sizes = []
    for message in messages:
        if isinstance(message["content"], list):
            for part in message["content"]:
                if part["type"] == "image_url":
                    uri = part["image_url"]["url"]
                    with Image.open(uri) as image:
                        sizes.append(image.size)
    return sizes


def upstream_prompt(messages: Sequence[Mapping[str, Any]], tokenizer: Any) -> str:
    """The upstream template's rendering of the OpenAI messages the pipeline sends, as
    `ProcessorMixin.apply_chat_template` renders it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    prompts, _ = render_jinja_template(
        conversations=[list(messages)],
        chat_template=TEMPLATE,
        add_generation_prompt=True,
        **tokenizer.special_tokens_map,
    )
    return prompts[0]


def upstream_tokens(prompt: str, sizes: Sequence[tuple[int, int]], tokenizer: Any) -> int:
    """The prompt's tokens once upstream's processor gives each image its visual tokens."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(UPSTREAM)
    pieces = prompt.split("<|image_pad|>")
    assert len(pieces) == len(sizes) + 1
    expanded = pieces[0]
    for (width, height), piece in zip(sizes, pieces[1:], strict=True):
        tokens = processor.get_number_of_image_patches(height, width) // processor.merge_size**2
        expanded += "<|image_pad|>" * tokens + piece
    return len(tokenizer(expanded, add_special_tokens=False)["input_ids"])


def test_the_upstream_files_are_the_published_ones() -> None:
    """The committed copies are the checkpoint's files (random_checkpoint.py: sources)."""
    digest = hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert digest == "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"
    sizes = {name: (UPSTREAM / name).stat().st_size for name in random_checkpoint.QWEN3_VL_COPIED}
    assert sizes["preprocessor_config.json"] == 390
    assert sizes["video_preprocessor_config.json"] == 385
    assert PROCESSOR["size"] == {"longest_edge": 16777216, "shortest_edge": 65536}
    assert (PROCESSOR["patch_size"], PROCESSOR["merge_size"]) == (16, 2)


def test_the_checkpoint_has_qwen3_vls_tokens_at_their_real_ids(tokenizer: Any) -> None:
    ids = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
    ids |= {"<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655}
    ids |= {"<tool_call>": 151657, "</tool_call>": 151658, "<think>": 151667, "</think>": 151668}
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in ids} == ids
    assert len(tokenizer) == 151669 and tokenizer.eos_token == "<|im_end|>"
    # The tool-call and thinking tags are one token each and survive decoding; <|im_end|> not.
    ids = tokenizer("<think>a</think><tool_call>{}</tool_call><|im_end|>")["input_ids"]
    assert ids[0] == 151667 and ids[-2:] == [151658, 151645]
    assert (
        tokenizer.decode(ids, skip_special_tokens=True)
        == "<think>a</think><tool_call>{}</tool_call>"
    )


def test_the_view_the_model_receives_has_the_real_budgets_size(run: Run) -> None:
    # The client sized the views by the budget the server stated: the checkpoint's own.
    assert run.result.config.max_pixels == MAX_PIXELS == 16_777_216
    manifest_budget = json.loads(Path(run.result.layout.manifest).read_text())["image_budget"]
    assert manifest_budget == {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": PROCESSOR["patch_size"],
        "merge_size": PROCESSOR["merge_size"],
    }
    # Within the budget, the view is the image on the 32-pixel grid (never enlarged)...
    assert WIDTH * HEIGHT <= MAX_PIXELS
    view = (WIDTH // FACTOR * FACTOR, HEIGHT // FACTOR * FACTOR)
    assert image_sizes(run.trace["messages"]) == [view] == [(2976, 1984)]
    # ... which upstream's processor keeps as it is: what the model was given, every turn.
    assert [prompt["images"] for prompt in run.prompts] == [[seen(*view)]] * 2
    assert seen(*view) == {"height": 1984, "width": 2976, "tokens": 5766}
    # Upstream, sent the original, would give the model 1984 x 3008: one 32-px column more.
    width, height = smart_resize(WIDTH, HEIGHT)
    assert height == view[1] and 0 < width - view[0] <= FACTOR


def test_the_engine_renders_the_prompt_as_the_upstream_template_does(
    run: Run, tokenizer: Any
) -> None:
    messages = run.trace["messages"]
    assert len(run.prompts) == 2
    for turn, logged in enumerate(run.prompts, start=1):
        sent = conversation_before_turn(messages, turn)
        assert logged["prompt"] == upstream_prompt(sent, tokenizer)
        assert logged["prompt_tokens"] == upstream_tokens(
            logged["prompt"], image_sizes(sent), tokenizer
        )
    first = run.prompts[0]["prompt"]
    system, user = messages[0]["content"], messages[1]["content"][1]["text"]
    assert first == (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE_PART}{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The second turn replays the model's first reply verbatim, then the format error.
    second = run.prompts[1]["prompt"]
    assert second.startswith(first + messages[2]["content"] + "<|im_end|>\n<|im_start|>user\n")
    assert run.trace["usage"]["prompt_tokens"] == sum(p["prompt_tokens"] for p in run.prompts)


def test_a_tool_image_comes_back_as_sub_image_n(run: Run, served: Served, tokenizer: Any) -> None:
    done = loop.from_trace(run.trace)
    traj = loop.start(
        done.job,
        done.protocol,
        done.tools,
        done.original,
        done.view,
        model=done.model,
        sampling=done.sampling,
        max_turns=done.max_turns,
    )
    code = "save_image(image.crop((1500, 1000, 3000, 2000)))"
    call = json.dumps({"name": "code", "arguments": {"code": code}})
    think = "The sign is small: look at the lower right quarter."
    traj, calls = loop.advance(
        traj,
        f"<think>{think}</think><tool_call>{call}</tool_call>",
        finish_reason="stop",
        usage={"prompt_tokens": 0, "completion_tokens": 0},
        latency_s=0.0,
    )
    assert [c.name for c in calls] == ["code"]
    store = ImageStore(run.result.layout, run.result.config.max_pixels)
    observed = run_turn(traj, ToolRuntime(["code"], workers=1), store, timeout_s=60).outcome
    assert isinstance(observed, Trajectory), observed

    observation = observed.messages[-1]
    assert observation["role"] == "user"
    assert observation["content"][0] == {
        "type": "text",
        "text": '<observation>{"result": "<sub-image 1>", "type": "code"}</observation>',
    }
    assert [part["type"] for part in observation["content"]] == ["text", "image_url"]
    crop = (1500, 1000)  # the tool image is the crop at full resolution; its view is on the grid
    sizes = image_sizes(observed.messages)
    assert sizes == [(2976, 1984), (crop[0] // FACTOR * FACTOR, crop[1] // FACTOR * FACTOR)]

    before = len(served.prompts())
    endpoint = ModelEndpoint.at(f"triton:{served.server.grpc_url}", timeout_s=120, max_in_flight=1)
    channel = ModelChannel(endpoint)
    try:
        reply = complete(
            channel, inline_images(observed.messages, channel.views), observed.sampling
        )
    finally:
        channel.close()
    assert isinstance(reply, ModelReply) and reply.finish_reason != "error", reply

    logged = served.prompts()[before:]
    assert len(logged) == 1
    prompt = logged[0]["prompt"]
    assert prompt == upstream_prompt(observed.messages, tokenizer)
    assert prompt.endswith(
        '<|im_start|>user\n<observation>{"result": "<sub-image 1>", "type": "code"}</observation>'
        f"{IMAGE_PART}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert logged[0]["images"] == [seen(*size) for size in sizes]
    assert logged[0]["prompt_tokens"] == reply.usage["prompt_tokens"]
    assert reply.usage["prompt_tokens"] == upstream_tokens(prompt, sizes, tokenizer)
    # The full-resolution crop is kept too: later code calls read it as `sub_image_1`.
    with Image.open(loop.sub_images(observed)[0].uri) as full:
        assert full.size == crop
