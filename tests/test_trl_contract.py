"""What the toolkit relies on from TRL, checked against the pinned release (alignment/trl_api.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import version

import pytest

from alignment.trl_api import TrlParser


@dataclass
class _Args:
    alpha: int = 1
    name: str = "x"


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


# ---------------------------------------------------------------------------------------------- reward (issue 4)


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
