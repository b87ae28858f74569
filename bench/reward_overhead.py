"""Cost of the reward callable against TRL's own reward-model path, in GRPO steps on SmolLM2.

    python bench/reward_overhead.py --classifier runs/reward/minilm_refined

Two arms score the same classifier: `callable` = reward.functions.HarmlessnessReward (format_example texts, the
classifier's tokenizer, length-sorted batches); `path` = the folder handed to TRL as a bare reward model (a path
string in reward_funcs: TRL loads it and scores prompt + completion). The arms alternate (AB, BA, AB, ...) and
run with learning rate 0 and one seed, so both see the same prompts and generate the same completions (checked:
a digest of every step's completions). Per arm: the median step time (first step of each run dropped as warm-up)
and the median time inside GRPO's reward computation. Ratio = path / callable step time (>= 0.95 means the
callable costs at most 5% more per step). Writes <out>/results.json and <out>/results.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from alignment.trl_api import GRPOConfig, GRPOTrainer
from refinement.embedded import resolve_model
from reward.evaluate import load_pairs
from reward.functions import HarmlessnessReward

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base" / "test.jsonl.gz"


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


class TimedGRPOTrainer(GRPOTrainer):
    """Records the time of each reward computation and a digest of the completions it scored."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        start = time.perf_counter()
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.reward_seconds = [*getattr(self, "reward_seconds", []), time.perf_counter() - start]
        digest = hashlib.sha1(json.dumps([str(c) for c in completions]).encode()).hexdigest()[:12]
        self.digests = [*getattr(self, "digests", []), digest]
        return rewards


def prompts_from_hh(count: int) -> list[str]:
    """Single-turn red-team questions of HH-RLHF harmless-base (real prompts a safety reward must score)."""
    pairs = load_pairs(str(HH))
    single = [p for p in pairs.prompts if "\n\nAssistant:" not in p and len(p) < 200]
    return single[:count]


def run_arm(arm: str, policy, tokenizer, classifier: str, dataset, args: argparse.Namespace, out: Path) -> dict:
    reward = HarmlessnessReward(classifier) if arm == "callable" else classifier
    config = GRPOConfig(output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch_size,
                        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                        max_steps=args.steps + 1, learning_rate=0.0, beta=0.0, use_cpu=True, bf16=False,
                        gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
                        disable_tqdm=True, seed=args.seed)
    timer = StepTimer()
    trainer = TimedGRPOTrainer(model=policy, reward_funcs=[reward], args=config, train_dataset=dataset,
                               processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    name = "rewards/harmlessness_logit/mean" if arm == "callable" else f"rewards/{Path(classifier).name}/mean"
    means = [e[name] for e in trainer.state.log_history if name in e]
    return {"step_seconds": timer.seconds[1:], "reward_seconds": trainer.reward_seconds[1:],
            "digests": trainer.digests, "reward_means": means}


def summarize(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for arm, results in runs.items():
        steps = [s for r in results for s in r["step_seconds"]]
        rewards = [s for r in results for s in r["reward_seconds"]]
        per_run = [float(np.median(r["step_seconds"])) for r in results]
        out[arm] = {"steps_timed": len(steps), "median_step_s": float(np.median(steps)),
                    "mean_step_s": float(np.mean(steps)), "median_reward_s": float(np.median(rewards)),
                    "mean_reward_s": float(np.mean(rewards)), "run_median_step_s": per_run}
    # Within a repeat the two arms ran back to back: their ratio, repeat by repeat, and its range.
    ratios = [p / c for p, c in zip(out["path"]["run_median_step_s"], out["callable"]["run_median_step_s"])]
    out["ratio_path_over_callable_step_by_repeat"] = ratios
    out["ratio_path_over_callable_step"] = out["path"]["median_step_s"] / out["callable"]["median_step_s"]
    out["ratio_path_over_callable_reward"] = out["path"]["median_reward_s"] / out["callable"]["median_reward_s"]
    digests = {arm: [r["digests"] for r in results] for arm, results in runs.items()}
    out["same_completions"] = all(d == digests["callable"][0] for runs_ in digests.values() for d in runs_)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="runs/reward/minilm_refined", help="exported reward folder")
    parser.add_argument("--policy", default="embedded:smollm2")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm, alternating")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (+1 warm-up step)")
    parser.add_argument("--batch_size", type=int, default=8, help="completions per step")
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_reward_overhead")
    args = parser.parse_args(argv)
    if not (Path(args.classifier) / "config.json").is_file():
        raise SystemExit(f"{args.classifier}: not an exported reward folder; make it with `python "
                         "recipes/export_reward_model.py --config recipes/configs/reward/export_cpu_minilm.yaml`")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy_path = resolve_model(args.policy)
    tokenizer = AutoTokenizer.from_pretrained(policy_path, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32)
    prompts = prompts_from_hh(args.batch_size // args.num_generations * (args.steps + 1))
    dataset = datasets.Dataset.from_dict({"prompt": prompts})
    runs: dict[str, list[dict]] = {"callable": [], "path": []}
    for repeat in range(args.repeats):
        for arm in (("callable", "path") if repeat % 2 == 0 else ("path", "callable")):
            runs[arm].append(run_arm(arm, policy, tokenizer, args.classifier, dataset, args, out))
            print(arm, repeat, [f"{s:.2f}" for s in runs[arm][-1]["step_seconds"]], flush=True)
    summary = summarize(runs)
    command = f"python bench/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}".strip()
    lines = [f"Command: `{command}`", "",
             f"Policy `{args.policy}` (fp32, CPU, torch threads {torch.get_num_threads()}), reward `{args.classifier}`;"
             f" {args.batch_size} completions x {args.max_completion_length} tokens per step, {args.repeats} "
             f"alternating runs per arm x {args.steps} timed steps; same completions in every run: "
             f"{'yes' if summary['same_completions'] else 'NO'}.", "",
             "| arm | timed steps | median step (s) | per-run median step, min–max (s) | mean step (s) | "
             "median reward computation (s) |", "|---|---|---|---|---|---|"]
    for arm in ("callable", "path"):
        s = summary[arm]
        lines.append(f"| {arm} | {s['steps_timed']} | {s['median_step_s']:.2f} | {min(s['run_median_step_s']):.2f}–"
                     f"{max(s['run_median_step_s']):.2f} | {s['mean_step_s']:.2f} | {s['median_reward_s']:.3f} |")
    by_repeat = summary["ratio_path_over_callable_step_by_repeat"]
    lines += ["", f"Step-time ratio path / callable: **{summary['ratio_path_over_callable_step']:.3f}** (target >= "
              f"0.95; per repeat {min(by_repeat):.3f}–{max(by_repeat):.3f}); reward-computation ratio: "
              f"{summary['ratio_path_over_callable_reward']:.3f}.", ""]
    (out / "results.json").write_text(json.dumps({"args": vars(args), "summary": summary, "runs": runs}, indent=1))
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
