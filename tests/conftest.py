"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[Any]:
    """A storage client of an in-memory gcp-storage-emulator on 127.0.0.1, for one module.

    `STORAGE_EMULATOR_HOST` points google-cloud-storage and Beam's GCS file system at it while
    the module runs. No credentials exist offline: Beam's client is started anonymous instead
    of retrying Application Default Credentials with backoff for about 30 s.
    """
    from apache_beam.internal.gcp import auth
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
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
