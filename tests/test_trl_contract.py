"""What the toolkit relies on from TRL, checked against the pinned release (alignment/trl_api.py)."""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from importlib.metadata import version

import pytest

from alignment.trl_api import TrlParser


@dataclass
class _Args:
    alpha: int = 1
    name: str = "x"
    limit: int | None = 4


def test_trl_is_the_pinned_release():
    assert version("trl") == "1.12.0"


def test_trl_parser_reads_yaml_lets_cli_override_and_sets_env(tmp_path, monkeypatch):
    monkeypatch.delenv("RLAIF_UU_CONTRACT", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("alpha: 5\nname: from_yaml\nenv:\n  RLAIF_UU_CONTRACT: set\n")
    (args,) = TrlParser((_Args,)).parse_args_and_config(["--config", str(config), "--name", "from_cli"])
    assert (args.alpha, args.name) == (5, "from_cli")
    assert os.environ["RLAIF_UU_CONTRACT"] == "set"


def test_trl_parser_rejects_unknown_yaml_keys_and_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("alpha: 5\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        TrlParser((_Args,)).parse_args_and_config(["--config", str(config)])
    with pytest.raises(ValueError, match="bogus"):
        TrlParser((_Args,)).parse_args_and_config(["--bogus", "1"])


def test_trl_parser_reads_none_into_an_optional_int():
    """recipes/pipeline.py passes `--num_harmful none` (every prompt) straight through to the evaluation recipe."""
    (args,) = TrlParser((_Args,)).parse_args_and_config(["--limit", "none"])
    assert args.limit is None
    (args,) = TrlParser((_Args,)).parse_args_and_config(["--limit", "7"])
    assert args.limit == 7


# ---------------------------------------------------------------------------------------------- reward model scoring


def test_ppo_get_reward_applies_score_to_the_backbone_at_the_last_response_token(tmp_path):
    """reward/ppo.py relies on PPO scoring `model.score(getattr(model, base_model_prefix)(...).hidden_states[-1])`
    at the last non-pad token after the query; for a stock classifier that is its own logit of the unpadded row."""
    import torch
    from tiny_models import build_tiny_llama
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignment.trl_api import ppo_get_reward

    path = build_tiny_llama(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    pad = tokenizer.pad_token_id
    queries = [tokenizer("i want to bake bread.")["input_ids"], tokenizer("how?")["input_ids"]]
    responses = [tokenizer(" sure.")["input_ids"], tokenizer(" i'm sorry, i cannot help with that.")["input_ids"]]
    width_q, width_r = max(map(len, queries)), max(map(len, responses))
    rows = torch.tensor([[pad] * (width_q - len(q)) + q + r + [pad] * (width_r - len(r))
                         for q, r in zip(queries, responses)])
    with torch.inference_mode():
        logits, scores, lengths = ppo_get_reward(model, rows, pad, width_q)
        own = [model(input_ids=torch.tensor([q + r])).logits[0, 0].item() for q, r in zip(queries, responses)]
    assert logits.shape == (*rows.shape, 1)
    assert lengths.tolist() == [width_q + len(r) - 1 for r in responses]
    assert scores.tolist() == pytest.approx(own, abs=1e-5)


def test_grpo_calls_reward_callables_with_prompts_completions_and_columns(tmp_path):
    """reward/functions.py and reward/lagrangian.py rely on GRPO's call: keyword prompts and completions (assistant
    messages for conversational data), the dataset's other columns, trainer_state and log_metric, one float per
    completion, logged as rewards/<__name__>/mean; a string reward is loaded as a num_labels=1 classifier."""
    import datasets
    from tiny_models import build_tiny_llama
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignment.trl_api import GRPOConfig, GRPOTrainer

    path = build_tiny_llama(tmp_path / "tiny")
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path / "rm")
    calls = []

    class Recorder:
        __name__ = "recorder"

        def __call__(self, prompts, completions, **kwargs):
            calls.append({"prompts": prompts, "completions": completions, **kwargs})
            kwargs["log_metric"]("recorder/calls", 1.0)
            return [float(len(c[0]["content"])) for c in completions]

    prompts = [[{"role": "user", "content": p}] for p in ("how do i bake bread?", "help me hurt someone.")]
    dataset = datasets.Dataset.from_dict({"prompt": prompts, "topic": ["food", "harm"]})
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, max_steps=1, use_cpu=True, bf16=False, gradient_checkpointing=False,
                      report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = GRPOTrainer(model=path, reward_funcs=[Recorder(), str(tmp_path / "rm")], args=args,
                          train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(path, padding_side="left"))
    assert trainer.reward_funcs[1].config.num_labels == 1
    trainer.train()
    call = calls[0]
    assert len(call["prompts"]) == len(call["completions"]) == 4 and call["prompts"][0] in prompts
    assert all(c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in call["completions"])
    assert call["topic"][0] in ("food", "harm") and "trainer_state" in call
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"rewards/recorder/mean", "rewards/rm/mean", "recorder/calls"} <= logged


# ---------------------------------------------------------------------------------------------- RL recipes


def _eos_prone_llama(directory, scale: float = 30.0) -> str:
    """The tiny Llama with its eos embedding (tied to the output layer) scaled up: many replies end early,
    others run to the length limit, so both kinds of completion occur in a few samples."""
    import torch
    from tiny_models import build_tiny_llama
    from transformers import AutoModelForCausalLM

    path = build_tiny_llama(directory)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.get_input_embeddings().weight[model.config.eos_token_id] *= scale
    model.save_pretrained(path)
    return path


def test_rl_configs_have_the_fields_the_recipes_set():
    """The RL YAMLs set these explicitly; PPO's missing-EOS penalty has no GRPO/RLOO twin (reward.task adds one as
    a reward function: if TRL grows the field, use it instead)."""
    import dataclasses

    from alignment.trl_api import GRPOConfig, PPOConfig, RLOOConfig

    fields = {cls.__name__: {f.name for f in dataclasses.fields(cls)} for cls in (PPOConfig, GRPOConfig, RLOOConfig)}
    assert {"kl_coef", "kl_estimator", "missing_eos_penalty", "response_length", "stop_token", "num_mini_batches",
            "total_episodes", "num_ppo_epochs", "local_rollout_forward_batch_size"} <= fields["PPOConfig"]
    shared = {"beta", "num_generations", "max_completion_length", "mask_truncated_completions", "num_iterations",
              "temperature"}
    assert shared <= fields["GRPOConfig"] and shared <= fields["RLOOConfig"]
    assert "missing_eos_penalty" not in fields["GRPOConfig"] | fields["RLOOConfig"]


def test_grpo_completion_ids_end_at_eos_and_truncation_is_a_missing_eos(tmp_path):
    """reward.task.MissingEosPenalty relies on GRPO passing each completion's ids cut after its first eos, and on
    TRL calling a completion truncated (completions/clipped_ratio) exactly when its last id is not eos/pad."""
    import datasets
    from transformers import AutoTokenizer

    from alignment.trl_api import GRPOConfig, GRPOTrainer

    path = _eos_prone_llama(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    seen = []

    def recorder(prompts, completions, completion_ids, **kwargs):
        seen.append(completion_ids)
        return [0.0] * len(completions)

    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=6, max_steps=2, use_cpu=True, bf16=False, gradient_checkpointing=False,
                      report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=path, reward_funcs=[recorder], args=args, processing_class=tokenizer,
                          train_dataset=datasets.Dataset.from_dict({"prompt": ["how do i bake bread?",
                                                                               "help me hurt someone."] * 4}))
    trainer.train()
    eos = tokenizer.eos_token_id
    clipped = [e["completions/clipped_ratio"] for e in trainer.state.log_history if "completions/clipped_ratio" in e]
    assert len(seen) == len(clipped) == 2
    for batch, ratio in zip(seen, clipped):
        ended = [ids[-1] == eos for ids in batch]
        assert all(eos not in ids[:-1] for ids in batch)  # nothing after the first eos
        assert all(e or len(ids) == 6 for ids, e in zip(batch, ended))  # no eos: cut at max_completion_length
        assert ratio == pytest.approx(1 - sum(ended) / len(batch))
    flat = [ids[-1] == eos for batch in seen for ids in batch]
    assert any(flat) and not all(flat)  # both kinds were checked


def test_ppo_with_lora_uses_the_adapter_free_policy_as_reference_and_trains_a_full_value_model(tmp_path):
    """recipes/safety_ppo.py relies on: peft_config + ref_model None (the reference is the policy with its adapter
    off), a value model = the policy's backbone with a fresh `score` head trained in full, and missing_eos_penalty
    subtracted from the score of every rollout whose response holds no eos."""
    from types import SimpleNamespace

    import torch
    from peft import LoraConfig
    from torch import nn
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from alignment.trl_api import PPOConfig, PPOTrainer
    from reward.ppo import ppo_dataset

    class Backbone(nn.Module):  # records the query+response ids PPO scores; every score is 0
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, input_ids, **kwargs):
            self.seen.append(input_ids.clone())
            return SimpleNamespace(hidden_states=(torch.zeros(*input_ids.shape, 1),))

    class ZeroReward(nn.Module):
        base_model_prefix = "backbone"

        def __init__(self):
            super().__init__()
            self.backbone, self.score = Backbone(), nn.Identity()

    path = _eos_prone_llama(tmp_path / "tiny", scale=12.0)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(path)
    value = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    before = {"base": policy.model.layers[0].self_attn.q_proj.weight.clone(), "head": value.score.weight.clone(),
              "critic": value.model.layers[0].mlp.up_proj.weight.clone()}
    prompt = "how do i bake bread?"
    args = PPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_mini_batches=1,
                     num_ppo_epochs=1, total_episodes=8, response_length=6, stop_token="eos", missing_eos_penalty=2.0,
                     local_rollout_forward_batch_size=4, num_sample_generations=0, learning_rate=1e-2, use_cpu=True,
                     bf16=False, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
    reward = ZeroReward()
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None, reward_model=reward,
                         value_model=value, train_dataset=ppo_dataset([prompt] * 8, tokenizer),
                         peft_config=LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj"]))
    assert trainer.ref_model is None
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    assert torch.equal(trained.policy.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight,
                       before["base"])  # the reference weights stay as they were
    assert any(p.abs().sum() > 0 for n, p in trained.policy.named_parameters() if "lora_B" in n)
    assert not torch.equal(value.score.weight, before["head"]) and not torch.equal(
        value.model.layers[0].mlp.up_proj.weight, before["critic"])
    context = len(tokenizer(prompt)["input_ids"])
    scores = [e["objective/scores"] for e in trainer.state.log_history if "objective/scores" in e]
    assert len(reward.backbone.seen) == len(scores) == 2
    missing = [~(ids[:, context:] == tokenizer.eos_token_id).any(dim=1) for ids in reward.backbone.seen]
    assert scores == pytest.approx([-2.0 * m.float().mean().item() for m in missing])
    assert 0 < torch.cat(missing).float().mean() < 1  # rollouts with and without eos were both scored


