"""A report of a run in object storage, written back to object storage (gs:// emulator).

The run is written to the emulator by the pipeline's own writers; the report reads it with
Beam's FileSystems and writes its pages and images next to it, the way a static-hosting
bucket would serve them.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from beam_pipelines.report import build_report

from .synthetic import RUN_ID, write_run

pytestmark = pytest.mark.integration

BUCKET = "report-bucket"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gcs() -> Iterator[Any]:
    """A storage client of an in-memory emulator listening on 127.0.0.1 only."""
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    # No credentials exist offline: start Beam's GCS client anonymous instead of retrying ADC.
    from apache_beam.internal.gcp import auth

    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = None
    client = storage.Client.create_anonymous_client()
    client.project = "test"
    try:
        yield client
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


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
