"""Refine noisy harmless/harmful pseudo-labels into a classifier with iterative robust UU learning.

    accelerate launch recipes/refine_classifier.py --config recipes/configs/refine/cpu_minilm.yaml
    python recipes/refine_classifier.py --config ... --num_rounds 3 --num_labeled 0 --loss uu

Every field of refinement.config.RefineConfig is a flag; the YAML sets defaults, the command line overrides
them, and unknown keys fail. Rerun with the same output_dir to resume a killed run.
"""
from __future__ import annotations

import os

from refinement.cli import log_beside, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from transformers import set_seed

from alignment.trl_api import TrlParser
from refinement.config import RefineConfig
from refinement.io import distributed_state
from refinement.loop import run_refinement


def main(args: RefineConfig) -> dict:
    if not args.dataset_path or not args.output_dir:
        raise SystemExit("--dataset_path and --output_dir are required (in the YAML or on the command line)")
    set_seed(args.seed)
    summary = run_refinement(args)
    selected = next(r for r in summary["rounds"] if r["round"] == summary["selected_round"])
    test = selected.get("quality", {}).get("test", {})
    if distributed_state().is_main_process:
        print(f"selected round {summary['selected_round']}"
              + (f": test accuracy {test['accuracy']:.3f}" if test else "")
              + f"; report: {os.path.join(args.output_dir, 'report.md')}")
    return summary


def make_parser() -> TrlParser:
    return TrlParser((RefineConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=log_beside)
