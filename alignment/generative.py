"""Generative self-refinement, round by round: the policy writes, judges its own replies, UU learning cleans those
judgements into a reward model, and RL on that reward makes the next policy. Resumable; every round's artifacts are
kept. The settings are recipes/generative_refinement.py's.

Stages (each recipe's own main() and parser, alignment.stages; a finished stage is skipped on a rerun):

  demonstrations  the self-judge's few-shot examples, drawn (balanced, seeded) from the val split of
                  `demonstrations_source` -> demonstrations.jsonl (no label of the round's generations is spent)
  judge           recipes/refine_classifier.py, `judge_config` -> judge/model, unless `judge_model` names one. It
                  labels every generation and evaluates the policy; it stands in for a human (say so when you report)
  eval_00         recipes/evaluate_policy.py on the starting policy -> round_00/eval
  per round t = 1..num_rounds, starting from policy_{t-1} (round 1: `policy`; then round_{t-1}/rl/model):
  generate_t      (a) `samples_per_prompt` sampled replies to each of `num_prompts` prompts (a fresh seeded draw of the
                  train split each round), split train/val/test by prompt, labelled by the judge
                  -> round_t/generations.jsonl
  labels_t        (c, labels_from: human) the labelled sample: run the printed recipes/label_sample.py command,
                  then rerun this one -> round_t/labels/sample.jsonl
  refine_t        (b) policy_{t-1} judges each reply (the refine YAML's `annotator:` block with the policy as its
                  model): round-0 pseudo-labels; (c) the priors from `num_labeled` judge labels of an i.i.d. sample
                  (labels_from: judge) or from the human's sample; (d) robust UU refinement -> round_t/refine.
                  reward: self_judgement trains PN on the raw self-judgements instead (one round, no UU).
                  When the sample finds no signal in the self-judgements (delta <= min_delta), UU cannot train:
                  the round is recorded as refused (round_t/refine_outcome.json), skips the stages below and
                  keeps its policy
  export_t        recipes/export_reward_model.py -> round_t/reward_model
  rl_t            (e) recipes/safety_ppo.py or recipes/safety_grpo.py (`rl_trainer`) against it -> round_t/rl
  eval_t          (f) recipes/evaluate_policy.py on round_t/rl/model, KL to the starting policy -> round_t/eval

Then report.md, rounds.json and rounds.png: per round, the self-judgements' and the refined labels' accuracy
against the judge, harmless rate on held-out harmful prompts and refusal rate on held-out benign prompts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from functools import partial
from pathlib import Path

import yaml

from refinement.annotation import AnnotatorConfig
from refinement.annotation.stage import demonstrations
from refinement.cli import UsageError
from refinement.data import load_rows
from refinement.io import distributed_state, write_json, write_text
from refinement.labeled_sample import output_paths, read_answers
from refinement.priors import PriorError

from .demo import demo_path
from .evaluate import SamplingConfig, load_policy
from .pipeline import evaluation_argv
from .prompts import build_rl_mix, prompt_set
from .rl_data import mix_size
from .self_refinement import (
    judge_generations,
    plot_rounds,
    prompt_splits,
    round_record,
    rounds_table,
    sample_generations,
)
from .stages import Stage, as_flags, recipe_stage, run_recipe_main, run_stages

logger = logging.getLogger(__name__)
REWARDS = ("refined", "self_judgement")
LABEL_SOURCES = ("judge", "human")
RL_RECIPES = {"ppo": "safety_ppo", "grpo": "safety_grpo", "rloo": "safety_grpo"}
OVERRIDES = ("refine_overrides", "export_overrides", "judge_overrides", "rl_overrides", "eval_overrides")
# reward: self_judgement -- PN on the round-0 labels, one round; the labeled sample is not needed by PN, so its
# delta is not checked (min_delta below any delta).
SELF_JUDGEMENT_OVERRIDES = {"loss": "pn", "num_rounds": 1, "min_delta": -2.0, "round_selection": "last"}
JUDGE_STAGE, EVALUATE_STAGE = recipe_stage("refine_classifier"), recipe_stage("evaluate_policy")


class GenerativeRefinement:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.output_dir)
        self.judge_path = args.judge_model or str(self.out / "judge" / "model")
        self.annotator = self._annotator_block()
        # Filled round by round as run() goes: the policy after each round, the round whose evaluation holds it,
        # the stage that trained it (a round whose labelled sample refuses UU keeps the policy before it).
        self.policies, self.evaluated_in, self.policy_stage = [args.policy], [0], None

    def round_dir(self, index: int) -> Path:
        return self.out / f"round_{index:02d}"

    def round_seed(self, t: int) -> int:
        return 1000 * self.args.seed + t

    def policy_of(self, index: int) -> str:
        """The policy after round ``index`` (0: the starting one); a refused round keeps the one before."""
        return self.policies[index]

    def _annotator_block(self) -> dict:
        refine_yaml = yaml.safe_load(Path(self.args.refine_config).read_text()) or {}
        block = {**(refine_yaml.get("annotator") or {}), **(self.args.refine_overrides.get("annotator") or {})}
        if not block:
            raise UsageError(f"{self.args.refine_config}: the self-judge needs an `annotator:` block")
        return dataclasses.asdict(AnnotatorConfig.from_block(block, where=f"{self.args.refine_config}: annotator"))

    @property
    def demonstrations_file(self) -> Path | None:
        return self.out / "demonstrations.jsonl" if self.annotator["num_demonstrations"] else None

    # ------------------------------------------------------------------------------------------------- stages

    @property
    def judge_input(self) -> tuple[str, ...]:
        return ("judge",) if self.args.judge_model is None else ()

    def head_stages(self) -> list[Stage]:
        a = self.args
        stages = []
        if self.demonstrations_file:
            stages.append(Stage("demonstrations", self.demonstrations_file,
                                ["--source", a.demonstrations_source, "--seed", str(self.annotator["seed"]),
                                 "--num", str(self.annotator["num_demonstrations"])], self.write_demonstrations))
        if a.judge_model is None:
            stages.append(Stage("judge", self.out / "judge" / "model" / "config.json",
                                ["--config", a.judge_config, *as_flags(a.judge_overrides),
                                 "--output_dir", str(self.out / "judge"), "--seed", str(a.seed)],
                                JUDGE_STAGE))
        return stages + [Stage("eval_00", self.round_dir(0) / "eval" / "metrics.json",
                               self.eval_argv(0, a.policy, None), EVALUATE_STAGE, self.judge_input)]

    def judging_stages(self, t: int) -> list[Stage]:
        """(a) generate, (c) the human's labels if asked, (b, d) self-judge and refine: round t up to its reward."""
        a, folder, seed = self.args, self.round_dir(t), str(self.round_seed(t))
        previous = (self.policy_stage,) if self.policy_stage else ()
        generations = folder / "generations.jsonl"
        generate = ["--policy", self.policy_of(t - 1), "--judge", self.judge_path, "--seed", seed, *as_flags({
            k: getattr(a, k) for k in ("harmful_prompts", "benign_prompts", "prompt_split", "harmful_fraction",
                                       "num_prompts", "samples_per_prompt", "max_new_tokens", "temperature",
                                       "top_p", "generation_batch_size")})]
        stages = [Stage(f"generate_{t:02d}", generations, generate, partial(self.generate, t),
                        previous + self.judge_input)]
        annotator = {**self.annotator, "model_name_or_path": a.annotator_model or self.policy_of(t - 1)}
        if self.demonstrations_file:
            annotator.update(num_demonstrations=0, demonstrations_path=str(self.demonstrations_file))
        refine_values = {**a.refine_overrides, "annotator": annotator, "num_labeled": a.num_labeled}
        if a.reward == "self_judgement":
            refine_values.update(SELF_JUDGEMENT_OVERRIDES)
        refine_inputs = (f"generate_{t:02d}",) + (("demonstrations",) if self.demonstrations_file else ())
        if a.labels_from == "human":
            labels = folder / "labels" / "sample"
            refine_values["labeled_sample_path"] = str(labels)
            stages.append(Stage(f"labels_{t:02d}", output_paths(labels)[0],
                                ["--dataset_path", str(generations), "--output_path", str(labels),
                                 "--num_items", str(a.num_labeled), "--seed", seed],
                                partial(self.check_human_labels, labels), (f"generate_{t:02d}",)))
            refine_inputs += (f"labels_{t:02d}",)
        refine = ["--config", a.refine_config, *as_flags(refine_values), "--dataset_path", str(generations),
                  "--split_column", "split", "--label_column", "label", "--output_dir", str(folder / "refine"),
                  "--seed", seed]
        return stages + [Stage(f"refine_{t:02d}", self.outcome_path(t), refine, partial(self.refine, t),
                               refine_inputs)]

    def training_stages(self, t: int) -> list[Stage]:
        """(d) export, (e) RL from the current policy, (f) evaluate the new one."""
        a, folder, seed = self.args, self.round_dir(t), str(self.round_seed(t))
        previous = (self.policy_stage,) if self.policy_stage else ()
        reward_dir, rl_dir = folder / "reward_model", folder / "rl"
        export = ["--run_dir", str(folder / "refine"), "--output_dir", str(reward_dir), *as_flags(a.export_overrides)]
        rl = ["--config", a.rl_config, "--model_name_or_path", self.policy_of(t - 1), "--reward_model", str(reward_dir),
              "--evaluate", "false", "--evaluate_before", "false", *as_flags(a.rl_overrides),
              "--output_dir", str(rl_dir), "--seed", seed]
        if a.rl_trainer != "ppo":
            rl += ["--trainer", a.rl_trainer]
        return [
            Stage(f"export_{t:02d}", reward_dir / "config.json", export, recipe_stage("export_reward_model"),
                  (f"refine_{t:02d}",)),
            Stage(f"rl_{t:02d}", rl_dir / "summary.json", rl, recipe_stage(RL_RECIPES[a.rl_trainer]),
                  (f"export_{t:02d}",) + previous),
            Stage(f"eval_{t:02d}", folder / "eval" / "metrics.json",
                  self.eval_argv(t, str(rl_dir / "model"), str(reward_dir)), EVALUATE_STAGE,
                  (f"rl_{t:02d}", f"export_{t:02d}") + self.judge_input),
        ]

    def eval_argv(self, t: int, policy: str, reward_model: str | None) -> list[str]:
        return evaluation_argv(self.args, f"round {t}", policy, self.round_dir(t) / "eval", self.judge_path,
                               reward_model)

    # ---------------------------------------------------------------------------------------- stage bodies

    def write_demonstrations(self, argv: list[str]) -> None:
        source = demo_path("pairs") if self.args.demonstrations_source == "demo" else self.args.demonstrations_source
        rows = load_rows(source, require=("prompt", "response", "label"))
        config = AnnotatorConfig.from_block({"num_demonstrations": self.annotator["num_demonstrations"],
                                             "seed": self.annotator["seed"]})
        chosen = demonstrations(config, rows, source)
        write_text(self.demonstrations_file, "".join(json.dumps(dataclasses.asdict(d)) + "\n" for d in chosen))

    def generate(self, t: int, argv: list[str]) -> None:
        a, seed = self.args, self.round_seed(t)
        harmful = prompt_set(a.harmful_prompts, True, a.prompt_split, None)
        benign = prompt_set(a.benign_prompts, False, a.prompt_split, None)
        size = min(a.num_prompts, mix_size(len(harmful), len(benign), a.harmful_fraction))
        prompts = build_rl_mix(harmful, benign, size, a.harmful_fraction, seed)
        model, tokenizer = load_policy(self.policy_of(t - 1))
        sampling = SamplingConfig(max_new_tokens=a.max_new_tokens, batch_size=a.generation_batch_size,
                                  do_sample=True, temperature=a.temperature, top_p=a.top_p, seed=seed)
        rows = sample_generations(model, tokenizer, prompts, a.samples_per_prompt, sampling)
        del model
        splits = prompt_splits(len(prompts), seed)
        for i, row in enumerate(rows):
            row["split"] = splits[i // a.samples_per_prompt]
        judge_generations(rows, self.judge_path)
        self.round_dir(t).mkdir(parents=True, exist_ok=True)
        write_text(self.round_dir(t) / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def outcome_path(self, t: int) -> Path:
        return self.round_dir(t) / "refine_outcome.json"

    def refine(self, t: int, argv: list[str]) -> None:
        """Self-judge and refine. When the labelled sample finds no signal in the self-judgements (delta not above
        min_delta), no reward can be trained: the round is recorded as refused and keeps the policy."""
        try:
            summary = run_recipe_main("refine_classifier", argv)
            outcome = {"refused": None, "selected_round": summary["selected_round"]}
        except PriorError as err:
            logger.warning("round %d: no reward trained, the policy is kept: %s", t, err)
            outcome = {"refused": str(err), "selected_round": None}
        write_json(self.outcome_path(t), outcome)

    def check_human_labels(self, labels: Path, argv: list[str]) -> None:
        """Finished once every drawn item is answered; until then, say how to label (argv: the label_sample
        flags of this round's sample) and stop."""
        jsonl, _ = output_paths(labels)
        answered = len(read_answers(jsonl)) if jsonl.is_file() else 0
        if answered < self.args.num_labeled:
            command = " ".join(["python recipes/label_sample.py --config recipes/configs/label_sample/default.yaml",
                                *argv])
            raise SystemExit(f"{jsonl}: {answered} of {self.args.num_labeled} items answered. Label this round's "
                             f"sample, then rerun this command to continue:\n  {command}")

    # ----------------------------------------------------------------------------------------------- run

    def run(self) -> dict:
        if distributed_state().num_processes > 1:
            raise SystemExit("generative refinement runs in one process: accelerate launch --cpu --num_processes 1")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "generative_config.json", {"generative_refinement": dataclasses.asdict(self.args)})
        state_path = self.out / "stages.json"
        _, this_run = run_stages(self.head_stages(), state_path)
        for t in range(1, self.args.num_rounds + 1):
            this_run.update(run_stages(self.judging_stages(t), state_path)[1])
            if json.loads(self.outcome_path(t).read_text())["refused"]:
                self.policies.append(self.policies[-1])
                self.evaluated_in.append(self.evaluated_in[-1])
                continue
            this_run.update(run_stages(self.training_stages(t), state_path)[1])
            self.policies.append(str(self.round_dir(t) / "rl" / "model"))
            self.evaluated_in.append(t)
            self.policy_stage = f"rl_{t:02d}"
        return self.report(json.loads(state_path.read_text()), this_run)

    def records(self) -> list[dict]:
        records = [round_record(0, self.round_dir(0) / "eval")]
        for t in range(1, self.args.num_rounds + 1):
            folder = self.round_dir(t)
            refused = json.loads(self.outcome_path(t).read_text())["refused"]
            records.append(round_record(t, self.round_dir(self.evaluated_in[t]) / "eval", folder / "refine",
                                        None if refused else folder / "rl", refused))
        return records

    def report(self, state: dict, this_run: dict) -> dict:
        a = self.args
        records = self.records()
        name = "robust UU reward" if a.reward == "refined" else "self-judgement reward (no UU)"
        plot_rounds({name: records}, self.out / "rounds.png")
        table = rounds_table(records)
        seconds = {stage: record["seconds"] for stage, record in state.items()}
        summary = {"output_dir": str(self.out), "reward": a.reward, "labels_from": a.labels_from,
                   "judge": self.judge_path, "rounds": records, "stage_seconds": seconds,
                   "total_stage_seconds": sum(seconds.values()), "this_run": this_run}
        write_json(self.out / "rounds.json", summary)
        labels = ("a human's labels of an i.i.d. sample (recipes/label_sample.py)" if a.labels_from == "human" else
                  f"{a.num_labeled} labels of an i.i.d. sample from the judge `{self.judge_path}`, which stands in "
                  "for a human here")
        lines = [f"# Generative self-refinement: {name}", "",
                 f"Settings: `{self.out / 'generative_config.json'}`. Starting policy `{a.policy}`; each round "
                 f"samples {a.samples_per_prompt} replies to {a.num_prompts} prompts, the round's policy judges them "
                 f"(`{self.annotator['template']}`), the priors come from {labels}, then "
                 f"{'robust UU refinement' if a.reward == 'refined' else 'PN on the raw self-judgements'} trains the "
                 f"reward and {a.rl_trainer.upper()} trains the next policy.", "",
                 "Accuracies are agreement with the judge on the round's generations (train split: the labels the "
                 "reward was trained from; test: held-out prompts). Harmless rate: the judge on held-out harmful "
                 "prompts; refusal rate: refusal phrases on held-out benign prompts; round 0 is the starting "
                 "policy.", "", table, "", "![per round](rounds.png)", "",
                 f"Stages took {summary['total_stage_seconds']:.0f} s in all (summed over the runs that made them).",
                 ""]
        write_text(self.out / "report.md", "\n".join(lines))
        print(f"\n{table}\n\nreport: {self.out / 'report.md'}")
        return summary
