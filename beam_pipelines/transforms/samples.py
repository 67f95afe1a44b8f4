"""N samples per job: each job read becomes N jobs `<id>#<k>`, each with its own seed.

Used by `regenerate` (several rollouts per question, for training data) and by `evaluate
--samples k` (Avg@k). A sample is an ordinary job from here on: skip-done, the loop and the
writer see only its id, so a rerun resumes sample by sample. The sample's number, its seed
and the source job's id travel in `job.meta` (`sample`, `seed`, `source_id`), and so end up in
the trace.

Seeds are derived, not drawn: `sample_seed(base, id, k)` hashes the three, so the same
command gives every sample the same seed again (a resumed run continues the same sampling),
different samples of a job and different jobs get different seeds, and no seed depends on
which worker ran what.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from beam_pipelines.agent.records import Job, Trajectory
from beam_pipelines.io.readers import Candidate, Key

#: Separates a job's id from its sample number in a sample's id.
SAMPLE_SEPARATOR = "#"
#: Seeds stay below 2**63 (the serving contract's bound).
_SEED_BITS = 63


def sample_id(job_id: str, k: int) -> str:
    return f"{job_id}{SAMPLE_SEPARATOR}{k}"


def sample_seed(base_seed: int, job_id: str, k: int) -> int:
    """A stable seed for sample `k` of `job_id` (see the module docstring)."""
    digest = hashlib.sha256(f"{base_seed}\x00{job_id}\x00{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _SEED_BITS)


@dataclass(frozen=True)
class Samples:
    """How many samples per job, the base of their seeds, and the temperature to sample at
    when the command line does not give one (greedy decoding would make every sample equal)."""

    n: int
    seed: int = 0
    default_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--samples must be at least 1, got {self.n}")


def sample_job(job: Job, k: int, base_seed: int) -> Job:
    """Sample `k` of a job: id `<id>#<k>`, with `sample`, `seed`, `source_id` in its meta."""
    meta = {
        **job.meta,
        "source_id": job.id,
        "sample": k,
        "seed": sample_seed(base_seed, job.id, k),
    }
    return dataclasses.replace(job, id=sample_id(job.id, k), meta=meta)


class ExpandSamples(beam.DoFn):
    """`(id, Candidate)` -> N `(id#k, Candidate)`; failure rows pass through unchanged."""

    def __init__(self, samples: Samples) -> None:
        self._samples = samples

    def process(self, element: tuple[Key, Any]) -> Iterator[tuple[Key, Any]]:
        _, value = element
        if not isinstance(value, Candidate):
            yield element
            return
        for k in range(self._samples.n):
            job = sample_job(value.job, k, self._samples.seed)
            yield job.id, dataclasses.replace(value, job=job)


class SeedSamples(beam.DoFn):
    """A started sample takes its own seed into its sampling settings (used at every turn)."""

    def process(self, element: Any) -> Iterator[Any]:
        if isinstance(element, Trajectory) and "seed" in element.job.meta:
            sampling = {**element.sampling, "seed": element.job.meta["seed"]}
            element = dataclasses.replace(element, sampling=sampling)
        yield element
