"""Generative self-refinement: the policy writes, judges its own replies, UU learning cleans those judgements into a
reward model, and RL on that reward makes the next policy. Resumable; every round's artifacts are kept.

    accelerate launch --cpu --num_processes 1 recipes/generative_refinement.py \\
        --config recipes/configs/generative/cpu_smollm2.yaml
    ... --reward self_judgement --output_dir runs/generative_no_uu     # the baseline: no UU refinement
    ... --labels_from human    # stops each round with the label_sample command for that round's sample; rerun after

The stages of a round (generate, self-judge, labelled sample, refine, export, RL, evaluate) are described in
alignment/generative.py. Writes round_NN/ folders, report.md, rounds.json and rounds.png; <output_dir>/run.log has
the full log.
"""
from __future__ import annotations

from dataclasses import dataclass

from refinement.cli import option, run_log, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from alignment.generative import LABEL_SOURCES, OVERRIDES, REWARDS, RL_RECIPES, GenerativeRefinement
from alignment.stages import overrides_option, read_overrides
from alignment.trl_api import TrlParser


@dataclass
class GenerativeRefinementConfig:
    output_dir: str = option("runs/generative_refinement", "One folder per round is written here; rerun to resume.")
    seed: int = option(0, "Seed of every stage (round t draws and trains with 1000 * seed + t, so runs with "
                       "different seeds share no round's draws).")
    policy: str = option("embedded:smollm2", "The starting policy; it judges its own replies, and is the KL "
                         "reference of every evaluation.")
    num_rounds: int = option(3, "Rounds of generate -> self-judge -> refine -> RL -> evaluate.")
    reward: str = option("refined", "refined: robust UU on the self-judgements | self_judgement: the baseline, a PN "
                         "classifier on the raw self-judgements (no UU)")
    # (a) generation
    harmful_prompts: str = option("demo", "Prompt pool: demo | local file | Hub dataset name.")
    benign_prompts: str = option("demo", "Prompt pool: demo | local file | Hub dataset name.")
    prompt_split: str | None = option("train", "Split of the pools (the demo's test split is held out for eval).")
    harmful_fraction: float = 0.5
    num_prompts: int = option(48, "Prompts drawn from the pool each round.")
    samples_per_prompt: int = option(4, "K sampled replies per prompt.")
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    generation_batch_size: int = 8
    # (b) self-judgement
    annotator_model: str | None = option(None, "The judge of the replies; None: the round's policy judges itself.")
    demonstrations_source: str = option("demo", "Pairs with split and label columns the self-judge's few-shot "
                                        "examples are drawn from (their val split): demo | a local file.")
    # (c) the labelled sample
    labels_from: str = option("judge", "judge: `num_labeled` judge labels of an i.i.d. sample stand in for a human's "
                              "| human: label round_t/labels/sample with recipes/label_sample.py")
    num_labeled: int = option(50, "Size of the labelled sample per round.")
    judge_model: str | None = option(None, "A sequence-classification folder that labels every reply and judges the "
                                     "evaluations; None: train one with judge_config.")
    judge_config: str = option("recipes/configs/refine/demo_judge_minilm.yaml",
                               "recipes/refine_classifier.py YAML of the judge (when judge_model is None).")
    judge_overrides: dict | str | None = overrides_option("recipes/refine_classifier.py (judge)")
    # (d) refinement and export
    refine_config: str = option("recipes/configs/refine/generative_minilm.yaml",
                                "recipes/refine_classifier.py YAML of the reward: classifier, loss, rounds, and the "
                                "`annotator:` block of the self-judge.")
    refine_overrides: dict | str | None = overrides_option("recipes/refine_classifier.py (reward)")
    export_overrides: dict | str | None = overrides_option("recipes/export_reward_model.py")
    # (e) RL
    rl_trainer: str = option("ppo", "ppo (recipes/safety_ppo.py) | grpo | rloo (recipes/safety_grpo.py)")
    rl_config: str | None = option(None, "The RL recipe's YAML (None: recipes/configs/<ppo|grpo>/cpu_smollm2.yaml).")
    rl_overrides: dict | str | None = overrides_option("the RL recipe")
    # (f) evaluation
    eval_harmful_prompts: str = option("demo", "Evaluation prompts: demo | local file | Hub dataset name.")
    eval_benign_prompts: str = option("demo", "Evaluation prompts: demo | local file | Hub dataset name.")
    eval_prompt_split: str = option("test", "Held out from the generation pool and the judge's training pairs.")
    eval_num_prompts: int | None = option(16, "Seeded sample of each evaluation prompt set (None: all).")
    eval_max_new_tokens: int = 48
    eval_batch_size: int = 8
    eval_overrides: dict | str | None = overrides_option("recipes/evaluate_policy.py")

    def __post_init__(self):
        choices = {"reward": REWARDS, "labels_from": LABEL_SOURCES, "rl_trainer": tuple(RL_RECIPES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.rl_config is None:
            self.rl_config = f"recipes/configs/{'ppo' if self.rl_trainer == 'ppo' else 'grpo'}/cpu_smollm2.yaml"
        if self.num_rounds < 1 or self.samples_per_prompt < 1 or self.num_prompts < 3:
            raise ValueError("num_rounds and samples_per_prompt must be >= 1 and num_prompts >= 3")
        read_overrides(self, OVERRIDES)


def main(args: GenerativeRefinementConfig) -> dict:
    return GenerativeRefinement(args).run()


def make_parser() -> TrlParser:
    return TrlParser((GenerativeRefinementConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=run_log)
