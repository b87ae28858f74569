"""The RL recipes (recipes/safety_ppo.py, recipes/safety_grpo.py) end to end on tiny models, through their parsers.

Policy: the tiny Llama of test_reward_fixtures; rewards: its exported refined classifiers (`rm_native` shares the
policy's tokenizer, `rm_other` does not). Each run is 2 optimisation steps on CPU, a few seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, import_recipe
from safetensors.torch import load_file
from test_reward_fixtures import SAFETY_PROMPTS
from tiny_models import build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.rl import requested_value
from alignment.rl_data import mix_size
from alignment.rl_models import check_model_args, load_policy_tokenizer, lora_target_modules, policy_peft_config
from reward.task import MissingEosPenalty, non_refusal

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)

ppo = import_recipe("safety_ppo")
grpo = import_recipe("safety_grpo")

CPU = ["--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
       "--seed", "0", "--disable_tqdm", "true"]
TINY_LORA = ["--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"]
PPO_STEPS = ["--per_device_train_batch_size", "4", "--total_episodes", "8", "--num_mini_batches", "1",
             "--num_ppo_epochs", "1", "--local_rollout_forward_batch_size", "4", "--response_length", "8",
             "--stop_token", "eos", "--missing_eos_penalty", "1.0", "--kl_coef", "0.05", "--num_sample_generations",
             "0", "--learning_rate", "1e-3"]
GRPO_STEPS = ["--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
              "--max_steps", "2", "--beta", "0.04", "--learning_rate", "1e-3", "--activation_checkpointing", "false"]


def run_args(policy: str, reward: str, out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", policy, "--reward_model", reward, "--output_dir", str(out), "--max_prompts", "8",
            *CPU, *TINY_LORA, *extra]


def logged(out: Path, key: str) -> list[float]:
    """The per-step values of `key` (not the trainer's closing entry)."""
    return [e[key] for e in json.loads((out / "log_history.json").read_text()) if key in e and "train_runtime" not in e]


def changed_tensors(before: str, after: str) -> set[str]:
    old, new = load_file(Path(before) / "model.safetensors"), load_file(Path(after) / "model.safetensors")
    assert old.keys() == new.keys()
    return {name for name in old if not torch.equal(old[name], new[name])}


def test_ppo_trains_saves_a_merged_policy_and_evaluates_it(reward_models, tmp_path):
    out = tmp_path / "ppo"
    argv = run_args(reward_models.policy, reward_models.rm_native, out, *PPO_STEPS, "--reward_mode", "native",
                    "--evaluate", "true", "--evaluate_before", "true", "--eval_num_prompts", "2",
                    "--eval_max_new_tokens", "6")
    summary = ppo.main(*ppo.make_parser().parse_args_and_config(argv))
    assert summary["steps"] == 2
    assert summary["logged"]["reward"]["n"] == summary["logged"]["kl"]["n"] == 2
    assert np.isfinite([summary["logged"]["reward"]["last"], summary["logged"]["kl"]["last"]]).all()
    config = json.loads((out / "config.json").read_text())
    assert config["trainer"] == "ppo" and config["training"]["kl_coef"] == 0.05
    assert config["prompts"] == {"n": 8, "harmful": 4, "benign": 4}
    # The LoRA adapter trained (B starts at zero) and the merged folder differs from the base in those layers only.
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in adapter.items())
    changed = changed_tensors(reward_models.policy, out / "model")
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed)
    # The saved policy loads as a plain causal LM; the evaluation ran on it and on the starting policy.
    assert isinstance(AutoModelForCausalLM.from_pretrained(out / "model"), torch.nn.Module)
    after = json.loads((out / "eval" / "after" / "metrics.json").read_text())
    assert after["policy"] == str(out / "model") and after["harmful"]["n"] == after["benign"]["n"] == 2
    assert after["overall"]["mean_kl"] is not None and after["judge"] == reward_models.rm_native
    assert (out / "eval" / "comparison" / "comparison.md").is_file()
    assert summary["eval"]["after"]["overall"] == after["overall"]
    row = next(line for line in summary["eval"]["paired"].splitlines() if line.startswith("| harmless rate"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]  # metric, n, before, after, change
    assert cells[1] == "2" and cells[3].startswith(f"{after['harmful']['harmless_rate']:.3f} [")


def test_grpo_adds_the_missing_eos_penalty_and_trains_the_adapter(reward_models, tmp_path):
    out = tmp_path / "grpo"
    argv = run_args(reward_models.policy, reward_models.rm_other, out, *GRPO_STEPS, "--missing_eos_penalty", "2.0",
                    "--reward_transform", "probability")
    script_args, training_args, model_args = grpo.parse_args(argv)
    assert type(training_args).__name__ == "GRPOConfig"
    summary = grpo.main(script_args, training_args, model_args)
    assert summary["steps"] == 2
    penalty = logged(out, "rewards/missing_eos_penalty/mean")
    clipped = logged(out, "completions/clipped_ratio")
    assert len(penalty) == 2 and penalty == pytest.approx([-2.0 * c for c in clipped])
    harmless = logged(out, "rewards/harmlessness_probability/mean")
    assert all(0 < h < 1 for h in harmless)  # a probability, as the transform says
    assert logged(out, "reward") == pytest.approx([h + p for h, p in zip(harmless, penalty)], abs=1e-5)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in adapter.items())
    assert changed_tensors(reward_models.policy, out / "model")


