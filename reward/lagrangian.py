"""Safe RL with the classifier as a cost: reward = task reward − λ·cost, λ adapted by dual ascent (PPO-Lagrangian).

As in safe-rlhf (PKU-Alignment, `ppo_lag`): λ = exp(log λ) with log λ updated by SGD on −(C̄ − d)·λ, i.e.
log λ ← log λ + lr·λ·(C̄ − d), clipped at log λmax; C̄ is the mean cost over a window of the latest episodes and
d the cost limit. Defaults are theirs: λ0 = 1, lr 0.1, λmax 5, window 128, d = 0.

The cost of a completion comes from the exported classifier: with P(harmful) = sigmoid(t − g) (t its decision
threshold), `margin` cost = P(harmful) − τ, positive exactly when the pair is more harmful than the threshold
τ (0.5: the classifier's own decision), negative when safe, like safe-rlhf's signed cost model; `nll` cost =
−log P(harmless) + log(1 − τ) = softplus(t − g) + log(1 − τ), the same sign, near its floor for any confidently
safe reply (so a refusal of a benign request costs about what the answer costs) but growing without bound on the
harmful side (so confidently harmful replies still differ, where the margin saturates); `logit` cost =
logit P(harmful) − logit τ = (t − g) − logit τ, linear on both sides, as safe-rlhf's unbounded cost model (a
refusal that the classifier scores safer than an answer lowers the cost on any prompt); `indicator` cost =
1[P(harmful) > τ], whose mean is the harmful rate (then set d to the tolerated rate, e.g. 0.05).

    multiplier = LagrangeMultiplier()
    reward = LagrangianReward("runs/reward/minilm", multiplier, task_rewards=[helpfulness])
    GRPOTrainer(..., reward_funcs=[reward], callbacks=[LagrangianCallback(multiplier)])
    PPOTrainer(..., reward_model=PolicyTokenRewardModel(reward, tok, prompts),
               callbacks=[LagrangianCallback(multiplier)])
"""
from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from transformers import TrainerCallback

from .functions import HarmlessnessReward

COSTS = ("margin", "nll", "logit", "indicator")


def harmful_cost(logits: np.ndarray, threshold: float = 0.0, cost_threshold: float = 0.5,
                 kind: str = "margin") -> np.ndarray:
    """Cost per completion from classifier logits g (see the module docstring)."""
    g = np.asarray(logits, dtype=np.float64)
    if kind == "nll":
        return np.logaddexp(0.0, threshold - g) + math.log(1.0 - cost_threshold)
    if kind == "logit":
        return (threshold - g) - math.log(cost_threshold / (1.0 - cost_threshold))
    p_harmful = 1.0 / (1.0 + np.exp(g - threshold))
    if kind == "margin":
        return p_harmful - cost_threshold
    if kind == "indicator":
        return (p_harmful > cost_threshold).astype(np.float64)
    raise ValueError(f"unknown cost {kind!r}; choose one of {', '.join(COSTS)}")


def lagrange_update(lam: float, mean_cost: float, cost_limit: float, lr: float, lambda_max: float | None) -> float:
    """One dual-ascent step of safe-rlhf: log λ += lr·λ·(C̄ − d), then λ ≤ λmax. λ grows while the mean cost is
    above the limit and shrinks (never below 0) while it is below."""
    if lam <= 0:
        raise ValueError(f"lambda must be positive (it lives in log space), got {lam}")
    log_lam = math.log(lam) + lr * lam * (mean_cost - cost_limit)
    if lambda_max is not None:
        log_lam = min(log_lam, math.log(lambda_max))
    return math.exp(log_lam)


