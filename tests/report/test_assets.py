"""Images copied next to the report: small stored PNGs verbatim, the rest re-encoded smaller."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from beam_pipelines.agent.images import sha256_hex
from beam_pipelines.agent.records import ImageRef
from beam_pipelines.report.assets import ImageCopier


def stored(path: Path, size: tuple[int, int], fmt: str = "PNG") -> ImageRef:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    return ImageRef(
        uri=str(path), sha256=sha256_hex(buffer.getvalue()), width=size[0], height=size[1]
    )


def test_a_small_png_is_copied_byte_for_byte_once(tmp_path: Path) -> None:
    ref = stored(tmp_path / "a.png", (64, 32))
    copier = ImageCopier(str(tmp_path / "report"))
    assert copier.copy(ref) == f"assets/{ref.sha256}.png"
    assert copier.copy(ref) == f"assets/{ref.sha256}.png"
    assert copier.copied == 1
    copied = tmp_path / "report" / "assets" / f"{ref.sha256}.png"
    assert copied.read_bytes() == (tmp_path / "a.png").read_bytes()


def test_large_images_and_job_images_are_reencoded_smaller(tmp_path: Path) -> None:
    big = stored(tmp_path / "big.png", (3000, 1000))
    job = stored(tmp_path / "job.jpg", (200, 100), fmt="JPEG")
    copier = ImageCopier(str(tmp_path / "report"), max_side=1000)
    assert copier.copy(big) == f"assets/{big.sha256}.jpg"
    with Image.open(tmp_path / "report" / "assets" / f"{big.sha256}.jpg") as image:
        assert image.size == (1000, 333)
    assert copier.copy(job, reencode=True) == f"assets/{job.sha256}.jpg"


def test_missing_or_corrupt_images_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    copier = ImageCopier(str(tmp_path / "report"))
    missing = ImageRef(uri=str(tmp_path / "nope.png"), sha256="ab" * 32, width=1, height=1)
    corrupt = ImageRef(uri=str(tmp_path / "bad.png"), sha256="cd" * 32, width=4000, height=4000)
    assert copier.copy(missing) is None
    assert copier.copy(corrupt) is None
    assert copier.copied == 0
