"""Training trajectories for the tiny model, in the exact form the pipeline will show it.

Each synthetic image yields several conversations in the r1v4 protocol, rendered by the agent
core itself (system prompt, user text, observation) so that training and serving cannot drift:

- zoom question, tools on: think → `code` call cropping a box around the marker (full-resolution
  pixels) → observation with the crop → think naming the character and the option → answer;
- search question, tools on: the same zoom, then think naming the character → `text_search`
  call for its codebook entry → observation (the real tool's result over a codebook corpus) →
  think naming the codeword → answer;
- global question, tools on: think → answer, no tool;
- any question, tools off (no tool in the system prompt): think → answer from the global view
  alone. For zoom and search questions this target is a guess the view cannot support, which
  is what the "tools disabled" evaluation measures.

Tools on means one of two tool sets, drawn per example: `code` alone, or `code` and
`text_search` (search questions always get both), so the model serves either deployment.

Search results come from codebooks of the seeds 1 to `TRAIN_CODEBOOKS` (`tools.search.corpus`),
each a small corpus built and indexed in the training folder; seed 0, the offline search's
default corpus, is kept for evaluation, so the model cannot have learnt its mapping and must
read the result.

Images go through the same code path as in production: JPEG encode/decode, the agent core's
`model_view` for the global view, and the crop the model's code performs (PIL crop, resize to
128×128) for the sub-image, with the crop centre jittered to imitate the model's own errors.
"""

from __future__ import annotations

import io
import json
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from beam_pipelines import synthetic
from beam_pipelines.agent.images import model_view
from beam_pipelines.agent.protocols import get_protocol
from beam_pipelines.agent.records import ImageRef, Job, Observation
from tools.base import ToolContext
from tools.registry import tool_specs
from tools.search.corpus import CorpusSpec, build_corpus, open_corpus
from tools.search.search_tools import TextSearchTool

VIEW_PIXELS = 128 * 128
CROP_HALF = 80
CROP_VIEW = 128
JITTER = 24
TOOLS_OFF_FRACTION = 0.2
CELL = 128 // 8
NO_TOOLS: tuple[str, ...] = ()
CODE = ("code",)
SEARCH = ("code", "text_search")
#: Codebooks (corpus seeds 1..N) the search trajectories read; seed 0 is held out.
TRAIN_CODEBOOKS = 32
#: Results per query the search trajectories show, as deployments should set it
#: (`--tool_option text_search.max_results=1`): five results would not fit the context.
SEARCH_RESULTS = 1


def crop_code(fx: str, fy: str) -> str:
    """The code the model writes for a zoom: a 160 px box around a point of the image.

    The point is given as fractions of the width and height (R1V4's crops are fractions too),
    so the model names two digits per axis whatever the image's size; the box is in
    full-resolution pixels. The client downsizes the crop to the model's 128×128 view, as it
    does every image, so the glyph (about 38 px at full resolution) is about 30 px tall there.
    """
    return (
        f"x, y = {fx} * image.width, {fy} * image.height\n"
        f"save_image(image.crop((x - {CROP_HALF}, y - {CROP_HALF}, "
        f"x + {CROP_HALF}, y + {CROP_HALF})))"
    )


def fraction(value: int) -> str:
    """A full-resolution coordinate as the two-decimal fraction the model writes."""
    return f"{value / synthetic.IMAGE_SIDE:.2f}"


def from_fraction(text: str) -> int:
    return round(float(text) * synthetic.IMAGE_SIDE)


@dataclass(frozen=True)
class Example:
    """One reference trajectory: its question, tool mode, and the images it refers to."""

    question: synthetic.Question
    tools: tuple[str, ...]  # NO_TOOLS, CODE or SEARCH
    view: int  # index into the views array
    crop: int  # index into the crops array, -1 when none
    codebook_seed: int = -1  # the codebook a search question asks about


def tool_call_text(name: str, arguments: dict) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def search_query(char: str) -> str:
    return f"codebook symbol {char}"


