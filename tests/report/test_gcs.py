"""A report of a run in object storage, written back to object storage (gs:// emulator).

The run is written to the emulator by the pipeline's own writers; the report reads it with
Beam's FileSystems and writes its pages and images next to it, the way a static-hosting
bucket would serve them.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from beam_pipelines.report import build_report

from .synthetic import RUN_ID, write_run

pytestmark = pytest.mark.integration

BUCKET = "report-bucket"


@pytest.fixture(scope="module")
def gcs(gcs_emulator: Any) -> Any:
    """The shared emulator's client, with this module's bucket made."""
    gcs_emulator.create_bucket(BUCKET)
    return gcs_emulator


def test_a_gs_run_gets_a_gs_report(gcs: Any) -> None:
    root = f"gs://{BUCKET}/out"
    write_run(root)
    result = build_report(root, max_trajectories=4)
    prefix = f"out/runs/{RUN_ID}/report/"
    assert result.index == f"gs://{BUCKET}/{prefix}index.html"
    names = {blob.name for blob in gcs.list_blobs(BUCKET, prefix=prefix)}
    pages = {n for n in names if n.startswith(prefix + "trajectories/")}
    assert len(pages) == 4 == result.pages
    index = gcs.bucket(BUCKET).blob(prefix + "index.html").download_as_text()
    assert "a sample of 4 of the run&#39;s 6 trajectories" in index
    shown = []
    for page in pages:
        text = gcs.bucket(BUCKET).blob(page).download_as_text()
        shown += re.findall(r'src="\.\./([^"]+)"', text)
    assert len(shown) >= 4  # at least each job image (read from gs:// too)
    assert all(prefix + src in names for src in shown)  # and every image is in the bucket
