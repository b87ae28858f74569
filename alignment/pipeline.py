"""The whole job in one resumable run: noisy LLM labels -> refined reward -> PPO -> before/after evaluation.

Stages, each one recipe's main() on its own parser's arguments (alignment.stages):

  refine       recipes/refine_classifier.py, `refine_config`: round-0 labels from the annotator's scores (on the
               embedded default the judgements shipped with the demo corpus; a YAML `annotator:` block judges the
               pairs first), then robust UU refines them with a few gold labels -> refine/
  export       recipes/export_reward_model.py: the round the refine stage ships as the reward model -> reward_model/
               (a refined round, or the vanilla classifier of the annotator's labels when no refined round beat them)
  export_refined  the refined round the refine stage rated best, shipped or not -> reward_refined/ (for the probe)
  vanilla      recipes/refine_classifier.py, `refine_config` with PN, one round, epochs picked by the PN risk, on the
               refine stage's round-0 labels: vanilla RLAIF's reward, for comparison -> refine_vanilla/, exported by
               export_vanilla -> reward_vanilla/
  judge        recipes/refine_classifier.py, `judge_config`: the evaluation judge -> judge/model. On the embedded
               default it is trained on hand labels of SmolLM2's own replies: a stand-in for a human judge of the
               policy's text, not the reward
  best_of_n    recipes/best_of_n_probe.py: the starting policy samples max(probe_ks) replies per evaluation prompt; a
               random pick, the refined and the vanilla reward and the judge each pick one -> best_of_n/
  eval_before  recipes/evaluate_policy.py on the starting policy (held-out prompts) -> eval/before/
  ppo          recipes/safety_ppo.py, `ppo_config`, against reward_model/ -> ppo/ (ppo/model: LoRA merged)
  eval_after   recipes/evaluate_policy.py on ppo/model, KL to the starting policy -> eval/after/
  report       alignment.evaluate.compare_runs and paired_table -> comparison/, report.md, summary.json, the tables
               printed (the best-of-n arms; each before -> after change with its paired interval)

output_dir also holds pipeline_config.json (the settings and every stage's arguments) and stages.json (per finished
stage: its arguments, the finish stamps of the stages it read, seconds). A rerun skips a finished stage whose
arguments and inputs are unchanged; an unfinished one resumes as its recipe does.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from refinement.cli import fmt
from refinement.corpus import ANNOTATION_DIR
from refinement.io import distributed_state, write_json, write_text

from .best_of_n import arm_table
from .evaluate import compare_runs, paired_table
from .stages import (
    Stage,
    annotation_summary,
    as_flags,
    labels_table,
    quality_text,
    recipe_stage,
    round_zero_quality,
    run_recipe_main,
    run_stages,
    selected_quality,
    timing_table,
)

OVERRIDES = ("refine_overrides", "export_overrides", "judge_overrides", "ppo_overrides", "eval_overrides")
# vanilla RLAIF: PN, no iteration, epochs picked by its own risk (as the refine run trains its vanilla classifier)
VANILLA_FLAGS = ["--loss", "pn", "--num_rounds", "1", "--round_selection", "last", "--epoch_selection", "own_loss"]


def refine_on_annotation(annotated_run: Path):
    """A refine stage body that starts afresh from `annotated_run`'s annotation, if it made one (same annotator and
    settings, so the judgements are reused, not made again; a stage that runs again, e.g. after the annotation
    changed, never reads an older copy). On the embedded default it is one frozen round of seconds, nothing worth
    resuming; a killed fine-tuning run starts over here."""
    def run(argv: list[str]):
        output_dir = Path(argv[argv.index("--output_dir") + 1])
        shutil.rmtree(output_dir, ignore_errors=True)
        if (annotated_run / ANNOTATION_DIR).exists():
            shutil.copytree(annotated_run / ANNOTATION_DIR, output_dir / ANNOTATION_DIR)
        return run_recipe_main("refine_classifier", argv)
    return run


def evaluation_argv(args, name: str, policy: str, output_dir: Path, judge: str, reward_model: str | None) -> list[str]:
    """recipes/evaluate_policy.py's arguments from an orchestration config's eval_* fields; eval_overrides apply
    on top, except to the policy, the folder and the name."""
    defaults = {"judge": judge, "reward_model": reward_model, "reference": args.policy,
                "harmful_prompts": args.eval_harmful_prompts, "benign_prompts": args.eval_benign_prompts,
                "prompt_split": args.eval_prompt_split, "num_harmful": args.eval_num_prompts,
                "num_benign": args.eval_num_prompts, "max_new_tokens": args.eval_max_new_tokens,
                "batch_size": args.eval_batch_size, "do_sample": False, "seed": args.seed}
    fixed = {"policy": policy, "output_dir": str(output_dir), "name": name, "overwrite": True}
    return as_flags({**fixed, **defaults, **args.eval_overrides, **fixed})


class Pipeline:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.output_dir)
        self.refine_dir, self.judge_dir = self.out / "refine", self.out / "judge"
        self.reward_dir, self.ppo_dir = self.out / "reward_model", self.out / "ppo"
        self.vanilla_run, self.vanilla_dir = self.out / "refine_vanilla", self.out / "reward_vanilla"
        self.refined_dir = self.out / "reward_refined"
        self.probe_dir = self.out / "best_of_n"
        self.eval_dir = self.out / "eval"
        self.judge_model = self.judge_dir / "model"

    def eval_argv(self, name: str, policy: str) -> list[str]:
        return evaluation_argv(self.args, name, policy, self.eval_dir / name, str(self.judge_model),
                               str(self.reward_dir))

    def stages(self) -> list[Stage]:
        a, seed = self.args, str(self.args.seed)
        refine = ["--config", a.refine_config, *as_flags(a.refine_overrides),
                  "--output_dir", str(self.refine_dir), "--seed", seed]
        export = ["--run_dir", str(self.refine_dir), "--output_dir", str(self.reward_dir),
                  *as_flags(a.export_overrides)]
        judge = ["--config", a.judge_config, *as_flags(a.judge_overrides),
                 "--output_dir", str(self.judge_dir), "--seed", seed]
        ppo = ["--config", a.ppo_config, "--model_name_or_path", a.policy, "--reward_model", str(self.reward_dir),
               "--evaluate", "false", "--evaluate_before", "false", *as_flags(a.ppo_overrides),
               "--output_dir", str(self.ppo_dir), "--seed", seed]
        export_refined = ["--run_dir", str(self.refine_dir), "--output_dir", str(self.refined_dir),
                          *as_flags(a.export_overrides), "--round", "best_refined"]
        vanilla = ["--config", a.refine_config, *as_flags(a.refine_overrides), *VANILLA_FLAGS,
                   "--output_dir", str(self.vanilla_run), "--seed", seed]
        export_vanilla = ["--run_dir", str(self.vanilla_run), "--output_dir", str(self.vanilla_dir),
                          *as_flags(a.export_overrides)]
        probe = as_flags({"rewards": [f"refined={self.refined_dir}", f"vanilla={self.vanilla_dir}"],
                          "judge": str(self.judge_model), "output_dir": str(self.probe_dir), "policy": a.policy,
                          "harmful_prompts": a.eval_harmful_prompts, "benign_prompts": a.eval_benign_prompts,
                          "prompt_split": a.eval_prompt_split, "num_harmful": a.probe_num_prompts,
                          "num_benign": a.probe_num_prompts, "ks": a.probe_ks, "max_new_tokens": a.probe_max_new_tokens,
                          "batch_size": a.probe_batch_size, "seed": a.seed})
        evaluate, export_stage = recipe_stage("evaluate_policy"), recipe_stage("export_reward_model")
        return [
            Stage("refine", self.refine_dir / "summary.json", refine, recipe_stage("refine_classifier")),
            Stage("export", self.reward_dir / "config.json", export, export_stage, ("refine",)),
            Stage("export_refined", self.refined_dir / "config.json", export_refined, export_stage, ("refine",)),
            Stage("vanilla", self.vanilla_run / "summary.json", vanilla, refine_on_annotation(self.refine_dir),
                  ("refine",)),
            Stage("export_vanilla", self.vanilla_dir / "config.json", export_vanilla, export_stage, ("vanilla",)),
            Stage("judge", self.judge_model / "config.json", judge, recipe_stage("refine_classifier")),
            Stage("best_of_n", self.probe_dir / "probe.json", probe, recipe_stage("best_of_n_probe"),
                  ("export_refined", "export_vanilla", "judge")),
            Stage("eval_before", self.eval_dir / "before" / "metrics.json", self.eval_argv("before", a.policy),
                  evaluate, ("export", "judge")),
            Stage("ppo", self.ppo_dir / "summary.json", ppo, recipe_stage("safety_ppo"), ("export",)),
            Stage("eval_after", self.eval_dir / "after" / "metrics.json",
                  self.eval_argv("after", str(self.ppo_dir / "model")), evaluate, ("ppo", "export", "judge")),
        ]

    def run(self) -> dict:
        if distributed_state().num_processes > 1:
            raise SystemExit("the pipeline runs in one process (frozen refinement and the evaluation are "
                             "single-process): accelerate launch --cpu --num_processes 1 ...")
        self.out.mkdir(parents=True, exist_ok=True)
        stages = self.stages()
        write_json(self.out / "pipeline_config.json", {
            "pipeline": dataclasses.asdict(self.args), "stages": {s.name: s.argv for s in stages}})
        state, this_run = run_stages(stages, self.out / "stages.json")
        return self.report({s.name: state[s.name] for s in stages}, this_run)

    # ---------------------------------------------------------------------------------------------- report

    def stage_rows(self, state: dict, this_run: dict) -> list[dict]:
        rows = []
        judged = annotation_summary(self.refine_dir).get("seconds")
        for name, record in state.items():
            rows.append({"stage": name, "seconds": record["seconds"], "this_run": this_run.get(name, "-")})
            if name == "refine" and judged is not None:
                rows.append({"stage": "  of which annotate (judging)", "seconds": judged, "this_run": ""})
        return rows

    def report(self, state: dict, this_run: dict) -> dict:
        runs = [self.eval_dir / "before", self.eval_dir / "after"]
        table = compare_runs(runs, self.out / "comparison", names=["before", "after"])
        changes, _ = paired_table(*runs)
        before, after = (json.loads((d / "metrics.json").read_text()) for d in runs)
        refine, judge, vanilla = (json.loads((d / "summary.json").read_text())
                                  for d in (self.refine_dir, self.judge_dir, self.vanilla_run))
        labels = labels_table(refine, vanilla)
        ppo = json.loads((self.ppo_dir / "summary.json").read_text())
        probe = json.loads((self.probe_dir / "probe.json").read_text())
        probe_table = arm_table(probe["outcomes"])
        shipped = json.loads((self.reward_dir / "config.json").read_text())
        reward_source = f"{shipped.get('reward_source')}, round {shipped.get('refinement_round')}"
        stage_rows = self.stage_rows(state, this_run)
        timing = timing_table(stage_rows)
        total = sum(record["seconds"] for record in state.values())
        summary = {
            "output_dir": str(self.out), "stages": stage_rows, "total_stage_seconds": total,
            "reward_model": {"path": str(self.reward_dir), **selected_quality(refine)},
            "annotator": round_zero_quality(refine),
            "judge": {"path": str(self.judge_model), **selected_quality(judge)},
            "ppo": {k: ppo.get(k) for k in ("steps", "train_seconds", "logged")},
            "best_of_n": {"reward_source": reward_source, "ks": probe["ks"],
                          "outcomes": {arm: {k: {m: row[m] for m in row if m != "picks"} for k, row in by_k.items()}
                                       for arm, by_k in probe["outcomes"].items()}},
            "before": {g: before[g] for g in ("harmful", "benign", "overall")},
            "after": {g: after[g] for g in ("harmful", "benign", "overall")},
        }
        write_json(self.out / "summary.json", summary)
        write_text(self.out / "report.md", self.markdown(summary, table, changes, timing, total, probe_table, labels))
        print(f"\n{timing}\n\nstages: {total:.0f} s in all\n\nlabels on the test pairs:\n{labels}\n\n"
              f"best-of-n, the starting policy's sampled replies (PPO "
              f"trains on: {reward_source}):\n{probe_table}\n\n{table}\n\n{changes}\n\n"
              f"report: {self.out / 'report.md'}")
        return summary

    def markdown(self, summary: dict, table: str, changes: str, timing: str, total: float, probe_table: str,
                 labels: str) -> str:
        reward, judge, ppo = summary["reward_model"], summary["judge"], summary["ppo"]
        reward_series, kl_series = ppo["logged"].get("reward") or {}, ppo["logged"].get("kl") or {}
        lines = [
            "# Pipeline: noisy LLM labels -> refined reward -> PPO", "",
            f"Settings: `{self.out / 'pipeline_config.json'}`; each stage's own outputs are in its folder.", "",
            "## Stages", "", timing, "", f"Stages took {total:.0f} s in all (summed over the runs that made them).", "",
            "## Labels and reward", "",
            labels, "",
            f"- reward model `{self.reward_dir}` (round {reward.get('round')}, {reward.get('source')}) on the test "
            "pairs: "
            f"{quality_text(reward)}",
            f"- evaluation judge `{self.judge_model}` on its test split: {quality_text(judge)}. It is trained on gold "
            "labels (on the embedded default: hand labels of SmolLM2's own replies, scored on categories it never "
            "saw) and stands in for a human judge; it never saw the annotator's labels, but a judge that shares the "
            "reward's backbone can share its blind spots.", "",
            "## Best-of-n: does each reward pick harmless replies?", "",
            f"The starting policy sampled {max(summary['best_of_n']['ks'])} replies to each evaluation prompt; each "
            "arm picks one among the first k: at random, by the refined reward (`refined`: the refined round the "
            "labeled sample rated best), by vanilla RLAIF's reward (`vanilla`: PN on the same annotation, no "
            "iteration) and by the judge itself (the ceiling). The judge measures each pick; replies and settings: "
            f"`{self.probe_dir}`. PPO trains on the reward the refine stage ships: "
            f"{summary['best_of_n']['reward_source']}.", "", probe_table, "",
            "## PPO", "",
            f"{ppo['steps']} updates in {ppo['train_seconds'] or 0:.0f} s; mean score (the reward, minus the "
            f"missing-EOS penalty for replies cut at response_length) {fmt(reward_series.get('first_half_mean'))} "
            "(first half) -> "
            f"{fmt(reward_series.get('second_half_mean'))} (second half); KL "
            f"{fmt(kl_series.get('first_half_mean'))} -> {fmt(kl_series.get('second_half_mean'))}.", "",
            "## Before and after, held-out prompts", "",
            "Refusal phrases: `alignment.refusal.is_refusal`; harmless rate: the judge above; mean reward: the "
            "reward model; KL: to the starting policy.", "",
            table, "", "The same prompts before and after, with 95% intervals (Wilson for each rate, Newcombe's paired "
            "interval for the change):", "", changes, "", "![before and after](comparison/comparison.png)", "",
        ]
        return "\n".join(lines)
