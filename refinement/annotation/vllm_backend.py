"""A judge on vLLM's offline engine (GPU; `pip install vllm`): the same prompts, one generated token with its
top log-probs. vLLM's automatic prefix caching shares the system line and demonstrations between items."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..embedded import resolve_model
from .scoring import NO_WORDS, YES_WORDS, single_token_ids


class VLLMJudge:
    def __init__(self, model_name_or_path: str, dtype: str = "bfloat16", top_logprobs: int = 20,
                 min_answer_mass: float = 0.0, gpu_memory_utilization: float = 0.85, engine=None):
        self.model_id = model_name_or_path
        self.min_answer_mass = min_answer_mass
        self.settings = f"vllm dtype={dtype} min_answer_mass={min_answer_mass}"
        if engine is None:
            try:
                from vllm import LLM
            except ImportError as err:
                raise ImportError("backend=vllm needs vLLM on a GPU machine: pip install vllm") from err
            engine = LLM(model=resolve_model(model_name_or_path), dtype=dtype, enable_prefix_caching=True,
                         gpu_memory_utilization=gpu_memory_utilization)
        self.engine = engine
        self.tokenizer = engine.get_tokenizer()
        self.yes_ids = single_token_ids(self.tokenizer, YES_WORDS)
        self.no_ids = single_token_ids(self.tokenizer, NO_WORDS)
        self.top_logprobs = top_logprobs

    def sampling_params(self):
        from vllm import SamplingParams
        return SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)

    def p_yes(self, prefix: list[dict], items: Sequence[list[dict]]) -> np.ndarray:
        prompts = [{"prompt_token_ids": self.tokenizer.apply_chat_template(
            prefix + item, tokenize=True, add_generation_prompt=True, return_dict=False)} for item in items]
        outputs = self.engine.generate(prompts, self.sampling_params(), use_tqdm=False)
        return np.array([self.from_logprobs(out.outputs[0].logprobs[0]) for out in outputs], dtype=float)

    def from_logprobs(self, logprobs: dict) -> float:
        """P(yes) from vLLM's {token id: Logprob} of the first generated position (top-k plus the sampled one)."""
        p_yes = sum(math.exp(logprobs[i].logprob) for i in self.yes_ids if i in logprobs)
        p_no = sum(math.exp(logprobs[i].logprob) for i in self.no_ids if i in logprobs)
        if p_yes + p_no == 0.0 or p_yes + p_no < self.min_answer_mass:
            return float("nan")
        return p_yes / (p_yes + p_no)
