"""The `model` judge: asks a served vision-language model whether an image shows what the
reasoning says, through the pipeline's model client (Triton, OpenAI-compatible or scripted)."""

from __future__ import annotations

import re
from typing import Any

from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters.base import ImageClaim, ImageJudge
from beam_pipelines.io.files import read_bytes

JUDGE_PROMPT = (
    "You check a visual reasoning step. Look at the image and read the reasoning that was "
    "written after seeing it. Reply <answer>yes</answer> if the image shows what the "
    "reasoning says about it, else <answer>no</answer>."
)
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """yes -> True, no -> False, from a judge's reply (inside `<answer>` when it has one)."""
    answer = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.DOTALL)
    body = answer.group(1) if answer else re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)
    found = _VERDICT.search(body)
    return None if found is None else found.group(1).lower() == "yes"


class ModelJudge(ImageJudge):
    """Asks a vision-language model at `endpoint` (`KIND:URL`: any `ModelClient` endpoint).

    The request is one user turn with the image (its model view, as the agent saw it) and
    the reasoning; the reply must say yes or no. No verdict counts as a disagreement: a
    trajectory is kept for training only when the judge vouches for it. Requests go through
    the model client's channel, with its retries and deadline.
    """

    name = "model"

    def __init__(
        self, endpoint: str, model_name: str = "agent_vlm", timeout_s: float = 120.0
    ) -> None:
        self.endpoint = endpoint
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._channel: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_channel": None}  # a client per worker, never pickled

    def setup(self) -> None:
        from beam_pipelines.model_client.base import ModelEndpoint
        from beam_pipelines.model_client.channel import ModelChannel

        if self._channel is None:
            endpoint = ModelEndpoint.at(
                self.endpoint, self.model_name, timeout_s=self.timeout_s, max_in_flight=4
            )
            self._channel = ModelChannel(endpoint)

    def teardown(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def request(self, claim: ImageClaim) -> list[dict[str, Any]]:
        """The judge's chat messages for one claim (image parts as data: URLs)."""
        import base64

        png = read_bytes(claim.view or claim.image.uri)
        url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        text = f"Reasoning: {claim.reasoning}\nDoes the image show what the reasoning says?"
        return [
            {"role": "system", "content": JUDGE_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": text},
                ],
            },
        ]

    def judge(self, traj: Trajectory, claim: ImageClaim) -> str | None:
        from beam_pipelines.model_client.base import ModelError
        from beam_pipelines.model_client.channel import complete

        self.setup()
        sampling = {"max_tokens": 64, "temperature": 0.0, "stop": ["</answer>"]}
        reply = complete(self._channel, self.request(claim), sampling)
        if isinstance(reply, ModelError):
            return f"the judge could not be asked ({reply.error_class}: {reply.message[:120]})"
        verdict = parse_verdict(reply.text)
        if verdict is None:
            return f"the judge gave no verdict ({reply.text[:60]!r})"
        return None if verdict else "the judge finds that the image does not show it"
