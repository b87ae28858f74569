"""What checkpointing costs a shipped RL YAML: the GRPO or PPO CPU run as shipped (save_strategy steps), timed per
save.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/rl_checkpoint_cost.py --reward_model <exported folder>
    ... bench/rl_checkpoint_cost.py --trainer ppo --reward_model <exported folder>

Runs recipes/safety_grpo.py (or safety_ppo.py) on its CPU YAML (without the closing evaluation) and prints, per
checkpoint, the seconds from the end of its step to the end of its save (the trainer logs, then writes the
checkpoint, then calls on_save), the checkpoint's size and files, and the run's training seconds, so the saves'
share of the run is plain.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignment.rl import RLRun  # noqa: E402
from alignment.stages import run_recipe_main  # noqa: E402


class SaveTimer(TrainerCallback):
    """Seconds from each step's end to its checkpoint's on_save."""

    def __init__(self):
        self.step_end, self.saves = None, []

    def on_step_end(self, args, state, control, **kwargs):
        self.step_end = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.step_end
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"  # before a later save rotates it out
        files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
        self.saves.append({"step": state.global_step, "seconds": seconds, "bytes": sum(files.values()),
                           "files": files})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", choices=("grpo", "ppo"), default="grpo")
    parser.add_argument("--config", default=None, help="default: recipes/configs/<trainer>/cpu_smollm2.yaml")
    parser.add_argument("--reward_model", default="runs/pipeline/reward_model")
    parser.add_argument("--output_dir", default=None, help="default: runs/bench_rl_checkpoint_cost_<trainer>")
    args, recipe_flags = parser.parse_known_args()  # any other flag goes to the recipe
    args.output_dir = args.output_dir or f"runs/bench_rl_checkpoint_cost_{args.trainer}"
    if Path(args.output_dir).exists():  # its checkpoints would be resumed, not written
        raise SystemExit(f"{args.output_dir} exists: remove it or pass another --output_dir")
    timer = SaveTimer()
    callbacks = RLRun.callbacks
    RLRun.callbacks = lambda run: [*callbacks(run), timer]
    config = args.config or str(REPO / "recipes" / "configs" / args.trainer / "cpu_smollm2.yaml")
    summary = run_recipe_main(f"safety_{args.trainer}", ["--config", config, "--reward_model", args.reward_model,
                                                         "--output_dir", args.output_dir, "--evaluate", "false",
                                                         *recipe_flags])
    result = {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "saves": timer.saves,
              "save_seconds": sum(s["seconds"] for s in timer.saves)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
