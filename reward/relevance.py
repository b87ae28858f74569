"""A helpfulness proxy that reads meaning, not phrases: how close a reply is to the request it answers.

    from reward.relevance import PromptRelevance
    LagrangianReward(folder, multiplier, task_rewards=[PromptRelevance("embedded:minilm")])

relevance = cos(e(request), e(reply)), e the mean-pooled, L2-normalised token states of a sentence encoder (the
embedded all-MiniLM-L6-v2 by default, the pooling it was trained with). An answer to a benign request stays on its
topic; a refusal, a deflection, a loop or a self-introduction does not, in whatever words. As the Lagrangian's task
reward it therefore pays for answering where `reward.task.non_refusal` pays for avoiding a list of phrases (which
a policy learns to reword around), and the cost pulls back where answering is harmful. The request is the plain
prompt, or the last user message of a conversational one.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from refinement.io import distributed_state

from .scoring import whole_weights
from .texts import completion_text, message_text


def request_text(prompt: str | Sequence[dict], where: str = "prompt") -> str:
    """The request a reply answers: a plain prompt unchanged, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [message_text(m, f"{where}[{i}]") for i, m in enumerate(prompt)
             if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError(f"{where}: a conversational prompt without a user message")
    return users[-1]


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the unmasked tokens, L2-normalised (sentence-transformers' mean pooling)."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


class PromptRelevance:
    """TRL reward callable: cos(e(request), e(reply)) in [−1, 1], logged as ``rewards/relevance/mean``.

    Args:
        model_name_or_path: a sentence encoder (`embedded:minilm`, a local folder or a Hub id).
        batch_size, max_length: encoder batches and truncation (tokens).
    The encoder loads on first call on the trainer's device and stays out of pickles, as HarmlessnessReward does.
    """

    __name__ = "relevance"

    def __init__(self, model_name_or_path: str | os.PathLike = "embedded:minilm", batch_size: int = 64,
                 max_length: int = 128):
        self.model_name_or_path, self.batch_size, self.max_length = str(model_name_or_path), batch_size, max_length
        self._encoder = None

    def _load(self):
        if self._encoder is None:
            from transformers import AutoModel, AutoTokenizer

            from refinement.embedded import resolve_model

            path = resolve_model(self.model_name_or_path)
            with whole_weights():
                model = AutoModel.from_pretrained(path).eval().to(distributed_state().device)
            self._encoder = (AutoTokenizer.from_pretrained(path), model)
        return self._encoder

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        tokenizer, model = self._load()
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt").to(model.device)
            chunks.append(mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]).float().cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0)

    def scores(self, prompts: Sequence, completions: Sequence) -> np.ndarray:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return np.zeros(0)
        requests = [request_text(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        unique = list(dict.fromkeys(requests))  # GRPO/RLOO repeat each prompt once per generation: embed it once
        embedded = self.embed(unique)[[unique.index(r) for r in requests]]
        replies = self.embed([completion_text(c, f"completions[{i}]") for i, c in enumerate(completions)])
        return (embedded * replies).sum(-1).double().numpy()

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        return self.scores(prompts, completions).tolist()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_encoder": None}

    def __repr__(self) -> str:
        return f"PromptRelevance({self.model_name_or_path!r})"
