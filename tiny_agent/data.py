"""Training trajectories for the tiny model, in the exact form the pipeline will show it.

Each synthetic image yields several conversations in the r1v4 protocol, rendered by the agent
core itself (system prompt, user text, observation) so that training and serving cannot drift:

- zoom question, tools on: think → `code` call cropping a box around the marker (full-resolution
  pixels) → observation with the crop → think naming the character and the option → answer;
- global question, tools on: think → answer, no tool;
- any question, tools off (no tool in the system prompt): think → answer from the global view
  alone. For zoom questions this target is a guess the view cannot support, which is what the
  "tools disabled" evaluation measures.

Images go through the same code path as in production: JPEG encode/decode, the agent core's
`model_view` for the global view, and the crop the model's code performs (PIL crop, resize to
128×128) for the sub-image, with the crop centre jittered to imitate the model's own errors.
"""

from __future__ import annotations

import io
import json
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from beam_pipelines.agent.images import model_view
from beam_pipelines.agent.protocols import get_protocol
from beam_pipelines.agent.records import ImageRef, Job, Observation, ToolSpec
from tiny_agent import task

VIEW_PIXELS = 128 * 128
CROP_HALF = 80
CROP_VIEW = 128
JITTER = 24
TOOLS_OFF_FRACTION = 0.2
CELL = 128 // 8


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
    return f"{value / task.IMAGE_SIDE:.2f}"


def from_fraction(text: str) -> int:
    return round(float(text) * task.IMAGE_SIDE)


@dataclass(frozen=True)
class Example:
    """One reference trajectory: its question, tool mode, and the images it refers to."""

    question: task.Question
    tools_on: bool
    view: int  # index into the views array
    crop: int  # index into the crops array, -1 when none


def tool_call_text(name: str, arguments: dict) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def _assistant(question: task.Question, tools_on: bool) -> list[str]:
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
    if not tools_on:
        return [
            f"<think>Without zooming, the {name} seems to hold {marker.char}.</think>"
            f"<answer>{marker.char}</answer>"
        ]
    code = crop_code(fraction(marker.x), fraction(marker.y))
    return [
        f"<think>The characters are too small to read here. I will zoom in on the {name}."
        f"</think>" + tool_call_text("code", {"code": code}),
        f"<think>The zoomed {name} holds {marker.char}.</think><answer>{marker.char}</answer>",
    ]


def _image_part() -> dict:
    return {"type": "image_url", "image_url": {"url": "placeholder"}}


def conversation(question: task.Question, tools_on: bool) -> list[dict]:
    """The r1v4 messages of one reference trajectory (image parts are placeholders)."""
    protocol = get_protocol("r1v4")
    tools = [ToolSpec("code")] if tools_on else []
    job = Job(
        id="x", image="x", question=question.text, options=question.options, answer=question.answer
    )
    turns = _assistant(question, tools_on)
    messages = [
        {"role": "system", "content": protocol.system_prompt(tools)},
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
    return messages


def _jpeg_roundtrip(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _global_targets(scene: task.Scene) -> np.ndarray:
    """Per view cell: colour id, shape id (0 = no marker centred there), x and y offset."""
    targets = np.zeros((64, 4), dtype=np.float32)
    scale = 128 / task.IMAGE_SIDE
    colours = sorted(task.COLOURS)
    for marker in scene.markers:
        vx, vy = marker.x * scale, marker.y * scale
        cell = int(vy // CELL) * 8 + int(vx // CELL)
        targets[cell] = (
            1 + colours.index(marker.colour),
            1 + task.SHAPES.index(marker.shape),
            (vx % CELL) / CELL,
            (vy % CELL) / CELL,
        )
    return targets


def build_image(seed: int) -> dict:
    """Render one scene and every example it yields (run in worker processes)."""
    rng = random.Random(seed)
    scene = task.make_scene(rng)
    full = _jpeg_roundtrip(task.render(scene))
    view = np.asarray(model_view(full, VIEW_PIXELS), dtype=np.uint8)
    crops, crop_chars, examples = [], [], []
    zoom_markers = rng.sample(scene.markers, min(3, len(scene.markers)))
    for marker in zoom_markers:
        tools_on = rng.random() >= TOOLS_OFF_FRACTION
        question = task.Question(
            "zoom",
            f"What character is inside the {marker.colour} {marker.shape}?",
            *task._options(rng, marker.char, list(task.CHARACTERS)),
            marker,
        )
        crop_index = -1
        if tools_on:
            cx = from_fraction(fraction(marker.x)) + rng.randint(-JITTER, JITTER)
            cy = from_fraction(fraction(marker.y)) + rng.randint(-JITTER, JITTER)
            box = (cx - CROP_HALF, cy - CROP_HALF, cx + CROP_HALF, cy + CROP_HALF)
            crop = model_view(full.crop(box), VIEW_PIXELS)
            crops.append(np.asarray(crop, dtype=np.uint8))
            gx = (marker.x - box[0]) * CROP_VIEW / (2 * CROP_HALF)
            gy = (marker.y - box[1]) * CROP_VIEW / (2 * CROP_HALF)
            cell = int(np.clip(gy // CELL, 0, 7)) * 8 + int(np.clip(gx // CELL, 0, 7))
            crop_chars.append(
                (
                    cell,
                    1 + task.CHARACTERS.index(marker.char),
                    1 + sorted(task.COLOURS).index(marker.colour),
                    1 + task.SHAPES.index(marker.shape),
                )
            )
            crop_index = len(crops) - 1
        examples.append((question, tools_on, crop_index))
    for kind in ("shape", "colour"):
        question = task.make_question(rng, scene, kind)
        examples.append((question, rng.random() >= TOOLS_OFF_FRACTION, -1))
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


def build_dataset(n_images: int, seed: int, workers: int = 2) -> Dataset:
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
        for question, tools_on, crop in result["examples"]:
            examples.append(
                Example(question, tools_on, image_index, offset + crop if crop >= 0 else -1)
            )
    return Dataset(
        views=np.stack(views),
        global_targets=np.stack(targets),
        crops=np.stack(crops) if crops else np.zeros((0, 128, 128, 3), np.uint8),
        crop_chars=np.asarray(chars, dtype=np.int64).reshape(-1, 4),
        examples=examples,
    )
