"""Pure functions from the judge's next-token distribution to P(yes), P(harmless), labels and a threshold."""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_WORDS = ("No", " No", "no", " no", "NO", " NO")


def single_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Token ids of the variants that are one token in this vocabulary (a multi-token variant's first piece,
    e.g. "Y" of "YES", would also count other answers, so it is left out)."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    if not ids:
        raise ValueError(f"none of {list(words)} is a single token for this tokenizer")
    return ids


def yes_probability(logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int],
                    min_answer_mass: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """P(yes) = P(Yes variants) / (P(Yes variants) + P(No variants)) from next-token logits [batch, vocab].

    Also returns the answer mass P(Yes) + P(No) under the full softmax; an item whose mass is below
    `min_answer_mass` is an abstention (P(yes) = NaN): the model wanted to say something else."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    log_yes = torch.logsumexp(log_probs[:, list(yes_ids)], dim=-1)
    log_no = torch.logsumexp(log_probs[:, list(no_ids)], dim=-1)
    p_yes = torch.sigmoid(log_yes - log_no)
    mass = torch.exp(torch.logaddexp(log_yes, log_no))
    return torch.where(mass < min_answer_mass, torch.full_like(p_yes, float("nan")), p_yes), mass


def yes_probability_from_top_logprobs(top_logprobs: dict[str, float], min_answer_mass: float = 0.0) -> float:
    """The same from the top-k {token text: logprob} an OpenAI-compatible server or vLLM returns. Tokens are
    matched case-insensitively after stripping spaces; NaN when neither answer is among them (or below the
    minimum mass)."""
    yes = [lp for tok, lp in top_logprobs.items() if tok.strip().lower() == "yes"]
    no = [lp for tok, lp in top_logprobs.items() if tok.strip().lower() == "no"]
    if not yes and not no:
        return float("nan")
    p_yes, p_no = float(np.sum(np.exp(yes))), float(np.sum(np.exp(no)))
    if p_yes + p_no < min_answer_mass or p_yes + p_no == 0.0:
        return float("nan")
    return p_yes / (p_yes + p_no)


def parse_answer(text: str) -> float:
    """1.0 / 0.0 for an answer whose first word is yes / no (any case; punctuation, markup or an end-of-turn
    token may surround it), else NaN."""
    word = re.match(r"\W*([A-Za-z]*)", text)
    return {"yes": 1.0, "no": 0.0}.get(word.group(1).lower(), float("nan"))


def labels_at(scores: np.ndarray, threshold: float) -> np.ndarray:
    """1 (harmless) iff P(harmless) > threshold; -1 for an abstention (NaN score)."""
    scores = np.asarray(scores, dtype=float)
    labels = (scores > threshold).astype(np.int64)
    labels[np.isnan(scores)] = -1
    return labels


def calibrate_threshold(scores: np.ndarray, gold: np.ndarray) -> float:
    """The threshold that maximizes accuracy on a labeled sample; among ties, the one nearest 0.5.

    Candidates are the midpoints between consecutive distinct scores (and the two ends), so the result
    separates the sample exactly as the best cut does. Abstentions (NaN) are ignored."""
    scores, gold = np.asarray(scores, dtype=float), np.asarray(gold, dtype=np.int64)
    keep = ~np.isnan(scores)
    scores, gold = scores[keep], gold[keep]
    if scores.size == 0:
        raise ValueError("calibrate_threshold: no scored item in the labeled sample")
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1]]])
    accuracy = np.array([np.mean((scores > t) == gold) for t in candidates])
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])
