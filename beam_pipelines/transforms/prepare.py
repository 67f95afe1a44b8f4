"""`PrepareImages`: each job's images are read once, validated, and their model views stored.

A job image is read from its URI (`io.image_uris`: files and object stores, public http(s)
URLs through the web fetcher's guard; any other scheme is an `unsupported_uri` failure row),
decoded with the agent core's safe loader (so corrupt, truncated, empty, oversized and
unsupported images become failure rows with the loader's error class), and its model view is
stored content-addressed. The element that leaves is a
started `Trajectory`: references and small text, never pixels. The original stays where it
is (its URI and hash are in the trajectory); tools read it from there, the same way.

A multi-image job (`images`) has every image read, in order; the first that cannot be used
fails the job, and its failure row names it: `images[i] (<uri>): <why>`, with that image's
error class.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.agent import loop
from beam_pipelines.agent.images import ImageError, load_image, sha256_hex
from beam_pipelines.agent.records import FailedJob, Failure, ImageRef, Job, ToolSpec, Trajectory
from beam_pipelines.io.image_uris import PUBLIC_IMAGES, ImageReadError, ImageSource
from beam_pipelines.transforms.backlog import Backlog
from beam_pipelines.transforms.generate import windowed
from beam_pipelines.transforms.images import ImageStore

PREPARE_STAGE = "prepare"


def start_trajectory(
    job: Job,
    store: ImageStore,
    protocol: str,
    tools: Sequence[ToolSpec],
    model: str,
    sampling: dict[str, Any],
    max_turns: int,
    *,
    source: ImageSource = PUBLIC_IMAGES,
) -> Trajectory:
    """Read and validate the job's images, store their views, and start the job's trajectory.

    Raises `ImageError` or `ImageReadError` (each with an `error_class`) for an unusable image,
    `JobImageError` for one of a job given with `images`.
    """
    refs: list[tuple[ImageRef, ImageRef]] = []
    for index, uri in enumerate(job.uris):
        try:
            refs.append(prepare_image(uri, store, source))
        except (ImageError, ImageReadError) as e:
            if not job.images:
                raise
            raise JobImageError(index, uri, e) from e
    (original, view), *more = refs
    return loop.start(
        job,
        protocol,
        tools,
        original,
        view,
        model=model,
        sampling=sampling,
        max_turns=max_turns,
        more_originals=[o for o, _ in more],
        more_views=[v for _, v in more],
    )


def prepare_image(uri: str, store: ImageStore, source: ImageSource) -> tuple[ImageRef, ImageRef]:
    """One job image: read and validated; its reference and its stored model view."""
    data = source.read(uri)
    image = load_image(data)
    original = ImageRef(uri=uri, sha256=sha256_hex(data), width=image.width, height=image.height)
    view = store.put_view(image)
    del image  # the decoded pixels never leave this function
    return original, view


class JobImageError(Exception):
    """An image of a job given with `images` cannot be used: which one, and the reason's
    `error_class` (the failure row's)."""

    def __init__(self, index: int, uri: str, error: ImageError | ImageReadError) -> None:
        super().__init__(f"images[{index}] ({uri}): {error}")
        self.index = index
        self.uri = uri
        self.error_class = error.error_class


@dataclass(frozen=True)
class Prepared:
    """What preparing one job gave: its trajectory, or the failure row, and how long it took
    (recorded on the DoFn's thread: Beam metrics are not counted from pool threads)."""

    outcome: Trajectory | FailedJob
    elapsed_ms: float


class PrepareImages(beam.DoFn):
    """Job -> started Trajectory, or `FailedJob`; anything else (failure rows) passes through.

    Reading, decoding and downscaling run on a small thread pool (Pillow releases the GIL
    while it decodes and resizes), so the first turn's requests go out as fast as images can
    be read rather than one image at a time.
    """

    def __init__(
        self,
        store: ImageStore,
        protocol: str,
        tools: Sequence[ToolSpec],
        model: str,
        sampling: dict[str, Any],
        max_turns: int,
        workers: int = 4,
    ) -> None:
        self._store = store
        self._protocol = protocol
        self._tools = tuple(tools)
        self._model = model
        self._sampling = dict(sampling)
        self._max_turns = max_turns
        self._workers = workers

    def setup(self) -> None:
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="prepare")
        self._started = Metrics.counter("annotate", "jobs_started")
        self._bad = Metrics.counter("annotate", "image_errors")
        self._elapsed_ms = Metrics.distribution("annotate", "prepare_ms")

    def teardown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start_bundle(self) -> None:
        # Twice the pool: the pool never idles, and few decoded images are alive at once.
        self._backlog: Backlog[Prepared] = Backlog(2 * self._workers)

    def process(self, job: Job | Any) -> Iterator[Any]:
        if not isinstance(job, Job):
            yield job
            return
        for future in self._backlog.submit(self._pool, self._prepare, job):
            yield self._emit(future)
        for future in self._backlog.ready():
            yield self._emit(future)

    def finish_bundle(self) -> Iterator[Any]:
        for future in self._backlog.drain():
            yield windowed(self._emit(future))

    def _prepare(self, job: Job) -> Prepared:
        started = time.monotonic()
        outcome: Trajectory | FailedJob
        try:
            outcome = start_trajectory(
                job,
                self._store,
                self._protocol,
                self._tools,
                self._model,
                self._sampling,
                self._max_turns,
            )
        except (ImageError, ImageReadError, JobImageError) as e:
            outcome = FailedJob(Failure.from_error(job.to_dict(), PREPARE_STAGE, e, id=job.id))
        return Prepared(outcome, 1000 * (time.monotonic() - started))

    def _emit(self, future: Future[Prepared]) -> Trajectory | FailedJob:
        prepared = future.result()  # storage errors re-raise here: the bundle fails
        outcome = prepared.outcome
        self._elapsed_ms.update(round(prepared.elapsed_ms))
        (self._bad if isinstance(outcome, FailedJob) else self._started).inc()
        return outcome
