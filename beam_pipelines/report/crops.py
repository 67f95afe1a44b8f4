"""The crop boxes of a trajectory, in pixels of the job's original images, for drawing.

Two sources:

- ``code`` calls: the model's Python is *parsed* (``ast``, never executed) and every
  ``<img>.crop(box)`` call whose box can be worked out statically is kept. The box may be
  literal numbers, names bound earlier by simple assignments (``x, y = 512, 300``;
  ``w = x + 64``; ``box = (x - 32, y - 32, x + 32, y + 32)``), arithmetic on those, and
  ``image.width`` / ``image.height`` / ``image.size``. ``<img>`` is ``image`` (the original),
  ``images[i]`` (a multi-image job's i-th original; ``images[0]`` is ``image``) or an alias of
  one, or ``sub_image_N`` / ``sub_images[N]``: a crop of a sub-image is mapped back onto the
  original it came from when that sub-image is itself a known crop (the image the call that
  produced it saved, when it saved exactly one and cropped exactly once).
- ``image_zoom_in_tool`` calls: ``bbox_2d`` in the tool's convention, its ``coordinates``
  setting as the trajectory recorded it (``relative``: 0..1000 on both axes; ``absolute``:
  pixels of the model's view), on the image its ``image_index`` names (the first by default).

Anything else (loops, function calls, values computed at run time) is skipped: a missing box
is better than a wrong one.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from beam_pipelines.agent.protocols import attached_images
from beam_pipelines.agent.records import ImageRef, Step, Trajectory
from tools.zoom import ZoomTool

ORIGINAL = "image"
_JOB_IMAGES = "images"
RELATIVE_SCALE = 1000.0
ZOOM_TOOL = "image_zoom_in_tool"

Number = float
Value = Number | tuple["Value", ...]

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


@dataclass(frozen=True)
class Box:
    """A rectangle ``(x0, y0) - (x1, y1)`` in pixels of some image, ``x0 <= x1``, ``y0 <= y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Box:
        x0, y0, x1, y1 = (float(v) for v in values)
        return cls(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def scaled(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> Box:
        return Box(dx + self.x0 * sx, dy + self.y0 * sy, dx + self.x1 * sx, dy + self.y1 * sy)


def job_image(index: int) -> str:
    """How crops name the job's ``index``-th original: ``"image"`` for the first, else
    ``"images[i]"``, as the code tool's names say."""
    return ORIGINAL if index == 0 else f"{_JOB_IMAGES}[{index}]"


def job_image_index(source: str | int) -> int | None:
    """The job image a crop's source names (``job_image``'s inverse), None for a sub-image."""
    if source == ORIGINAL:
        return 0
    prefix = f"{_JOB_IMAGES}["
    if isinstance(source, str) and source.startswith(prefix) and source.endswith("]"):
        digits = source[len(prefix) : -1]
        return int(digits) if digits.isdigit() else None
    return None


@dataclass(frozen=True)
class CodeCrop:
    """A crop found in code: its box and the image it was taken from (``job_image(i)``, or a
    sub-image's ``N``)."""

    source: str | int
    box: Box


@dataclass(frozen=True)
class Crop:
    """A box to draw on a job image (``image``: its index): which turn and call made it, and
    whether the call ran."""

    box: Box
    turn: int
    call: int
    tool: str
    failed: bool = False
    image: int = 0


# --------------------------------------------------------------------------------------------
# Code


def _source_of(node: ast.expr, aliases: Mapping[str, str | int]) -> str | int | None:
    """Which image an expression names: a job image (``job_image(i)``), a sub-image number,
    or None."""
    if isinstance(node, ast.Name):
        if node.id in aliases:
            return aliases[node.id]
        if node.id.startswith("sub_image_") and node.id[len("sub_image_") :].isdigit():
            return int(node.id[len("sub_image_") :])
        return None
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("sub_images", _JOB_IMAGES)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, int)
        and not isinstance(node.slice.value, bool)
    ):
        index = node.slice.value
        if node.value.id == _JOB_IMAGES:
            return job_image(index) if index >= 0 else None
        return index
    # `image.copy()`, `image.convert("L")`: the same pixels, the same coordinates.
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("copy", "convert")
    ):
        return _source_of(node.func.value, aliases)
    return None