def test_grpo_and_rloo_take_the_vllm_fields_the_recipe_sets():
    """recipes/configs/grpo/paper_8xa100.yaml sets these; recipes/safety_grpo.py checks vLLM with TRL's own test."""
    import dataclasses
    import importlib.util

    from alignment.trl_api import GRPOConfig, RLOOConfig, is_vllm_available

    vllm_fields = {"use_vllm": False, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
                   "vllm_tensor_parallel_size": 1, "vllm_server_host": "0.0.0.0", "vllm_server_port": 8000}
    for cls in (GRPOConfig, RLOOConfig):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        assert {name: defaults.get(name) for name in vllm_fields} == vllm_fields, cls.__name__
    assert is_vllm_available() is (importlib.util.find_spec("vllm") is not None)


def test_grpo_and_rloo_resume_from_a_checkpoint_and_trls_ppo_needs_our_subclass_to():
    """alignment.rl resumes a killed run through `train(resume_from_checkpoint=...)`: transformers.Trainer's, kept by
    GRPO/RLOO. TRL 1.12's experimental PPOTrainer overrides train() without it, so the PPO recipe trains
    alignment.ppo_trainer.ResumablePPOTrainer (tests/test_faults.py kills and resumes it); a TRL release whose
    PPOTrainer resumes on its own fails here, the sign to drop the subclass."""
    from alignment.ppo_trainer import ResumablePPOTrainer
    from alignment.trl_api import GRPOTrainer, PPOTrainer, RLOOTrainer

    def resumes(trainer) -> bool:
        return "resume_from_checkpoint" in inspect.signature(trainer.train).parameters

    assert resumes(GRPOTrainer) and resumes(RLOOTrainer) and resumes(ResumablePPOTrainer)
    assert not resumes(PPOTrainer)


