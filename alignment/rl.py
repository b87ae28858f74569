"""What the RL recipes share (recipes/safety_ppo.py, recipes/safety_grpo.py with --trainer grpo|rloo).

A run: the policy (a chat causal LM, LoRA by default) is trained on a mix of harmful and benign prompts
(alignment.prompts) against the exported refined classifier (reward.export) as its reward, or, with `lagrangian`,
against task reward − λ·cost with the classifier as the cost (reward.lagrangian). `RLRun` holds what every
trainer needs and writes the run folder:

    output_dir/config.json         resolved settings (script arguments, the TRL config, policy path, versions)
    output_dir/prompts.jsonl       the RL prompt mix (text, is_harmful, source, category), in dataset order
    output_dir/adapter/            the LoRA adapter and tokenizer (LoRA runs)
    output_dir/model/              the policy ready for alignment.evaluate (LoRA merged into the base weights)
    output_dir/log_history.json    every logged entry of the trainer
    output_dir/summary.json        steps, seconds, first/last/mean of the reward, KL and λ series, evaluation
    output_dir/eval/{before,after,comparison}/   with `evaluate` (and `evaluate_before`): alignment.evaluate

Trainer-specific pieces (PPO's value and reward models, GRPO's reward list) live in the recipes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from alignment.prompts import Prompt, build_rl_mix, prompt_set, sample_prompts, to_dataset
from alignment.refusal import is_refusal
from alignment.trl_api import train_resumes
from refinement.cli import clear_unset, fmt, option
from refinement.embedded import resolve_model
from refinement.io import atomic_dir, write_json, write_text
from reward.lagrangian import COSTS, LagrangeMultiplier, LagrangianCallback, LagrangianReward
from reward.scoring import TRANSFORMS, whole_weights
from reward.texts import completion_text

logger = logging.getLogger(__name__)

TASK_REWARDS = ("none", "non_refusal")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
# Logged names of the reward and the KL per trainer (PPO logs its own `objective/*`; GRPO and RLOO share names).
LOGGED = {"ppo": {"reward": "objective/scores", "kl": "objective/kl"},
          "grpo": {"reward": "reward", "kl": "kl"},
          "rloo": {"reward": "reward", "kl": "kl"}}
# Tokens that can stand in for a pad token when a chat model pads with its eos (SmolLM2, Llama 3).
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|endoftext|>", "<pad>")


@dataclass
class RLScriptArguments:
    """The settings every RL recipe shares; the trainer's own settings are TRL's PPOConfig / GRPOConfig /
    RLOOConfig, parsed beside these (seed, output_dir, learning rate, KL coefficient, lengths ... live there)."""

    policy: str = option("embedded:smollm2", "Chat causal LM to align: embedded:smollm2 | local dir | Hub id.")
    dtype: str = option("float32", "float32 | bfloat16 | float16 | auto: the dtype models are loaded in.")
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
    use_lora: bool = option(True, "Train a LoRA adapter (peft.LoraConfig, CAUSAL_LM) instead of every weight.")
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = option(None, "Module names (None: peft's default for the model).")
    merge_lora: bool = option(True, "Also write the adapter merged into the base weights to output_dir/model.")
    lagrangian: bool = option(False, "Safe RL: reward = task − λ·cost, cost from the classifier, λ by dual ascent.")
    lagrangian_task_reward: str = option("non_refusal", "none | non_refusal (1 unless the reply refuses: a "
                                         "helpfulness proxy that pulls against the cost, as safe-rlhf's reward).")
    cost: str = option("margin", "margin (P(harmful) − cost_threshold) | indicator (1[P(harmful) > threshold]).")
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
    CHOICES: ClassVar[dict[str, tuple]] = {"reward_transform": TRANSFORMS, "dtype": tuple(DTYPES),
                                           "lagrangian_task_reward": TASK_REWARDS, "cost": COSTS}

    def __post_init__(self):
        clear_unset(self, self.NULLABLE)
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(map(str, choices))}")
        if not 0.0 <= self.harmful_fraction <= 1.0:
            raise ValueError(f"harmful_fraction must lie in [0, 1], got {self.harmful_fraction}")


# ---------------------------------------------------------------------------------------------- models


def load_policy_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The policy's tokenizer, left-padded (generation continues from the right), with a pad token that is not
    its eos: PPO masks every pad-id token, so a pad equal to eos would hide the eos tokens a chat template puts
    inside the prompt (SmolLM2, Llama 3) and the reply's own eos. An unused special token of the vocabulary
    stands in; without one the eos stays (with a warning)."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return tokenizer
    vocab = tokenizer.get_vocab()
    taken = {tokenizer.eos_token_id, tokenizer.bos_token_id}
    for token in PAD_CANDIDATES:
        if token in vocab and vocab[token] not in taken:
            tokenizer.pad_token = token
            return tokenizer
    logger.warning("%s: no token other than eos can pad; PPO will also mask eos tokens inside prompts", path)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def set_pad_token(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def lora_config(args: RLScriptArguments, task_type: str = "CAUSAL_LM"):
    """peft.LoraConfig of the policy, None when use_lora is off."""
    if not args.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type=task_type, r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=args.lora_target_modules)


# ---------------------------------------------------------------------------------------------- prompts


def mix_size(n_harmful: int, n_benign: int, harmful_fraction: float) -> int:
    """The largest mix the two sets allow at this ratio."""
    limits = [n_harmful / harmful_fraction if harmful_fraction > 0 else math.inf,
              n_benign / (1 - harmful_fraction) if harmful_fraction < 1 else math.inf]
    return int(min(limits))


def rl_prompts(args: RLScriptArguments, seed: int) -> list[Prompt]:
    harmful = prompt_set(args.harmful_prompts, True, args.prompt_split, args.prompt_column)
    benign = prompt_set(args.benign_prompts, False, args.prompt_split, args.prompt_column)
    size = args.max_prompts or mix_size(len(harmful), len(benign), args.harmful_fraction)
    return build_rl_mix(harmful, benign, size, args.harmful_fraction, seed)


def policy_inputs(prompts: Sequence[Prompt], conversational: bool) -> list:
    """What the trainers take as a prompt: one user message (the chat template applies) or the plain text."""
    return [[{"role": "user", "content": p.text}] if conversational else p.text for p in prompts]


# ---------------------------------------------------------------------------------------------- rewards


def non_refusal(prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
    """1 unless the reply refuses (alignment.refusal): a model-free helpfulness proxy for the Lagrangian's task
    reward. Alone it rewards answering everything; the cost −λ·C pulls back where answering is harmful."""
    return [0.0 if is_refusal(completion_text(c)) else 1.0 for c in completions]


class MissingEosPenalty:
    """−penalty for every completion that stopped at the length limit, 0 otherwise: PPOConfig's
    `missing_eos_penalty`, which GRPOConfig/RLOOConfig lack, as one more GRPO/RLOO reward function (logged as
    rewards/missing_eos_penalty/mean). A completion is truncated by TRL's own rule (its `completions/clipped_ratio`
    and `mask_truncated_completions`): its last token is neither eos nor pad. `mask_truncated_completions` is a
    different remedy (such completions leave the loss); either or both may be set."""

    __name__ = "missing_eos_penalty"

    def __init__(self, penalty: float, tokenizer: PreTrainedTokenizerBase):
        if penalty <= 0:
            raise ValueError(f"missing_eos_penalty must be positive, got {penalty}")
        self.penalty = float(penalty)
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids: Sequence[Sequence[int]],
                 **kwargs) -> list[float]:
        return [0.0 if ids and ids[-1] in self.stop_ids else -self.penalty for ids in completion_ids]


# ---------------------------------------------------------------------------------------------- the run


def _main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _zero3_gathered(trainer, module: torch.nn.Module):
    """Full parameters of `module` on every rank under DeepSpeed ZeRO-3 (a no-op otherwise)."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


