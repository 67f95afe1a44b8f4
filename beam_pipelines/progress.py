"""Live progress of a local run: counters the DoFns bump, and a `rich` display that reads them.

On the in-process runner every DoFn runs in the process that launched the pipeline, so a
process-wide board is the cheapest way to see done / failed / in-flight while the run goes
(Beam metrics are only committed when a bundle ends, and on the in-process runner a stage is
one bundle). On a remote runner the board stays at zero in the launcher and the display is
not started; Beam metrics are the source of truth there and in the final summary.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, fields
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass
class Snapshot:
    """Counters at one moment."""

    answered: int = 0
    failed: int = 0
    correct: int = 0
    graded: int = 0
    tokens: int = 0
    in_flight: int = 0
    requests: int = 0
    retries: int = 0
    tool_calls: int = 0


class ProgressBoard:
    """Thread-safe counters (model callbacks arrive on gRPC threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Snapshot()

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._counts, name, getattr(self._counts, name) + delta)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(**{f.name: getattr(self._counts, f.name) for f in fields(Snapshot)})

    def reset(self) -> None:
        with self._lock:
            self._counts = Snapshot()


_BOARD = ProgressBoard()


def board() -> ProgressBoard:
    """The board of this process."""
    return _BOARD


def render(snapshot: Snapshot, elapsed_s: float, title: str) -> Table:
    """One line of live status."""
    done = snapshot.answered + snapshot.failed
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("answered", "failed", "in flight", "jobs/s", "accuracy", "tokens", "elapsed"):
        table.add_column(column, justify="right")
    accuracy = f"{snapshot.correct / snapshot.graded:.1%}" if snapshot.graded else "-"
    table.add_row(
        str(snapshot.answered),
        str(snapshot.failed),
        str(snapshot.in_flight),
        f"{rate:.2f}",
        accuracy,
        f"{snapshot.tokens:,}",
        f"{elapsed_s:.0f}s",
    )
    return table


class LiveProgress:
    """A context manager that shows the board until the run ends (no-op when disabled)."""

    def __init__(self, enabled: bool, title: str = "annotate", refresh_s: float = 0.5) -> None:
        self._enabled = enabled
        self._title = title
        self._refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    def __enter__(self) -> LiveProgress:
        board().reset()
        self._started = time.monotonic()
        if self._enabled:
            self._thread = threading.Thread(target=self._show, name="progress", daemon=True)
            self._thread.start()
        return self

    def _show(self) -> None:
        console = Console(file=sys.stderr)
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while not self._stop.wait(self._refresh_s):
                live.update(self._table())
            live.update(self._table())
        console.line()  # the summary that follows goes to stdout: start it on its own line

    def _table(self) -> Table:
        return render(board().snapshot(), time.monotonic() - self._started, self._title)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
