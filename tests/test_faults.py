"""A real `kill -9` in the middle of a long stage, then the same command again: the outputs equal those of a run that
was never interrupted, and no finished file is half-written. (The refinement loop's own kill test is in
tests/test_loop.py.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, make_rows, write_jsonl
from tiny_models import JUDGE_TOKENS, build_tiny_llama

ANNOTATE_YAML = REPO / "recipes" / "configs" / "annotate" / "cpu_smollm2.yaml"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_annotation_killed_mid_run_resumes_to_the_same_labels(tmp_path):
    judge = build_tiny_llama(tmp_path / "judge", extra_tokens=JUDGE_TOKENS)
    data = write_jsonl(tmp_path / "pairs.jsonl", make_rows({"train": 400, "val": 60, "test": 140}))

    def command(out: Path) -> list[str]:
        return [sys.executable, "recipes/annotate.py", "--config", str(ANNOTATE_YAML), "--dataset_path", str(data),
                "--output_dir", str(out), "--model_name_or_path", judge, "--dtype", "float32", "--batch_size", "4",
                "--num_demonstrations", "0", "--max_prompt_tokens", "16", "--max_response_tokens", "32"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cache = killed / "judgements.jsonl"
    deadline = time.monotonic() + 240
    while not (cache.exists() and len(cache.read_text().splitlines()) >= 128):  # the first chunk is on disk
        if proc.poll() is not None:
            pytest.fail(f"the annotation exited ({proc.returncode}) before its first chunk: {proc.stderr.read()!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no chunk was written in time")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "annotated.jsonl").exists(), "the annotation finished before it could be killed"
    judged_before = len(cache.read_text().splitlines())
    assert judged_before < 600

    resumed = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = subprocess.run(command(clean), cwd=REPO, env=env, capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    summary = json.loads((killed / "annotation_summary.json").read_text())
    assert summary["from_cache"] >= 128  # the kill lost at most the chunk in flight
    columns = ("prompt", "response", "annotator_score", "pseudo_label")
    assert [{k: r[k] for k in columns} for r in read_jsonl(killed / "annotated.jsonl")] == \
        [{k: r[k] for k in columns} for r in read_jsonl(clean / "annotated.jsonl")]


def kill_when(command: list[str], marker: str, env: dict) -> None:
    """Start the command, SIGKILL it as soon as its stderr shows `marker` (a progress bar's name)."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while marker.encode() not in seen:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            proc.wait()
            pytest.fail(f"exited ({proc.returncode}) before {marker!r}: {seen[-2000:]!r}")
        seen += chunk
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_an_evaluation_killed_while_generating_keeps_the_finished_one_and_reruns_to_it(tmp_path):
    policy = build_tiny_llama(tmp_path / "policy")
    out = tmp_path / "eval"
    command = [sys.executable, "recipes/evaluate_policy.py", "--config",
               str(REPO / "recipes" / "configs" / "evaluate" / "cpu_smollm2.yaml"), "--policy", policy,
               "--judge", "none", "--reference", "none", "--output_dir", str(out), "--overwrite", "true",
               "--num_harmful", "24", "--num_benign", "24", "--max_new_tokens", "48", "--batch_size", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    before = {name: (out / name).read_bytes() for name in ("generations.jsonl", "metrics.json", "report.md")}

    kill_when(command, "generating:", env)  # a re-evaluation into the same folder, killed mid-generation
    assert {name: (out / name).read_bytes() for name in before} == before  # the finished run is intact
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("policy", "eval", "eval.log")]
    assert all(name.startswith(".eval.") for name in leftovers), leftovers  # a killed write stays a hidden temp

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "generations.jsonl").read_bytes() == before["generations.jsonl"]
    metrics, again = (json.loads(text) for text in (before["metrics.json"], (out / "metrics.json").read_bytes()))
    assert {g: again[g] for g in ("harmful", "benign", "overall")} == \
        {g: metrics[g] for g in ("harmful", "benign", "overall")}