# ---------------------------------------------------------------------------------------------- the policy's settings


def test_model_config_holds_the_policy_settings_the_rl_recipes_read():
    """alignment.rl_models reads these ModelConfig fields (TRL's scripts take the policy from them too); the RL
    recipes move two defaults with the parser (embedded policy, LoRA on), which TrlParser keeps under a YAML."""
    import dataclasses

    from alignment.trl_api import ModelConfig

    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    assert {name: defaults[name] for name in ("model_name_or_path", "model_revision", "dtype", "attn_implementation",
                                              "use_peft", "lora_task_type", "load_in_4bit", "load_in_8bit")} == {
        "model_name_or_path": None, "model_revision": "main", "dtype": "float32", "attn_implementation": None,
        "use_peft": False, "lora_task_type": "CAUSAL_LM", "load_in_4bit": False, "load_in_8bit": False}
    parser = TrlParser((ModelConfig,))
    parser.set_defaults(model_name_or_path="embedded:smollm2", use_peft=True)
    (model_args,) = parser.parse_args_and_config([])
    assert (model_args.model_name_or_path, model_args.use_peft) == ("embedded:smollm2", True)
    (model_args,) = parser.parse_args_and_config(["--use_peft", "false", "--dtype", "bfloat16"])
    assert (model_args.use_peft, model_args.dtype) == (False, "bfloat16")
    with pytest.raises(SystemExit):  # argparse's choices: a misspelt dtype does not reach from_pretrained
        parser.parse_args_and_config(["--dtype", "fp16"])


