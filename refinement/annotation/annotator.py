"""The annotator: P(harmless) and a label for every (prompt, response) pair, or an abstention.

It truncates the pair to the judge's budget (counting what was cut), asks each question of the template through
a backend (transformers, vllm or an OpenAI-compatible server), and keeps every judgement in a cache that is
appended as work completes, so a killed annotation resumes where it stopped."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from .cache import JudgementCache, cache_key
from .scoring import labels_at
from .templates import Demonstration, JudgeTemplate, conversations

logger = logging.getLogger(__name__)
CHARS_PER_TOKEN = 4  # truncation budget for backends without a local tokenizer


class JudgeBackend(Protocol):
    model_id: str
    settings: str
    tokenizer: object | None

    def p_yes(self, prefix: list[dict], items: Sequence[list[dict]]) -> np.ndarray: ...


@dataclass
class Annotations:
    scores: np.ndarray                  # P(harmless); NaN = abstained
    labels: np.ndarray                  # 1 harmless, 0 harmful, -1 abstained
    p_yes: dict[str, np.ndarray]        # per question
    threshold: float
    truncated: int                      # pairs whose prompt or response was cut to the budget
    stats: dict = field(default_factory=dict)

    @property
    def abstained(self) -> int:
        return int(np.isnan(self.scores).sum())


def make_truncator(tokenizer, max_tokens: int) -> Callable[[str], tuple[str, bool]]:
    """Cuts a text to `max_tokens` tokens of the judge's tokenizer (characters × 4 without one)."""
    def truncate(text: str) -> tuple[str, bool]:
        if tokenizer is None:
            limit = max_tokens * CHARS_PER_TOKEN
            return (text[:limit], True) if len(text) > limit else (text, False)
        ids = tokenizer.encode(text, add_special_tokens=False, verbose=False)
        if len(ids) <= max_tokens:
            return text, False
        return tokenizer.decode(ids[:max_tokens]), True
    return truncate


class Annotator:
    def __init__(self, backend: JudgeBackend, template: JudgeTemplate, demonstrations: Sequence[Demonstration] = (),
                 max_prompt_tokens: int = 64, max_response_tokens: int = 224, cache: JudgementCache | None = None,
                 chunk_size: int = 128, show_progress: bool = True):
        self.backend, self.template, self.demonstrations = backend, template, tuple(demonstrations)
        self.cache, self.chunk_size, self.show_progress = cache, chunk_size, show_progress
        tokenizer = getattr(backend, "tokenizer", None)
        self.cut_prompt = make_truncator(tokenizer, max_prompt_tokens)
        self.cut_response = make_truncator(tokenizer, max_response_tokens)

    def truncated_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
        pairs, cut = [], 0
        for prompt, response in zip(prompts, responses):
            (p, p_cut), (r, r_cut) = self.cut_prompt(prompt or ""), self.cut_response(response or "")
            pairs.append((p, r))
            cut += p_cut or r_cut
        return pairs, cut

    def judge(self, prefix: list[dict], items: list[list[dict]], cache_tag: str,
              desc: str = "judging") -> tuple[np.ndarray, int]:
        """P(yes) for each item (prefix + item messages) and how many came from the cache. New judgements are
        appended to the cache chunk by chunk, in length order so the backend's batches stay homogeneous."""
        keys = [cache_key(self.backend.model_id, self.backend.settings, cache_tag,
                          json.dumps(prefix + item, ensure_ascii=False))
                for item in items]
        todo = sorted((i for i, k in enumerate(keys) if self.cache is None or k not in self.cache),
                      key=lambda i: len(items[i][-1]["content"]))
        fresh: dict[str, float] = {}
        with tqdm(total=len(todo), desc=desc, unit="item", disable=not self.show_progress or not todo) as bar:
            for start in range(0, len(todo), self.chunk_size):
                rows = todo[start:start + self.chunk_size]
                values = self.backend.p_yes(prefix, [items[i] for i in rows])
                chunk = {keys[i]: float(v) for i, v in zip(rows, values)}
                if self.cache is not None:
                    self.cache.add(chunk)
                    chunk = {k: self.cache[k] for k in chunk}  # the stored (rounded) values, as a resume reads them
                fresh.update(chunk)
                bar.update(len(rows))
        values = np.array([fresh[k] if k in fresh else self.cache[k] for k in keys], dtype=float)
        return values, len(items) - len(todo)

    def annotate(self, prompts: Sequence[str], responses: Sequence[str], threshold: float = 0.5) -> Annotations:
        start = time.perf_counter()
        pairs, truncated = self.truncated_pairs(prompts, responses)
        p_yes, cached = {}, 0
        for question in self.template.questions:
            prefix, items = conversations(self.template, question, pairs, self.demonstrations)
            p_yes[question.name], from_cache = self.judge(prefix, items, question.name,
                                                          desc=f"judging ({question.name})")
            cached += from_cache
        scores = self.template.combine(p_yes)
        seconds = time.perf_counter() - start
        judged = len(pairs) * len(self.template.questions) - cached
        stats = {"items": len(pairs), "questions": len(self.template.questions), "from_cache": cached,
                 "seconds": round(seconds, 2), "judgements_per_second": round(judged / seconds, 2) if judged else None,
                 "truncated": truncated}
        if truncated:
            logger.info("%d of %d pairs were cut to the judge's token budget", truncated, len(pairs))
        return Annotations(scores=scores, labels=labels_at(scores, threshold), p_yes=p_yes, threshold=threshold,
                           truncated=truncated, stats=stats)
