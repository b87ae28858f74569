"""The rewards step of an RL run: the exported classifier as a TRL reward callable, or with `lagrangian` the
task reward − λ·cost (reward.lagrangian) and the callback that moves λ."""
from __future__ import annotations

import json
import os

from reward.lagrangian import LagrangeMultiplier, LagrangianCallback, LagrangianReward
from reward.relevance import PromptRelevance
from reward.task import non_refusal


def lagrange_multiplier(args) -> LagrangeMultiplier | None:
    """λ of a `lagrangian` run (None otherwise; `args`: alignment.rl.RLScriptArguments), shared by its reward and
    its callback."""
    if not args.lagrangian:
        return None
    return LagrangeMultiplier(args.lambda_init, args.lambda_lr, args.lambda_max, args.cost_limit, args.lambda_window,
                              args.lambda_update_delay)


def text_reward(args, multiplier: LagrangeMultiplier | None):
    """The reward as a TRL reward callable: the classifier through its transform, or (with a multiplier) the
    Lagrangian's task reward − λ·cost."""
    from reward.functions import HarmlessnessReward

    if multiplier is None:
        return HarmlessnessReward(args.reward_model, transform=args.reward_transform, batch_size=args.reward_batch_size)
    return LagrangianReward(HarmlessnessReward(args.reward_model, batch_size=args.reward_batch_size), multiplier,
                            task_rewards=task_rewards(args), cost=args.cost, cost_threshold=args.cost_threshold)


def task_rewards(args) -> list:
    """The Lagrangian's task reward named by `args.lagrangian_task_reward` (empty for none)."""
    if args.lagrangian_task_reward == "relevance":
        return [PromptRelevance(args.relevance_model, batch_size=args.reward_batch_size)]
    return [non_refusal] if args.lagrangian_task_reward == "non_refusal" else []


def reward_callbacks(multiplier: LagrangeMultiplier | None) -> list:
    """The trainer callbacks the reward needs: λ's dual-ascent update with a multiplier, none otherwise."""
    return [LagrangianCallback(multiplier)] if multiplier is not None else []


def restore_lagrange_multiplier(multiplier: LagrangeMultiplier, checkpoint: str | os.PathLike) -> None:
    """λ, its cost window and history as the checkpoint's step left them (its trainer_state.json)."""
    with open(os.path.join(checkpoint, "trainer_state.json")) as handle:
        saved = json.load(handle).get("stateful_callbacks", {}).get(LagrangianCallback.STATE_KEY)
    if saved is None:
        raise SystemExit(f"{checkpoint}: its trainer_state.json holds no λ (written by a run without lagrangian?); "
                         "rerun into a new output_dir or with the same settings")
    multiplier.load_state_dict(saved)
