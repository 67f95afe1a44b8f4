"""The synthetic "zoom to read" task: V*-like images whose small markers hold characters.

Every image is large and cluttered and holds 3–6 markers, each of its own colour, drawn as a
circle, square or diamond with one bold character inside. In the model's 128×128 global view
a marker is about ten pixels wide (colour and shape visible) while its character is four or
five pixels tall (not readable); a crop of the full-resolution image reads it easily. Three kinds
of questions are mixed:

- zoom questions, "What character is inside the red circle?", need a crop;
- search questions, "Which codeword does the character inside the red circle stand for?", need
  a crop and then a `text_search` of the codebook that only the offline corpus holds
  (`tools.search.corpus.codebook`); the options are codewords of that codebook;
- global questions ("What shape is the red marker?", "What colour is the square?") are
  answerable from the global view, so the model learns when a tool is not needed.

Everything is deterministic from a seed. `write_corpus` writes job JSONL (docs/formats.md)
plus JPEG images; the demo, tests and benchmarks all use it. The marker judge
(`beam_pipelines.filters`) reads its colours and shapes as ground truth, and the tiny model's
training data (`tiny_agent.data`) is drawn from its scenes and questions, so it lives here,
where both can import it (`tiny_agent` imports `beam_pipelines`, never the reverse).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tools.search.corpus import codebook

IMAGE_SIDE = 2048
MARKER_SIDE = (136, 156)
GLYPH_PX = 52
MIN_MARKER_DISTANCE = 380
EDGE_MARGIN = 130

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "green": (25, 145, 45),
    "blue": (30, 70, 205),
    "yellow": (235, 200, 15),
    "purple": (130, 45, 170),
    "orange": (245, 125, 20),
}
LIGHT_COLOURS = {"yellow", "orange"}
SHAPES = ("circle", "square", "diamond")
SHAPE_DISTRACTOR = "triangle"
# No option letter (A–D) among them: the model answers with the option's text, which must
# never read as a letter.
CHARACTERS = "EFHKMNRTXZ"
LETTERS = "ABCD"


@dataclass(frozen=True)
class Marker:
    """One marker: its colour, shape, character and centre in full-resolution pixels."""

    colour: str
    shape: str
    char: str
    x: int
    y: int
    side: int


@dataclass(frozen=True)
class Scene:
    """One synthetic image: its markers and the seed that redraws its clutter."""

    seed: int
    markers: tuple[Marker, ...]


@dataclass(frozen=True)
class Question:
    """A question about a scene, with four options and the correct letter."""

    kind: str  # "zoom", "search", "shape" or "colour"
    text: str
    options: tuple[str, ...]
    answer: str
    target: Marker | None


def make_scene(rng: random.Random) -> Scene:
    """Choose 3–6 markers of distinct colours, far enough apart that crops stay clean."""
    count = rng.randint(3, 6)
    colours = rng.sample(sorted(COLOURS), count)
    centres: list[tuple[int, int]] = []
    while len(centres) < count:
        x = rng.randint(EDGE_MARGIN, IMAGE_SIDE - EDGE_MARGIN)
        y = rng.randint(EDGE_MARGIN, IMAGE_SIDE - EDGE_MARGIN)
        if all(math.dist((x, y), c) >= MIN_MARKER_DISTANCE for c in centres):
            centres.append((x, y))
    markers = tuple(
        Marker(
            colour=colour,
            shape=rng.choice(SHAPES),
            char=rng.choice(CHARACTERS),
            x=x,
            y=y,
            side=rng.randint(*MARKER_SIDE),
        )
        for colour, (x, y) in zip(colours, centres, strict=True)
    )
    return Scene(seed=rng.getrandbits(32), markers=markers)


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled FreeType font: the same glyphs on every machine, no system fonts needed.
    return ImageFont.load_default(size=size)


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    """Pale shapes, lines and small grey text: busy enough that a crop is not trivially clean."""
    side = IMAGE_SIDE
    for _ in range(100):
        shade = tuple(rng.randint(170, 235) for _ in range(3))
        x, y = rng.randint(0, side), rng.randint(0, side)
        r = rng.randint(10, 90)
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), outline=shade, width=rng.randint(1, 4))
        else:
            draw.rectangle((x - r, y - r, x + r, y + r), outline=shade, width=rng.randint(1, 4))
    for _ in range(60):
        shade = tuple(rng.randint(150, 220) for _ in range(3))
        draw.line(
            [(rng.randint(0, side), rng.randint(0, side)) for _ in range(2)],
            fill=shade,
            width=rng.randint(1, 3),
        )
    small = _font(18)
    for _ in range(90):
        grey = rng.randint(110, 170)
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
        draw.text((rng.randint(0, side), rng.randint(0, side)), word, fill=(grey,) * 3, font=small)


def _draw_marker(draw: ImageDraw.ImageDraw, marker: Marker, font: ImageFont.FreeTypeFont) -> None:
    half = marker.side // 2
    x, y = marker.x, marker.y
    fill = COLOURS[marker.colour]
    if marker.shape == "circle":
        draw.ellipse((x - half, y - half, x + half, y + half), fill=fill)
    elif marker.shape == "square":
        inner = int(half * 0.86)
        draw.rectangle((x - inner, y - inner, x + inner, y + inner), fill=fill)
    else:
        draw.polygon([(x, y - half), (x + half, y), (x, y + half), (x - half, y)], fill=fill)
    ink = (20, 20, 20) if marker.colour in LIGHT_COLOURS else (250, 250, 250)
    draw.text(
        (x, y), marker.char, fill=ink, font=font, anchor="mm", stroke_width=2, stroke_fill=ink
    )


def render(scene: Scene) -> Image.Image:
    """Draw a scene at full resolution (RGB)."""
    rng = random.Random(scene.seed)
    base = tuple(rng.randint(238, 250) for _ in range(3))
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), base)
    draw = ImageDraw.Draw(image)
    _draw_clutter(draw, rng)
    font = _font(GLYPH_PX)
    for marker in scene.markers:
        _draw_marker(draw, marker, font)
    return image


def _options(rng: random.Random, correct: str, pool: list[str]) -> tuple[tuple[str, ...], str]:
    others = rng.sample([p for p in pool if p != correct], len(LETTERS) - 1)
    options = [correct, *others]
    rng.shuffle(options)
    return tuple(options), LETTERS[options.index(correct)]


def make_question(rng: random.Random, scene: Scene, kind: str, codebook_seed: int = 0) -> Question:
    """A question of the given kind about a random marker of the scene.

    A colour question names a shape, so it is asked only about a marker whose shape is unique
    in the scene; a scene without one gets a shape question instead. A search question's
    options are codewords that the codebook of `codebook_seed` gives the task's characters.
    """
    shapes = [m.shape for m in scene.markers]
    unique = [m for m in scene.markers if shapes.count(m.shape) == 1]
    if kind == "colour" and unique:
        marker = rng.choice(unique)
        options, letter = _options(rng, marker.colour, sorted(COLOURS))
        return Question(kind, f"What colour is the {marker.shape}?", options, letter, marker)
    marker = rng.choice(scene.markers)
    if kind in ("shape", "colour"):
        options, letter = _options(rng, marker.shape, [*SHAPES, SHAPE_DISTRACTOR])
        return Question(
            "shape", f"What shape is the {marker.colour} marker?", options, letter, marker
        )
    return ask_character(rng, marker, kind, codebook_seed)


def ask_character(
    rng: random.Random, marker: Marker, kind: str, codebook_seed: int = 0
) -> Question:
    """A zoom question (the marker's character) or a search one (its codeword) about `marker`."""
    name = f"{marker.colour} {marker.shape}"
    if kind == "search":
        book = {char: word for char, word in codebook(codebook_seed).items() if char in CHARACTERS}
        text = f"Which codeword does the character inside the {name} stand for?"
        options, letter = _options(rng, book[marker.char], list(book.values()))
    else:
        text = f"What character is inside the {name}?"
        options, letter = _options(rng, marker.char, list(CHARACTERS))
    return Question(kind, text, options, letter, marker)


def question_kind(rng: random.Random, zoom_fraction: float, search_fraction: float = 0.0) -> str:
    draw = rng.random()
    if draw < zoom_fraction:
        return "zoom"
    if draw < zoom_fraction + search_fraction:
        return "search"
    return rng.choice(("shape", "colour"))


def write_corpus(
    out_dir: Path,
    n: int,
    seed: int,
    zoom_fraction: float = 0.7,
    quality: int = 92,
    search_fraction: float = 0.0,
    codebook_seed: int = 0,
) -> Path:
    """Write `n` jobs (one image each) as `jobs.jsonl` plus `images/*.jpg`; return the JSONL.

    Search questions (`search_fraction` of the jobs, taken from the global ones' share) ask
    for codewords of the codebook of `codebook_seed`: the offline `text_search`'s default
    corpus holds the codebook of seed 0.
    """
    if zoom_fraction + search_fraction > 1:
        raise ValueError("zoom_fraction + search_fraction must be at most 1")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    jobs_path = out_dir / "jobs.jsonl"
    with jobs_path.open("w") as jobs:
        for index in range(n):
            scene = make_scene(rng)
            kind = question_kind(rng, zoom_fraction, search_fraction)
            question = make_question(rng, scene, kind, codebook_seed)
            image_path = out_dir / "images" / f"{seed}-{index:05d}.jpg"
            render(scene).save(image_path, quality=quality)
            job = {
                "id": f"tiny-{seed}-{index:05d}",
                "image": str(image_path.resolve()),
                "question": question.text,
                "options": list(question.options),
                "answer": question.answer,
                "meta": {
                    "source": "tiny_agent",
                    "kind": question.kind,
                    "target": asdict(question.target) if question.target else None,
                }
                | ({"codebook_seed": codebook_seed} if question.kind == "search" else {}),
            }
            jobs.write(json.dumps(job) + "\n")
    return jobs_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n", type=int, default=100, help="number of jobs")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--zoom-fraction", type=float, default=0.7)
    parser.add_argument(
        "--search-fraction",
        type=float,
        default=0.0,
        help="share of search questions (they need the code and text_search tools)",
    )
    parser.add_argument("--codebook-seed", type=int, default=0, help="seed of the codebook")
    args = parser.parse_args(argv)
    path = write_corpus(
        args.out,
        args.n,
        args.seed,
        args.zoom_fraction,
        search_fraction=args.search_fraction,
        codebook_seed=args.codebook_seed,
    )
    print(f"wrote {args.n} jobs to {path}")


if __name__ == "__main__":
    main()
