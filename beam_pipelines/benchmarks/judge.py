"""Served models that judge answers exact matching cannot: any model, through the model client.

`--judge_endpoint KIND:URL` names the model (`judge_channel`: the pipeline's model client, its
retries and deadline); each judge asks it greedily and reads its reply, and the scorer reports
the judged figures beside the exact-match ones.

- `ChoiceJudge` reads which option a free-form answer chose, as HR-Bench's own evaluation (and
  VLMEvalKit's for it) asks an LLM judge when an answer is not a bare letter or an option's
  text; without a judge such answers count as wrong.
- `AnswerJudge` says whether an answer matches the reference answer, yes or no, as R1V4's
  published search-benchmark figures (MMSearch, FVQA) were judged: the prompt and the reading
  of the reply are those of `r1v4/benchmark/o3-mini-judge.py` in `SkyworkAI/Skywork-R1V` at
  commit fdfbb84 (judged there by o3-mini).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from beam_pipelines.agent.records import LETTERS
from beam_pipelines.model_client.base import ModelEndpoint, ModelError
from beam_pipelines.model_client.channel import InFlightRequests, ModelChannel, complete

PROMPT = (
    "You grade a multiple-choice answer. Given the question, its options and the answer "
    "someone gave, say which option the answer chooses. Reply with that option's letter "
    "alone, or Z when it chooses none of them or several.\n\n"
    "Question: {question}\nOptions:\n{options}\nAnswer: {answer}\nLetter:"
)
SAMPLING = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []}

#: `JUDGE_PROMPT` of `o3-mini-judge.py` (fdfbb84), as sent there (stripped).
ANSWER_PROMPT = """\
Judge whether the following [response] to [question] is correct or not based on the precise \
and unambiguous [correct_answer] below.

[question]: {question}

[response]: {response}

[correct_answer]: {correct_answer}

Your judgement must be in the format and criteria specified below:

reasoning: Explain why the extracted_final_answer is correct or incorrect based on \
[correct_answer], focusing only on if there are meaningful differences between \
[correct_answer] and the extracted_final_answer. Do not comment on any background to the \
problem, do not attempt to solve the problem, do not argue for any answer different than \
[correct_answer], focus only on whether the answers match.

correct: Answer 'yes' if extracted_final_answer matches the [correct_answer] given above, or \
is within a small margin of error for numerical problems. Answer 'no' otherwise, i.e. if there \
is any inconsistency, ambiguity, non-equivalency, or if the extracted answer is incorrect."""
#: The judge writes its reasoning before its verdict, so it gets room for both.
ANSWER_SAMPLING = {"max_tokens": 1024, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []}
#: `post_process` of `o3-mini-judge.py`: the rest of the line after the first `correct:`.
_VERDICT = re.compile(r"correct\s*:\s*(.*?)(?:\n|$)", re.IGNORECASE)


def judge_channel(address: str, model: str) -> ModelChannel:
    """The channel to the judge model `--judge_endpoint` / `--judge_model` name."""
    return ModelChannel(ModelEndpoint.at(address, model, max_in_flight=8))


class ChoiceJudge:
    """`choose(question, options, answer)` -> the option letter a served model reads, or None."""

    def __init__(self, channel: ModelChannel) -> None:
        self.channel = channel

    def choose(self, question: str, options: Sequence[str], answer: str) -> str | None:
        listed = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
        text = PROMPT.format(question=question, options=listed, answer=answer)
        reply = complete(self.channel, [{"role": "user", "content": text}], SAMPLING)
        if isinstance(reply, ModelError):
            return None
        found = re.search(rf"\b([{LETTERS[: len(options)]}Z])\b", reply.text.upper())
        letter = found[1] if found else None
        return None if letter in (None, "Z") else letter


def read_verdict(reply: str) -> bool:
    """Whether a judge's reply says correct, read as `o3-mini-judge.py` reads it: the text after
    the first `correct:` (any case, so also inside `incorrect:`) to the end of its line holds
    `yes` (lower case: `Yes` is not read as yes there either)."""
    found = _VERDICT.search(reply)
    return "yes" in (found[1].strip() if found else "")


class AnswerJudge:
    """`verdicts([(question, response, correct_answer), ...])` -> per item True (the served
    model says the response is correct), False, or None when the judge could not be asked
    (its call failed after the channel's retries)."""

    def __init__(self, channel: ModelChannel) -> None:
        self.channel = channel

    def verdicts(self, items: Sequence[tuple[str, str, str]]) -> list[bool | None]:
        requests = InFlightRequests(self.channel)
        for key, (question, response, correct_answer) in enumerate(items):
            text = ANSWER_PROMPT.format(
                question=question, response=response, correct_answer=correct_answer
            )
            requests.submit(key, [{"role": "user", "content": text}], ANSWER_SAMPLING)
        out: list[bool | None] = [None] * len(items)
        for key, reply in requests.wait_all():
            if not isinstance(reply, ModelError) and reply.finish_reason != "error":
                out[key] = read_verdict(reply.text)
        return out
