"""The whole job on the embedded default, in one resumable command: noisy LLM labels -> refined reward -> PPO.

    accelerate launch --cpu --num_processes 1 recipes/pipeline.py --config recipes/configs/pipeline/cpu_smollm2.yaml
    python recipes/pipeline.py --config ... --output_dir runs/pipeline_s1 --seed 1 --eval_num_prompts 32

Stages, each run in this process by its recipe's own main() and parser (the stage's YAML, then the overrides
below), so a stage does exactly what its recipe does alone:

  refine       recipes/refine_classifier.py, `refine_config`: the YAML's `annotator:` block judges the pairs first
               (annotate: SmolLM2 4-shot), then robust UU refines those labels with a few gold labels -> refine/
  export       recipes/export_reward_model.py: the refined classifier as the reward model -> reward_model/
  judge        recipes/refine_classifier.py, `judge_config`: the evaluation judge -> judge/model. On the embedded
               default it is trained on GOLD labels: a stand-in for a human or a strong-model judge, not the reward
  eval_before  recipes/evaluate_policy.py on the starting policy (held-out prompts) -> eval/before/
  ppo          recipes/safety_ppo.py, `ppo_config`, against reward_model/ -> ppo/ (ppo/model: LoRA merged)
  eval_after   recipes/evaluate_policy.py on ppo/model, KL to the starting policy -> eval/after/
  report       alignment.evaluate.compare_runs -> comparison/ (comparison.md, comparison.png), report.md,
               summary.json, and the before/after table printed

output_dir also holds pipeline_config.json (these settings and every stage's arguments) and stages.json (per
finished stage: its arguments, the finish stamps of the stages it read, seconds). Rerun the same command after a
kill: a stage whose outputs exist with the same arguments and inputs is skipped; an unfinished one resumes as its
recipe does (the annotation from its judgement cache, refinement from its last round); a stage whose arguments
changed, or whose input stage ran again, runs again (and refinement refuses a changed config in the same folder).
"""
from __future__ import annotations

import dataclasses
import gc
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from refinement.cli import run_log, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stage recipes are scripts beside this one

import evaluate_policy  # noqa: E402
import export_reward_model  # noqa: E402
import refine_classifier  # noqa: E402
import safety_ppo  # noqa: E402

from alignment.evaluate import compare_runs  # noqa: E402
from alignment.trl_api import TrlParser  # noqa: E402
from refinement.corpus import ANNOTATION_DIR  # noqa: E402
from refinement.io import distributed_state, write_json, write_text  # noqa: E402

logger = logging.getLogger("pipeline")
OVERRIDES = ("refine_overrides", "export_overrides", "judge_overrides", "ppo_overrides", "eval_overrides")


def option(default, text: str):
    """A dataclass field with command-line help text."""
    return field(default=default, metadata={"help": text})


def overrides_option(recipe: str):
    return option(None, f"Fields of {recipe} set after its YAML: a YAML mapping, or a JSON object on the command line.")


