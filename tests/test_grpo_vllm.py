"""The GRPO/RLOO recipe's vLLM switch: the 8xA100 YAML builds the trainer config with vLLM generation, flags
override it, and where vLLM (or a GPU) is missing the recipe stops in one line naming the switch, before it loads
anything or writes a file."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import REPO, import_recipe

grpo = import_recipe("safety_grpo")
PAPER = str(REPO / "recipes" / "configs" / "grpo" / "paper_8xa100.yaml")
CPU = ["--use_cpu", "true"]  # the paper file asks for bf16, which TrainingArguments checks against the device
VLLM_USABLE = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.parametrize("trainer", ["grpo", "rloo"])
def test_paper_yaml_builds_a_vllm_colocate_config(trainer):
    _, training_args, _ = grpo.parse_args(["--config", PAPER, "--trainer", trainer, *CPU])
    assert training_args.use_vllm is True and training_args.vllm_mode == "colocate"
    assert training_args.vllm_gpu_memory_utilization == 0.3 and training_args.vllm_tensor_parallel_size == 1
    assert (training_args.vllm_server_host, training_args.vllm_server_port) == ("127.0.0.1", 8000)


def test_flags_switch_to_server_mode_or_turn_vllm_off():
    _, server, _ = grpo.parse_args(["--config", PAPER, *CPU, "--vllm_mode", "server", "--vllm_server_host", "10.0.0.7",
                                 "--vllm_server_port", "8123", "--vllm_tensor_parallel_size", "2"])
    assert (server.vllm_mode, server.vllm_server_host, server.vllm_server_port) == ("server", "10.0.0.7", 8123)
    assert server.vllm_tensor_parallel_size == 2
    _, off, _ = grpo.parse_args(["--config", PAPER, *CPU, "--use_vllm", "false"])
    assert off.use_vllm is False
    grpo.check_vllm(off)  # nothing to check: model.generate


@pytest.mark.skipif(VLLM_USABLE, reason="this machine can run vLLM; bench/gpu_smoke.sh runs that path")
@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_missing_vllm_stops_before_loading_with_the_switch_named(tmp_path, mode):
    out = tmp_path / "run"
    script_args, training_args, model_args = grpo.parse_args(["--config", PAPER, *CPU, "--vllm_mode", mode,
                                                  "--output_dir", str(out), "--reward_model", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as stopped:
        grpo.main(script_args, training_args, model_args)
    message = str(stopped.value)
    assert "\n" not in message and f"use_vllm: true (vllm_mode {mode}) needs" in message
    assert "set use_vllm: false (flag --use_vllm false)" in message
    assert ("the vllm package" in message) is (importlib.util.find_spec("vllm") is None)
    assert ("a CUDA GPU" in message) is (not torch.cuda.is_available())
    assert not out.exists()


def test_an_unknown_vllm_mode_is_named_with_the_choices():
    _, training_args, _ = grpo.parse_args(["--config", PAPER, *CPU, "--vllm_mode", "remote"])
    with pytest.raises(SystemExit, match="vllm_mode 'remote': choose one of colocate, server"):
        grpo.check_vllm(training_args)