class _Evaluator:
    """Constant folding over the names a snippet binds with simple assignments."""

    def __init__(self, sizes: Mapping[str | int, tuple[int, int]]) -> None:
        self.sizes = sizes
        self.names: dict[str, Value] = {}
        self.aliases: dict[str, str | int] = {ORIGINAL: ORIGINAL}

    def value(self, node: ast.expr) -> Value | None:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, int | float):
                return None
            return float(v)
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Tuple | ast.List):
            items = [self.value(e) for e in node.elts]
            return None if any(i is None for i in items) else tuple(items)  # type: ignore[arg-type]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = self.value(node.operand)
            if not isinstance(inner, float):
                return None
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.value(node.left), self.value(node.right)
            if not isinstance(left, float) or not isinstance(right, float):
                return None
            try:
                result = _BINARY[type(node.op)](left, right)
            except (ZeroDivisionError, OverflowError):
                return None
            return result if math.isfinite(result) else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
            if node.func.id in ("int", "round", "float") and not node.keywords:
                inner = self.value(node.args[0])
                if not isinstance(inner, float):
                    return None
                if node.func.id == "int":
                    return float(int(inner))
                return float(round(inner)) if node.func.id == "round" else inner
            return None
        if isinstance(node, ast.Attribute) and node.attr in ("width", "height", "size"):
            source = _source_of(node.value, self.aliases)
            if source is None or source not in self.sizes:
                return None
            w, h = self.sizes[source]
            return {"width": float(w), "height": float(h), "size": (float(w), float(h))}[node.attr]
        return None

    def assign(self, target: ast.expr, node: ast.expr | None, value: Value | None) -> None:
        """Bind (or forget) the names of an assignment target."""
        if isinstance(target, ast.Name):
            self.names.pop(target.id, None)
            self.aliases.pop(target.id, None)
            source = _source_of(node, self.aliases) if node is not None else None
            if source is not None:
                self.aliases[target.id] = source
            elif value is not None:
                self.names[target.id] = value
            return
        if isinstance(target, ast.Tuple | ast.List):
            elements = node.elts if isinstance(node, ast.Tuple | ast.List) else None
            values = value if isinstance(value, tuple) else None
            for i, element in enumerate(target.elts):
                sub_node = elements[i] if elements and i < len(elements) else None
                sub_value = values[i] if values and i < len(values) else None
                if elements is not None and len(elements) != len(target.elts):
                    sub_node, sub_value = None, None
                if values is not None and len(values) != len(target.elts):
                    sub_value = None
                self.assign(element, sub_node, sub_value)


def _crop_box(call: ast.Call, evaluator: _Evaluator) -> CodeCrop | None:
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "crop"):
        return None
    source = _source_of(call.func.value, evaluator.aliases)
    if source is None:
        return None
    if call.args:
        box_node: ast.expr = call.args[0]
    else:
        box_node = next((k.value for k in call.keywords if k.arg == "box"), None)  # type: ignore[assignment]
        if box_node is None:
            return None
    value = evaluator.value(box_node)
    if not (isinstance(value, tuple) and len(value) == 4):
        return None
    if not all(isinstance(v, float) for v in value):
        return None
    return CodeCrop(source, Box.of(value))  # type: ignore[arg-type]


def _calls_in_order(node: ast.AST) -> Iterator[ast.Call]:
    """Call nodes of an expression, inner (earlier-evaluated) calls first."""
    for child in ast.iter_child_nodes(node):
        yield from _calls_in_order(child)
    if isinstance(node, ast.Call):
        yield node


def _walk_statements(statements: Sequence[ast.stmt], evaluator: _Evaluator) -> Iterator[CodeCrop]:
    for statement in statements:
        # Crops inside the statement's expressions, before its assignment takes effect.
        expressions = [
            child for child in ast.iter_child_nodes(statement) if isinstance(child, ast.expr)
        ]
        for expression in expressions:
            for call in _calls_in_order(expression):
                crop = _crop_box(call, evaluator)
                if crop is not None:
                    yield crop
        if isinstance(statement, ast.Assign):
            value = evaluator.value(statement.value)
            for target in statement.targets:
                evaluator.assign(target, statement.value, value)
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            evaluator.assign(statement.target, statement.value, evaluator.value(statement.value))
        elif isinstance(statement, ast.AugAssign) and isinstance(statement.target, ast.Name):
            evaluator.assign(statement.target, None, None)
        # Nested blocks: their crops count; names they bind are unknown afterwards.
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(statement, field, None)
            if isinstance(block, list) and block:
                nested = [s for s in block if isinstance(s, ast.stmt)]
                for handler in (h for h in block if isinstance(h, ast.ExceptHandler)):
                    nested += handler.body
                if isinstance(statement, ast.For | ast.While | ast.AsyncFor):
                    loop_names = {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)}
                    for name in loop_names:
                        evaluator.names.pop(name, None)
                yield from _walk_statements(nested, evaluator)


