"""`PrepareImages`: each job's image is read once, validated, and its model view stored.

The job image is read from its URI, decoded with the agent core's safe loader (so corrupt,
truncated, empty, oversized and unsupported images become failure rows with the loader's
error class), and its model view is stored content-addressed. The element that leaves is a
started `Trajectory`: references and small text, never pixels. The original stays where it
is (its URI and hash are in the trajectory); tools read it from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.metrics import Metrics

from beam_pipelines.agent import loop
from beam_pipelines.agent.images import ImageError, load_image, sha256_hex
from beam_pipelines.agent.records import Failure, ImageRef, Job, ToolSpec, Trajectory
from beam_pipelines.io.files import read_bytes
from beam_pipelines.io.writers import FailedJob
from beam_pipelines.transforms.images import ImageStore

PREPARE_STAGE = "prepare"


class ImageReadError(OSError):
    """The job's image could not be read (missing file, no permission, storage error)."""

    error_class = "image_unreadable"


class ImageMissingError(ImageReadError):
    error_class = "image_missing"


def read_image(uri: str) -> bytes:
    """The bytes at `uri`, with a failure-row error class when they cannot be read."""
    try:
        return read_bytes(uri)
    except FileNotFoundError as e:
        raise ImageMissingError(f"no such image: {uri}") from e
    except (BeamIOError, OSError) as e:
        text = str(e)
        if "No such file" in text or "Not found" in text or "404" in text:
            raise ImageMissingError(f"no such image: {uri}") from e
        raise ImageReadError(f"cannot read {uri}: {text[:300]}") from e


def start_trajectory(
    job: Job,
    store: ImageStore,
    protocol: str,
    tools: Sequence[ToolSpec],
    model: str,
    sampling: dict[str, Any],
    max_turns: int,
) -> Trajectory:
    """Read and validate the job image, store its view, and start the job's trajectory.

    Raises `ImageError` or `ImageReadError` (each with an `error_class`) for unusable images.
    """
    data = read_image(job.image)
    image = load_image(data)
    original = ImageRef(
        uri=job.image, sha256=sha256_hex(data), width=image.width, height=image.height
    )
    view = store.put_view(image)
    del image  # the decoded pixels never leave this function
    return loop.start(
        job, protocol, tools, original, view, model=model, sampling=sampling, max_turns=max_turns
    )


class PrepareImages(beam.DoFn):
    """Job -> started Trajectory, or `FailedJob`; anything else (failure rows) passes through."""

    def __init__(
        self,
        store: ImageStore,
        protocol: str,
        tools: Sequence[ToolSpec],
        model: str,
        sampling: dict[str, Any],
        max_turns: int,
    ) -> None:
        self._store = store
        self._protocol = protocol
        self._tools = tuple(tools)
        self._model = model
        self._sampling = dict(sampling)
        self._max_turns = max_turns

    def setup(self) -> None:
        self._started = Metrics.counter("annotate", "jobs_started")
        self._bad = Metrics.counter("annotate", "image_errors")

    def process(self, job: Job | Any) -> Iterable[Any]:
        if not isinstance(job, Job):
            yield job
            return
        try:
            traj = start_trajectory(
                job,
                self._store,
                self._protocol,
                self._tools,
                self._model,
                self._sampling,
                self._max_turns,
            )
        except (ImageError, ImageReadError) as e:
            self._bad.inc()
            yield FailedJob(Failure.from_error(job.to_dict(), PREPARE_STAGE, e, id=job.id))
            return
        self._started.inc()
        yield traj
