"""Multi-node launches: the multi-node accelerate configs, recipes/launch.slurm under a faked SLURM allocation, and
real two-"machine" runs on localhost (two `accelerate launch --num_machines 2 --machine_rank 0/1` invocations, a
static rendezvous on 127.0.0.1, gloo) of a LoRA refinement round and of GRPO steps."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import OFFLINE_ENV, REPO, write_jsonl
from test_distributed import SIZES, free_port, tiny_rows
from test_safety_rl import GRPO_STEPS, run_args
from tiny_models import build_tiny_llama

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)

LAUNCH = REPO / "recipes" / "launch.slurm"
ACCELERATE_DIR = REPO / "recipes" / "accelerate"
MULTI_NODE = ("multi_node_ddp.yaml", "multi_node_zero3.yaml")


def fake_slurm(tmp_path: Path, hosts: list[str], **env: str) -> dict[str, str]:
    """An environment as one node of a SLURM job sees it, with a `scontrol` on PATH that expands the node list."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = \"show hostnames node[01-03]\" ] || exit 3\n"
                        + "".join(f"echo {h}\n" for h in hosts))
    scontrol.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**base, "PATH": f"{bin_dir}:{base['PATH']}", "SLURM_JOB_NODELIST": "node[01-03]",
            "SLURM_NNODES": str(len(hosts)), "SLURM_JOB_ID": "4242", **env}


def run_launch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LAUNCH), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=30, check=False)


def test_launch_script_parses():
    done = subprocess.run(["bash", "-n", str(LAUNCH)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", MULTI_NODE)
def test_multi_node_configs_match_their_one_node_twins(name):
    config = yaml.safe_load((ACCELERATE_DIR / name).read_text())
    twin = yaml.safe_load((ACCELERATE_DIR / ("zero3.yaml" if "zero3" in name else "multi_gpu.yaml")).read_text())
    assert config["num_machines"] > 1 and config["num_processes"] == 8 * config["num_machines"]
    assert config["rdzv_backend"] == "static" and config["same_network"] is True
    assert config["distributed_type"] == twin["distributed_type"]
    assert config["mixed_precision"] == twin["mixed_precision"]
    for key, value in twin.get("deepspeed_config", {}).items():
        assert config["deepspeed_config"][key] == value, key


def test_dry_run_prints_this_nodes_accelerate_command(tmp_path):
    env = fake_slurm(tmp_path, ["gpu-a", "gpu-b", "gpu-c"], SLURM_NODEID="2", SLURM_PROCID="7", DRY_RUN="1")
    done = run_launch(["recipes/accelerate/multi_node_zero3.yaml", "recipes/safety_grpo.py",
                       "--config", "my config.yaml", "--max_steps", "3"], env)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert shlex.split(lines["node 2"]) == [
        "accelerate", "launch", "--config_file", "recipes/accelerate/multi_node_zero3.yaml",
        "--num_machines", "3", "--num_processes", "24", "--machine_rank", "2",
        "--main_process_ip", "gpu-a", "--main_process_port", str(20000 + 4242),
        "recipes/safety_grpo.py", "--config", "my config.yaml", "--max_steps", "3"]
    srun = shlex.split(lines["srun"])
    assert srun[:6] == ["srun", "--nodes", "3", "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    assert srun[-6:] == ["recipes/accelerate/multi_node_zero3.yaml", "recipes/safety_grpo.py",
                         "--config", "my config.yaml", "--max_steps", "3"]


def test_node_step_runs_accelerate_with_procid_rank_and_gpus_per_node(tmp_path):
    """Inside srun the script execs the launcher itself; a stand-in `accelerate` records the argv it gets."""
    recorder = tmp_path / "accelerate"
    recorder.write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > \"$RECORD\"\n")
    recorder.chmod(0o755)
    env = fake_slurm(tmp_path, ["h0", "h1"], SLURM_PROCID="1", LAUNCH_SLURM_NODE="1", GPUS_PER_NODE="4",
                     MAIN_PROCESS_IP="h0", MAIN_PROCESS_PORT="29555", ACCELERATE=str(recorder),
                     RECORD=str(tmp_path / "argv"))
    done = run_launch(["recipes/accelerate/multi_node_ddp.yaml", "recipes/refine_classifier.py", "--seed", "1"], env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "argv").read_text().split("\n")[:-1] == [
        "launch", "--config_file", "recipes/accelerate/multi_node_ddp.yaml", "--num_machines", "2",
        "--num_processes", "8", "--machine_rank", "1", "--main_process_ip", "h0", "--main_process_port", "29555",
        "recipes/refine_classifier.py", "--seed", "1"]


@pytest.mark.parametrize("unset, message", [
    ("SLURM_NNODES", "SLURM_NNODES is not set"),
    ("SLURM_NODEID", "neither SLURM_NODEID nor SLURM_PROCID is set"),
])
def test_dry_run_outside_an_allocation_fails_with_one_line(tmp_path, unset, message):
    env = fake_slurm(tmp_path, ["h0", "h1"], SLURM_NODEID="0", DRY_RUN="1")
    env.pop(unset)
    done = run_launch(["recipes/accelerate/multi_node_ddp.yaml", "recipes/refine_classifier.py"], env)
    assert done.returncode != 0 and message in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------- two machines


def launch_two_machines(tmp_path: Path, recipe: str, args: list[str]) -> list[subprocess.CompletedProcess]:
    """RECIPE under two launchers, machine ranks 0 and 1, one process each, joined through 127.0.0.1 (gloo).

    Each launcher runs from its own empty folder with its own TMPDIR (returned empty when nothing was written
    there); the recipe runs through tests/rank_fingerprint.py, which prints what each rank ended with."""
    port = str(free_port())
    launchers = []
    for rank in (0, 1):
        home = tmp_path / f"machine{rank}"
        (home / "tmp").mkdir(parents=True)
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_machines", "2",
                   "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                   "--main_process_port", port, "--rdzv_backend", "static", "--same_network",
                   "--mixed_precision", "no", "--dynamo_backend", "no",
                   str(REPO / "tests" / "rank_fingerprint.py"), str(REPO / "recipes" / recipe), *args]
        env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
               "TMPDIR": str(home / "tmp")}
        launchers.append(subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    results = []
    for launcher in launchers:
        try:
            stdout, stderr = launcher.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in launchers:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr))
    return results


