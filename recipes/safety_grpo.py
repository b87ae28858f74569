"""Align a chat policy with GRPO or RLOO (TRL) against the refined harmlessness reward.

    accelerate launch --cpu --num_processes 1 recipes/safety_grpo.py --config recipes/configs/grpo/cpu_smollm2.yaml
    accelerate launch --cpu --num_processes 1 recipes/safety_grpo.py --config ... --trainer rloo
    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/safety_grpo.py \\
        --config recipes/configs/grpo/paper_8xa100.yaml

`--trainer grpo|rloo` (flag or YAML key) picks the trainer and the TRL config class the other settings are parsed
with (GRPOConfig or RLOOConfig; the two share beta, num_generations, max_completion_length, temperature,
mask_truncated_completions ..., so one YAML that sets only shared keys serves both). Every field of
alignment.rl.RLScriptArguments, GRPOScriptArguments, the TRL config and TRL's ModelConfig (the policy:
`model_name_or_path`, `dtype`, LoRA as `use_peft`, `lora_r`, ...) is a flag; the YAML sets defaults, the command line
overrides them, and unknown keys fail.

Generation: `model.generate` by default; `use_vllm: true` generates with vLLM (TRL's GRPOConfig/RLOOConfig fields):
`vllm_mode: colocate` runs the engine inside each training process (`vllm_gpu_memory_utilization`,
`vllm_tensor_parallel_size`), `vllm_mode: server` sends requests to a `trl vllm-serve` process
(`vllm_server_host`, `vllm_server_port`; see the README). Without vLLM or a GPU the recipe stops at once, saying so.

Rewards, summed per completion: the exported classifier through `reward_transform` (reward.functions; with
`lagrangian`, task − λ·cost from reward.lagrangian), plus `missing_eos_penalty` (reward.task.MissingEosPenalty:
GRPOConfig and RLOOConfig have no such field, so it is one more reward function, −penalty for a completion that hit
max_completion_length). Output: see alignment/rl.py.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from refinement.cli import option, run_log, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from alignment import trl_api
from alignment.rl import RLRun, RLScriptArguments, requested_value, rl_parser
from alignment.trl_api import TrlParser
from reward.task import MissingEosPenalty

TRAINERS = {"grpo": ("GRPOConfig", "GRPOTrainer"), "rloo": ("RLOOConfig", "RLOOTrainer")}
VLLM_MODES = ("colocate", "server")  # TRL's two ways to generate with vLLM


@dataclass
class GRPOScriptArguments(RLScriptArguments):
    trainer: str = option("grpo", "grpo | rloo")
    missing_eos_penalty: float | None = option(None, "Subtracted from the reward of a completion without eos "
                                               "(PPO's missing_eos_penalty; None: no penalty).")
    CHOICES = {**RLScriptArguments.CHOICES, "trainer": tuple(TRAINERS)}


def check_vllm(training_args) -> None:
    """`use_vllm` needs vLLM and a CUDA GPU in every training process (colocate: the engine runs there; server: the
    new weights are sent to the server over NCCL). Checked before any model loads, in one line naming the switch."""
    import torch

    if not training_args.use_vllm:
        return
    if training_args.vllm_mode not in VLLM_MODES:
        raise SystemExit(f"vllm_mode {training_args.vllm_mode!r}: choose one of {', '.join(VLLM_MODES)}")
    missing = [need for need, ok in (("the vllm package (pip install vllm)", trl_api.is_vllm_available()),
                                     ("a CUDA GPU", torch.cuda.is_available())) if not ok]
    if missing:
        raise SystemExit(f"use_vllm: true (vllm_mode {training_args.vllm_mode}) needs {' and '.join(missing)}, "
                         "missing here; set use_vllm: false (flag --use_vllm false) to generate with model.generate")


def main(script_args: GRPOScriptArguments, training_args, model_args) -> dict:
    config_name, trainer_name = TRAINERS[script_args.trainer]
    if not isinstance(training_args, getattr(trl_api, config_name)):
        raise SystemExit(f"--trainer {script_args.trainer} needs a {config_name}, got {type(training_args).__name__}")
    check_vllm(training_args)
    run = RLRun.start(script_args.trainer, script_args, training_args, model_args)
    reward_funcs = [run.text_reward()]
    if script_args.missing_eos_penalty:
        reward_funcs.append(MissingEosPenalty(script_args.missing_eos_penalty, run.tokenizer))
    trainer = getattr(trl_api, trainer_name)(
        model=run.load_policy(), reward_funcs=reward_funcs, args=training_args, train_dataset=run.dataset(),
        processing_class=run.tokenizer, peft_config=run.peft_config(), callbacks=run.callbacks())
    run.train(trainer)
    return run.finish(trainer, trainer.accelerator.unwrap_model(trainer.model))


def make_parser(trainer: str = "grpo") -> TrlParser:
    return rl_parser(GRPOScriptArguments, getattr(trl_api, TRAINERS[trainer][0]))


def parse_args(argv: Sequence[str] | None = None):
    """(script arguments, GRPOConfig or RLOOConfig, ModelConfig): the trainer is read first, from the flag or the
    YAML."""
    argv = sys.argv[1:] if argv is None else list(argv)
    trainer = requested_value(argv, "trainer", "grpo")
    if trainer not in TRAINERS:
        raise SystemExit(f"--trainer {trainer}: choose one of {', '.join(TRAINERS)}")
    return make_parser(trainer).parse_args_and_config(argv)


if __name__ == "__main__":
    run_recipe(main, parse_args, log_file=run_log)
