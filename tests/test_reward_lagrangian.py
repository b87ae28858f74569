"""Safe RL: the classifier's cost, safe-rlhf's λ update, and the callback driving it in GRPO and PPO."""
from __future__ import annotations

import math

import numpy as np
import pytest
from test_reward_fixtures import SAFETY_PROMPTS, grpo_args, policy_tokenizer, ppo_trainer

from reward.functions import HarmlessnessReward
from reward.lagrangian import (
    LagrangeMultiplier,
    LagrangianCallback,
    LagrangianReward,
    harmful_cost,
    lagrange_update,
)
from reward.ppo import PolicyTokenRewardModel

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)


def test_cost_is_the_harmful_probability_beyond_the_threshold():
    logits = np.array([-2.0, 1.0, 4.0])
    p_harmful = 1 / (1 + np.exp(logits - 1.0))  # decision threshold 1.0: P(harmful) = 0.5 at g = 1
    np.testing.assert_allclose(harmful_cost(logits, threshold=1.0), p_harmful - 0.5)
    np.testing.assert_array_equal(harmful_cost(logits, threshold=1.0, kind="indicator"), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(harmful_cost(logits, 1.0, cost_threshold=0.3, kind="indicator"), [1, 1, 0])
    nll = harmful_cost(logits, threshold=1.0, kind="nll")  # −log P(harmless) + log 0.5: 0 exactly at the threshold
    np.testing.assert_allclose(nll, -np.log(1 - p_harmful) + np.log(0.5))
    assert harmful_cost(np.array([1.0]), threshold=1.0, kind="nll")[0] == pytest.approx(0.0)
    # flat on the safe side, unbounded on the harmful side: the margin saturates at both
    far_safe, far_harmful = harmful_cost(np.array([8.0, 12.0, -8.0, -12.0]), kind="nll").reshape(2, 2)
    assert abs(far_safe[1] - far_safe[0]) < 1e-3 and far_harmful[1] - far_harmful[0] == pytest.approx(4.0, abs=1e-3)
    # logit: linear in g on both sides, 0 at τ (here τ 0.2: logit P(harmful) = logit 0.2 at g = t + log 4)
    np.testing.assert_allclose(harmful_cost(logits, 1.0, cost_threshold=0.2, kind="logit"),
                               (1.0 - logits) - np.log(0.25))
    assert harmful_cost(np.array([1.0 + np.log(4.0)]), 1.0, cost_threshold=0.2, kind="logit")[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown cost"):
        harmful_cost(logits, kind="hinge")


def test_lambda_update_is_safe_rlhfs_dual_ascent_in_log_space():
    # log λ' = log λ + lr·λ·(C̄ − d): λ = 1, C̄ = 0.5, d = 0, lr = 0.1 -> λ' = e^0.05
    assert lagrange_update(1.0, 0.5, 0.0, 0.1, 5.0) == pytest.approx(math.exp(0.05))
    assert lagrange_update(2.0, -0.5, 0.0, 0.1, 5.0) == pytest.approx(2.0 * math.exp(-0.1))
    assert lagrange_update(4.9, 10.0, 0.0, 0.1, 5.0) == pytest.approx(5.0)  # clipped at λmax
    assert lagrange_update(4.9, 10.0, 0.0, 0.1, None) > 5.0
    assert lagrange_update(1.0, 0.3, 0.3, 0.1, 5.0) == 1.0  # at the limit: unchanged
    shrinking = 1.0
    for _ in range(200):
        shrinking = lagrange_update(shrinking, -1.0, 0.0, 0.1, 5.0)
    assert 0 < shrinking < 0.1  # decays (ever slower: the step scales with λ) and never turns negative
    with pytest.raises(ValueError, match="positive"):
        lagrange_update(0.0, 1.0, 0.0, 0.1, 5.0)


def test_multiplier_defaults_window_and_delay():
    m = LagrangeMultiplier()
    assert (m.value, m.lambda_lr, m.lambda_max, m.window_size, m.cost_limit) == (1.0, 0.1, 5.0, 128, 0.0)
    assert m.step(0) == 1.0 and m.history[-1]["mean_cost"] is None  # nothing seen yet: no update
    m.record([1.0] * 200)
    m.record([-1.0] * 64)  # the window keeps the latest 128: 64 of each
    assert m.mean_cost() == 0.0
    delayed = LagrangeMultiplier(update_delay_steps=3)
    delayed.record([1.0])
    assert delayed.step(2) == 1.0 and delayed.step(3) == pytest.approx(math.exp(0.1))


def test_a_checkpoints_lambda_carries_on_as_if_never_stopped(tmp_path):
    """The callback leaves λ's state in the trainer state each step; a fresh multiplier restored from a checkpoint's
    trainer_state.json takes the next step exactly as the first would (window included, not just λ)."""
    import json
    from types import SimpleNamespace

    from alignment.rl_rewards import restore_lagrange_multiplier

    first = LagrangeMultiplier(window_size=4)
    state = SimpleNamespace(global_step=0, stateful_callbacks={})
    callback = LagrangianCallback(first)
    for step, costs in enumerate(([0.9, 0.8], [0.7, 0.6, 0.5]), start=1):
        first.record(costs)
        state.global_step = step
        callback.on_step_end(None, state, None)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"stateful_callbacks": state.stateful_callbacks}))
    resumed = LagrangeMultiplier(window_size=4)
    restore_lagrange_multiplier(resumed, tmp_path)
    for multiplier in (first, resumed):
        multiplier.record([-0.2])  # the window: 0.7, 0.6, 0.5, -0.2 (a restored λ alone would miss three)
        multiplier.step(3)
    assert resumed.history == first.history and resumed.value == first.value != 1.0

    (tmp_path / "trainer_state.json").write_text(json.dumps({"stateful_callbacks": {}}))
    with pytest.raises(SystemExit, match="holds no λ"):
        restore_lagrange_multiplier(LagrangeMultiplier(), tmp_path)


