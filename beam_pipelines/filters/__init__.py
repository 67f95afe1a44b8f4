"""Trajectory filters: which sampled trajectories are good enough to train on, and why not.

A filter is a small named object: `check(trajectory) -> reason | None`. `None` keeps the
trajectory; a reason (a sentence for people) rejects it. `FilterChain` runs filters in order
and stops at the first rejection, so the cheap checks come first and the expensive ones
(replaying tools, asking a judge) see only trajectories that passed everything before them;
each rejection records the filter's name and its reason. `dedup` works on all the trajectories
of one source job together and runs last.

Filters, by name and module (each rejects a trajectory when ...):

- `answer` (`answer.py`): it did not answer, the job has no ground truth, or the answer is
  wrong (option letter; normalised exact match for free-form answers);
- `format` (`format.py`): an assistant turn does not parse under the trajectory's protocol,
  or the loop counted a format error;
- `tool_error` (`tool_error.py`): a tool call failed (a sandbox error, bad arguments, an
  unreadable tool image);
- `recrop` (`recrop.py`, optional): a tool call repeats an earlier one (same arguments or
  same image);
- `final_think` (`final_think.py`): the last reasoning step is empty or does not name the
  answer it gives;
- `replay` (`replay.py`): re-running a recorded image-tool call gives another observation
  (text, error, or images: content hash, or a perceptual distance for lossy formats);
- `judge` (`judge.py`): an image-reasoning judge finds a tool-produced image that does not
  show what the reasoning after it says;
- `dedup` (`chain.py`): an earlier sample of the same job made exactly the same turns.

Judges are pluggable (`ImageJudge`, in `base.py` with the filter base class, `Rejection` and
`Verdict`): `MarkerJudge` (`marker_judge.py`) is the documented heuristic for the synthetic
"zoom to read" task; `ModelJudge` (`model_judge.py`) asks a served model through the
pipeline's model client (Triton, OpenAI-compatible or scripted). `chain.py` holds the chain,
the name registry and the default order (`build_chain`, `FILTER_NAMES`, `DEFAULT_FILTERS`).
"""

from beam_pipelines.filters.answer import AnswerMatches
from beam_pipelines.filters.base import (
    ImageClaim,
    ImageJudge,
    Rejection,
    TrajectoryFilter,
    Verdict,
    WorkerResource,
)
from beam_pipelines.filters.chain import (
    DEDUP,
    DEFAULT_FILTERS,
    FILTER_NAMES,
    FilterChain,
    build_chain,
    signature,
)
from beam_pipelines.filters.final_think import FinalThinkAgrees
from beam_pipelines.filters.format import FormatValid
from beam_pipelines.filters.judge import ImageReasoningConsistency, image_claims
from beam_pipelines.filters.marker_judge import (
    MARKER_COLOURS,
    MARKER_SHAPES,
    MarkerJudge,
    colour_fraction,
)
from beam_pipelines.filters.model_judge import JUDGE_PROMPT, ModelJudge, parse_verdict
from beam_pipelines.filters.recrop import NoRepeatedCrop
from beam_pipelines.filters.replay import (
    REPLAYABLE_TOOLS,
    ToolReplay,
    perceptual_distance,
    pixel_digest,
)
from beam_pipelines.filters.tool_error import NoToolError

__all__ = [
    "DEDUP",
    "DEFAULT_FILTERS",
    "FILTER_NAMES",
    "JUDGE_PROMPT",
    "MARKER_COLOURS",
    "MARKER_SHAPES",
    "REPLAYABLE_TOOLS",
    "AnswerMatches",
    "FilterChain",
    "FinalThinkAgrees",
    "FormatValid",
    "ImageClaim",
    "ImageJudge",
    "ImageReasoningConsistency",
    "MarkerJudge",
    "ModelJudge",
    "NoRepeatedCrop",
    "NoToolError",
    "Rejection",
    "ToolReplay",
    "TrajectoryFilter",
    "Verdict",
    "WorkerResource",
    "build_chain",
    "colour_fraction",
    "image_claims",
    "parse_verdict",
    "perceptual_distance",
    "pixel_digest",
    "signature",
]
