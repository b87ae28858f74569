"""Best-of-n probe on the embedded default: which reward steers SmolLM2's own replies toward harmless ones?

    OMP_NUM_THREADS=1 .venv/bin/python bench/best_of_n.py   # n = 16, k = 1, 4, 16; 64 + 64 held-out prompts, 32 tokens
    OMP_NUM_THREADS=1 .venv/bin/python bench/best_of_n.py --rescore   # score the saved replies again, never sample

Models (each built once by its recipe's own main() into <out>/models, reused when present):

  refined   recipes/refine_classifier.py, recipes/configs/refine/demo_annotate_minilm.yaml: SmolLM2 12-shot labels
            refined by robust UU with 50 gold labels, its best-rated refined round exported (as the pipeline's probe
            does: the run may ship the vanilla classifier instead, and then this arm would be the vanilla one)
  vanilla   the same YAML with `--loss pn --num_rounds 1 --epoch_selection own_loss`: plain PN on the same
            judgements, epochs picked by the PN risk (vanilla RLAIF), exported
  gold      recipes/configs/refine/demo_judge_minilm.yaml: PN on the train split's GOLD labels (the positive
            control: the best reward these features and items allow), exported
  judge     recipes/configs/refine/generated_judge_smollm2.yaml: PN on hand labels of SmolLM2's own replies to
            these held-out prompts (alignment/demo_data/generated_labels.jsonl, its train categories) on frozen
            SmolLM2 features (all 30 layers): no item and no backbone shared with the rewards. The evaluation judge
            (and the probe's ceiling arm); bench/judge_validation.py scores it on the categories it never saw

Prompts: the demo's `heldout` split (80 harmful, 76 benign; actions and tasks that appear in no pair).
alignment.best_of_n samples n replies per prompt once and measures every arm; <out>/probe holds replies.jsonl,
probe.json and probe.md, and the table is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads on 2 shared cores ran generation 5x slower
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import export_reward_model  # noqa: E402
import refine_classifier  # noqa: E402

from alignment.stages import run_recipe_main  # noqa: E402

POLICY = "embedded:smollm2"
REFINE_YAML = "recipes/configs/refine/demo_annotate_minilm.yaml"


@dataclass(frozen=True)
class ModelRecipe:
    """How one model is built: a refine YAML with extra flags, exported into <out>/models/<folder> (the model's
    name unless given) under `license` (a model trained on BeaverTails inherits its CC-BY-NC-4.0)."""

    config: str
    flags: tuple[str, ...] = ()
    export_flags: tuple[str, ...] = ()
    folder: str | None = None
    license: str = "apache-2.0"


MODELS = {
    "refined": ModelRecipe(REFINE_YAML, export_flags=("--round", "best_refined")),
    "vanilla": ModelRecipe(REFINE_YAML, ("--loss", "pn", "--num_rounds", "1", "--epoch_selection", "own_loss")),
    "gold": ModelRecipe("recipes/configs/refine/demo_judge_minilm.yaml"),
    "judge": ModelRecipe("recipes/configs/refine/generated_judge_smollm2.yaml", folder="generated_judge_smollm2"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench_best_of_n")
    p.add_argument("--policy", default=POLICY)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--split", default="heldout", help="demo prompt split to probe")
    p.add_argument("--num_prompts", type=int, default=64, help="seeded sample of each prompt set (0: all)")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward_flags", default="",
                   help="refine_classifier flags for the three rewards, e.g. \"--model_name_or_path embedded:smollm2 "
                        "--feature_layer 20\" (another backbone; the judge is unchanged)")
    p.add_argument("--rescore", action="store_true",
                   help="score the replies saved in <out>/probe again (new models or judge); never sample")
    return p.parse_args(argv)


def build_models(out: Path, seed: int, recipes: dict[str, ModelRecipe] = MODELS, reward_flags: tuple[str, ...] = ()
                 ) -> tuple[dict[str, str], dict[str, float]]:
    """Each model's exported folder (built when missing) and the seconds spent building; `reward_flags` go to every
    model but the judge."""
    folders, seconds = {}, {}
    for name, recipe in recipes.items():
        if name != "judge":
            recipe = replace(recipe, flags=(*recipe.flags, *reward_flags))
        folder_name = recipe.folder or name
        run_dir, folder = out / "models" / f"{folder_name}_run", out / "models" / folder_name
        folders[name] = str(folder)
        if (folder / "config.json").exists():
            continue
        started = time.perf_counter()
        refine_classifier.main(*refine_classifier.make_parser().parse_args_and_config(
            ["--config", recipe.config, *recipe.flags, "--output_dir", str(run_dir), "--seed", str(seed)]))
        export_reward_model.main(*export_reward_model.make_parser().parse_args_and_config(
            ["--run_dir", str(run_dir), "--output_dir", str(folder), "--license", recipe.license,
             *recipe.export_flags]))
        seconds[name] = time.perf_counter() - started
    return folders, seconds


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out)
    folders, seconds = build_models(out, args.seed, reward_flags=tuple(shlex.split(args.reward_flags)))
    result = run_recipe_main("best_of_n_probe", [
        "--rewards", *(f"{name}={folders[name]}" for name in ("vanilla", "refined", "gold")),
        "--judge", folders["judge"], "--output_dir", str(out / "probe"), "--policy", args.policy,
        "--prompt_split", args.split, "--num_harmful", str(args.num_prompts or "none"),
        "--num_benign", str(args.num_prompts or "none"), "--ks", *map(str, args.ks),
        "--max_new_tokens", str(args.max_new_tokens), "--temperature", str(args.temperature),
        "--batch_size", str(args.batch_size), "--seed", str(args.seed), "--rescore", str(args.rescore).lower()])
    result["seconds"]["models"] = seconds
    result["seconds"]["wall"] = time.perf_counter() - started
    (out / "bench.json").write_text(json.dumps({"args": vars(args), "seconds": result["seconds"]}, indent=2))
    print(f"seconds: {json.dumps(result['seconds'])}")
    return result


if __name__ == "__main__":
    main()
