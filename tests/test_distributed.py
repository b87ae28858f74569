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


def launch_two(args: list[str], recipe: str = "recipes/refine_classifier.py") -> subprocess.CompletedProcess:
    """A recipe (refine_classifier.py unless named) in two processes on this CPU-only machine (gloo).

    `--cpu --num_processes 2` would start ONE process: accelerate 1.x's launcher sends --cpu to its simple
    launcher, which forks several processes only through mpirun (`--mpirun_hostfile`). `--multi_gpu` goes
    through torchrun; without an accelerator the ranks then join a gloo group (MULTI_CPU)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               recipe, *args]
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


# ---------------------------------------------------------------------------------------------- sharded relabelling


def test_length_shards_are_disjoint_cover_every_item_and_balance_lengths():
    from refinement.io import length_shard

    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 6, 4, 10]
    shards = [length_shard(lengths, 3, rank) for rank in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(lengths)))
    assert [len(s) for s in shards] == [4, 4, 3]
    # Sorted by length (stable: position 3 before 4, both 3 long), then every third: lengths 1, 3, 6, 9.
    assert shards[0].tolist() == [1, 4, 8, 2]
    assert all(np.all(np.diff(np.asarray(lengths)[s]) >= 0) for s in shards)  # within a shard, by length
    with pytest.raises(ValueError, match="outside 0..2"):
        length_shard(lengths, 3, 3)


def test_assembled_shards_come_back_in_input_order_and_each_position_once():
    from refinement.io import assemble_shards

    parts = [(np.array([2, 0]), np.array([20.0, 0.0])), (np.array([1]), np.array([10.0]))]
    np.testing.assert_array_equal(assemble_shards(parts, 3), [0.0, 10.0, 20.0])
    with pytest.raises(ValueError, match="1 missing, 0 repeated"):
        assemble_shards(parts, 4)
    with pytest.raises(ValueError, match="0 missing, 1 repeated"):
        assemble_shards([*parts, (np.array([1]), np.array([10.0]))], 3)


@pytest.mark.slow
def test_two_processes_relabel_and_featurize_disjoint_shards_and_match_one_process(tmp_path):
    """predict_logits on an exported folder and FrozenFeaturizer in 2 processes: each text is encoded by one rank
    only, both ranks receive every logit and feature, equal to a one-process run, and only rank 0 writes the
    feature cache."""
    from transformers import AutoModelForSequenceClassification

    from refinement.features import FeatureCache, FrozenFeaturizer
    from refinement.finetune import load_tokenizer, predict_logits

    tiny = build_tiny_llama(tmp_path / "tiny")
    model_dir = tmp_path / "classifier"
    tokenizer = load_tokenizer(tiny)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    classifier.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    texts = list(dict.fromkeys(f"{r['prompt']} {r['response']}" * (1 + i % 3) for i, r in enumerate(tiny_rows())))
    texts = texts[:37]  # odd: the shards differ in size
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts))
    out = tmp_path / "ranks"
    out.mkdir()
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(free_port()), str(REPO / "tests" / "sharded_relabel_probe.py"), str(model_dir), str(texts_path),
               str(tmp_path / "cache"), str(out)]
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]

    for kind in ("scored", "encoded"):
        shards = [set(rank[kind]) for rank in ranks]
        assert len(ranks[0][kind]) + len(ranks[1][kind]) == len(texts), kind  # each text encoded once...
        assert shards[0] | shards[1] == set(texts) and abs(len(shards[0]) - len(shards[1])) <= 1, kind  # ...by one rank
    np.testing.assert_array_equal(ranks[0]["logits"], ranks[1]["logits"])
    np.testing.assert_array_equal(ranks[0]["features"], ranks[1]["features"])
    np.testing.assert_allclose(ranks[0]["logits"], predict_logits(str(model_dir), texts, batch_size=4, max_length=64),
                               rtol=0, atol=1e-5)
    one_process = FrozenFeaturizer(str(model_dir), head="linear", max_length=64, batch_size=4,
                                   cache_dir=str(tmp_path / "cache_one"))(texts)
    np.testing.assert_allclose(ranks[0]["features"], one_process, rtol=0, atol=1e-5)
    cache = FeatureCache(next((tmp_path / "cache").iterdir()))  # one key folder, written by rank 0 alone
    shards = list(cache.directory.glob("shard-*.npz"))
    assert len(shards) == 1 and len(cache.features) == len(texts)
