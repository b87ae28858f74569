"""Evaluate reward models side by side: HH-RLHF pairwise accuracy, BeaverTails / XSTest accuracy, F1 and AUC.

    python recipes/evaluate_reward_model.py --config recipes/configs/reward/evaluate_cpu_minilm.yaml
    python recipes/evaluate_reward_model.py --models refined=runs/reward/a vanilla=runs/reward/b \
        --output_dir runs/reward_eval/mine --max_items 200

Each model is `name=folder` (an exported reward folder, or any one-logit classifier folder). Set a data path to
None (or "") to skip that set. Writes <output_dir>/results.json and results.md (the table, with this command).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from refinement.cli import named_folders, run_log, run_recipe, start_recipe, unset

start_recipe()  # before any Hugging Face library is imported

from alignment.trl_api import TrlParser
from refinement.io import write_json, write_text
from reward.evaluate import evaluate_models, load_labelled, load_pairs, load_xstest, results_table

DATA = "../shared/data"


@dataclass
class EvaluateConfig:
    models: list[str] = field(default=None, metadata={"help": "name=folder entries, one per reward model."})
    output_dir: str = field(default=None, metadata={"help": "results.json and results.md go here."})
    hh_rlhf_path: str | None = field(default=f"{DATA}/hh-rlhf-harmless-base/test.jsonl.gz",
                                     metadata={"help": "Preference pairs for pairwise accuracy."})
    beavertails_path: str | None = field(default=f"{DATA}/annotations/beavertails_smollm2.jsonl",
                                         metadata={"help": "Labelled (prompt, response, label) rows."})
    beavertails_split: str | None = field(default="test", metadata={"help": "Keep rows whose split column is this "
                                          "(the refinement runs' held-out split)."})
    xstest_dir: str | None = field(default=f"{DATA}/xstest", metadata={"help": "XSTest checkout (model_completions/)."})
    max_items: int | None = field(default=None, metadata={"help": "First N items of every set (quick runs)."})
    batch_size: int = 32
    max_length: int | None = field(default=None, metadata={"help": "Default: each model's reward_max_length."})


def main(args: EvaluateConfig, command: str | None = None) -> dict:
    if not args.output_dir:
        raise SystemExit("--output_dir is required (in the YAML or on the command line)")
    models = named_folders(args.models, "--models")
    pairs = [load_pairs(args.hh_rlhf_path, "hh_rlhf_harmless", args.max_items)] if not unset(args.hh_rlhf_path) else []
    labelled = []
    if not unset(args.beavertails_path):
        labelled.append(load_labelled(args.beavertails_path, "beavertails_test", args.beavertails_split,
                                      max_items=args.max_items))
    if not unset(args.xstest_dir):
        labelled.append(load_xstest(args.xstest_dir, "xstest", args.max_items))
    if not pairs and not labelled:
        raise SystemExit("every evaluation set is switched off; give at least one data path")
    results = evaluate_models(models, pairs, labelled, args.batch_size, args.max_length)
    table = results_table(results, pairs, labelled)
    command = command or "python " + " ".join(sys.argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"config": asdict(args), "command": command, "results": results})
    write_text(out / "results.md", f"Command: `{command}`\n\n{table}\n")
    print(table)
    return results


def make_parser() -> TrlParser:
    return TrlParser((EvaluateConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=run_log)