def series_summary(values: Sequence[float]) -> dict | None:
    """First, last and mean of a logged series, and the means of its two halves (single steps are noisy)."""
    if not values:
        return None
    half = len(values) // 2

    def mean(part: Sequence[float]) -> float | None:
        return sum(part) / len(part) if part else None

    return {"n": len(values), "first": values[0], "last": values[-1], "mean": mean(values),
            "first_half_mean": mean(values[:half]), "second_half_mean": mean(values[half:])}


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` folder in output_dir that the Trainer finished writing, None when there is none.
    transformers' get_last_checkpoint takes the highest N whatever its state; a run killed while saving leaves a
    folder without trainer_state.json (the Trainer's last file), which would restart the step count at 0."""
    folder = Path(output_dir)
    steps = {int(path.name.rsplit("-", 1)[1]): path for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if path.name.rsplit("-", 1)[1].isdigit() and (path / "trainer_state.json").is_file()}
    return str(steps[max(steps)]) if steps else None


@dataclass
class RLRun:
    """One RL run: settings, resolved policy, tokenizer, prompts and (with `lagrangian`) the multiplier."""

    trainer_name: str
    args: RLScriptArguments
    training_args: Any
    policy_path: str
    tokenizer: PreTrainedTokenizerBase
    prompts: list[Prompt]
    multiplier: LagrangeMultiplier | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)
    train_seconds: float | None = None

    @classmethod
    def start(cls, trainer_name: str, args: RLScriptArguments, training_args) -> RLRun:
        """Check the inputs, seed, resolve the policy, load tokenizer and prompts, write config.json."""
        if not training_args.output_dir:
            raise SystemExit("--output_dir is required (in the YAML or on the command line)")
        if not os.path.isfile(os.path.join(args.reward_model, "config.json")):
            raise SystemExit(f"--reward_model {args.reward_model}: no exported classifier there. Export one from a "
                             "refinement run: python recipes/export_reward_model.py --run_dir runs/refine_cpu_minilm "
                             f"--output_dir {args.reward_model}")
        set_seed(training_args.seed)
        policy_path = resolve_model(args.policy)
        multiplier = None
        if args.lagrangian:
            multiplier = LagrangeMultiplier(args.lambda_init, args.lambda_lr, args.lambda_max, args.cost_limit,
                                            args.lambda_window, args.lambda_update_delay)
        run = cls(trainer_name, args, training_args, policy_path, load_policy_tokenizer(policy_path),
                  rl_prompts(args, training_args.seed), multiplier)
        if _main_process():
            out = Path(training_args.output_dir)
            write_json(out / "config.json", run.resolved_config())
            write_text(out / "prompts.jsonl", "".join(json.dumps(dataclasses.asdict(p)) + "\n" for p in run.prompts))
        return run

    def resolved_config(self) -> dict:
        harmful = sum(p.is_harmful for p in self.prompts)
        return {"trainer": self.trainer_name, "script": dataclasses.asdict(self.args),
                "training": self.training_args.to_dict(), "policy_path": self.policy_path,
                "pad_token": self.tokenizer.pad_token,
                "prompts": {"n": len(self.prompts), "harmful": harmful, "benign": len(self.prompts) - harmful},
                "versions": {name: version(name) for name in ("trl", "transformers", "torch", "peft", "accelerate")}}

    # -- what the trainers take

    @property
    def dtype(self):
        return DTYPES[self.args.dtype]

    def inputs(self) -> list:
        return policy_inputs(self.prompts, self.args.conversational)

    def dataset(self) -> datasets.Dataset:
        """GRPO/RLOO's dataset: `prompt` plus is_harmful/source/category (reward functions get them as keywords)."""
        return to_dataset(self.prompts, self.inputs())

    def load_policy(self) -> torch.nn.Module:
        model = AutoModelForCausalLM.from_pretrained(self.policy_path, dtype=self.dtype)
        return set_pad_token(model, self.tokenizer)

    def peft_config(self):
        return lora_config(self.args)

    def text_reward(self):
        """The reward as a TRL reward callable: the classifier through its transform, or the Lagrangian's
        task reward − λ·cost."""
        from reward.functions import HarmlessnessReward

        args = self.args
        if not args.lagrangian:
            return HarmlessnessReward(args.reward_model, transform=args.reward_transform,
                                      batch_size=args.reward_batch_size)
        tasks = [non_refusal] if args.lagrangian_task_reward == "non_refusal" else []
        return LagrangianReward(HarmlessnessReward(args.reward_model, batch_size=args.reward_batch_size),
                                self.multiplier, task_rewards=tasks, cost=args.cost, cost_threshold=args.cost_threshold)

    def callbacks(self) -> list:
        return [LagrangianCallback(self.multiplier)] if self.multiplier is not None else []

    # -- training and after

    def train(self, trainer) -> None:
        """Train, resuming from the newest finished checkpoint in output_dir (written every `save_steps` with
        save_strategy steps) where the trainer can: a killed run continues where its last checkpoint left it."""
        checkpoint = last_checkpoint(self.training_args.output_dir)
        if checkpoint and not train_resumes(trainer):
            logger.warning("%s cannot resume from a checkpoint: %s is ignored and training starts over from step 0",
                           type(trainer).__name__, checkpoint)
            checkpoint = None
        elif checkpoint:
            logger.info("resuming from %s", checkpoint)
        started = time.perf_counter()
        trainer.train(**({"resume_from_checkpoint": checkpoint} if checkpoint else {}))
        self.train_seconds = time.perf_counter() - started

    def finish(self, trainer, policy: torch.nn.Module) -> dict:
        """Save the policy, write the logs and summary, evaluate (main process); returns the summary."""
        outputs = self.save_policy(trainer, policy)
        if not trainer.accelerator.is_main_process:
            return {}
        out = Path(self.training_args.output_dir)
        history = trainer.state.log_history
        write_json(out / "log_history.json", history)
        state = trainer.accelerator.state
        plugin = getattr(state, "deepspeed_plugin", None)
        summary = {"trainer": self.trainer_name, "policy": self.args.policy, "reward_model": self.args.reward_model,
                   "steps": trainer.state.global_step, "train_seconds": self.train_seconds, "outputs": outputs,
                   "accelerate": {"distributed_type": str(state.distributed_type), "num_processes": state.num_processes,
                                  "mixed_precision": str(state.mixed_precision),
                                  "zero_stage": plugin.zero_stage if plugin is not None else None},
                   "logged": self.logged_series(history)}
        if self.multiplier is not None:
            summary["lagrangian"] = {"lambda_init": self.args.lambda_init, "history": self.multiplier.history}
        if self.args.evaluate:
            with whole_weights():
                summary["eval"] = self.evaluate(outputs["model"])
        summary["total_seconds"] = time.perf_counter() - self.started
        write_json(out / "summary.json", summary)
        print(self.headline(summary))
        return summary

    def logged_series(self, history: Sequence[dict]) -> dict:
        """Per-step series of the reward, KL, each reward function and λ (not the closing train_* entry)."""
        history = [entry for entry in history if "train_runtime" not in entry]
        names = dict(LOGGED[self.trainer_name])
        names.update({key: key for entry in history for key in entry
                      if (key.startswith("rewards/") and key.endswith("/mean")) or key.startswith("lagrangian/")})
        return {label: series_summary([e[key] for e in history if key in e]) for label, key in names.items()}

    def save_policy(self, trainer, policy: torch.nn.Module) -> dict:
        """output_dir/adapter (LoRA) and output_dir/model (merged or fully trained), tokenizer beside each."""
        out = Path(self.training_args.output_dir)
        is_peft = hasattr(policy, "peft_config")
        first = out / ("adapter" if is_peft else "model")
        with _zero3_gathered(trainer, policy):  # every rank enters; only the main process writes
            if trainer.accelerator.is_main_process:
                with atomic_dir(first, replace=True) as tmp:
                    policy.save_pretrained(tmp)
                    self.tokenizer.save_pretrained(tmp)
        trainer.accelerator.wait_for_everyone()
        outputs = {"adapter": str(first) if is_peft else None, "model": None if is_peft else str(first)}
        if is_peft and self.args.merge_lora and trainer.accelerator.is_main_process:
            with whole_weights():
                outputs["model"] = str(self.merge(first, out / "model"))
        return outputs

    def merge(self, adapter_dir: Path, target: Path) -> Path:
        """The base policy with the saved adapter merged in, as a plain causal-LM folder."""
        from peft import PeftModel

        base = self.load_policy()
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        with atomic_dir(target, replace=True) as tmp:
            merged.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        return target

    def evaluate(self, model_dir: str | None) -> dict:
        """alignment.evaluate on held-out prompts: the trained policy (KL to the starting one), and with
        evaluate_before the starting policy, a comparison and the paired before -> after table with intervals."""
        from alignment.evaluate import SamplingConfig, compare_runs, evaluate_policy, paired_table

        if model_dir is None:
            raise SystemExit("evaluate needs a saved model: set merge_lora true (or train without LoRA)")
        args, seed = self.args, self.training_args.seed
        harmful = sample_prompts(prompt_set(args.eval_harmful_prompts, True, args.eval_prompt_split,
                                            args.prompt_column), args.eval_num_prompts, seed)
        benign = sample_prompts(prompt_set(args.eval_benign_prompts, False, args.eval_prompt_split,
                                           args.prompt_column), args.eval_num_prompts, seed)
        sampling = SamplingConfig(max_new_tokens=args.eval_max_new_tokens, seed=seed)
        judge = args.eval_judge or args.reward_model
        eval_dir = Path(self.training_args.output_dir) / "eval"
        runs = {}
        if args.evaluate_before:
            runs["before"] = (self.policy_path, None)
        runs["after"] = (model_dir, self.policy_path)
        results = {}
        for name, (policy, reference) in runs.items():
            metrics = evaluate_policy(policy, harmful, benign, judge=judge, reward_model=args.reward_model,
                                      reference=reference, sampling=sampling, output_dir=str(eval_dir / name),
                                      name=name, overwrite=True)
            results[name] = {group: metrics[group] for group in ("harmful", "benign", "overall")}
        if len(runs) > 1:
            results["comparison"] = compare_runs([eval_dir / name for name in runs], eval_dir / "comparison")
            results["paired"], _ = paired_table(eval_dir / "before", eval_dir / "after")
        return results

    def headline(self, summary: dict) -> str:
        logged = summary["logged"]
        parts = [f"{self.trainer_name}: {summary['steps']} steps in {summary['train_seconds']:.0f} s"]
        for label in ("reward", "kl", "lagrangian/lambda"):
            series = logged.get(label)
            if series and series["n"] > 1:
                parts.append(f"mean {label} {series['first_half_mean']:.4g} (first half) -> "
                             f"{series['second_half_mean']:.4g} (second half)")
            elif series:
                parts.append(f"{label} {series['last']:.4g}")
        if "eval" in summary:
            after = summary["eval"]["after"]
            parts.append(f"eval: harmless rate on harmful prompts {fmt(after['harmful']['harmless_rate'])}, "
                         f"refusals on benign prompts {fmt(after['benign']['refusal_rate_phrases'])}")
        return "; ".join(parts) + f"; outputs in {self.training_args.output_dir}"


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
