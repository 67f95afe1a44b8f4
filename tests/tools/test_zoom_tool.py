"""image_zoom_in_tool: coordinates, clamping, minimum side, enlargement, errors."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tools.base import ToolContext
from tools.registry import run_tool
from tools.zoom import ZoomTool


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    """Each pixel encodes its own position: R = x % 256, G = y % 256, B = (x // 256)."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x % 256, y % 256, x // 256) for y in range(height) for x in range(width)])
    return image


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


@pytest.fixture(scope="module")
def original() -> Image.Image:
    return gradient(400, 200)


@pytest.fixture(scope="module")
def context(original) -> ToolContext:
    return ToolContext(image=encode(original))


def test_relative_box_maps_to_full_resolution_pixels():
    tool = ZoomTool()
    assert tool.crop_box([250, 500, 500, 1000], (400, 200)) == (100, 100, 200, 200)
    assert "0 to 1000" in tool.description
    assert "relative coordinates" in tool.parameters["properties"]["bbox_2d"]["description"]


def test_absolute_box_is_in_the_models_view_frame():
    tool = ZoomTool(coordinates="absolute")
    assert "absolute pixel coordinates" in tool.description
    # Without a view size: the original's pixels.
    assert tool.crop_box([10, 20, 110, 120], (400, 200)) == (10, 20, 110, 120)
    # The model saw a 200x100 view of the 400x200 original: coordinates double.
    assert tool.crop_box([10, 20, 110, 70], (400, 200), view_size=(200, 100)) == (20, 40, 220, 140)


def test_box_is_clamped_to_the_image():
    tool = ZoomTool(coordinates="absolute")
    assert tool.crop_box([-50, -10, 100, 80], (400, 200)) == (0, 0, 100, 80)
    assert tool.crop_box([300, 150, 900, 900], (400, 200)) == (300, 150, 400, 200)
    relative = ZoomTool()
    assert relative.crop_box([-100, 0, 1200, 1000], (400, 200)) == (0, 0, 400, 200)


def test_minimum_side_expands_around_the_centre():
    tool = ZoomTool(coordinates="absolute")
    # A 10x4 box centred at (105, 52) becomes 28x28 centred there.
    assert tool.crop_box([100, 50, 110, 54], (400, 200)) == (91, 38, 119, 66)
    # A point is a valid box: it becomes the minimum square around it.
    assert tool.crop_box([200, 100, 200, 100], (400, 200)) == (186, 86, 214, 114)
    # Near an edge the widened box shifts inside instead of being cut.
    assert tool.crop_box([0, 0, 5, 5], (400, 200)) == (0, 0, 28, 28)
    assert tool.crop_box([398, 195, 400, 200], (400, 200)) == (372, 172, 400, 200)
    # An image smaller than the minimum side: the whole axis.
    assert tool.crop_box([1, 1, 2, 2], (20, 10)) == (0, 0, 20, 10)
    wide = ZoomTool(coordinates="absolute", min_side=64)
    assert wide.crop_box([100, 100, 110, 110], (400, 200)) == (73, 73, 137, 137)


def test_run_returns_the_enlarged_crop(original, context):
    tool = ZoomTool(coordinates="absolute")
    result = tool.run({"bbox_2d": [100, 50, 164, 82], "label": "sign"}, context)
    assert result.ok and result.text == "" and len(result.images) == 1
    crop = decode(result.images[0])
    # 64x32 enlarged 4x (the cap) to 256x128 rather than all the way to 512.
    assert crop.size == (256, 128)
    expected = original.crop((100, 50, 164, 82)).resize((256, 128), Image.Resampling.BICUBIC)
    assert crop.tobytes() == expected.tobytes()


def test_enlargement_targets_the_longer_side(context):
    tool = ZoomTool(coordinates="absolute", target_side=300)
    crop = decode(tool.run({"bbox_2d": [0, 0, 200, 100]}, context).images[0])
    assert crop.size == (300, 150)
    # A crop already at least target_side long is returned at its own size.
    big = decode(tool.run({"bbox_2d": [0, 0, 400, 200]}, context).images[0])
    assert big.size == (400, 200)


def test_crop_pixels_come_from_the_full_resolution_original():
    original = gradient(3000, 40)
    context = ToolContext(image=encode(original))
    tool = ZoomTool(coordinates="absolute", target_side=1)  # no enlargement
    crop = decode(tool.run({"bbox_2d": [2900, 0, 2940, 40]}, context).images[0])
    assert crop.size == (40, 40)
    assert crop.getpixel((0, 0)) == (2900 % 256, 0, 2900 // 256)


def test_exif_orientation_is_applied():
    upright = gradient(60, 30)
    # Stored rotated, with an EXIF tag saying "rotate 90 degrees clockwise to display".
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    context = ToolContext(image=encode(stored, "PNG", exif=exif.tobytes()))
    crop = ZoomTool(coordinates="absolute", target_side=1).run({"bbox_2d": [0, 0, 60, 30]}, context)
    assert decode(crop.images[0]).tobytes() == upright.tobytes()


@pytest.mark.parametrize(
    ("arguments", "fragment", "kind"),
    [
        ({"bbox_2d": [10, 10, 5, 20]}, "x1 <= x2 and y1 <= y2", "arguments"),
        (
            {"bbox_2d": [1100, 0, 1200, 100]},
            "lies outside the image, which spans [0, 0, 1000, 1000]",
            "arguments",
        ),
        ({"bbox_2d": [1, 2, 3]}, "must have at least 4 item(s)", "arguments"),
        ({"bbox_2d": [1, 2, 3, "4"]}, "arguments.bbox_2d[3] must be a number", "arguments"),
        ({"box": [1, 2, 3, 4]}, "missing the required field 'bbox_2d'", "arguments"),
        ({"bbox_2d": [1, 2, 3, 4], "zoom": 2}, "unknown field 'zoom'", "arguments"),
    ],
)
def test_bad_calls_are_explained(context, arguments, fragment, kind):
    result = run_tool({ZoomTool.name: ZoomTool()}, ZoomTool.name, arguments, context)
    assert not result.ok and result.images == ()
    assert fragment in result.error and result.error_type == kind


def test_unreadable_or_oversized_images_fail_cleanly(original):
    tool = ZoomTool(max_image_pixels=10_000)
    result = tool.run({"bbox_2d": [0, 0, 500, 500]}, ToolContext(image=encode(original)))
    assert result.error_type == "execution" and "more than the 0.01 MP allowed" in result.error
    broken = ZoomTool().run({"bbox_2d": [0, 0, 500, 500]}, ToolContext(image=b"not an image"))
    assert broken.error_type == "execution" and broken.error.startswith(
        "The image could not be zoomed"
    )


def test_jpeg_and_grayscale_originals_become_rgb():
    gray = Image.new("L", (100, 100), 128)
    result = ZoomTool().run({"bbox_2d": [0, 0, 500, 500]}, ToolContext(image=encode(gray, "JPEG")))
    crop = Image.open(io.BytesIO(result.images[0]))
    assert crop.mode == "RGB" and crop.size == (200, 200)


def test_a_multi_image_job_zooms_in_on_the_image_it_names(original):
    other = gradient(300, 300).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    context = ToolContext(
        image=encode(original),
        view_size=(200, 100),
        more_images=(encode(other),),
        more_view_sizes=((150, 150),),
    )
    tool = ZoomTool(coordinates="absolute", target_side=1)
    box = [10, 10, 50, 50]
    first = decode(tool.run({"bbox_2d": box}, context).images[0])
    assert first.tobytes() == original.crop((20, 20, 100, 100)).tobytes()  # the default
    second = decode(tool.run({"bbox_2d": box, "image_index": 1}, context).images[0])
    assert second.tobytes() == other.crop((20, 20, 100, 100)).tobytes()  # its own view's frame
    result = tool.run({"bbox_2d": box, "image_index": 2}, context)
    assert result.error_type == "arguments" and "there are 2 images, 0 to 1" in result.error
    assert ZoomTool().parameters_for(1) == ZoomTool.parameters
    assert ZoomTool().description_for(1) == ZoomTool.description
