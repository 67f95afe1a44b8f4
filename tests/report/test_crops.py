"""Crop boxes read statically from code and zoom calls."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import ImageRef, Job, Observation, Step, ToolCall
from beam_pipelines.report.crops import (
    Box,
    code_crops,
    job_image,
    job_image_index,
    step_turns,
    trajectory_crops,
    zoom_box,
)
from tools.registry import tool_specs

SIZES = {"image": (2048, 1536)}


def boxes(code: str) -> list[tuple[str | int, tuple[float, ...]]]:
    return [(c.source, (c.box.x0, c.box.y0, c.box.x1, c.box.y1)) for c in code_crops(code, SIZES)]


def test_the_tiny_models_crop_code() -> None:
    code = "x, y = 1200, 900\nsave_image(image.crop((x - 80, y - 80, x + 80, y + 80)))"
    assert boxes(code) == [("image", (1120, 820, 1280, 980))]


def test_crop_code_from_tiny_agent_in_fractions_of_the_image() -> None:
    from tiny_agent.data import crop_code

    [(source, box)] = boxes(crop_code("0.50", "0.25"))
    assert source == "image"
    assert box == pytest.approx((1024 - 80, 384 - 80, 1024 + 80, 384 + 80))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("image.crop((10, 20, 30, 40))", (10, 20, 30, 40)),
        ("image.crop([30, 40, 10, 20])", (10, 20, 30, 40)),  # corners in any order
        ("image.crop(box=(1, 2, 3, 4))", (1, 2, 3, 4)),
        ("box = (5, 6, 7, 8)\nc = image.crop(box)", (5, 6, 7, 8)),
        ("x = 100\nw: int = x * 2\nimage.crop((x, x, w, w + 1))", (100, 100, 200, 201)),
        ("W, H = image.size\nimage.crop((0, 0, W // 2, H / 2))", (0, 0, 1024, 768)),
        ("image.crop((0, 0, image.width, int(image.height * 0.5)))", (0, 0, 2048, 768)),
        ("img = image.convert('L')\nimg.crop((-10, 0, 10, 10))", (-10, 0, 10, 10)),
        ("if True:\n    image.crop((1, 1, 2, 2))", (1, 1, 2, 2)),
    ],
)
def test_boxes_that_can_be_worked_out(code: str, expected: tuple[float, ...]) -> None:
    assert boxes(code) == [("image", expected)]


@pytest.mark.parametrize(
    "code",
    [
        "image.crop((1, 2, 3",  # does not parse
        "x, y = 160\nimage.crop((x, y, x + 1, y + 1))",  # cannot unpack: nothing is known
        "import random\nx = random.randint(0, 9)\nimage.crop((x, 0, 10, 10))",
        "for x in range(3):\n    image.crop((x, 0, x + 1, 1))",
        "x = 1\nx += 5\nimage.crop((x, 0, 10, 10))",
        "image.crop((1, 2, 3))",
        "other.crop((1, 2, 3, 4))",  # not an image the trace knows
        "image.crop(('a', 2, 3, 4))",
        "image.crop((1 / 0, 2, 3, 4))",
        "image.resize((10, 10))",
    ],
)
def test_anything_else_gives_no_box(code: str) -> None:
    assert boxes(code) == []


def test_crops_of_sub_images_name_them() -> None:
    code = "a = sub_image_2.crop((0, 0, 5, 5))\nb = sub_images[3].crop((1, 1, 2, 2))"
    assert [source for source, _ in boxes(code)] == [2, 3]


def test_crops_of_a_multi_image_jobs_images_name_them() -> None:
    sizes = {**SIZES, "images[1]": (300, 200)}
    code = (
        "a = images[1].crop((0, 0, images[1].width // 2, 10))\n"
        "b = images[0].crop((1, 1, 2, 2))\n"
        "second = images[1]\n"
        "second.crop((5, 5, 6, 6))\n"
        "images[True].crop((1, 1, 2, 2))"
    )
    found = [(c.source, c.box) for c in code_crops(code, sizes)]
    assert found == [
        ("images[1]", Box(0, 0, 150, 10)),
        ("image", Box(1, 1, 2, 2)),
        ("images[1]", Box(5, 5, 6, 6)),
    ]
    assert [job_image_index(job_image(i)) for i in range(3)] == [0, 1, 2]
    assert job_image_index(3) is None and job_image_index("images[x]") is None


def test_a_multi_image_trajectory_draws_each_crop_on_its_own_image() -> None:
    job = Job.from_dict({"id": "p", "images": ["a", "b"], "question": "q"})
    second = ImageRef(uri="s", sha256="", width=400, height=300)
    second_view = ImageRef(uri="sv", sha256="", width=200, height=150)
    zoom = tool_specs(["image_zoom_in_tool"], image_zoom_in_tool={"coordinates": "absolute"})
    traj = loop.start(
        job, "zoom", zoom, ORIGINAL, VIEW, model="m", sampling={},
        more_originals=[second], more_views=[second_view],
    )  # fmt: skip
    calls = [
        {"bbox_2d": [10, 20, 30, 40], "image_index": 1},
        {"bbox_2d": [10, 20, 30, 40]},
        {"bbox_2d": [10, 20, 30, 40], "image_index": 2},  # names no image: no box
    ]
    for arguments in calls:
        body = json.dumps({"name": "image_zoom_in_tool", "arguments": arguments})
        text = f"<think>{arguments}</think><tool_call>{body}</tool_call>"
        traj, pending = loop.advance(traj, text, finish_reason="stop", usage={}, latency_s=1.0)
        traj = loop.observe(traj, pending, [Observation("", error="x")], [[]])
    crops = trajectory_crops(traj, step_turns(traj.steps))
    assert [(c.image, c.box, c.turn) for c in crops] == [
        (1, Box(20, 40, 60, 80), 1),  # pixels of the second view, doubled onto its original
        (0, Box(40, 80, 120, 160), 2),
    ]


def test_a_crop_uses_the_values_bound_before_it() -> None:
    code = "x = 10\nimage.crop((x, 0, 20, 20))\nx = 0\nimage.crop((x, 0, 20, 20))"
    assert [box[0] for _, box in boxes(code)] == [10, 0]


def test_deeply_nested_code_does_not_raise() -> None:
    assert code_crops("(" * 5000 + ")" * 5000, SIZES) == []
    assert code_crops("x = " + "-" * 20000 + "1", SIZES) == []


ORIGINAL = ImageRef(uri="o", sha256="", width=2000, height=1000)
VIEW = ImageRef(uri="v", sha256="", width=500, height=250)


def test_zoom_boxes_in_relative_coordinates() -> None:
    box = zoom_box({"bbox_2d": [100, 200, 300, 400]}, "relative", ORIGINAL, VIEW)
    assert box == Box(200, 200, 600, 400)


def test_zoom_boxes_in_absolute_view_pixels() -> None:
    box = zoom_box({"bbox_2d": [10, 20, 30, 40]}, "absolute", ORIGINAL, VIEW)
    assert box == Box(40, 80, 120, 160)


@pytest.mark.parametrize(
    "arguments",
    [{}, {"bbox_2d": [1, 2, 3]}, {"bbox_2d": "1,2,3,4"}, {"bbox_2d": [1, 2, True, 4]}],
)
def test_malformed_zoom_boxes_are_skipped(arguments: dict) -> None:
    assert zoom_box(arguments, "relative", ORIGINAL, VIEW) is None


def step(think: str, call: bool = True, latency: float = 1.0, tokens: int = 5) -> Step:
    tool_call = ToolCall("code", {"code": ""}) if call else None
    return Step(think, tool_call, None, latency, tokens, None if call else "bad")


def test_steps_of_one_turn_share_it() -> None:
    steps = [
        step("a"),
        step("a", latency=0.0, tokens=0),  # the second call of turn 1
        step("b", call=False),  # a format error is a turn of its own
        step("c"),
        step("c", latency=0.0, tokens=0),
        step("d", latency=0.0, tokens=0),  # different reasoning: a new turn
    ]
    assert step_turns(steps) == [1, 1, 2, 3, 3, 4]