def _length_reward(prompts, completions, **kwargs):
    return [float(len(c)) / 10 for c in completions]


def test_lagrangian_reward_is_task_minus_lambda_cost(reward_models):
    m = LagrangeMultiplier(lambda_init=2.0)
    scorer = HarmlessnessReward(reward_models.rm_other)
    reward = LagrangianReward(scorer, m, task_rewards=[_length_reward], task_weights=[0.5])
    completions = ["sure, here is how you do it.", "i'm sorry, i cannot help with that.", "kill a person"]
    prompts = SAFETY_PROMPTS[:3]
    logged = {}
    values = reward(prompts, completions, log_metric=logged.__setitem__)
    cost = harmful_cost(np.asarray(scorer(prompts, completions)), scorer.classifier.threshold)
    np.testing.assert_allclose(values, 0.5 * np.asarray(_length_reward(prompts, completions)) - 2.0 * cost)
    assert list(m.window) == pytest.approx(list(cost))
    assert logged["lagrangian/lambda"] == 2.0 and logged["lagrangian/cost"] == pytest.approx(cost.mean())
    with pytest.raises(ValueError, match="1 task rewards but 2 weights"):
        LagrangianReward(scorer, m, task_rewards=[_length_reward], task_weights=[1.0, 1.0])


def test_callback_updates_lambda_during_grpo(reward_models, tmp_path):
    import datasets

    from alignment.trl_api import GRPOTrainer

    # cost_threshold 0.999: every completion is "safe" (negative margin cost), so λ must fall every step.
    m = LagrangeMultiplier()
    reward = LagrangianReward(reward_models.rm_other, m, task_rewards=[_length_reward], cost_threshold=0.999)
    trainer = GRPOTrainer(model=reward_models.policy, reward_funcs=[reward], args=grpo_args(tmp_path, max_steps=2),
                          processing_class=policy_tokenizer(reward_models.policy),
                          train_dataset=datasets.Dataset.from_dict({"prompt": SAFETY_PROMPTS}),
                          callbacks=[LagrangianCallback(m)])
    trainer.train()
    lambdas = [h["lambda"] for h in m.history]
    assert len(lambdas) == 2 and 1.0 > lambdas[0] > lambdas[1] > 0
    assert all(h["mean_cost"] < 0 for h in m.history)
    logged = [e["lagrangian/lambda"] for e in trainer.state.log_history if "lagrangian/lambda" in e]
    assert logged == pytest.approx(lambdas)  # one entry per step log (GRPO logs after on_step_end), none more
    assert any("rewards/lagrangian/mean" in e for e in trainer.state.log_history)


def test_callback_updates_lambda_during_ppo(reward_models, tmp_path):
    # indicator cost with threshold 0 and limit 0: every completion costs 1 > 0, so λ must rise, up to λmax.
    m = LagrangeMultiplier(lambda_max=1.05)
    reward = LagrangianReward(reward_models.rm_other, m, cost="indicator", cost_threshold=0.0)
    tokenizer = policy_tokenizer(reward_models.policy)
    trainer = ppo_trainer(reward_models.policy, PolicyTokenRewardModel(reward, tokenizer, SAFETY_PROMPTS), tmp_path,
                          callbacks=[LagrangianCallback(m)])
    trainer.train()
    assert [h["mean_cost"] for h in m.history] == [1.0, 1.0]
    assert [h["lambda"] for h in m.history] == pytest.approx([1.05, 1.05])  # e^0.1 = 1.105, clipped at λmax
    # PPO logs a step before its on_step_end: each entry carries the λ that step's rollouts used.
    logged = [e["lagrangian/lambda"] for e in trainer.state.log_history if "lagrangian/lambda" in e]
    assert logged == pytest.approx([1.0, 1.05])
    # PPO's score = −λ·1, minus missing_eos_penalty (1.0) for the share of completions without eos: λ = 1 in the
    # first rollout, 1.05 in the second.
    scores = [e["objective/scores"] for e in trainer.state.log_history if "objective/scores" in e]
    assert -2.0 - 1e-6 <= scores[0] <= -1.0 + 1e-6 and -2.05 - 1e-6 <= scores[1] <= -1.05 + 1e-6
