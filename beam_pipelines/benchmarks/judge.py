"""A model that reads which option a free-form answer chose, where exact matching cannot.

HR-Bench's own evaluation (and VLMEvalKit's for it) asks an LLM judge when an answer is not
a bare letter or an option's text; without a judge such answers count as wrong. `ChoiceJudge`
asks any served model through the pipeline's model client (`--judge_endpoint KIND:URL`, with
its retries and deadline), greedily, for the option's letter; the scorer reports its figures
beside exact matching's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from beam_pipelines.agent.records import LETTERS
from beam_pipelines.model_client.base import ModelEndpoint, ModelError
from beam_pipelines.model_client.channel import ModelChannel, complete

PROMPT = (
    "You grade a multiple-choice answer. Given the question, its options and the answer "
    "someone gave, say which option the answer chooses. Reply with that option's letter "
    "alone, or Z when it chooses none of them or several.\n\n"
    "Question: {question}\nOptions:\n{options}\nAnswer: {answer}\nLetter:"
)
SAMPLING = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []}


class ChoiceJudge:
    """`choose(question, options, answer)` -> the option letter a served model reads, or None."""

    def __init__(self, channel: ModelChannel) -> None:
        self.channel = channel

    @classmethod
    def at(cls, address: str, model: str) -> ChoiceJudge:
        return cls(ModelChannel(ModelEndpoint.at(address, model, max_in_flight=8)))

    def choose(self, question: str, options: Sequence[str], answer: str) -> str | None:
        listed = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
        text = PROMPT.format(question=question, options=listed, answer=answer)
        reply = complete(self.channel, [{"role": "user", "content": text}], SAMPLING)
        if isinstance(reply, ModelError):
            return None
        found = re.search(rf"\b([{LETTERS[: len(options)]}Z])\b", reply.text.upper())
        letter = found[1] if found else None
        return None if letter in (None, "Z") else letter

    def close(self) -> None:
        self.channel.close()
