"""Judge every (prompt, response) pair of a dataset with an LLM: P(harmless) and a round-0 pseudo-label.

    python recipes/annotate.py --config recipes/configs/annotate/cpu_smollm2.yaml
    accelerate launch recipes/annotate.py --config ... --backend openai --model_name_or_path my-served-model \\
        --base_url http://localhost:8000/v1

Writes <output_dir>/annotated.jsonl (the rows plus `annotator_score` and `pseudo_label`), the judgement cache
judgements.jsonl and annotation_summary.json. Rerun the same command to resume a killed annotation. To go from an
unlabeled file to a refined classifier in one command, put these settings in an `annotator:` block of a
refinement config instead (recipes/configs/refine/cpu_annotate_smollm2.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from refinement.cli import run_log, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from transformers import set_seed

from alignment.trl_api import TrlParser
from refinement.annotation import AnnotatorConfig, annotate_rows
from refinement.config import DatasetArguments


@dataclass
class AnnotateDataConfig(DatasetArguments):
    output_dir: str = field(default=None, metadata={"help": "Annotations and their cache go here; rerun to resume."})
    max_items: int | None = field(default=None, metadata={"help": "Annotate a seeded subset of this many rows."})


def main(data: AnnotateDataConfig, annotator: AnnotatorConfig) -> dict:
    if not data.dataset_path or not data.output_dir:
        raise SystemExit("--dataset_path and --output_dir are required (in the YAML or on the command line)")
    set_seed(annotator.seed)
    rows = data.load_pairs()
    if data.max_items and len(rows) > data.max_items:
        rows = rows.shuffle(seed=annotator.seed).select(range(data.max_items))
    path, summary = annotate_rows(rows, annotator, data.output_dir, source=data.dataset_path)
    overall = summary["quality"].get("all", {})
    print(f"annotated {summary['items']} pairs ({summary['from_cache']} from the cache, {summary['abstained']} "
          f"abstained, {summary['truncated']} truncated), threshold {summary['threshold']:.3f}"
          + (f"; against gold: AUC {overall['auc']:.3f}, accuracy {overall['accuracy']:.3f}"
             if "auc" in overall else "") + f" -> {path}")
    return summary


def make_parser() -> TrlParser:
    return TrlParser((AnnotateDataConfig, AnnotatorConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=run_log)