def assert_same_result_and_one_writer(tmp_path: Path, results: list[subprocess.CompletedProcess]) -> None:
    """Both launchers exit 0, each rank prints its fingerprint once, the fingerprints agree, and neither
    machine's own folder received a file from the recipe (the run folder is checked by the caller; torchrun's own
    per-launch folders under TMPDIR, torchelastic_*, are the launcher's, not the recipe's)."""
    fingerprints = []
    for rank, done in enumerate(results):
        assert done.returncode == 0, (rank, done.stdout[-2000:], done.stderr[-6000:])
        found = re.findall(r"^rank (\d) fingerprint ([0-9a-f]{64})$", done.stdout, re.MULTILINE)
        assert [r for r, _ in found] == [str(rank)], done.stdout[-2000:]
        fingerprints.append(found[0][1])
    assert fingerprints[0] == fingerprints[1]
    for rank in (0, 1):
        home = tmp_path / f"machine{rank}"
        written = [str(p) for p in home.rglob("*") if p.is_file()
                   and not any(part.startswith("torchelastic_") for part in p.relative_to(home).parts)]
        assert not written, written


@pytest.mark.slow
def test_two_machine_lora_refinement_round(tmp_path):
    tiny = build_tiny_llama(tmp_path / "tiny")
    data = write_jsonl(tmp_path / "data.jsonl", tiny_rows())
    out = tmp_path / "run"
    results = launch_two_machines(tmp_path, "refine_classifier.py", [
        "--dataset_path", str(data), "--output_dir", str(out), "--model_name_or_path", tiny, "--mode", "lora",
        "--num_rounds", "1", "--num_labeled", "0", "--per_device_train_batch_size", "8", "--num_train_epochs", "1",
        "--max_length", "64", "--lora_target_modules", "q_proj", "v_proj", "--learning_rate", "5e-3"])
    assert_same_result_and_one_writer(tmp_path, results)
    assert results[0].stdout.count("selected round") == 1 and "selected round" not in results[1].stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model", "report.md", "round_00", "round_01", "summary.json"} <= names, names
    assert not [n for n in names if n.startswith(".") or n.startswith("round_") and n not in ("round_00", "round_01")]
    relabels = [json.loads(line) for line in (out / "round_01" / "relabels.jsonl").read_text().splitlines()]
    assert [(r["split"], r["index"]) for r in relabels] == [(s, i) for s, n in SIZES.items() for i in range(n)]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]


@pytest.mark.slow
def test_two_machine_grpo_steps(reward_models, tmp_path):
    out = tmp_path / "grpo"
    results = launch_two_machines(tmp_path, "safety_grpo.py", [
        *run_args(reward_models.policy, reward_models.rm_native, out, *GRPO_STEPS), "--evaluate", "false"])
    assert_same_result_and_one_writer(tmp_path, results)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["accelerate"]["num_processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter", "config.json", "log_history.json", "model", "prompts.jsonl", "run.log", "summary.json"]
