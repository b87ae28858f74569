"""Model-free TRL reward functions that ride beside the classifier (GRPO/RLOO ``reward_funcs``, the Lagrangian's task).

    from reward.task import MissingEosPenalty, non_refusal
    GRPOTrainer(..., reward_funcs=[HarmlessnessReward(folder), MissingEosPenalty(1.0, tokenizer)])
    LagrangianReward(folder, multiplier, task_rewards=[non_refusal])

Both follow TRL's reward-function call, ``f(prompts, completions, **kwargs) -> list[float]``, and log under their
``__name__`` (``rewards/<name>/mean``).
"""
from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from alignment.refusal import is_refusal

from .texts import completion_text


def non_refusal(prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
    """A helpfulness proxy without a model: 1 for a reply that answers, 0 for one that refuses.

    It is the task reward of the Lagrangian (reward = task − λ·cost): alone it rewards answering everything, and the
    cost pulls back where answering is harmful, as safe-rlhf's reward and cost models pull against each other.

    Args:
        prompts: TRL's prompts (unused; part of the reward-function call).
        completions: plain strings or conversational completions (``[{"role": "assistant", "content": ...}]``).
        **kwargs: the dataset's other columns and TRL's extras (unused).

    Returns:
        One float per completion: 0.0 when `alignment.refusal.is_refusal` finds a refusal phrase, else 1.0.

    Example:
        >>> non_refusal(prompts=["q", "q"], completions=["I'm sorry, but I can't help with that.", "Sure: ..."])
        [0.0, 1.0]
    """
    return [0.0 if is_refusal(completion_text(c)) else 1.0 for c in completions]


class MissingEosPenalty:
    """PPOConfig's `missing_eos_penalty` for GRPO and RLOO, whose configs lack it: −penalty for a truncated completion.

    A completion is truncated by TRL's own rule (its `completions/clipped_ratio` and `mask_truncated_completions`):
    its last token is neither eos nor pad. `mask_truncated_completions` is a different remedy (such completions leave
    the loss); either or both may be set.

    Args:
        penalty: the positive amount subtracted from a truncated completion's reward.
        tokenizer: the policy's tokenizer; its eos and pad ids end a finished completion.

    Returns:
        A callable ``(prompts, completions, completion_ids, **kwargs) -> list[float]`` giving −penalty for each
        truncated completion and 0.0 for each finished one, logged as ``rewards/missing_eos_penalty/mean``.

    Example:
        >>> penalty = MissingEosPenalty(1.0, tokenizer)            # eos id 2, pad id 0
        >>> penalty(prompts=["q", "q"], completions=["a", "b"], completion_ids=[[5, 2], [5, 6]])
        [0.0, -1.0]
    """

    __name__ = "missing_eos_penalty"

    def __init__(self, penalty: float, tokenizer: PreTrainedTokenizerBase):
        if penalty <= 0:
            raise ValueError(f"missing_eos_penalty must be positive, got {penalty}")
        self.penalty = float(penalty)
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids: Sequence[Sequence[int]],
                 **kwargs) -> list[float]:
        return [0.0 if ids and ids[-1] in self.stop_ids else -self.penalty for ids in completion_ids]
