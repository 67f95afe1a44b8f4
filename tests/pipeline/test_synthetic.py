"""The synthetic task: deterministic, valid job records, honest sizes."""

import json
import random

from PIL import Image

from beam_pipelines import synthetic
from beam_pipelines.agent.records import Job


def test_corpus_is_deterministic_and_valid(tmp_path):
    first = synthetic.write_corpus(tmp_path / "a", n=6, seed=7)
    second = synthetic.write_corpus(tmp_path / "b", n=6, seed=7)
    lines_a = first.read_text().splitlines()
    lines_b = second.read_text().splitlines()
    assert len(lines_a) == 6
    for line_a, line_b in zip(lines_a, lines_b, strict=True):
        a, b = json.loads(line_a), json.loads(line_b)
        assert (a["question"], a["options"], a["answer"]) == (
            b["question"],
            b["options"],
            b["answer"],
        )
        job = Job.from_dict(a)
        assert job.answer in "ABCD"
        assert len(job.options) == 4 and len(set(job.options)) == 4
        with Image.open(a["image"]) as image:
            assert image.size == (synthetic.IMAGE_SIDE, synthetic.IMAGE_SIDE)


def test_scene_markers_are_distinct_and_apart():
    rng = random.Random(3)
    for _ in range(50):
        scene = synthetic.make_scene(rng)
        assert 3 <= len(scene.markers) <= 6
        assert len({m.colour for m in scene.markers}) == len(scene.markers)
        for i, a in enumerate(scene.markers):
            for b in scene.markers[i + 1 :]:
                assert ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5 >= synthetic.MIN_MARKER_DISTANCE


def test_zoom_question_answer_names_the_marker_character():
    rng = random.Random(5)
    scene = synthetic.make_scene(rng)
    question = synthetic.make_question(rng, scene, "zoom")
    assert question.target is not None
    assert question.options["ABCD".index(question.answer)] == question.target.char
    assert f"{question.target.colour} {question.target.shape}" in question.text


def test_glyph_is_tiny_in_the_global_view_and_large_in_the_crop():
    # The honesty of the task in numbers: a glyph of GLYPH_PX at full resolution is under
    # 3 px in the 128 px view and about 30 px in the 160 px crop resized to 128 px.
    view_scale = 128 / synthetic.IMAGE_SIDE
    assert synthetic.GLYPH_PX * 0.75 * view_scale < 3
    assert synthetic.GLYPH_PX * 0.75 * 128 / 160 > 28