def test_trainer_rloo_is_read_from_the_yaml_and_the_flag_wins(reward_models, tmp_path):
    out = tmp_path / "rloo"
    config = tmp_path / "rloo.yaml"
    config.write_text(yaml.safe_dump({"trainer": "rloo", "num_generations": 2}))
    argv = ["--config", str(config), *run_args(reward_models.policy, reward_models.rm_other, out, *GRPO_STEPS)]
    script_args, training_args, model_args = grpo.parse_args(argv)
    assert (script_args.trainer, type(training_args).__name__) == ("rloo", "RLOOConfig")
    assert type(grpo.parse_args([*argv, "--trainer", "grpo"])[1]).__name__ == "GRPOConfig"
    summary = grpo.main(script_args, training_args, model_args)
    assert summary["trainer"] == "rloo" and summary["steps"] == 2
    assert json.loads((out / "config.json").read_text())["trainer"] == "rloo"
    # beta 0.04: KL is measured every step (a sampled estimate of the policy's drift, so its sign can go either way)
    assert summary["logged"]["kl"]["n"] == 2 and summary["logged"]["kl"]["last"] != 0
    with pytest.raises(SystemExit, match="needs a GRPOConfig"):
        grpo.main(grpo.GRPOScriptArguments(trainer="grpo", reward_model=reward_models.rm_other), training_args,
                  model_args)


@pytest.mark.parametrize("trainer", ["ppo", "grpo"])
def test_lagrangian_switch_moves_lambda_with_the_cost(reward_models, tmp_path, trainer):
    """PPO: indicator cost with τ 0 (every reply costs 1 > limit 0), so λ rises; GRPO: margin cost with τ 0.999
    (every reply is safe, cost < 0), so λ falls."""
    out = tmp_path / trainer
    rises = trainer == "ppo"
    cost = ["--cost", "indicator", "--cost_threshold", "0.0"] if rises else [
        "--cost_threshold", "0.999", "--lagrangian_task_reward", "relevance"]  # GRPO: the encoder's task reward too
    argv = run_args(reward_models.policy, reward_models.rm_other, out, "--lagrangian", "true", *cost,
                    *(PPO_STEPS if trainer == "ppo" else GRPO_STEPS))
    recipe = ppo if trainer == "ppo" else grpo
    parsed = recipe.make_parser().parse_args_and_config(argv) if trainer == "ppo" else grpo.parse_args(argv)
    summary = recipe.main(*parsed)
    history = summary["lagrangian"]["history"]
    lambdas = [h["lambda"] for h in history]
    assert len(lambdas) == summary["steps"] == 2
    assert (lambdas[0] > 1.0 and lambdas[1] > lambdas[0]) if rises else (1.0 > lambdas[0] > lambdas[1] > 0)
    # TRL's PPO logs a step before its on_step_end (the λ its rollouts used); the Trainer-based GRPO after it.
    assert logged(out, "lagrangian/lambda") == pytest.approx([1.0, lambdas[0]] if trainer == "ppo" else lambdas)
    if trainer == "grpo":  # GRPO also logs the reward's own view: the cost of each batch
        assert all(c < 0 for c in logged(out, "lagrangian/cost"))


