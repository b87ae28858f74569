"""What the RL recipes share (recipes/safety_ppo.py, recipes/safety_grpo.py with --trainer grpo|rloo).

A run: the policy (a chat causal LM, LoRA by default) is trained on a mix of harmful and benign prompts against the
exported refined classifier (reward.export) as its reward, or, with `lagrangian`, against task reward − λ·cost with
the classifier as the cost (reward.lagrangian). The recipes parse three dataclasses, as TRL's own scripts do:
`RLScriptArguments` (below: prompts, reward, evaluation), the trainer's config (PPOConfig / GRPOConfig /
RLOOConfig: seed, output_dir, learning rate, KL coefficient, lengths ...) and TRL's `ModelConfig` (the policy's
`model_name_or_path`, revision, dtype, attention and LoRA: `use_peft`, `lora_r`, ...). `RLRun` takes a run through
its steps, each in its own module:

    data      alignment.rl_data      the prompt mix (prompts.jsonl) and the trainers' view of it
    models    alignment.rl_models    tokenizer and policy from ModelConfig, LoRA from TRL's get_peft_config
    rewards   alignment.rl_rewards   reward.functions / reward.lagrangian / reward.task callables, λ's callback
    train     here (RLRun.train)     from the newest finished checkpoint in output_dir, λ included
    save      alignment.rl_models    the adapter and the merged policy
    evaluate  alignment.rl_report    held-out evaluation, the logged series, summary.json and the headline

The run folder:

    output_dir/config.json         resolved settings (script, TRL and model arguments, policy path, versions)
    output_dir/prompts.jsonl       the RL prompt mix (text, is_harmful, source, category), in dataset order
    output_dir/checkpoint-N/       the Trainer's checkpoints (save_strategy steps); a rerun resumes from the newest
    output_dir/adapter/            the LoRA adapter and tokenizer (LoRA runs)
    output_dir/model/              the policy ready for alignment.evaluate (LoRA merged into the base weights)
    output_dir/log_history.json    every logged entry of the trainer
    output_dir/summary.json        steps, seconds, first/last/mean of the reward, KL and λ series, evaluation
    output_dir/eval/{before,after,comparison}/   with `evaluate` (and `evaluate_before`): alignment.evaluate
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import datasets
import torch
from transformers import PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from alignment import rl_models, rl_rewards
from alignment.prompts import Prompt
from alignment.rl_data import policy_inputs, prompts_dataset, prompts_jsonl, rl_prompts
from alignment.rl_report import accelerate_summary, evaluate_trained, headline, logged_series
from alignment.trl_api import ModelConfig, TrlParser
from refinement.cli import clear_unset, option
from refinement.embedded import resolve_model
from refinement.io import write_json, write_text
from reward.lagrangian import COSTS, LagrangeMultiplier
from reward.scoring import TRANSFORMS, whole_weights

logger = logging.getLogger(__name__)

TASK_REWARDS = ("none", "non_refusal", "relevance")
# The RL recipes' ModelConfig defaults where TRL's differ (no model, no LoRA): the embedded policy with LoRA.
MODEL_DEFAULTS = {"model_name_or_path": "embedded:smollm2", "use_peft": True}


@dataclass
class RLScriptArguments:
    """The settings every RL recipe shares besides the policy (TRL's ModelConfig) and the trainer (TRL's config)."""

    reward_model: str = option("runs/pipeline/reward_model", "An exported refined classifier folder "
                               "(recipes/export_reward_model.py; the pipeline writes runs/pipeline/reward_model).")
    reward_transform: str = option("logit", "logit | probability | log_probability | standardized: the reward "
                                   "read from the classifier's logit (reward.scoring). Unused with lagrangian.")
    reward_batch_size: int = option(32, "Texts per forward pass of the reward classifier.")
    harmful_prompts: str = option("demo", "demo (alignment/demo_data) | local file | Hub dataset name.")
    benign_prompts: str = option("demo", "demo | local file | Hub dataset name.")
    prompt_split: str | None = option("train", "Rows of this split (files with a split column; the Hub split).")
    prompt_column: str | None = option(None, "Prompt column of non-demo sources (default: found by name).")
    harmful_fraction: float = option(0.5, "Share of harmful prompts in the RL mix (the rest benign).")
    max_prompts: int | None = option(None, "Size of the RL prompt mix (None: as many as the sets allow).")
    conversational: bool = option(True, "Each prompt as one user message under the policy's chat template.")
    merge_lora: bool = option(True, "Also write the adapter merged into the base weights to output_dir/model.")
    lagrangian: bool = option(False, "Safe RL: reward = task − λ·cost, cost from the classifier, λ by dual ascent.")
    lagrangian_task_reward: str = option("non_refusal", "The helpfulness proxy that pulls against the cost, as "
                                         "safe-rlhf's reward: none | non_refusal (1 unless the reply holds a refusal "
                                         "phrase) | relevance (cosine of request and reply under relevance_model: "
                                         "pays for answering, in any words; reward.relevance).")
    relevance_model: str = option("embedded:minilm", "Sentence encoder of the relevance task reward.")
    cost: str = option("margin", "margin (P(harmful) − cost_threshold) | nll (−log P(harmless) + log(1 − "
                       "cost_threshold): flat on safe replies, unbounded on harmful ones) | logit (logit P(harmful) − "
                       "logit cost_threshold: linear, safe-rlhf's unbounded cost) | indicator "
                       "(1[P(harmful) > cost_threshold]).")
    cost_threshold: float = option(0.5, "τ of the cost (0.5: the classifier's own decision).")
    cost_limit: float = option(0.0, "d: λ grows while the mean cost is above it.")
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float | None = 5.0
    lambda_window: int = option(128, "Episodes whose mean cost drives each λ update.")
    lambda_update_delay: int = option(0, "Steps before λ starts moving.")
    evaluate: bool = option(False, "After training, evaluate the saved policy (alignment.evaluate) on held-out "
                            "prompts into output_dir/eval/after.")
    evaluate_before: bool = option(False, "Also evaluate the starting policy (eval/before, eval/comparison).")
    eval_harmful_prompts: str = option("demo", "Evaluation prompts: demo | local file | Hub dataset name.")
    eval_benign_prompts: str = option("demo", "Evaluation prompts: demo | local file | Hub dataset name.")
    eval_prompt_split: str | None = option("test", "Split of the evaluation prompts (held out from training).")
    eval_num_prompts: int | None = option(16, "Seeded sample of each evaluation prompt set (None: all).")
    eval_max_new_tokens: int = 48
    eval_judge: str | None = option(None, "Judge folder of the evaluation (default: the reward model).")

    # Checked after parsing; a recipe's subclass extends them (class attributes, not flags).
    NULLABLE: ClassVar[tuple[str, ...]] = ("prompt_split", "prompt_column", "eval_prompt_split", "eval_judge")
    CHOICES: ClassVar[dict[str, tuple]] = {"reward_transform": TRANSFORMS, "lagrangian_task_reward": TASK_REWARDS,
                                           "cost": COSTS}

    def __post_init__(self):
        clear_unset(self, self.NULLABLE)
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(map(str, choices))}")
        if not 0.0 <= self.harmful_fraction <= 1.0:
            raise ValueError(f"harmful_fraction must lie in [0, 1], got {self.harmful_fraction}")


def rl_parser(script_class: type, training_class: type) -> TrlParser:
    """TrlParser over (script arguments, trainer config, ModelConfig), ModelConfig defaulting to MODEL_DEFAULTS."""
    parser = TrlParser((script_class, training_class, ModelConfig))
    parser.set_defaults(**MODEL_DEFAULTS)
    return parser


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` folder in output_dir that the Trainer finished writing, None when there is none.
    transformers' get_last_checkpoint takes the highest N whatever its state; a run killed while saving leaves a
    folder without trainer_state.json (the Trainer's last file), which would restart the step count at 0."""
    folder = Path(output_dir)
    steps = {int(path.name.rsplit("-", 1)[1]): path for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if path.name.rsplit("-", 1)[1].isdigit() and (path / "trainer_state.json").is_file()}
    return str(steps[max(steps)]) if steps else None


