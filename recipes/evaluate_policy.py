"""Evaluate a policy's safety: harmless rate on harmful prompts, refusals on benign ones, reward, KL, length.

    python recipes/evaluate_policy.py --config recipes/configs/evaluate/cpu_smollm2.yaml
    python recipes/evaluate_policy.py --config ... --policy runs/ppo/model --reference embedded:smollm2 \\
        --output_dir runs/eval_after --name after

Every field of EvaluatePolicyConfig and alignment.evaluate.SamplingConfig is a flag; the YAML sets defaults,
the command line overrides them, and unknown keys fail. `demo` prompt sets are the project's own
(alignment/demo_data); any other value is a local file or Hub dataset name read by
alignment.prompts.load_prompts. An empty string or "none" turns an optional model off. Compare runs with
alignment.evaluate.compare_runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from refinement.cli import clear_unset, log_beside, option, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from alignment.evaluate import HEADLINE, SamplingConfig, evaluate_policy
from alignment.prompts import load_xstest, prompt_set, sample_prompts
from alignment.trl_api import TrlParser

_OPTIONAL = ("judge", "refusal_judge", "reward_model", "reference", "prompt_split", "xstest_path")


@dataclass
class EvaluatePolicyConfig:
    policy: str = option("embedded:smollm2", "Causal LM: embedded:smollm2 | local dir | Hub id")
    output_dir: str = option(None, "Run folder: generations.jsonl, metrics.json, report.md, metrics.png.")
    name: str = option("policy", "This run's column in comparisons (e.g. before / after).")
    overwrite: bool = option(False, "Replace an existing output_dir.")
    judge: str | None = option(None, "Harmlessness classifier folder (harmless iff logit > decision_threshold).")
    refusal_judge: str | None = option(None, "Refusal classifier folder (refusal iff logit > decision_threshold).")
    reward_model: str | None = option(None, "Sequence-classification folder whose mean logit is reported.")
    reference: str | None = option(None, "Causal LM with the policy's tokenizer, for the KL.")
    harmful_prompts: str = option("demo", "demo | local file | Hub name")
    benign_prompts: str = option("demo", "demo | local file | Hub name")
    prompt_split: str | None = option("test", "Rows of this split (files with a split column; the Hub split).")
    xstest_path: str | None = option(None, "XSTest CSV: its safe prompts join the benign set.")
    num_harmful: int | None = option(20, "Seeded sample size of each prompt set (None: all).")
    num_benign: int | None = 20
    num_xstest: int | None = 20

    def __post_init__(self):
        clear_unset(self, _OPTIONAL)  # the command line cannot spell None for a string field


def main(args: EvaluatePolicyConfig, sampling: SamplingConfig | None = None) -> dict:
    """Evaluate `args.policy`; `sampling` (generation settings, also flags) seeds the prompt samples too."""
    sampling = sampling or SamplingConfig()
    if not args.output_dir:
        raise SystemExit("--output_dir is required (in the YAML or on the command line)")
    for name in ("judge", "refusal_judge", "reward_model"):
        if getattr(args, name) and not os.path.isdir(getattr(args, name)):
            raise SystemExit(f"--{name} {getattr(args, name)}: no such folder (a judge from `make refine` lives in "
                             f"runs/refine_cpu_minilm/model); pass --{name} none to skip it")
    harmful = sample_prompts(prompt_set(args.harmful_prompts, True, args.prompt_split, None), args.num_harmful,
                             sampling.seed)
    benign = sample_prompts(prompt_set(args.benign_prompts, False, args.prompt_split, None), args.num_benign,
                            sampling.seed)
    if args.xstest_path:
        benign += sample_prompts(load_xstest(args.xstest_path, "safe"), args.num_xstest, sampling.seed)
    metrics = evaluate_policy(args.policy, harmful, benign, judge=args.judge, refusal_judge=args.refusal_judge,
                              reward_model=args.reward_model, reference=args.reference, sampling=sampling,
                              output_dir=args.output_dir, name=args.name, overwrite=args.overwrite)
    for label, group, key in HEADLINE:
        if metrics[group][key] is not None:
            print(f"{label}: {metrics[group][key]:.3f}")
    print(f"{metrics['seconds']['total']:.1f} s; report: {os.path.join(args.output_dir, 'report.md')}")
    return metrics


def make_parser() -> TrlParser:
    return TrlParser((EvaluatePolicyConfig, SamplingConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=log_beside)
