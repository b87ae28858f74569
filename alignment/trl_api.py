"""Every TRL name the toolkit uses, imported in this one module.

TRL moves things between releases (PPO went to trl.experimental and was deleted in 1.13), so recipes and
packages import TRL only through here, and tests/test_trl_contract.py checks the behaviour we rely on: a TRL
upgrade breaks loudly in one place.

The trainers are resolved on first use (PEP 562 module `__getattr__`): importing GRPO/PPO costs seconds, and a
recipe that only parses its config should not pay for them."""
from __future__ import annotations

import importlib
import os

from trl import TrlParser

# trl.experimental warns on import; PPO from there is a deliberate, pinned choice (trl==1.12.0).
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

_LAZY = {
    "GRPOConfig": ("trl", "GRPOConfig"),
    "GRPOTrainer": ("trl", "GRPOTrainer"),
    "RLOOConfig": ("trl", "RLOOConfig"),
    "RLOOTrainer": ("trl", "RLOOTrainer"),
    "PPOConfig": ("trl.experimental.ppo", "PPOConfig"),
    "PPOTrainer": ("trl.experimental.ppo", "PPOTrainer"),
    # The policy's path, dtype and LoRA, parsed beside the trainer config as TRL's own scripts do.
    "ModelConfig": ("trl", "ModelConfig"),
    "get_peft_config": ("trl", "get_peft_config"),
    # PPO scores a reward model with this: model.score(backbone(...).hidden_states[-1]) at the last response token.
    "ppo_get_reward": ("trl.experimental.utils", "get_reward"),
    # `trl grpo` itself: its parser and main, which load `--reward_funcs a.b.c` by dotted import path.
    "grpo_script_parser": ("trl.scripts.grpo", "make_parser"),
    "grpo_script_main": ("trl.scripts.grpo", "main"),
    # GRPO/RLOO's `use_vllm` needs the vllm package; TRL's own check (min and max version aside).
    "is_vllm_available": ("trl.import_utils", "is_vllm_available"),
}

__all__ = ["TrlParser", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