@dataclass
class PipelineConfig:
    output_dir: str = option("runs/pipeline", "Every stage writes a folder here; rerun to resume.")
    seed: int = option(0, "Seed of every stage: refinement, judge, PPO and the evaluation's prompt sample.")
    policy: str = option("embedded:smollm2", "Chat model to align; also the KL reference of the evaluation.")
    refine_config: str = option("recipes/configs/refine/demo_annotate_minilm.yaml",
                                "recipes/refine_classifier.py YAML of the reward (an `annotator:` block annotates).")
    refine_overrides: dict | str | None = overrides_option("recipes/refine_classifier.py (reward)")
    export_overrides: dict | str | None = overrides_option("recipes/export_reward_model.py")
    judge_config: str = option("recipes/configs/refine/demo_judge_minilm.yaml",
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
    eval_overrides: dict | str | None = overrides_option("recipes/evaluate_policy.py (both evaluations)")

    def __post_init__(self):
        read_overrides(self, OVERRIDES)


def read_overrides(config, names: tuple[str, ...]) -> None:
    """Each named field as a dict: the command line gives a JSON object, the YAML a mapping, None gives {}."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, str):
            value = json.loads(value) if value.strip().lower() not in ("", "none", "null") else None
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping of field: value, got {value!r}")
        setattr(config, name, dict(value or {}))


def as_flags(values: dict) -> list[str]:
    """`--name value` for a recipe's parser: booleans as true/false, lists as several values, mappings as JSON,
    None as `none` (which the RL and evaluation recipes read as None)."""
    argv = []
    for name, value in values.items():
        argv.append(f"--{name}")
        if isinstance(value, bool):
            argv.append(str(value).lower())
        elif isinstance(value, (list, tuple)):
            argv += [str(v) for v in value]
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        else:
            argv.append("none" if value is None else str(value))
    return argv


@dataclass
class Stage:
    name: str
    marker: Path                      # exists once the stage has finished
    argv: list[str]                   # what its recipe's parser reads
    run: Callable[[list[str]], object]
    inputs: tuple[str, ...] = ()      # stages whose outputs it reads


def run_stages(stages: list[Stage], state_path: Path) -> tuple[dict, dict]:
    """Run the stages in order, skipping one whose marker exists and whose arguments and input stages' finish
    stamps are those recorded in state_path (JSON, rewritten atomically after each stage). Returns the state
    and, per stage, "ran" or "skipped"."""
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    this_run = {}
    for stage in stages:
        inputs = {name: state[name]["finished"] for name in stage.inputs}
        record = state.get(stage.name)
        if stage.marker.exists() and record and record["argv"] == stage.argv and record["inputs"] == inputs:
            logger.info("stage %s: finished earlier (%.0f s), skipped", stage.name, record["seconds"])
            this_run[stage.name] = "skipped"
            continue
        logger.info("stage %s: %s", stage.name, " ".join(stage.argv))
        started = time.perf_counter()
        stage.run(stage.argv)
        gc.collect()
        state[stage.name] = {"argv": stage.argv, "inputs": inputs, "seconds": time.perf_counter() - started,
                             "finished": datetime.now(timezone.utc).isoformat()}
        write_json(state_path, state)
        this_run[stage.name] = "ran"
    return state, this_run


class Pipeline:
    def __init__(self, args: PipelineConfig):
        self.args = args
        self.out = Path(args.output_dir)
        self.refine_dir, self.judge_dir = self.out / "refine", self.out / "judge"
        self.reward_dir, self.ppo_dir = self.out / "reward_model", self.out / "ppo"
        self.eval_dir = self.out / "eval"

    @property
    def judge_model(self) -> Path:
        return self.judge_dir / "model"

    def eval_argv(self, name: str, policy: str) -> list[str]:
        a = self.args
        defaults = {"judge": str(self.judge_model), "reward_model": str(self.reward_dir), "reference": a.policy,
                    "harmful_prompts": a.eval_harmful_prompts, "benign_prompts": a.eval_benign_prompts,
                    "prompt_split": a.eval_prompt_split, "num_harmful": a.eval_num_prompts,
                    "num_benign": a.eval_num_prompts, "max_new_tokens": a.eval_max_new_tokens,
                    "batch_size": a.eval_batch_size, "do_sample": False, "seed": a.seed}
        fixed = {"policy": policy, "output_dir": str(self.eval_dir / name), "name": name, "overwrite": True}
        return as_flags({**fixed, **defaults, **a.eval_overrides, **fixed})  # the overrides cannot move the run

    def stages(self) -> list[Stage]:
        a, seed = self.args, str(self.args.seed)
        refine = ["--config", a.refine_config, *as_flags(a.refine_overrides),
                  "--output_dir", str(self.refine_dir), "--seed", seed]
        export = ["--run_dir", str(self.refine_dir), "--output_dir", str(self.reward_dir),
                  *as_flags(a.export_overrides)]
        judge = ["--config", a.judge_config, *as_flags(a.judge_overrides),
                 "--output_dir", str(self.judge_dir), "--seed", seed]
        ppo = ["--config", a.ppo_config, "--policy", a.policy, "--reward_model", str(self.reward_dir),
               "--evaluate", "false", "--evaluate_before", "false", *as_flags(a.ppo_overrides),
               "--output_dir", str(self.ppo_dir), "--seed", seed]
        return [
            Stage("refine", self.refine_dir / "summary.json", refine, run_refinement),
            Stage("export", self.reward_dir / "config.json", export, run_export, ("refine",)),
            Stage("judge", self.judge_model / "config.json", judge, run_judge),
            Stage("eval_before", self.eval_dir / "before" / "metrics.json", self.eval_argv("before", a.policy),
                  run_evaluation, ("export", "judge")),
            Stage("ppo", self.ppo_dir / "summary.json", ppo, run_ppo, ("export",)),
            Stage("eval_after", self.eval_dir / "after" / "metrics.json",
                  self.eval_argv("after", str(self.ppo_dir / "model")), run_evaluation, ("ppo", "export", "judge")),
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
        for name, record in state.items():
            rows.append({"stage": name, "seconds": record["seconds"], "this_run": this_run.get(name, "-")})
            annotation = self.refine_dir / ANNOTATION_DIR / "annotation_summary.json"
            if name == "refine" and annotation.exists():
                judged = json.loads(annotation.read_text()).get("seconds")
                if judged is not None:
                    rows.append({"stage": "  of which annotate (judging)", "seconds": judged, "this_run": ""})
        return rows

    def report(self, state: dict, this_run: dict) -> dict:
        runs = [self.eval_dir / "before", self.eval_dir / "after"]
        table = compare_runs(runs, self.out / "comparison", names=["before", "after"])
        before, after = (json.loads((d / "metrics.json").read_text()) for d in runs)
        refine, judge = (json.loads((d / "summary.json").read_text()) for d in (self.refine_dir, self.judge_dir))
        ppo = json.loads((self.ppo_dir / "summary.json").read_text())
        stage_rows = self.stage_rows(state, this_run)
        timing = "\n".join(["| stage | seconds | this run |", "|---|---|---|"]
                           + [f"| {r['stage']} | {r['seconds']:.1f} | {r['this_run']} |" for r in stage_rows])
        total = sum(record["seconds"] for record in state.values())
        summary = {
            "output_dir": str(self.out), "stages": stage_rows, "total_stage_seconds": total,
            "reward_model": {"path": str(self.reward_dir), **selected_quality(refine)},
            "annotator": annotator_quality(self.refine_dir),
            "judge": {"path": str(self.judge_model), "labels": "gold", **selected_quality(judge)},
            "ppo": {k: ppo.get(k) for k in ("steps", "train_seconds", "logged")},
            "before": {g: before[g] for g in ("harmful", "benign", "overall")},
            "after": {g: after[g] for g in ("harmful", "benign", "overall")},
        }
        write_json(self.out / "summary.json", summary)
        write_text(self.out / "report.md", self.markdown(summary, table, timing, total))
        print(f"\n{timing}\n\nstages: {total:.0f} s in all\n\n{table}\n\nreport: {self.out / 'report.md'}")
        return summary

    def markdown(self, summary: dict, table: str, timing: str, total: float) -> str:
        reward, judge, annotator, ppo = summary["reward_model"], summary["judge"], summary["annotator"], summary["ppo"]
        reward_series, kl_series = ppo["logged"].get("reward") or {}, ppo["logged"].get("kl") or {}
        lines = [
            "# Pipeline: noisy LLM labels -> refined reward -> PPO", "",
            f"Settings: `{self.out / 'pipeline_config.json'}`; each stage's own outputs are in its folder.", "",
            "## Stages", "", timing, "", f"Stages took {total:.0f} s in all (summed over the runs that made them).", "",
            "## Labels and reward", "",
            f"- annotator (round-0 labels) on the test pairs: {_quality_text(annotator)}",
            f"- reward model `{self.reward_dir}` (round {reward.get('round')}) on the test pairs: "
            f"{_quality_text(reward)}",
            f"- evaluation judge `{self.judge_model}` on the test pairs: {_quality_text(judge)}. It is trained on the "
            "corpus's GOLD labels and stands in for a human or strong-model judge; it never saw the annotator's "
            "labels, but a judge that shares the reward's backbone can share its blind spots.", "",
            "## PPO", "",
            f"{ppo['steps']} updates in {ppo['train_seconds'] or 0:.0f} s; mean score (the reward, minus the "
            f"missing-EOS penalty for replies cut at response_length) {_fmt(reward_series.get('first_half_mean'))} "
            "(first half) -> "
            f"{_fmt(reward_series.get('second_half_mean'))} (second half); KL "
            f"{_fmt(kl_series.get('first_half_mean'))} -> {_fmt(kl_series.get('second_half_mean'))}.", "",
            "## Before and after, held-out prompts", "",
            "Refusal phrases: `alignment.refusal.is_refusal`; harmless rate: the judge above; mean reward: the "
            "reward model; KL: to the starting policy.", "",
            table, "", "![before and after](comparison/comparison.png)", "",
        ]
        return "\n".join(lines)


def selected_quality(summary: dict) -> dict:
    """Test-split quality of the round a refinement run ships."""
    selected = next(r for r in summary["rounds"] if r["round"] == summary["selected_round"])
    return {"round": summary["selected_round"], **selected.get("quality", {}).get("test", {})}


def annotator_quality(run_dir: Path) -> dict:
    path = run_dir / ANNOTATION_DIR / "annotation_summary.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("quality", {}).get("test", {})


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _quality_text(quality: dict) -> str:
    return ", ".join(f"{key} {_fmt(quality[key])}" for key in ("accuracy", "f1", "auc") if key in quality) or "-"


# ---------------------------------------------------------------------------------------------- the stages


def run_refinement(argv: list[str]) -> dict:
    return refine_classifier.main(*refine_classifier.make_parser().parse_args_and_config(argv))


run_judge = run_refinement


def run_export(argv: list[str]) -> str:
    return export_reward_model.main(*export_reward_model.make_parser().parse_args_and_config(argv))


def run_ppo(argv: list[str]) -> dict:
    return safety_ppo.main(*safety_ppo.make_parser().parse_args_and_config(argv))


def run_evaluation(argv: list[str]) -> dict:
    return evaluate_policy.main(*evaluate_policy.make_parser().parse_args_and_config(argv))


def main(args: PipelineConfig) -> dict:
    return Pipeline(args).run()


def make_parser() -> TrlParser:
    return TrlParser((PipelineConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=run_log)