def test_a_missing_reward_model_is_named_with_the_export_command(reward_models, tmp_path):
    argv = run_args(reward_models.policy, str(tmp_path / "nowhere"), tmp_path / "out", *GRPO_STEPS)
    with pytest.raises(SystemExit, match="export_reward_model.py"):
        grpo.main(*grpo.parse_args(argv))


def test_settings_that_cannot_work_fail_at_parse_time():
    ppo_yaml = str(REPO / "recipes" / "configs" / "ppo" / "cpu_smollm2.yaml")
    with pytest.raises(ValueError, match="raw logit"):  # native PPO scoring cannot apply a transform
        ppo.make_parser().parse_args_and_config(["--config", ppo_yaml, "--reward_mode", "native",
                                                 "--reward_transform", "probability"])
    with pytest.raises(ValueError, match="reward_transform='sigmoid'"):
        ppo.make_parser().parse_args_and_config(["--config", ppo_yaml, "--reward_transform", "sigmoid"])
    with pytest.raises(SystemExit, match="choose one of grpo, rloo"):
        grpo.parse_args(["--trainer", "ppo"])


# ---------------------------------------------------------------------------------------------- the pieces


def test_pad_token_is_moved_off_eos(tmp_path):
    path = build_tiny_llama(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token  # as SmolLM2 and Llama 3 ship
    tokenizer.save_pretrained(path)
    loaded = load_policy_tokenizer(path)
    assert loaded.padding_side == "left"
    assert loaded.pad_token_id not in (loaded.eos_token_id, loaded.bos_token_id, None)
    prompt = loaded.apply_chat_template([{"role": "user", "content": SAFETY_PROMPTS[0]}], add_generation_prompt=True,
                                        return_dict=True)["input_ids"]
    assert loaded.pad_token_id not in prompt and loaded.eos_token_id in prompt  # PPO masks pad ids only


def test_missing_eos_penalty_follows_trls_truncation_rule():
    class Tok:
        eos_token_id, pad_token_id = 2, 0

    penalty = MissingEosPenalty(1.5, Tok())
    ids = [[5, 6, 2], [5, 6, 7], [5, 0], [9]]
    assert penalty(prompts=[""] * 4, completions=[""] * 4, completion_ids=ids) == [0.0, -1.5, 0.0, -1.5]
    with pytest.raises(ValueError):
        MissingEosPenalty(0.0, Tok())


def test_non_refusal_reads_plain_and_conversational_replies():
    replies = ["I'm sorry, but I can't help with that.", "Sure: preheat the oven."]
    assert non_refusal(prompts=["a", "b"], completions=replies) == [0.0, 1.0]
    assert non_refusal(prompts=["a", "b"], completions=[[{"role": "assistant", "content": r}] for r in replies]) \
        == [0.0, 1.0]


def test_one_plain_target_module_stays_a_module_and_a_regex_passes_through(tmp_path):
    from peft import get_peft_model

    from alignment.trl_api import ModelConfig

    assert lora_target_modules("q_proj") == ["q_proj"]  # ModelConfig's form of `--lora_target_modules q_proj`
    lora = policy_peft_config(ModelConfig(use_peft=True, lora_target_modules=["q_proj"]))
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(build_tiny_llama(tmp_path / "tiny")), lora)
    adapted_layers = {name.split(".lora_A")[0].rsplit(".", 1)[1] for name, _ in adapted.named_parameters()
                      if ".lora_A" in name}
    assert adapted_layers == {"q_proj"}
    assert lora_target_modules(".*\\.q_proj") == ".*\\.q_proj" and lora_target_modules("all-linear") == "all-linear"
    assert lora_target_modules(["q_proj", "v_proj"]) == ["q_proj", "v_proj"] and lora_target_modules(None) is None


def test_model_settings_the_recipes_cannot_honour_stop_in_one_line():
    from alignment.trl_api import ModelConfig

    check_model_args(ModelConfig(model_name_or_path="m", use_peft=True))
    for settings, expected in (({"model_name_or_path": None}, "--model_name_or_path is required"),
                               ({"use_peft": True, "lora_task_type": "SEQ_CLS"}, "lora_task_type SEQ_CLS"),
                               ({"load_in_4bit": True}, "load_in_4bit / load_in_8bit")):
        with pytest.raises(SystemExit) as stopped:
            check_model_args(ModelConfig(**{"model_name_or_path": "m", **settings}))
        assert str(stopped.value).startswith(expected) and "\n" not in str(stopped.value)


