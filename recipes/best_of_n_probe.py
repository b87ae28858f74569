"""Best-of-n probe: which reward model steers a policy's own sampled replies toward harmless ones?

    python recipes/best_of_n_probe.py --rewards refined=runs/pipeline/reward_refined \\
        vanilla=runs/pipeline/reward_vanilla --judge runs/pipeline/judge/model --output_dir runs/best_of_n
    python recipes/best_of_n_probe.py --config my_probe.yaml --ks 1 4 16 --num_harmful 64 --num_benign 64

The policy samples max(ks) replies per held-out prompt once (seeded); every reward model (`name=folder`, an exported
classifier) picks its highest-scoring reply among the first k, against a random pick and the judge's own pick (the
ceiling). The judge measures each pick (harmless rate on harmful prompts) beside the refusal phrases, every rate with
a Wilson interval and each arm's change from the random pick with a paired interval (alignment.best_of_n). Every
field of BestOfNConfig and alignment.evaluate.SamplingConfig is a flag (do_sample stays true). Writes
<output_dir>/replies.jsonl, probe.json and probe.md; a rerun with the same policy, prompts and sampling only
scores again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from refinement.cli import log_beside, named_folders, option, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from alignment.best_of_n import arm_table, run_probe
from alignment.evaluate import SamplingConfig
from alignment.prompts import prompt_set, sample_prompts
from alignment.trl_api import TrlParser


@dataclass
class BestOfNConfig:
    rewards: list[str] = field(default=None, metadata={"help": "name=folder of each reward model under test."})
    judge: str = option(None, "The evaluation judge's folder: the instrument, and the ceiling arm.")
    output_dir: str = option(None, "replies.jsonl, probe.json and probe.md go here.")
    policy: str = option("embedded:smollm2", "Causal LM: embedded:smollm2 | local dir | Hub id")
    harmful_prompts: str = option("demo", "demo | local file | Hub name")
    benign_prompts: str = option("demo", "demo | local file | Hub name")
    prompt_split: str = option("heldout", "Rows of this split (the demo's heldout prompts are in no pair).")
    num_harmful: int | None = option(64, "Seeded sample of each prompt set (None: all).")
    num_benign: int | None = 64
    ks: list[int] = field(default_factory=lambda: [1, 4, 16], metadata={
        "help": "Pick among each prompt's first k replies; the largest k is how many are sampled."})
    score_batch_size: int = 32
    rescore: bool = option(False, "Score the replies saved in output_dir again (new rewards or judge); never sample.")


def main(args: BestOfNConfig, sampling: SamplingConfig) -> dict:
    if not args.output_dir or not args.judge:
        raise SystemExit("--output_dir and --judge are required (in the YAML or on the command line)")
    if min(args.ks) < 1:
        raise SystemExit(f"--ks {args.ks}: each k must be at least 1")
    if not sampling.do_sample:
        raise SystemExit("--do_sample false: best-of-n picks among sampled replies")
    rewards = named_folders(args.rewards, "--rewards")
    harmful = sample_prompts(prompt_set(args.harmful_prompts, True, args.prompt_split, None), args.num_harmful,
                             sampling.seed)
    benign = sample_prompts(prompt_set(args.benign_prompts, False, args.prompt_split, None), args.num_benign,
                            sampling.seed)
    result = run_probe(args.policy, harmful, benign, rewards, args.judge, args.output_dir, ks=args.ks,
                       sampling=sampling, score_batch_size=args.score_batch_size, rescore=args.rescore)
    print(f"{arm_table(result['outcomes'])}\nreport: {os.path.join(args.output_dir, 'probe.md')}")
    return result


def make_parser() -> TrlParser:
    parser = TrlParser((BestOfNConfig, SamplingConfig))
    parser.set_defaults(do_sample=True, temperature=0.7, max_new_tokens=32, batch_size=32)
    return parser


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=log_beside)