def _main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


@dataclass
class RLRun:
    """One RL run: settings, resolved policy, tokenizer, prompts and (with `lagrangian`) the multiplier."""

    trainer_name: str
    args: RLScriptArguments
    training_args: Any
    model_args: Any
    policy_path: str
    tokenizer: PreTrainedTokenizerBase
    prompts: list[Prompt]
    multiplier: LagrangeMultiplier | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)
    train_seconds: float | None = None

    @classmethod
    def start(cls, trainer_name: str, args: RLScriptArguments, training_args, model_args) -> RLRun:
        """Check the inputs, seed, resolve the policy, load tokenizer and prompts, write config.json."""
        if not training_args.output_dir:
            raise SystemExit("--output_dir is required (in the YAML or on the command line)")
        if not os.path.isfile(os.path.join(args.reward_model, "config.json")):
            raise SystemExit(f"--reward_model {args.reward_model}: no exported classifier there. Export one from a "
                             "refinement run: python recipes/export_reward_model.py --run_dir runs/refine_cpu_minilm "
                             f"--output_dir {args.reward_model}")
        rl_models.check_model_args(model_args)
        set_seed(training_args.seed)
        policy_path = resolve_model(model_args.model_name_or_path)
        run = cls(trainer_name, args, training_args, model_args, policy_path,
                  rl_models.load_policy_tokenizer(policy_path, model_args.model_revision),
                  rl_prompts(args, training_args.seed), rl_rewards.lagrange_multiplier(args))
        if _main_process():
            out = Path(training_args.output_dir)
            write_json(out / "config.json", run.resolved_config())
            write_text(out / "prompts.jsonl", prompts_jsonl(run.prompts))
        return run

    def resolved_config(self) -> dict:
        harmful = sum(p.is_harmful for p in self.prompts)
        return {"trainer": self.trainer_name, "script": dataclasses.asdict(self.args),
                "training": self.training_args.to_dict(), "model": dataclasses.asdict(self.model_args),
                "policy_path": self.policy_path, "pad_token": self.tokenizer.pad_token,
                "prompts": {"n": len(self.prompts), "harmful": harmful, "benign": len(self.prompts) - harmful},
                "versions": {name: version(name) for name in ("trl", "transformers", "torch", "peft", "accelerate")}}

    # -- what the trainers take

    def inputs(self) -> list:
        return policy_inputs(self.prompts, self.args.conversational)

    def dataset(self) -> datasets.Dataset:
        return prompts_dataset(self.prompts, self.args.conversational)

    def load_policy(self) -> torch.nn.Module:
        return rl_models.load_policy(self.policy_path, self.model_args, self.tokenizer)

    def peft_config(self):
        return rl_models.policy_peft_config(self.model_args)

    def text_reward(self):
        return rl_rewards.text_reward(self.args, self.multiplier)

    def callbacks(self) -> list:
        return rl_rewards.reward_callbacks(self.multiplier)

    # -- training and after

    def train(self, trainer) -> None:
        """Train, resuming from the newest finished checkpoint in output_dir (written every `save_steps` with
        save_strategy steps), λ included: a killed run continues where its last checkpoint left it."""
        checkpoint = last_checkpoint(self.training_args.output_dir)
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
            if self.multiplier is not None:
                rl_rewards.restore_lagrange_multiplier(self.multiplier, checkpoint)
        started = time.perf_counter()
        trainer.train(**({"resume_from_checkpoint": checkpoint} if checkpoint else {}))
        self.train_seconds = time.perf_counter() - started

    def finish(self, trainer, policy: torch.nn.Module) -> dict:
        """Save the policy, write the logs and summary, evaluate (main process); returns the summary."""
        out = Path(self.training_args.output_dir)
        outputs = rl_models.save_policy(trainer, policy, self.tokenizer, out, self.args.merge_lora, self.load_policy)
        if not trainer.accelerator.is_main_process:
            return {}
        history = trainer.state.log_history
        write_json(out / "log_history.json", history)
        summary = {"trainer": self.trainer_name, "policy": self.model_args.model_name_or_path,
                   "reward_model": self.args.reward_model, "steps": trainer.state.global_step,
                   "train_seconds": self.train_seconds, "outputs": outputs,
                   "accelerate": accelerate_summary(trainer.accelerator.state),
                   "logged": logged_series(self.trainer_name, history)}
        if self.multiplier is not None:
            summary["lagrangian"] = {"lambda_init": self.args.lambda_init, "history": self.multiplier.history}
        if self.args.evaluate:
            with whole_weights():
                summary["eval"] = evaluate_trained(self.args, self.training_args.seed, self.policy_path,
                                                   outputs["model"], out / "eval")
        summary["total_seconds"] = time.perf_counter() - self.started
        write_json(out / "summary.json", summary)
        print(headline(summary, self.training_args.output_dir))
        return summary


def requested_value(argv: Sequence[str], name: str, default: str) -> str:
    """A flag's value before parsing (`--name v`, `--name=v`, else the `--config` YAML's `name`, else default):
    what a recipe needs to choose the dataclasses it parses the rest with."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    if "--config" in argv[:-1]:  # TrlParser's only spelling
        import yaml

        with open(argv[argv.index("--config") + 1]) as handle:
            return str((yaml.safe_load(handle) or {}).get(name, default))
    return default
