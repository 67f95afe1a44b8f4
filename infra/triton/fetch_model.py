#!/usr/bin/env python3
"""Copy a model checkpoint from a `gs://bucket/prefix` into a local directory, once.

The Triton container runs this before the server starts. Objects are downloaded in parallel
(google-cloud-storage's transfer manager); `.fetched.json` (each object's name, size and
generation) is written last, so a restarted container whose volume survived skips the
download when the bucket has not changed, and an interrupted download is redone. Object names
that would land outside the directory (`..`, absolute parts) are refused.

    python fetch_model.py gs://my-models/skywork-r1v4 /models/checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MARKER = ".fetched.json"


class FetchError(RuntimeError):
    """A URI, listing or download that cannot give a complete checkpoint."""


@dataclass(frozen=True)
class RemoteFile:
    """One object of the checkpoint: its path below the prefix, size and generation."""

    path: str
    size: int
    generation: int


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix` -> (`bucket`, `some/prefix/`); the prefix may be empty."""
    if not uri.startswith("gs://"):
        raise FetchError(f"model URI must start with gs://, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise FetchError(f"model URI has no bucket: {uri!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def plan(objects: Iterable[tuple[str, int, int]], prefix: str) -> list[RemoteFile]:
    """The files to fetch from (name, size, generation) listings under `prefix`, sorted.

    Folder placeholders (names ending in `/`) are skipped; names that would escape the target
    directory raise `FetchError`.
    """
    files = []
    for name, size, generation in objects:
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        relative = PurePosixPath(name[len(prefix) :])
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise FetchError(f"object name {name!r} would be written outside the target")
        files.append(RemoteFile(str(relative), int(size), int(generation)))
    if not files:
        raise FetchError(f"no objects under prefix {prefix!r}")
    return sorted(files, key=lambda f: f.path)


def is_complete(target: Path, files: list[RemoteFile]) -> bool:
    """Whether `target` already holds exactly these files (marker written after a full fetch)."""
    marker = target / MARKER
    if not marker.exists():
        return False
    try:
        recorded = [RemoteFile(**entry) for entry in json.loads(marker.read_text())["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == files and is_complete_sizes(target, files)


def write_marker(target: Path, uri: str, files: list[RemoteFile]) -> None:
    """Record a completed fetch (atomically: written, then renamed)."""
    marker = target / MARKER
    staging = marker.with_suffix(".tmp")
    staging.write_text(json.dumps({"uri": uri, "files": [asdict(f) for f in files]}, indent=1))
    staging.replace(marker)


def fetch(uri: str, target: Path, *, client: Any = None, workers: int = 16) -> list[RemoteFile]:
    """Fetch the checkpoint at `uri` into `target` unless it is already there; returns its files."""
    from google.cloud import storage
    from google.cloud.storage import transfer_manager

    bucket_name, prefix = parse_gs_uri(uri)
    client = client or storage.Client()
    bucket = client.bucket(bucket_name)
    files = plan(
        ((b.name, b.size, b.generation) for b in client.list_blobs(bucket_name, prefix=prefix)),
        prefix,
    )
    target.mkdir(parents=True, exist_ok=True)
    if is_complete(target, files):
        print(f"fetch_model: {target} already holds {uri} ({len(files)} files)", flush=True)
        return files
    (target / MARKER).unlink(missing_ok=True)
    started = time.monotonic()
    results = transfer_manager.download_many_to_path(
        bucket,
        [f.path for f in files],
        destination_directory=str(target),
        blob_name_prefix=prefix,
        max_workers=workers,
        worker_type=transfer_manager.THREAD,
    )
    failed = [(f.path, r) for f, r in zip(files, results, strict=True) if isinstance(r, Exception)]
    if failed:
        raise FetchError(f"{len(failed)} of {len(files)} downloads failed, first: {failed[0]}")
    if not is_complete_sizes(target, files):
        raise FetchError("downloaded sizes do not match the bucket listing")
    write_marker(target, uri, files)
    total = sum(f.size for f in files)
    elapsed = time.monotonic() - started
    print(
        f"fetch_model: {len(files)} files, {total / 1e9:.1f} GB in {elapsed:.0f}s "
        f"({total / 1e6 / max(elapsed, 1e-9):.0f} MB/s) -> {target}",
        flush=True,
    )
    return files


def is_complete_sizes(target: Path, files: list[RemoteFile]) -> bool:
    """Whether every file is on disk with the listed size."""
    return all(
        (target / f.path).is_file() and (target / f.path).stat().st_size == f.size for f in files
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri", help="gs://bucket/prefix of the checkpoint")
    parser.add_argument("target", type=Path, help="local directory")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        fetch(args.uri, args.target, workers=args.workers)
    except FetchError as exc:
        print(f"fetch_model: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
