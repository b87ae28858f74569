"""The evaluate and report steps of an RL run: the trained policy on held-out prompts (alignment.evaluate), the
logged reward/KL/λ series in summary.json, and the one-line headline printed at the end."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alignment.prompts import prompt_set, sample_prompts
from refinement.cli import fmt

# Logged names of the reward and the KL per trainer (PPO logs its own `objective/*`; GRPO and RLOO share names).
LOGGED = {"ppo": {"reward": "objective/scores", "kl": "objective/kl"},
          "grpo": {"reward": "reward", "kl": "kl"},
          "rloo": {"reward": "reward", "kl": "kl"}}


def series_summary(values: Sequence[float]) -> dict | None:
    """First, last and mean of a logged series, and the means of its two halves (single steps are noisy)."""
    if not values:
        return None
    half = len(values) // 2

    def mean(part: Sequence[float]) -> float | None:
        return sum(part) / len(part) if part else None

    return {"n": len(values), "first": values[0], "last": values[-1], "mean": mean(values),
            "first_half_mean": mean(values[:half]), "second_half_mean": mean(values[half:])}


def logged_series(trainer_name: str, history: Sequence[dict]) -> dict:
    """Per-step series of the reward, KL, each reward function and λ (not the closing train_* entry)."""
    history = [entry for entry in history if "train_runtime" not in entry]
    names = dict(LOGGED[trainer_name])
    names.update({key: key for entry in history for key in entry
                  if (key.startswith("rewards/") and key.endswith("/mean")) or key.startswith("lagrangian/")})
    return {label: series_summary([e[key] for e in history if key in e]) for label, key in names.items()}


def accelerate_summary(state) -> dict:
    """How the run was launched: accelerate's distributed type, processes, precision and ZeRO stage."""
    plugin = getattr(state, "deepspeed_plugin", None)
    return {"distributed_type": str(state.distributed_type), "num_processes": state.num_processes,
            "mixed_precision": str(state.mixed_precision),
            "zero_stage": plugin.zero_stage if plugin is not None else None}


def evaluate_trained(args, seed: int, start_policy: str, model_dir: str | None, eval_dir: Path) -> dict:
    """alignment.evaluate on held-out prompts (`args`: alignment.rl.RLScriptArguments): the trained policy in
    `model_dir` (KL to `start_policy`), and with evaluate_before the starting policy, a comparison and the paired
    before -> after table with intervals."""
    from alignment.evaluate import SamplingConfig, compare_runs, evaluate_policy, paired_table

    if model_dir is None:
        raise SystemExit("evaluate needs a saved model: set merge_lora true (or train without LoRA)")
    harmful = sample_prompts(prompt_set(args.eval_harmful_prompts, True, args.eval_prompt_split,
                                        args.prompt_column), args.eval_num_prompts, seed)
    benign = sample_prompts(prompt_set(args.eval_benign_prompts, False, args.eval_prompt_split,
                                       args.prompt_column), args.eval_num_prompts, seed)
    sampling = SamplingConfig(max_new_tokens=args.eval_max_new_tokens, seed=seed)
    judge = args.eval_judge or args.reward_model
    runs = {"before": (start_policy, None)} if args.evaluate_before else {}
    runs["after"] = (model_dir, start_policy)
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


def headline(summary: dict, output_dir: str) -> str:
    """One line: steps and seconds, the reward/KL/λ trend between the run's halves, the evaluation, the folder."""
    logged = summary["logged"]
    parts = [f"{summary['trainer']}: {summary['steps']} steps in {summary['train_seconds']:.0f} s"]
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
    return "; ".join(parts) + f"; outputs in {output_dir}"
