"""Object storage: gs:// input and output against gcp-storage-emulator on loopback.

The emulator is a real GCS JSON-API server; Beam's GCS filesystem and google-cloud-storage
both talk to it through `STORAGE_EMULATOR_HOST`. Outputs are read back with
google-cloud-storage, the way a user would.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest

from .runs import annotate_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "corpus-bucket"


@pytest.fixture(scope="module")
def gcs(gcs_emulator: Any) -> Any:
    """The shared emulator's client, with this module's bucket made."""
    gcs_emulator.create_bucket(BUCKET)
    return gcs_emulator


def test_gs_input_and_output(gcs, corpus: Path, triton) -> None:
    bucket = gcs.bucket(BUCKET)
    jobs = []
    for line in corpus.read_text().splitlines()[:4]:
        job = json.loads(line)
        name = f"corpus/images/{Path(job['image']).name}"
        bucket.blob(name).upload_from_filename(job["image"])
        jobs.append({**job, "image": f"gs://{BUCKET}/{name}"})
    bucket.blob("corpus/jobs.jsonl").upload_from_string("".join(json.dumps(j) + "\n" for j in jobs))

    result = annotate_run(f"gs://{BUCKET}/corpus/jobs.jsonl", f"gs://{BUCKET}/out", triton.grpc_url)
    run = f"out/runs/{result.config.run_id}"
    names = {b.name for b in gcs.list_blobs(BUCKET, prefix="out/")}
    answer_shards = [n for n in names if n.startswith(f"{run}/answers/")]
    failure_shards = [n for n in names if n.startswith(f"{run}/failures/")]
    assert f"{run}/manifest.json" in names

    rows = []
    for name in answer_shards:
        rows += pq.read_table(io.BytesIO(bucket.blob(name).download_as_bytes())).to_pylist()
    failed = []
    for name in failure_shards:
        failed += bucket.blob(name).download_as_text().splitlines()
    assert len(rows) + len(failed) == len(jobs)
    assert rows, failed

    for row in rows:
        shard, _, quoted = row["trace_uri"].partition("#")
        assert shard.startswith(f"gs://{BUCKET}/{run}/traces/")
        data = gzip.decompress(
            bucket.blob(shard.removeprefix(f"gs://{BUCKET}/")).download_as_bytes()
        )
        record = next(
            t for t in map(json.loads, data.decode().splitlines()) if t["id"] == unquote(quoted)
        )
        for message in record["messages"]:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part["type"] == "image_url":
                    uri = part["image_url"]["url"]
                    assert uri.startswith(f"gs://{BUCKET}/out/images/")
                    assert uri.removeprefix(f"gs://{BUCKET}/") in names