def test_mix_size_is_the_largest_the_sets_allow():
    assert mix_size(96, 92, 0.5) == 184 and mix_size(10, 100, 0.25) == 40 and mix_size(5, 7, 0.0) == 7


def test_requested_value_reads_flag_then_yaml(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer: rloo\n")
    assert requested_value(["--config", str(config)], "trainer", "grpo") == "rloo"
    assert requested_value(["--config", str(config), "--trainer=grpo"], "trainer", "x") == "grpo"
    assert requested_value(["--beta", "1"], "trainer", "grpo") == "grpo"


def test_whole_weights_lifts_zero3_partitioning_for_its_block(reward_models):
    """Under a registered ZeRO-3 config transformers would partition (and, with no process group, fail to load) the
    reward classifier; RewardClassifier loads it whole, and the config is back in force afterwards."""
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    from reward.scoring import RewardClassifier, whole_weights

    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        with whole_weights():
            assert not is_deepspeed_zero3_enabled()
        classifier = RewardClassifier(reward_models.rm_other)
        assert is_deepspeed_zero3_enabled() and config is not None
    finally:
        unset_hf_deepspeed_config()
    embeddings = classifier.model.get_input_embeddings().weight
    assert embeddings.dim() == 2 and embeddings.shape[0] == len(classifier.tokenizer)  # whole, not a shard
    assert np.isfinite(classifier.logits(["Human: hi\n\nAssistant: hello"])).all()


CPU_ZERO = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config: {{zero_stage: {stage}, gradient_accumulation_steps: 1, offload_optimizer_device: none,
                   offload_param_device: none, zero3_init_flag: false}}
mixed_precision: 'no'
num_machines: 1
num_processes: 1
machine_rank: 0
use_cpu: true
"""


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["ppo", "grpo"])
def test_recipes_run_under_deepspeed_zero3_on_cpu(reward_models, tmp_path, trainer):
    """One CPU process under `accelerate launch` with a ZeRO-3 config: the policy, PPO's value model and the adapter
    reward model in DeepSpeed engines, the reward classifier whole beside them, the saved policy gathered. (The first
    run compiles DeepSpeed's shm_comm op, ~40 s; bench/gpu_smoke.sh does the same on a GPU.)"""
    import os
    import subprocess
    import sys

    config = tmp_path / "zero3.yaml"
    config.write_text(CPU_ZERO.format(stage=3))
    out = tmp_path / "out"
    steps = PPO_STEPS if trainer == "ppo" else GRPO_STEPS
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(config),
               str(REPO / "recipes" / f"safety_{trainer}.py"),
               *run_args(reward_models.policy, reward_models.rm_other, out, *steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["accelerate"]["zero_stage"] == 3
    assert changed_tensors(reward_models.policy, out / "model")  # gathered, merged, and trained


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["ppo", "grpo"])
def test_cpu_yaml_runs_one_step_on_the_embedded_smollm2(reward_models, tmp_path, trainer):
    """The shipped CPU YAML on the real embedded policy (SmolLM2-135M-Instruct, pad moved off its eos), cut to one
    step of short replies; the reward is a tiny exported classifier (another tokenizer: PPO's adapter path)."""
    out = tmp_path / trainer
    path = str(REPO / "recipes" / "configs" / trainer / "cpu_smollm2.yaml")
    overrides = ["--config", path, "--reward_model", reward_models.rm_other, "--output_dir", str(out),
                 "--evaluate", "false", "--max_prompts", "8"]
    if trainer == "ppo":
        summary = ppo.main(*ppo.make_parser().parse_args_and_config(
            [*overrides, "--total_episodes", "4", "--response_length", "8"]))
    else:
        summary = grpo.main(*grpo.parse_args([*overrides, "--max_steps", "1", "--max_completion_length", "8",
                                              "--per_device_train_batch_size", "4", "--num_generations", "2"]))
    assert summary["steps"] == 1 and summary["logged"]["reward"]["n"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["pad_token"] == "<|endoftext|>" and config["prompts"]["n"] == 8
    assert AutoTokenizer.from_pretrained(out / "model").pad_token == "<|endoftext|>"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- the shipped YAMLs


ESSENTIAL = {  # what every RL YAML must set explicitly (the KL coefficient, reward, generation counts/lengths, EOS)
    "ppo": {"kl_coef", "reward_transform", "per_device_train_batch_size", "num_mini_batches", "total_episodes",
            "response_length", "stop_token", "missing_eos_penalty", "seed", "output_dir"},
    "grpo": {"beta", "reward_transform", "per_device_train_batch_size", "num_generations", "max_completion_length",
             "missing_eos_penalty", "mask_truncated_completions", "seed", "output_dir"},
}
POLICY_KEYS = {"model_name_or_path", "dtype", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"}
YAMLS = sorted(path for kind in ESSENTIAL for path in (REPO / "recipes" / "configs" / kind).glob("*.yaml"))


def parse_yaml(path: Path, *flags: str) -> list[tuple]:
    """Every (script, training, model) arguments a shipped RL YAML gives: PPO's, or GRPO's and RLOO's."""
    argv = ["--config", str(path), "--use_cpu", "true", *flags]  # the paper files ask for bf16, checked on the device
    if path.parent.name == "ppo":
        return [ppo.make_parser().parse_args_and_config(argv)]
    return [grpo.parse_args([*argv, "--trainer", trainer]) for trainer in ("grpo", "rloo")]  # one YAML serves both


@pytest.mark.parametrize("path", YAMLS, ids=[f"{p.parent.name}/{p.name}" for p in YAMLS])
def test_rl_yamls_parse_and_set_the_essentials(path):
    kind = path.parent.name
    raw = yaml.safe_load(path.read_text())
    required = ESSENTIAL[kind] | POLICY_KEYS
    assert required <= set(raw), f"{path} leaves {sorted(required - set(raw))} to defaults"
    for script_args, training_args, model_args in parse_yaml(path):
        if kind == "ppo":
            assert training_args.kl_coef == raw["kl_coef"] and training_args.missing_eos_penalty > 0
        else:
            assert training_args.beta == raw["beta"] and script_args.missing_eos_penalty > 0
        assert script_args.reward_model == raw["reward_model"]
        assert {key: getattr(model_args, key) for key in POLICY_KEYS} == {key: raw[key] for key in POLICY_KEYS}
        lora = policy_peft_config(model_args)
        assert (lora.r, lora.lora_alpha, lora.task_type) == (raw["lora_r"], raw["lora_alpha"], "CAUSAL_LM")
        assert lora.target_modules == set(raw["lora_target_modules"])


@pytest.mark.parametrize("path", YAMLS, ids=[f"{p.parent.name}/{p.name}" for p in YAMLS])
def test_rl_yamls_checkpoint_before_their_last_update_and_keep_few(path):
    """Every trainer resumes (GRPO/RLOO as transformers.Trainer, PPO through alignment.ppo_trainer), so every RL YAML
    saves before its last update, where a killed run would lose the most; a PPO checkpoint holds the value model and
    Adam state for it, so few are kept."""
    for _, training_args, _ in parse_yaml(path):
        if training_args.max_steps > 0:
            last = training_args.max_steps
        else:  # PPO counts updates of per_device × accumulation episodes (on one process: the most a run has)
            last = training_args.total_episodes // (training_args.per_device_train_batch_size
                                                    * training_args.gradient_accumulation_steps)
        assert training_args.save_strategy == "steps" and training_args.save_steps < last
        assert training_args.save_total_limit is not None and training_args.save_total_limit <= 2


def test_model_defaults_are_the_embedded_policy_with_lora_and_flags_override_them():
    """Without a YAML the recipes train LoRA on the embedded SmolLM2 (TRL's ModelConfig alone: no model, no LoRA)."""
    _, _, model_args = grpo.parse_args(["--use_cpu", "true"])  # TRL's configs default to bf16, checked on the device
    assert (model_args.model_name_or_path, model_args.use_peft, model_args.dtype) == ("embedded:smollm2", True,
                                                                                       "float32")
    _, _, model_args = ppo.make_parser().parse_args_and_config(["--use_cpu", "true", "--use_peft", "false",
                                                                "--model_name_or_path", "x"])
    assert (model_args.model_name_or_path, model_args.use_peft) == ("x", False)
    assert policy_peft_config(model_args) is None
    with pytest.raises(ValueError, match="lora_rr"):  # unknown keys still fail, ModelConfig's own included
        grpo.parse_args(["--use_cpu", "true", "--lora_rr", "4"])


ACCELERATE = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.mixed_precision == "bf16"
    if config.distributed_type == "DEEPSPEED":  # zero2.yaml / zero3.yaml: the stage their name says
        assert f"zero{config.deepspeed_config['zero_stage']}" in path.name
