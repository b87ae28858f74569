"""Shared tiny reward models for the tests/test_reward_*.py modules (this module holds no tests).

Two real refinement runs (frozen mode, 2 rounds, on the conftest's noisy BeaverTails rows) on two tiny Llamas,
each exported with reward.export:
  native  the classifier on the policy's own backbone and tokenizer (vocabulary 512): PPO's native path
  other   a Llama with another tokenizer (vocabulary 300, other ids): TRL reward-by-path, callables, PPO adapter
Built once per session on disk (a few seconds) and shared by every module that imports `reward_models`.

    from test_reward_fixtures import reward_models  # noqa: F401  (the fixture)
"""
from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_llama, build_tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

OTHER_VOCAB = 300
SAFETY_PROMPTS = ["how do i build a bomb?", "how do i bake bread?", "help me hurt someone.",
                  "i want to plan a trip.", "how do i steal a car?", "can you write a poem?"]


def build_other_vocab_llama(directory: Path) -> str:
    """A tiny Llama whose tokenizer differs from build_tiny_llama's (smaller vocabulary, other merges)."""
    source = build_tiny_llama(directory.with_name(directory.name + "_src"), seed=1)
    tokenizer = build_tiny_tokenizer(vocab_size=OTHER_VOCAB)
    model = AutoModelForCausalLM.from_pretrained(source)
    model.resize_token_embeddings(len(tokenizer))
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(model.config, name, getattr(tokenizer, name))
        setattr(model.generation_config, name, getattr(tokenizer, name))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@functools.cache
def _build(base: Path, noisy_data: Path, make_config) -> SimpleNamespace:
    from refinement.loop import run_refinement
    from reward.export import export_reward_model

    paths = {"policy": build_tiny_llama(base / "policy"), "other": build_other_vocab_llama(base / "other")}
    for key, backbone in (("native", paths["policy"]), ("other", paths["other"])):
        run = base / f"run_{key}"
        # `last` ships a refined round whatever the labeled sample says (the reward tests read its round files).
        run_refinement(make_config(noisy_data, run, model_name_or_path=backbone, num_rounds=2, max_length=64,
                                   round_selection="last"))
        paths[f"run_{key}"] = str(run)
        paths[f"rm_{key}"] = str(export_reward_model(run, base / f"rm_{key}"))
    return SimpleNamespace(**paths)


@pytest.fixture(scope="session")
def reward_models(tmp_path_factory, noisy_data, make_config) -> SimpleNamespace:
    """policy, other (backbones); run_native, run_other (refinement runs); rm_native, rm_other (exports)."""
    return _build(tmp_path_factory.getbasetemp() / "reward_models", noisy_data, make_config)


def grpo_args(output_dir: Path, **overrides):
    """A GRPOConfig for tiny CPU runs: 4 completions of 8 tokens per step, no saving, logs every step."""
    from alignment.trl_api import GRPOConfig

    kwargs = dict(output_dir=str(output_dir), per_device_train_batch_size=4, num_generations=4,
                  max_completion_length=8, max_steps=1, learning_rate=1e-5, use_cpu=True, bf16=False,
                  gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
                  disable_tqdm=True, seed=0)
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def policy_tokenizer(path: str, pad_is_eos: bool = False):
    """The tiny policy's tokenizer, left-padded as PPO/GRPO generation wants it."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if pad_is_eos:  # as SmolLM2: PPO then also masks the eos tokens inside a chat template
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def ppo_trainer(policy_path: str, reward_model, output_dir: Path, prompts=SAFETY_PROMPTS, callbacks=None):
    """A 2-update PPO run on the tiny policy (4 episodes per update, 8 response tokens), value model from the
    policy's backbone."""
    from alignment.trl_api import PPOConfig, PPOTrainer
    from reward.ppo import ppo_dataset

    tokenizer = policy_tokenizer(policy_path)
    args = PPOConfig(output_dir=str(output_dir), per_device_train_batch_size=4, gradient_accumulation_steps=1,
                     num_mini_batches=1, num_ppo_epochs=1, total_episodes=8, response_length=8, stop_token="eos",
                     missing_eos_penalty=1.0, local_rollout_forward_batch_size=4, num_sample_generations=0,
                     learning_rate=1e-4, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                     logging_steps=1, disable_tqdm=True, seed=0)
    return PPOTrainer(args=args, processing_class=tokenizer, model=AutoModelForCausalLM.from_pretrained(policy_path),
                      ref_model=AutoModelForCausalLM.from_pretrained(policy_path), reward_model=reward_model,
                      value_model=AutoModelForSequenceClassification.from_pretrained(policy_path, num_labels=1),
                      train_dataset=ppo_dataset(prompts, tokenizer), callbacks=callbacks)


def plain_logits(folder: str, texts: list[str]) -> np.ndarray:
    """Logits of `folder` one text at a time with plain transformers, truncated as the export says
    (reward_max_length, reward_truncation_side): the independent reference of the tests."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, truncation_side=model.config.reward_truncation_side)
    limit = model.config.reward_max_length
    with torch.inference_mode():
        return np.array([model(**tokenizer(t, truncation=True, max_length=limit, return_tensors="pt")).logits[0, 0]
                         .item() for t in texts])
