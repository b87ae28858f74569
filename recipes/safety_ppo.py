"""Align a chat policy with PPO (TRL 1.12's trl.experimental.ppo) against the refined harmlessness reward.

    accelerate launch --cpu --num_processes 1 recipes/safety_ppo.py --config recipes/configs/ppo/cpu_smollm2.yaml
    accelerate launch recipes/safety_ppo.py --config ... --reward_model runs/reward/minilm_refined --lagrangian true
    accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/safety_ppo.py \\
        --config recipes/configs/ppo/paper_8xa100.yaml

Every field of alignment.rl.RLScriptArguments, PPOScriptArguments, TRL's PPOConfig and TRL's ModelConfig (the policy:
`model_name_or_path`, `dtype`, LoRA as `use_peft`, `lora_r`, ...) is a flag; the YAML sets defaults, the command line
overrides them, and unknown keys fail. What PPO needs besides the policy:

- reward model: PPO scores token ids, not text (reward.ppo). `reward_mode` native runs the exported classifier on
  the policy's ids (it must share the policy's tokenizer, transform logit); adapter decodes each rollout and scores
  `format_example(prompt, reply)` with the classifier's own tokenizer through `reward_transform` (any classifier);
  auto picks native when it can. With `lagrangian` the adapter scores task − λ·cost.
- value model: `value_model` (default: the policy itself) loaded as a one-logit sequence classifier, i.e. the
  policy's backbone with a fresh `score` head; PPO calls `getattr(v, v.base_model_prefix)` and `v.score`. It is
  trained in full (only the policy gets LoRA).
- reference: with LoRA the policy with its adapter switched off; otherwise a second copy of the policy.

Output: see alignment/rl.py (config.json, adapter/, model/, log_history.json, summary.json, eval/).
"""
from __future__ import annotations

from dataclasses import dataclass

from refinement.cli import option, run_log, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from alignment.rl import RLRun, RLScriptArguments, rl_parser
from alignment.rl_models import model_kwargs, set_pad_token
from alignment.trl_api import PPOConfig, TrlParser


@dataclass
class PPOScriptArguments(RLScriptArguments):
    reward_mode: str = option("auto", "auto | native | adapter: how PPO reads the classifier (see the docstring).")
    value_model: str | None = option(None, "Value model start: a causal-LM or classifier folder / Hub id loaded "
                                     "with a one-logit head (default: the policy).")
    NULLABLE = (*RLScriptArguments.NULLABLE, "value_model")
    CHOICES = {**RLScriptArguments.CHOICES, "reward_mode": ("auto", "native", "adapter")}

    def __post_init__(self):
        super().__post_init__()
        if self.reward_mode == "native" and self.reward_transform != "logit" and not self.lagrangian:
            raise ValueError("reward_mode native scores the classifier's raw logit: set reward_transform logit, or "
                             "reward_mode adapter for another transform")


def load_value_model(run: RLRun, name: str | None):
    """A one-logit classifier whose backbone and `score` head PPO calls directly (a fresh head on the policy)."""
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    from refinement.embedded import resolve_model

    path, kwargs = run.policy_path, model_kwargs(run.model_args)
    if name is not None:  # another model: the policy's revision names none of its versions
        path, kwargs = resolve_model(name), {**kwargs, "revision": "main"}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    if not isinstance(getattr(model, "score", None), nn.Module) or not hasattr(model, model.base_model_prefix):
        raise SystemExit(f"value model {path}: {type(model).__name__} has no `.score` head on a "
                         f"`{model.base_model_prefix}` backbone, which PPO calls; use a decoder model")
    return set_pad_token(model, run.tokenizer)


def build_reward_model(run: RLRun, args: PPOScriptArguments, inputs: list):
    from reward.ppo import PolicyTokenRewardModel, ppo_reward_model

    if args.lagrangian:
        return PolicyTokenRewardModel(run.text_reward(), run.tokenizer, inputs)
    return ppo_reward_model(args.reward_model, run.tokenizer, inputs, mode=args.reward_mode,
                            transform=args.reward_transform)


def main(script_args: PPOScriptArguments, training_args: PPOConfig, model_args) -> dict:
    from alignment.ppo_trainer import ResumablePPOTrainer
    from reward.ppo import ppo_dataset

    run = RLRun.start("ppo", script_args, training_args, model_args)
    inputs = run.inputs()
    trainer = ResumablePPOTrainer(
        args=training_args, processing_class=run.tokenizer, model=run.load_policy(),
        ref_model=None if model_args.use_peft else run.load_policy(),
        reward_model=build_reward_model(run, script_args, inputs),
        value_model=load_value_model(run, script_args.value_model),
        train_dataset=ppo_dataset(inputs, run.tokenizer), peft_config=run.peft_config(), callbacks=run.callbacks())
    run.train(trainer)
    return run.finish(trainer, trainer.accelerator.unwrap_model(trainer.model).policy)


def make_parser() -> TrlParser:
    return rl_parser(PPOScriptArguments, PPOConfig)


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=run_log)
