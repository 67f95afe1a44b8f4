"""`Backlog`: work a DoFn hands to a thread pool, with results back on the DoFn's thread.

The shape every slow step of the loop uses: `submit` in `process` (waiting only while the
backlog is full, and handing back what finished meanwhile), `ready` after each element, and
`drain` in `finish_bundle`. Results come back in completion order, so one slow item never
holds up the others, and Beam outputs and metrics stay on the DoFn's thread, where they must
be emitted.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """At most `limit` items in the pool at once; results in completion order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a backlog needs room for at least one item")
        self._limit = limit
        self._done: queue.SimpleQueue[Future[T]] = queue.SimpleQueue()
        self._outstanding = 0

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def submit(self, pool: Executor, fn: Callable[..., T], *args: Any) -> Iterator[Future[T]]:
        """Run `fn(*args)` on `pool`; yields futures that finished while waiting for room."""
        while self._outstanding >= self._limit:
            yield self._take(block=True)
        future = pool.submit(fn, *args)
        self._outstanding += 1
        future.add_done_callback(self._done.put)

    def ready(self) -> Iterator[Future[T]]:
        """The futures that have finished, without waiting."""
        while self._outstanding:
            try:
                yield self._take(block=False)
            except queue.Empty:
                return

    def drain(self) -> Iterator[Future[T]]:
        """Every outstanding future, as each finishes."""
        while self._outstanding:
            yield self._take(block=True)

    def _take(self, block: bool) -> Future[T]:
        future = self._done.get(block=block)
        self._outstanding -= 1
        return future
