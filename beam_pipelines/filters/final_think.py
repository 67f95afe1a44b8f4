"""`final_think`: the last reasoning step names the answer it leads to."""

from __future__ import annotations

import re

from beam_pipelines.agent.records import LETTERS, Trajectory, _normalise, parse_choice
from beam_pipelines.filters.base import TrajectoryFilter


def _mentions(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words (case and spacing folded)."""
    phrase = _normalise(phrase)
    if not phrase:
        return False
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", _normalise(text)) is not None


class FinalThinkAgrees(TrajectoryFilter):
    """The last reasoning step names the answer it leads to.

    With options: the chosen option's text, or its letter as a word; free-form: the answer
    text. A reasoning step that names no answer at all is rejected too: it does not support
    the answer it precedes.
    """

    name = "final_think"

    def check(self, traj: Trajectory) -> str | None:
        if traj.final is None:
            return "no final reasoning step"
        think = traj.final.think.strip()
        if not think:
            return "the final reasoning step is empty"
        answer = traj.final.answer
        if traj.job.options:
            choice = parse_choice(answer, traj.job.options)
            if choice is None:
                return f"the answer {answer[:80]!r} names no option"
            option = traj.job.options[LETTERS.index(choice)]
            if _mentions(think, option) or re.search(rf"\b{choice}\b", think):
                return None
            return f"the final reasoning does not name the answer {choice} ({option!r})"
        if _mentions(think, answer):
            return None
        return f"the final reasoning does not name the answer {answer[:80]!r}"