def _assistant(question: synthetic.Question, tools_on: bool) -> list[str]:
    """The assistant turns of the reference trajectory for a question."""
    marker = question.target
    assert marker is not None
    # The answer is the option's text, which the answer row maps to its letter: a small model
    # learns to name what it sees much sooner than to look a name up in the option list.
    if question.kind == "colour":
        return [
            f"<think>The {marker.shape} is {marker.colour}.</think><answer>{marker.colour}</answer>"
        ]
    name = f"{marker.colour} {marker.shape}"
    if question.kind == "shape":
        return [
            f"<think>The {marker.colour} marker is a {marker.shape}.</think>"
            f"<answer>{marker.shape}</answer>"
        ]
    answer = question.options[synthetic.LETTERS.index(question.answer)]
    if not tools_on:
        return [
            f"<think>Without zooming, the {name} seems to hold {marker.char}.</think>"
            f"<answer>{answer}</answer>"
        ]
    code = crop_code(fraction(marker.x), fraction(marker.y))
    zoom = (
        f"<think>The characters are too small to read here. I will zoom in on the {name}."
        f"</think>" + tool_call_text("code", {"code": code})
    )
    if question.kind == "zoom":
        return [
            zoom,
            f"<think>The zoomed {name} holds {marker.char}.</think><answer>{answer}</answer>",
        ]
    return [
        zoom,
        f"<think>The zoomed {name} holds {marker.char}. I will look {marker.char} up in the "
        "codebook.</think>"
        + tool_call_text("text_search", {"queries": [search_query(marker.char)]}),
        f"<think>The codebook says {marker.char} stands for {answer}.</think>"
        f"<answer>{answer}</answer>",
    ]


def _image_part() -> dict:
    return {"type": "image_url", "image_url": {"url": "placeholder"}}


def conversation(
    question: synthetic.Question, tools: tuple[str, ...], search_result: str = ""
) -> list[dict]:
    """The r1v4 messages of one reference trajectory (image parts are placeholders).

    `search_result` is what the `text_search` tool returned for a search question's query.
    """
    protocol = get_protocol("r1v4")
    job = Job(
        id="x", image="x", question=question.text, options=question.options, answer=question.answer
    )
    turns = _assistant(question, bool(tools))
    messages = [
        {"role": "system", "content": protocol.system_prompt(tool_specs(tools))},
        {
            "role": "user",
            "content": [_image_part(), {"type": "text", "text": protocol.user_text(job)}],
        },
        {"role": "assistant", "content": turns[0]},
    ]
    if len(turns) > 1:
        crop = ImageRef(uri="placeholder", sha256="", width=CROP_VIEW, height=CROP_VIEW)
        observation = Observation(text="", images=(crop,), tool="code")
        rendered = protocol.render_observation([observation], 1)
        messages.append(
            {"role": "user", "content": [{"type": "text", "text": rendered}, _image_part()]}
        )
        messages.append({"role": "assistant", "content": turns[1]})
    if len(turns) > 2:
        observation = Observation(text=search_result, tool="text_search")
        rendered = protocol.render_observation([observation], 2)
        messages.append({"role": "user", "content": [{"type": "text", "text": rendered}]})
        messages.append({"role": "assistant", "content": turns[2]})
    return messages