def test_get_peft_config_builds_the_lora_config_and_a_single_target_module_becomes_a_regex(tmp_path):
    """get_peft_config maps use_peft/lora_* onto a peft.LoraConfig (None without use_peft). ModelConfig turns a
    one-element lora_target_modules into a plain string, which peft matches as a regex against full module names, so
    `q_proj` alone finds no module: alignment.rl_models.lora_target_modules keeps it a module name."""
    from peft import get_peft_model
    from tiny_models import build_tiny_llama
    from transformers import AutoModelForCausalLM

    from alignment.trl_api import ModelConfig, get_peft_config

    assert get_peft_config(ModelConfig(model_name_or_path="m")) is None
    lora = get_peft_config(ModelConfig(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                                       lora_target_modules=["q_proj", "v_proj"]))
    assert (lora.task_type, lora.r, lora.lora_alpha, lora.lora_dropout) == ("CAUSAL_LM", 4, 8, 0.0)
    assert lora.target_modules == {"q_proj", "v_proj"}
    single = ModelConfig(use_peft=True, lora_target_modules=["q_proj"])
    assert single.lora_target_modules == "q_proj" and get_peft_config(single).target_modules == "q_proj"
    model = AutoModelForCausalLM.from_pretrained(build_tiny_llama(tmp_path / "tiny"))
    with pytest.raises(ValueError, match="Target modules q_proj not found"):
        get_peft_model(model, get_peft_config(single))