def code_crops(code: str, sizes: Mapping[str | int, tuple[int, int]]) -> list[CodeCrop]:
    """Crops a code snippet makes, in order; ``sizes`` maps a job image's name
    (``job_image(i)``) or a sub-image's N to its (width, height).

    Never raises on model text: code that does not parse yields no crops.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    try:
        return list(_walk_statements(tree.body, _Evaluator(sizes)))
    except RecursionError:
        return []


# --------------------------------------------------------------------------------------------
# Zoom


def zoom_image(arguments: Mapping[str, Any], images: int) -> int | None:
    """The job image a zoom call works on (its ``image_index``, 0 when not given), or None
    when that names none of the ``images``."""
    index = arguments.get("image_index", 0)
    if isinstance(index, bool) or not isinstance(index, int | float) or index != int(index):
        return None
    return int(index) if 0 <= index < images else None


def zoom_box(
    arguments: Mapping[str, Any], coordinates: str, original: ImageRef, view: ImageRef
) -> Box | None:
    """The ``bbox_2d`` of a zoom call in pixels of ``original`` (whose model view is
    ``view``), or None when it is not four numbers."""
    bbox = arguments.get("bbox_2d")
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        return None
    if not all(math.isfinite(v) for v in bbox):
        return None
    box = Box.of(bbox)
    if coordinates == "absolute":
        sx = original.width / view.width if view.width else 1.0
        sy = original.height / view.height if view.height else 1.0
    else:
        sx, sy = original.width / RELATIVE_SCALE, original.height / RELATIVE_SCALE
    return box.scaled(sx, sy)


# --------------------------------------------------------------------------------------------
# A whole trajectory


#: Where a box lies: the index of a job image and the box in its pixels.
Placed = tuple[int, Box]


def _on_original(
    crop: CodeCrop, placed: Mapping[int, tuple[Placed, ImageRef]], images: int
) -> Placed | None:
    index = job_image_index(crop.source)
    if index is not None:
        return (index, crop.box) if index < images else None
    if isinstance(crop.source, int) and crop.source in placed:
        (index, parent), ref = placed[crop.source]
        if ref.width <= 0 or ref.height <= 0:
            return None
        sx, sy = parent.width / ref.width, parent.height / ref.height
        return index, crop.box.scaled(sx, sy, parent.x0, parent.y0)
    return None


def trajectory_crops(traj: Trajectory, turn_of_step: Sequence[int]) -> list[Crop]:
    """Every crop box of a trajectory on the job image it was taken from, labelled with turn
    and call.

    ``turn_of_step[i]`` is the (1-based) turn of ``traj.steps[i]``.
    """
    zoom = next((spec for spec in traj.tools if spec.name == ZOOM_TOOL), None)
    coordinates = ZoomTool(**(zoom.settings if zoom else {})).coordinates
    originals, views = traj.originals, traj.views
    sizes: dict[str | int, tuple[int, int]] = {
        job_image(i): (ref.width, ref.height) for i, ref in enumerate(originals)
    }
    placed: dict[int, tuple[Placed, ImageRef]] = {}  # sub-image N -> where it was cropped
    crops: list[Crop] = []
    next_sub_image = 1
    for index, step in enumerate(traj.steps):
        call = step.tool_call
        if call is None:
            continue
        turn = turn_of_step[index] if index < len(turn_of_step) else index + 1
        failed = step.observation is None or step.observation.error is not None
        boxes: list[Placed] = []
        if call.name == "code" and isinstance(call.arguments.get("code"), str):
            for found in code_crops(call.arguments["code"], sizes):
                box = _on_original(found, placed, len(originals))
                if box is not None:
                    boxes.append(box)
        elif call.name == ZOOM_TOOL:
            image = zoom_image(call.arguments, len(originals))
            if image is not None:
                box = zoom_box(call.arguments, coordinates, originals[image], views[image])
                if box is not None:
                    boxes.append((image, box))
        crops += [Crop(b, turn, index, call.name, failed, image) for image, b in boxes]
        next_sub_image = _place_outputs(step, boxes, placed, sizes, next_sub_image)
    return crops


def _place_outputs(
    step: Step,
    boxes: Sequence[Placed],
    placed: dict[int, tuple[Placed, ImageRef]],
    sizes: dict[str | int, tuple[int, int]],
    next_sub_image: int,
) -> int:
    """Number the images a step showed; remember where a single-crop output came from."""
    observation = step.observation
    if observation is None:
        return next_sub_image
    shown = list(observation.images[: attached_images(observation)])
    for offset, ref in enumerate(shown):
        sizes[next_sub_image + offset] = (ref.width, ref.height)
    if len(shown) == 1 and len(boxes) == 1:
        placed[next_sub_image] = (boxes[0], shown[0])
    return next_sub_image + len(shown)


def step_turns(steps: Sequence[Step]) -> list[int]:
    """The 1-based assistant turn of each step.

    A turn that called several tools records one step per call; only the first carries the
    turn's latency and tokens, and all share its reasoning. A format error is a turn of its own.
    """
    turns: list[int] = []
    turn = 0
    previous: Step | None = None
    for step in steps:
        same_turn = (
            previous is not None
            and previous.tool_call is not None
            and step.tool_call is not None
            and step.latency_s == 0.0
            and step.tokens == 0
            and step.think == previous.think
        )
        if not same_turn:
            turn += 1
        turns.append(turn)
        previous = step
    return turns