def _jpeg_roundtrip(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _global_targets(scene: synthetic.Scene) -> np.ndarray:
    """Per view cell: colour id, shape id (0 = no marker centred there), x and y offset."""
    targets = np.zeros((64, 4), dtype=np.float32)
    scale = 128 / synthetic.IMAGE_SIDE
    colours = sorted(synthetic.COLOURS)
    for marker in scene.markers:
        vx, vy = marker.x * scale, marker.y * scale
        cell = int(vy // CELL) * 8 + int(vx // CELL)
        targets[cell] = (
            1 + colours.index(marker.colour),
            1 + synthetic.SHAPES.index(marker.shape),
            (vx % CELL) / CELL,
            (vy % CELL) / CELL,
        )
    return targets


def _tools(rng: random.Random, kind: str) -> tuple[str, ...]:
    if rng.random() < TOOLS_OFF_FRACTION:
        return NO_TOOLS
    return SEARCH if kind == "search" or rng.random() < 0.5 else CODE


def _crop(
    rng: random.Random, full: Image.Image, marker: synthetic.Marker
) -> tuple[np.ndarray, tuple]:
    """The jittered crop the model's code would make, and its glyph cell and tags."""
    cx = from_fraction(fraction(marker.x)) + rng.randint(-JITTER, JITTER)
    cy = from_fraction(fraction(marker.y)) + rng.randint(-JITTER, JITTER)
    box = (cx - CROP_HALF, cy - CROP_HALF, cx + CROP_HALF, cy + CROP_HALF)
    crop = model_view(full.crop(box), VIEW_PIXELS)
    gx = (marker.x - box[0]) * CROP_VIEW / (2 * CROP_HALF)
    gy = (marker.y - box[1]) * CROP_VIEW / (2 * CROP_HALF)
    cell = int(np.clip(gy // CELL, 0, 7)) * 8 + int(np.clip(gx // CELL, 0, 7))
    tags = (
        cell,
        1 + synthetic.CHARACTERS.index(marker.char),
        1 + sorted(synthetic.COLOURS).index(marker.colour),
        1 + synthetic.SHAPES.index(marker.shape),
    )
    return np.asarray(crop, dtype=np.uint8), tags


def build_image(seed: int) -> dict:
    """Render one scene and every example it yields (run in worker processes)."""
    rng = random.Random(seed)
    scene = synthetic.make_scene(rng)
    full = _jpeg_roundtrip(synthetic.render(scene))
    view = np.asarray(model_view(full, VIEW_PIXELS), dtype=np.uint8)
    zoom_markers = rng.sample(scene.markers, min(3, len(scene.markers)))
    questions = [(synthetic.ask_character(rng, marker, "zoom"), -1) for marker in zoom_markers]
    book = rng.randint(1, TRAIN_CODEBOOKS)
    questions.append(
        (synthetic.ask_character(rng, rng.choice(scene.markers), "search", book), book)
    )
    questions += [(synthetic.make_question(rng, scene, kind), -1) for kind in ("shape", "colour")]
    crops, crop_chars, examples = [], [], []
    for question, codebook_seed in questions:
        tools = _tools(rng, question.kind)
        crop_index = -1
        if tools and question.kind in ("zoom", "search"):
            crop, tags = _crop(rng, full, question.target)
            crops.append(crop)
            crop_chars.append(tags)
            crop_index = len(crops) - 1
        examples.append((question, tools, crop_index, codebook_seed))
    return {
        "view": view,
        "global_targets": _global_targets(scene),
        "crops": crops,
        "crop_chars": crop_chars,
        "examples": examples,
    }


@dataclass
class Dataset:
    views: np.ndarray  # (N, 128, 128, 3) uint8
    global_targets: np.ndarray  # (N, 64, 4)
    crops: np.ndarray  # (M, 128, 128, 3) uint8
    crop_chars: np.ndarray  # (M, 4): glyph cell, character, colour and shape ids
    examples: list[Example]
    #: (codebook seed, character) -> the text_search tool's result for that character's query
    search_results: dict[tuple[int, str], str] = field(default_factory=dict)

    def conversation(self, example: Example) -> list[dict]:
        question = example.question
        result = ""
        if question.kind == "search" and example.tools:
            result = self.search_results[example.codebook_seed, question.target.char]
        return conversation(question, example.tools, result)


def codebook_search(root: Path, seed: int) -> TextSearchTool:
    """The offline `text_search` tool over a codebook corpus of `seed`, built under `root`."""
    folder = Path(root) / f"codebook-{seed}"
    try:
        open_corpus(folder)
    except FileNotFoundError:
        build_corpus(folder, CorpusSpec(seed=seed, plates=0))
    return TextSearchTool(corpus=str(folder), max_results=SEARCH_RESULTS)


def search_result(tool: TextSearchTool, char: str) -> str:
    result = tool.run({"queries": [search_query(char)]}, ToolContext(image=b""))
    if result.error is not None:
        raise RuntimeError(f"codebook search for {char!r} failed: {result.error}")
    return result.text


def build_dataset(n_images: int, seed: int, corpora: Path, workers: int = 2) -> Dataset:
    """Render `n_images` scenes and their examples; codebook corpora are kept in `corpora`."""
    seeds = [seed * 1_000_003 + index for index in range(n_images)]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(build_image, seeds, chunksize=16))
    views, targets, crops, chars, examples = [], [], [], [], []
    for image_index, result in enumerate(results):
        views.append(result["view"])
        targets.append(result["global_targets"])
        offset = len(crops)
        crops.extend(result["crops"])
        chars.extend(result["crop_chars"])
        for question, tools, crop, codebook_seed in result["examples"]:
            crop = offset + crop if crop >= 0 else -1
            examples.append(Example(question, tools, image_index, crop, codebook_seed))
    needed = {(e.codebook_seed, e.question.target.char) for e in examples if e.codebook_seed >= 0}
    tools = {s: codebook_search(corpora, s) for s in sorted({s for s, _ in needed})}
    return Dataset(
        views=np.stack(views),
        global_targets=np.stack(targets),
        crops=np.stack(crops) if crops else np.zeros((0, 128, 128, 3), np.uint8),
        crop_chars=np.asarray(chars, dtype=np.int64).reshape(-1, 4),
        examples=examples,
        search_results={(s, c): search_result(tools[s], c) for s, c in sorted(needed)},
    )
