"""Multi-node launches: the multi-node accelerate configs and recipes/launch.slurm under a faked SLURM allocation."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

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
