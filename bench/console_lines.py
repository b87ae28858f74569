"""Lines a pipeline run prints on its console, and how many of them are known library noise.

    OMP_NUM_THREADS=1 .venv/bin/python bench/console_lines.py [--keep DIR]

Runs `accelerate launch --cpu --num_processes 1 recipes/pipeline.py` from the shipped pipeline YAML with every
stage present (annotate -> refine -> export -> judge -> eval -> PPO -> eval -> report), on tiny random Llamas
(tests/tiny_models.py) and 100 pairs of the demo corpus, so it takes about a minute instead of `make pipeline`'s
six: the stages, loops and libraries are the same, only the models and sizes are small. Counts the lines of
stdout + stderr (a progress bar redrawn with carriage returns is one line) and the lines matching each noise
pattern below.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

NOISE = {
    "accelerate 'dataset had no length'": r"The used dataset had no length",
    "DeepSpeed accelerator": r"\[real_accelerator\.py|Setting ds_accelerator",
    "TRL experimental notice": r"You are importing from 'trl\.experimental'",
    "Python traceback": r"^Traceback \(most recent call last\)",
}
SUBSET = {"train": (40, 20), "val": (6, 6), "test": (8, 8)}


def setup(base: Path) -> list[str]:
    from tiny_models import JUDGE_TOKENS, build_tiny_llama

    from alignment.demo import demo_path

    rows = [json.loads(line) for line in open(demo_path("pairs"))]
    subset = []
    for split, (harmless, harmful) in SUBSET.items():
        for label, count in ((1, harmless), (0, harmful)):
            subset += [r for r in rows if r["split"] == split and r["label"] == label][:count]
    data = base / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in subset))
    policy = build_tiny_llama(base / "policy")
    annotator = build_tiny_llama(base / "annotator", extra_tokens=JUDGE_TOKENS)
    classifier = {"dataset_path": str(data), "model_name_or_path": policy, "max_length": 64, "head_epochs": 5}
    overrides = {
        "refine_overrides": {**classifier, "num_labeled": 30, "round_selection": "last", "annotator": {
            "model_name_or_path": annotator, "dtype": "float32", "batch_size": 8, "num_demonstrations": 4,
            "max_prompt_tokens": 16, "max_response_tokens": 32, "threshold_quantile": 0.5}},
        "judge_overrides": {"model_name_or_path": policy, "max_length": 64, "head_epochs": 5, "feature_layer": None},
        "ppo_overrides": {"max_prompts": 8, "per_device_train_batch_size": 4, "total_episodes": 16,
                          "local_rollout_forward_batch_size": 4, "response_length": 8,
                          "lora_target_modules": ["q_proj", "v_proj"], "lora_r": 4, "lora_alpha": 8},
    }
    return ["--config", str(REPO / "recipes/configs/pipeline/cpu_smollm2.yaml"), "--output_dir", str(base / "run"),
            "--policy", policy, "--eval_num_prompts", "4", "--eval_max_new_tokens", "8",
            *[x for k, v in overrides.items() for x in (f"--{k}", json.dumps(v))]]


def count(text: str) -> dict:
    lines = [line for line in text.split("\n") if line.strip()]
    return {"lines": len(lines),
            "noise": {name: sum(bool(re.search(p, line)) for line in lines) for name, p in NOISE.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="Write the run and its console here (default: a temporary folder).")
    args = parser.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="console_lines_"))
    base.mkdir(parents=True, exist_ok=True)
    argv = setup(base)
    env = {**os.environ, "RLAIF_UU_CACHE": str(base / "cache")}
    accelerate = Path(sys.executable).with_name("accelerate")
    start = time.perf_counter()
    done = subprocess.run([str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "recipes/pipeline.py", *argv],
                          cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    console = done.stdout + done.stderr
    (base / "console.txt").write_text(console)
    result = {"returncode": done.returncode, "seconds": round(seconds, 1), "stdout": count(done.stdout),
              "stderr": count(done.stderr), "all": count(console), "console": str(base / "console.txt")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
