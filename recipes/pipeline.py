"""The whole job on the embedded default, in one resumable command: noisy LLM labels -> refined reward -> PPO.

    accelerate launch --cpu --num_processes 1 recipes/pipeline.py --config recipes/configs/pipeline/cpu_smollm2.yaml
    python recipes/pipeline.py --config ... --output_dir runs/pipeline_s1 --seed 1 --eval_num_prompts 32

Stages (refine with annotation, export, export_refined, vanilla, export_vanilla, judge, best_of_n, eval_before, ppo,
eval_after, report): alignment/pipeline.py. Each runs its recipe's own main() and parser on the stage's YAML and the
overrides below. Rerun the same command after a kill: finished stages are skipped, an unfinished one resumes, a
stage whose arguments or inputs changed reruns. The console shows the stages, progress bars and tables;
<output_dir>/run.log has everything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from refinement.cli import option, run_log, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from alignment.pipeline import OVERRIDES, Pipeline
from alignment.stages import overrides_option, read_overrides
from alignment.trl_api import TrlParser


@dataclass
class PipelineConfig:
    output_dir: str = option("runs/pipeline", "Every stage writes a folder here; rerun to resume.")
    seed: int = option(0, "Seed of every stage: refinement, judge, PPO and the evaluation's prompt sample.")
    policy: str = option("embedded:smollm2", "Chat model to align; also the KL reference of the evaluation.")
    refine_config: str = option("recipes/configs/refine/demo_annotate_minilm.yaml",
                                "recipes/refine_classifier.py YAML of the reward (an `annotator:` block annotates).")
    refine_overrides: dict | str | None = overrides_option("recipes/refine_classifier.py (reward)")
    export_overrides: dict | str | None = overrides_option("recipes/export_reward_model.py")
    judge_config: str = option("recipes/configs/refine/generated_judge_smollm2.yaml",
                               "recipes/refine_classifier.py YAML of the evaluation judge.")
    judge_overrides: dict | str | None = overrides_option("recipes/refine_classifier.py (judge)")
    ppo_config: str = option("recipes/configs/ppo/cpu_smollm2.yaml", "recipes/safety_ppo.py YAML.")
    ppo_overrides: dict | str | None = overrides_option("recipes/safety_ppo.py")
    eval_harmful_prompts: str = option("demo", "Evaluation prompts: demo | local file | Hub dataset name.")
    eval_benign_prompts: str = option("demo", "Evaluation prompts: demo | local file | Hub dataset name.")
    eval_prompt_split: str = option("test", "Split of the evaluation prompts (the demo's test split is held out "
                                    "from PPO's prompts and from the reward's and judge's training pairs).")
    eval_num_prompts: int | None = option(16, "Seeded sample of each evaluation prompt set (None: all).")
    eval_max_new_tokens: int = option(48, "Greedy generation length of the evaluation.")
    eval_batch_size: int = 8
    probe_ks: list[int] = field(default_factory=lambda: [1, 4], metadata={
        "help": "Best-of-n probe on the evaluation prompts: the starting policy samples max(k) replies per prompt; "
                "each reward picks among the first k."})
    probe_num_prompts: int | None = option(16, "Seeded sample of each evaluation prompt set the probe samples "
                                           "replies for (None: all).")
    probe_max_new_tokens: int = option(32, "Sampled reply length of the best-of-n probe.")
    probe_batch_size: int = option(32, "Replies sampled per forward pass in the probe.")
    eval_overrides: dict | str | None = overrides_option("recipes/evaluate_policy.py (both evaluations)")

    def __post_init__(self):
        read_overrides(self, OVERRIDES)


def main(args: PipelineConfig) -> dict:
    return Pipeline(args).run()


def make_parser() -> TrlParser:
    return TrlParser((PipelineConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=run_log)
