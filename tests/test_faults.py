"""A real `kill -9` in the middle of a long stage, then the same command again: the outputs equal those of a run that
was never interrupted, and no finished file is half-written. (The refinement loop's own kill test is in
tests/test_loop.py.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, kill_once, make_rows, write_jsonl
from safetensors.torch import load_file
from test_distributed import launch_two
from test_safety_rl import CPU, CPU_ZERO, PPO_STEPS, TINY_LORA, logged, run_args
from tiny_models import JUDGE_TOKENS, build_tiny_llama

from alignment.rl import last_checkpoint

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)

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
    cache = killed / "judgements.jsonl"
    kill_once(command(killed), lambda: cache.exists() and len(cache.read_text().splitlines()) >= 128,
              "its first chunk", env, timeout=240)
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


def test_the_last_checkpoint_is_the_newest_one_the_trainer_finished(tmp_path):
    assert last_checkpoint(tmp_path) is None and last_checkpoint(tmp_path / "missing") is None
    for step, finished in ((2, True), (10, True), (12, False)):  # checkpoint-12: killed while saving
        (tmp_path / f"checkpoint-{step}").mkdir()
        if finished:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # 10 > 2 as numbers, not as text


@pytest.mark.slow
def test_grpo_killed_after_a_checkpoint_resumes_to_the_uninterrupted_policy(reward_models, tmp_path):
    """With the Lagrangian reward, whose λ moves every step: the resumed run goes on from the checkpoint's λ."""
    steps = 6

    def command(out: Path) -> list[str]:
        cpu = [arg if arg != "no" else "steps" for arg in CPU]  # --save_strategy steps
        return [sys.executable, "recipes/safety_grpo.py", "--model_name_or_path", reward_models.policy,
                "--reward_model", reward_models.rm_other, "--output_dir", str(out), "--max_prompts", "8", *cpu,
                *TINY_LORA, "--save_steps", "1", "--per_device_train_batch_size", "4", "--num_generations", "2",
                "--max_completion_length", "8", "--max_steps", str(steps), "--beta", "0.04", "--learning_rate",
                "1e-3", "--activation_checkpointing", "false", "--lagrangian", "true", "--lambda_lr", "0.5",
                "--lambda_window", "8"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    kill_once(command(killed), lambda: last_checkpoint(killed) is not None, "its first checkpoint", env, timeout=120)
    reached = int(Path(last_checkpoint(killed)).name.split("-")[1])
    assert reached < steps and not (killed / "adapter").exists(), "GRPO finished before it could be killed"
    prompts = (killed / "prompts.jsonl").read_bytes()
    finished_state = killed / f"checkpoint-{reached}" / "trainer_state.json"
    finished_at = finished_state.stat().st_mtime_ns

    resumed = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {killed / f'checkpoint-{reached}'}" in (killed / "run.log").read_text()
    assert finished_state.stat().st_mtime_ns == finished_at  # the steps before the kill were not trained again
    uninterrupted = subprocess.run(command(clean), cwd=REPO, env=env, capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    assert (killed / "prompts.jsonl").read_bytes() == prompts == (clean / "prompts.jsonl").read_bytes()
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["steps"] == steps
    history = summary["lagrangian"]["history"]
    assert history == json.loads((clean / "summary.json").read_text())["lagrangian"]["history"]
    assert len({entry["lambda"] for entry in history}) == steps  # λ moved at every step, across the kill too
    assert logged(killed, "reward") == logged(clean, "reward")  # every step's reward, the killed ones included
    for folder, name in (("adapter", "adapter_model.safetensors"), ("model", "model.safetensors")):
        after_kill, straight = load_file(killed / folder / name), load_file(clean / folder / name)
        assert after_kill.keys() == straight.keys()
        assert all(torch.equal(after_kill[key], straight[key]) for key in straight), folder


def test_replayed_batches_skip_what_a_checkpoint_consumed_and_restore_the_rng_where_it_was_saved():
    """A loader as PPO's: three batches an epoch, shuffled by the sampler's own seeded generator, each epoch's
    iterator drawing from the global RNG as it opens (torch's DataLoader does), and every update drawing from it
    too. Replayed from the RNG state saved after update k, the run goes on exactly as the uninterrupted one, whether
    k ends an epoch (the next epoch must open after the restore) or falls inside one (its iterator before it)."""
    from alignment.ppo_trainer import ReplayedBatches

    def loader():
        sampler = torch.utils.data.RandomSampler(range(9), generator=torch.Generator().manual_seed(0))
        return torch.utils.data.DataLoader(range(9), batch_size=3, sampler=sampler)

    def train(batches, updates: int) -> tuple[list, list]:
        def repeat():  # TRL's repeat_generator
            while True:
                yield from batches

        stream, done, saved = repeat(), [], []
        for _ in range(updates):
            done.append((next(stream).tolist(), torch.rand(1).item()))
            saved.append(torch.get_rng_state())  # what the checkpoint after this update holds
        return done, saved

    torch.manual_seed(1)
    straight, saved = train(loader(), 7)
    for consumed in (3, 4):
        torch.manual_seed(99)  # a rerun starts from another RNG state
        replay = ReplayedBatches(loader(), consumed, lambda state=saved[consumed - 1]: torch.set_rng_state(state))
        assert train(replay, 7 - consumed)[0] == straight[consumed:], consumed


def test_absolute_steps_turns_a_fraction_of_training_into_updates():
    from alignment.ppo_trainer import absolute_steps

    assert absolute_steps(0.25, 16) == 4 and absolute_steps(0.3, 16) == 5  # ceil, as TRL's train() computes it
    assert absolute_steps(8, 16) == 8 and absolute_steps(None, 16) is None


def ppo_command(policy: str, reward: str, out: Path) -> list[str]:
    """PPO on the tiny policy: 8 prompts in batches of 4 (two updates an epoch), 6 updates, a checkpoint each."""
    return [sys.executable, "recipes/safety_ppo.py", *run_args(policy, reward, out, *PPO_STEPS, "--reward_mode",
                                                                "native"),
            "--total_episodes", "24", "--save_strategy", "steps", "--save_steps", "1"]


PPO_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def same_ppo_run(killed: Path, clean: Path) -> None:
    """The final policy, every step's logged reward and KL, and the last checkpoint's value model are identical."""
    assert json.loads((killed / "summary.json").read_text())["steps"] == 6
    for key in ("objective/scores", "objective/kl", "loss/value_avg"):
        assert logged(killed, key) == logged(clean, key), key  # the steps before the kill included
    for folder, name in (("adapter", "adapter_model.safetensors"), ("model", "model.safetensors"),
                         ("checkpoint-6/value_model", "model.safetensors")):
        after_kill, straight = load_file(killed / folder / name), load_file(clean / folder / name)
        assert after_kill.keys() == straight.keys()
        assert all(torch.equal(after_kill[key], straight[key]) for key in straight), folder


@pytest.mark.slow
def test_ppo_killed_after_a_checkpoint_resumes_to_the_uninterrupted_policy(reward_models, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    command = ppo_command(reward_models.policy, reward_models.rm_native, killed)
    kill_once(command, lambda: last_checkpoint(killed) is not None, "its first checkpoint", PPO_ENV, timeout=120)
    reached = int(Path(last_checkpoint(killed)).name.split("-")[1])
    assert reached < 6 and not (killed / "adapter").exists(), "PPO finished before it could be killed"
    finished_state = killed / f"checkpoint-{reached}" / "trainer_state.json"
    finished_at = finished_state.stat().st_mtime_ns

    for argv in (command, ppo_command(reward_models.policy, reward_models.rm_native, clean)):
        done = subprocess.run(argv, cwd=REPO, env=PPO_ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert f"resuming from {killed / f'checkpoint-{reached}'}" in (killed / "run.log").read_text()
    assert finished_state.stat().st_mtime_ns == finished_at  # the updates before the kill were not trained again
    same_ppo_run(killed, clean)


@pytest.mark.slow
def test_ppo_in_two_processes_trains_and_resumes_from_any_checkpoint_to_the_same_policy(reward_models, tmp_path):
    """DDP without DeepSpeed (TRL's own PPOTrainer stops there at `self.model.policy`): 2 episodes per process and
    update, each process holding 4 of the 8 prompts (two updates an epoch); resumed from an epoch's end and from
    inside one, both processes restore their own RNG and end with the uninterrupted run's policy."""
    def run(out: Path):
        argv = [*run_args(reward_models.policy, reward_models.rm_native, out, *PPO_STEPS, "--reward_mode", "native"),
                "--total_episodes", "24", "--per_device_train_batch_size", "2", "--local_rollout_forward_batch_size",
                "2", "--save_strategy", "steps", "--save_steps", "1"]
        done = launch_two(argv, "recipes/safety_ppo.py")
        assert done.returncode == 0, done.stderr[-3000:]

    clean = tmp_path / "clean"
    run(clean)
    assert {p.name for p in (clean / "checkpoint-6").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    for step in (2, 3):
        resumed = tmp_path / f"from_{step}"
        shutil.copytree(clean / f"checkpoint-{step}", resumed / f"checkpoint-{step}")
        run(resumed)
        same_ppo_run(resumed, clean)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_ppo_under_deepspeed_checkpoints_and_resumes_to_the_same_policy(reward_models, tmp_path, stage):
    """One CPU process under a ZeRO config (the paper YAML's launcher): TRL's own PPOTrainer fails at its first
    checkpoint there; the engine's checkpoint holds policy, value model and optimizer, and a rerun from update 3 of
    6 ends as the uninterrupted run."""
    config = tmp_path / "zero.yaml"
    config.write_text(CPU_ZERO.format(stage=stage))

    def run(out: Path):
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(config),
                   "recipes/safety_ppo.py", *ppo_command(reward_models.policy, reward_models.rm_native, out)[2:]]
        done = subprocess.run(command, cwd=REPO, env={**PPO_ENV, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    run(clean)
    assert (clean / "checkpoint-3" / "global_step3").is_dir()  # DeepSpeed's own checkpoint
    shutil.copytree(clean / "checkpoint-3", resumed / "checkpoint-3")
    run(resumed)
    assert json.loads((resumed / "summary.json").read_text())["accelerate"]["zero_stage"] == stage
    for key in ("objective/scores", "objective/kl", "loss/value_avg"):
        assert logged(resumed, key) == logged(clean, key), key
    after, straight = (load_file(out / "adapter" / "adapter_model.safetensors") for out in (resumed, clean))
    assert after.keys() == straight.keys() and all(torch.equal(after[k], straight[k]) for k in straight)

