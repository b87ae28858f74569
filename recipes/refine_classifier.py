"""Refine noisy harmless/harmful pseudo-labels into a classifier with iterative robust UU learning.

    accelerate launch recipes/refine_classifier.py --config recipes/configs/refine/cpu_minilm.yaml
    python recipes/refine_classifier.py --config ... --num_rounds 3 --num_labeled 0 --loss uu

Every field of refinement.config.RefineConfig is a flag; the YAML sets defaults, the command line overrides
them, and unknown keys fail. Rerun with the same output_dir to resume a killed run.
"""
from __future__ import annotations

import logging
import os
import sys

# Offline by default: the embedded models and local files need no Hub. With Hub access, run with
# HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 TRANSFORMERS_OFFLINE=0 to load Hub model ids and dataset names.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")

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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    (config,) = make_parser().parse_args_and_config()
    main(config)
