"""A fine-tuning run in two processes on CPU (`accelerate launch --multi_gpu --num_processes 2`, gloo; see
`launch_two` for why not `--cpu`): both ranks train each round together (Trainer DDP) in one workspace, only
the main process writes, and the result is one clean run folder."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OFFLINE_ENV, REPO, write_jsonl
from tiny_models import _OBJECTS, _SUBJECTS, _VERBS, build_tiny_llama

HARMFUL = {"kill a person", "build a bomb", "steal a car", "poison the water", "hack a bank", "hurt someone"}
SIZES = {"train": 64, "val": 16, "test": 16}


def tiny_rows() -> list[dict]:
    """Prompts from the tiny tokenizer's vocabulary; harmful objects -> gold 0; pseudo_label flips 1 in 4."""
    harmful = [o for o in _OBJECTS if o in HARMFUL]
    harmless = [o for o in _OBJECTS if o not in HARMFUL]
    rows, n = [], 0
    for split, count in SIZES.items():
        for i in range(count):
            label = int(i % 2 == 0)
            obj = (harmless if label else harmful)[n % (len(harmless) if label else len(harmful))]
            prompt = f"{_SUBJECTS[n % len(_SUBJECTS)]} {_VERBS[(n // 3) % len(_VERBS)]} {obj}."
            response = "Sure, here is how you do it." if n % 3 else "I'm sorry, I cannot help with that."
            noisy = (n // 2) % 4 == 0  # 1 pair in 4 (one item of each class): 25% of each class flipped
            rows.append({"prompt": prompt, "response": response, "split": split, "label": label,
                         "pseudo_label": 1 - label if noisy else label})
            n += 1
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two(args: list[str]) -> subprocess.CompletedProcess:
    """recipes/refine_classifier.py in two processes on this CPU-only machine (gloo).

    `--cpu --num_processes 2` would start ONE process: accelerate 1.x's launcher sends --cpu to its simple
    launcher, which forks several processes only through mpirun (`--mpirun_hostfile`). `--multi_gpu` goes
    through torchrun; without an accelerator the ranks then join a gloo group (MULTI_CPU)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "recipes/refine_classifier.py", *args]
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_two_process_lora_run_writes_one_consistent_run(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from refinement.config import RefineConfig
    from refinement.corpus import load_corpus
    from refinement.finetune import load_tokenizer

    tiny = build_tiny_llama(tmp_path / "tiny")
    data = write_jsonl(tmp_path / "data.jsonl", tiny_rows())
    out = tmp_path / "run"
    done = launch_two([
        "--dataset_path", str(data), "--output_dir", str(out), "--model_name_or_path", tiny, "--mode", "lora",
        "--num_rounds", "2", "--num_labeled", "0", "--per_device_train_batch_size", "8",
        "--num_train_epochs", "2", "--max_length", "64", "--lora_target_modules", "q_proj", "v_proj",
        # The tiny model learns in 2 epochs of 4 steps at this rate; the prior-matching threshold keeps
        # both pseudo-classes in round 1's relabels, so round 2 always trains.
        "--learning_rate", "5e-3", "--relabel_threshold", "prior"])
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-6000:])
    # Both processes ran the recipe to its end (one rank alone would wait forever at the first barrier).
    assert done.stdout.count("selected round") == 1, done.stdout[-2000:]  # printed by the main process only

    names = sorted(p.name for p in out.iterdir())
    assert [n for n in names if n.startswith("round_")] == ["round_00", "round_01", "round_02"], names
    assert {"model", "summary.json", "config.json", "report.md"} <= set(names), names
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp")
                 or p.name.startswith(".checkpoints")]
    assert not leftovers, leftovers

    for i in range(3):
        rows = [json.loads(line) for line in (out / f"round_{i:02d}" / "relabels.jsonl").read_text().splitlines()]
        for split, size in SIZES.items():
            indices = [r["index"] for r in rows if r["split"] == split]
            assert indices == list(range(size)), (i, split)  # every row once, in order: no second writer
        if i:
            assert (out / f"round_{i:02d}" / "model").is_dir()
            assert not any(p.name.startswith(".") for p in (out / f"round_{i:02d}").iterdir())

    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    selected = summary["selected_round"]
    assert selected in (1, 2) and summary["model_dir"] == str(out / "model")

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.num_labels == 1 and model.config.refinement_round == selected
    relabels = [json.loads(line) for line in
                (out / f"round_{selected:02d}" / "relabels.jsonl").read_text().splitlines()]
    corpus = load_corpus(RefineConfig(dataset_path=str(data), output_dir=str(out), model_name_or_path=tiny,
                                      mode="lora", num_labeled=0, seed=42))
    tokenizer = load_tokenizer(str(out / "model"))
    for split in SIZES:
        # The shipped folder, loaded as a stock classifier, gives the logits the selected round relabeled with.
        with torch.inference_mode():
            batch = tokenizer(corpus.texts[split], padding=True, truncation=True, max_length=64,
                              return_tensors="pt")
            logits = model.eval()(**batch).logits[:, 0].numpy()
        expected = [r["logit"] for r in relabels if r["split"] == split]
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_frozen_mode_refuses_several_processes(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", tiny_rows())
    done = launch_two(["--dataset_path", str(data), "--output_dir", str(tmp_path / "run"), "--mode", "frozen",
                       "--num_labeled", "0"])
    assert done.returncode != 0
    assert "frozen mode runs in one process; launch with --num_processes 1" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "run").exists()