@dataclass
class LagrangeMultiplier:
    """λ and the window of recent costs it is updated from (the state shared by reward and callback)."""

    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float | None = 5.0
    cost_limit: float = 0.0
    window_size: int = 128
    update_delay_steps: int = 0
    value: float = field(init=False)
    window: deque = field(init=False, repr=False)
    history: list = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lambda_init <= 0 or self.window_size < 1:
            raise ValueError("lambda_init must be > 0 and window_size >= 1")
        self.value, self.window, self.history = self.lambda_init, deque(maxlen=self.window_size), []

    def record(self, costs: Sequence[float]) -> None:
        self.window.extend(float(c) for c in costs)

    def mean_cost(self) -> float | None:
        """Window mean, over all processes when torch.distributed runs (every rank then takes the same step)."""
        total, count = sum(self.window), len(self.window)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            sums = torch.tensor([total, float(count)], dtype=torch.float64)
            dist.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        return total / count if count else None

    def step(self, global_step: int) -> float:
        """Update λ from the window (no-op before `update_delay_steps` or with no cost seen yet)."""
        mean = self.mean_cost()
        if mean is not None and global_step >= self.update_delay_steps:
            self.value = lagrange_update(self.value, mean, self.cost_limit, self.lambda_lr, self.lambda_max)
        self.history.append({"step": global_step, "lambda": self.value, "mean_cost": mean})
        return self.value

    def state_dict(self) -> dict:
        """λ, the cost window and the update history, as JSON: what a resumed run needs to go on as the first."""
        return {"value": self.value, "window": list(self.window), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.history = float(state["value"]), list(state["history"])
        self.window = deque(state["window"], maxlen=self.window_size)


class LagrangianReward:
    """task reward − λ·cost as one TRL reward callable (GRPO/RLOO directly; PPO through PolicyTokenRewardModel).

    `task_rewards`: reward callables (same signature) summed with `task_weights`; none = the penalty alone.
    Every call records its costs in the multiplier's window."""

    def __init__(self, cost_model: str | os.PathLike | HarmlessnessReward, multiplier: LagrangeMultiplier,
                 task_rewards: Sequence[Callable[..., list[float]]] = (), task_weights: Sequence[float] | None = None,
                 cost: str = "margin", cost_threshold: float = 0.5):
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
        self.scorer = cost_model if isinstance(cost_model, HarmlessnessReward) else HarmlessnessReward(cost_model)
        self.multiplier, self.task_rewards = multiplier, list(task_rewards)
        self.task_weights = list(task_weights) if task_weights is not None else [1.0] * len(self.task_rewards)
        if len(self.task_weights) != len(self.task_rewards):
            raise ValueError(f"{len(self.task_rewards)} task rewards but {len(self.task_weights)} weights")
        self.cost, self.cost_threshold = cost, cost_threshold
        self.__name__ = "lagrangian"

    def costs(self, prompts: Sequence, completions: Sequence) -> np.ndarray:
        logits = self.scorer.logits(prompts, completions)
        return harmful_cost(logits, self.scorer.classifier.threshold, self.cost_threshold, self.cost)

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        task = np.zeros(len(prompts))
        for weight, fn in zip(self.task_weights, self.task_rewards):
            task += weight * np.asarray(fn(prompts=prompts, completions=completions, **kwargs), dtype=np.float64)
        costs = self.costs(prompts, completions)
        self.multiplier.record(costs)
        log_metric = kwargs.get("log_metric")  # GRPO/RLOO pass one; PPO does not
        if log_metric is not None:
            log_metric("lagrangian/lambda", self.multiplier.value)
            log_metric("lagrangian/cost", float(costs.mean()))
        return (task - self.multiplier.value * costs).tolist()


class LagrangianCallback(TrainerCallback):
    """Updates λ at the end of every optimisation step and adds it to the step's log entry. The multiplier's state
    rides in the trainer state (`stateful_callbacks[STATE_KEY]`), so each checkpoint's trainer_state.json holds
    the λ of its step, written with the rest of that file."""

    STATE_KEY = "LagrangeMultiplier"  # no callback's class name: transformers' own callback restore passes it by

    def __init__(self, multiplier: LagrangeMultiplier):
        self.multiplier = multiplier

    def on_step_end(self, args, state, control, **kwargs):
        self.multiplier.step(state.global_step)
        state.stateful_callbacks[self.STATE_KEY] = self.multiplier.state_dict()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "train_runtime" in logs:  # the end-of-training summary is not a step
            return
        last = self.multiplier.history[-1] if self.multiplier.history else {}
        extra = {"lagrangian/lambda": self.multiplier.value}
        if last.get("mean_cost") is not None:  # the window mean of the last update (no collective call here)
            extra["lagrangian/window_cost"] = last["mean_cost"]
        if logs is not None:
            logs.update(extra)
        if state.log_history:
            state.log_history[-1].update(extra)
