"""Export of a refinement run as a reward model folder, its model card, and the Hub push (dry run / fake network)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_recipe
from huggingface_hub import ModelCard
from tiny_models import build_tiny_llama
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from refinement.corpus import load_corpus
from refinement.loop import Refinement
from reward.card import base_model_id, dataset_ids, render_model_card
from reward.export import (
    ExportMismatch,
    export_reward_model,
    load_round_classifier,
    load_run,
    logit_calibration,
    pick_round,
)
from reward.hub import folder_files, push_to_hub

export_recipe = import_recipe("export_reward_model")

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)


def _config(folder) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def _round_metrics(run: str, index: int) -> dict:
    return json.loads((Path(run) / f"round_{index:02d}" / "metrics.json").read_text())


def test_export_is_a_stock_one_logit_classifier_reproducing_the_round(reward_models):
    folder = Path(reward_models.rm_other)
    summary, cfg = load_run(reward_models.run_other)
    index = summary["selected_round"]
    config = _config(folder)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert len(config["id2label"]) == 1
    assert config["id2label"] == {"0": "harmless"} and config["reward_direction"] == "higher_is_more_harmless"
    metrics = _round_metrics(reward_models.run_other, index)
    assert config["refinement_round"] == index
    assert config["decision_threshold"] == pytest.approx(metrics["threshold"])
    assert config["refinement_priors"]["theta_p"] == pytest.approx(metrics["label_priors"]["theta_p"])
    assert config["training_priors"]["prior"] == pytest.approx(metrics["priors"]["prior"])
    assert [r["round"] for r in config["refinement_history"]] == [r["round"] for r in summary["rounds"]]
    train = Refinement.read_logits(Path(reward_models.run_other) / f"round_{index:02d}")["train"]
    assert config["logit_calibration"]["mean"] == pytest.approx(train.mean())
    assert config["logit_calibration"]["std"] == pytest.approx(train.std())

    # Plain transformers, no project code: the test split's logits are the round's training-time ones.
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_labels == 1 and tokenizer.pad_token is not None
    texts = load_corpus(cfg).texts["test"][:16]
    with torch.inference_mode():
        got = model(**tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
    expected = Refinement.read_logits(Path(reward_models.run_other) / f"round_{index:02d}")["test"][:16]
    np.testing.assert_allclose(got[:, 0].numpy(), expected, atol=1e-4)
    assert config["export_check"]["max_abs_logit_diff"] <= 1e-3


def test_export_of_a_chosen_round_carries_that_rounds_head_and_fields(reward_models, tmp_path):
    summary, _ = load_run(reward_models.run_other)
    other = next(r["round"] for r in summary["rounds"] if r["round"] > 0 and r["round"] != summary["selected_round"])
    folder = export_reward_model(reward_models.run_other, tmp_path / "chosen", round=str(other), verify_items=8)
    config = _config(folder)
    assert config["refinement_round"] == other
    assert config["refinement_priors"]["theta_n"] == pytest.approx(
        _round_metrics(reward_models.run_other, other)["label_priors"]["theta_n"])
    weights = [AutoModelForSequenceClassification.from_pretrained(f).score.weight for f in
               (folder, reward_models.rm_other)]
    assert not torch.equal(*weights)


def test_pick_round_names_what_exists():
    summary = {"selected_round": 2, "rounds": [{"round": r} for r in range(4)]}
    assert (pick_round(summary, "selected"), pick_round(summary, "last"), pick_round(summary, "1")) == (2, 3, 1)
    with pytest.raises(ValueError, match=r"round 7 was not trained; trained rounds: \[1, 2, 3\]"):
        pick_round(summary, 7, "runs/x")
    with pytest.raises(ValueError, match="'best'"):
        pick_round(summary, "best")
    with pytest.raises(ValueError, match="trained no round"):
        pick_round({"selected_round": 0, "rounds": [{"round": 0}]}, "selected", "runs/x")
    # best_refined: the refined round the selection rated best, even when the run shipped round 0 (vanilla)
    scores = (0.71, 0.49, 0.55, 0.52)
    rated = {"selected_round": 0, "rounds": [{"round": r, "selection_score": v} for r, v in enumerate(scores)]}
    assert (pick_round(rated, "selected"), pick_round(rated, "best_refined")) == (0, 2)
    assert pick_round(summary, "best_refined") == 3  # nothing rated (round_selection last): the last round


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"summary\.json: missing"):
        export_reward_model(tmp_path, tmp_path / "out")
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"summary\.json: not valid JSON"):
        export_reward_model(tmp_path, tmp_path / "out")


def test_export_that_does_not_reproduce_the_logits_fails_and_writes_nothing(reward_models, tmp_path):
    run = Path(shutil.copytree(reward_models.run_other, tmp_path / "run"))
    index = load_run(run)[0]["selected_round"]
    relabels = run / f"round_{index:02d}" / "relabels.jsonl"
    rows = [json.loads(line) for line in relabels.read_text().splitlines()]
    for row in rows:
        row["logit"] += 0.5  # training-time logits the exported model cannot reproduce
    relabels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ExportMismatch, match="differ from the training-time logits by up to 0.5"):
        export_reward_model(run, tmp_path / "out", verify_items=8)
    assert not (tmp_path / "out").exists()


def test_calibration_statistics():
    stats = logit_calibration(np.array([-2.0, -1.0, 0.0, 1.0, 4.0]), threshold=0.5)
    assert (stats["mean"], stats["min"], stats["max"], stats["n"]) == (0.4, -2.0, 4.0, 5)
    assert stats["std"] == pytest.approx(np.sqrt(np.mean((np.array([-2, -1, 0, 1, 4]) - 0.4) ** 2)))
    assert stats["quantiles"]["0.5"] == 0.0 and stats["harmless_rate"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="finite"):
        logit_calibration(np.array([0.0, np.nan]), 0.0)


def test_a_peft_adapter_round_is_merged(tmp_path, reward_models):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_llama(tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, init_lora_weights=False))
    round_dir = tmp_path / "round_01"
    peft_model.save_pretrained(round_dir / "model")
    tokenizer.save_pretrained(round_dir / "model")
    _, cfg = load_run(reward_models.run_other)
    merged, merged_tokenizer = load_round_classifier(round_dir, cfg)
    assert "lora" not in " ".join(n for n, _ in merged.named_parameters())
    batch = merged_tokenizer(["human: how do i bake bread?"], return_tensors="pt")
    with torch.inference_mode():
        np.testing.assert_allclose(merged.eval()(**batch).logits.numpy(), peft_model.eval()(**batch).logits.numpy(),
                                   atol=1e-5)


# ---------------------------------------------------------------------------------------------- card


def test_card_renders_from_the_config_fields(reward_models):
    config = _config(reward_models.rm_other)
    card = ModelCard.load(Path(reward_models.rm_other) / "README.md")
    assert card.data.library_name == "transformers" and "reward-model" in card.data.tags
    assert card.data.license == config["license"]
    assert card.data.base_model is None and card.data.datasets is None  # local backbone and data have no Hub ids
    for entry in config["refinement_history"]:
        assert f"| {entry['round']}" in card.text
    assert f"{config['logit_calibration']['std']:.3f}" in card.text
    run = {**config["refinement_run"], "dataset_path": "../shared/data/annotations/beavertails_smollm2.jsonl"}
    rerendered = render_model_card({**config, "decision_threshold": 1.25, "license": "apache-2.0",
                                    "refinement_run": run, "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
                                   "x", "me/x")
    assert "g > 1.25" in rerendered.text and rerendered.data.license == "apache-2.0"
    assert rerendered.data.datasets == ["PKU-Alignment/BeaverTails"]
    assert rerendered.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert 'from_pretrained("me/x")' in rerendered.text
    with pytest.raises(ValueError, match="logit_calibration"):
        render_model_card({k: v for k, v in config.items() if k != "logit_calibration"}, "x")


def test_card_metadata_names():
    assert base_model_id("embedded:smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("meta-llama/Llama-3.2-1B-Instruct") == "meta-llama/Llama-3.2-1B-Instruct"
    assert base_model_id("/tmp") is None
    assert dataset_ids("../shared/data/hh-rlhf-harmless-base/test.jsonl.gz") == ["Anthropic/hh-rlhf"]
    assert dataset_ids("my-org/pairs") == ["my-org/pairs"] and dataset_ids("mine.jsonl") == []


# ---------------------------------------------------------------------------------------------- hub


def test_push_dry_run_lists_every_file_and_prints_the_card(reward_models, capsys):
    description = push_to_hub(reward_models.rm_other, "me/harmless-rm", dry_run=True)
    printed = capsys.readouterr().out
    assert printed.strip() == description.strip()
    for name, size in folder_files(reward_models.rm_other):
        assert f"{name}  ({size:,} bytes)" in printed
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= {
        name for name, _ in folder_files(reward_models.rm_other)}
    assert (Path(reward_models.rm_other) / "README.md").read_text() in printed
    assert "private" in printed and "https://huggingface.co/me/harmless-rm" in printed


class _FakeHub:
    """Stands in for the network layer only: records calls and what the uploaded folder held at upload time."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        files = folder_files(kwargs["folder_path"])
        self.calls.append(("upload_folder", kwargs["repo_id"], {**kwargs, "files": files}))
        return type("Commit", (), {"commit_url": "https://huggingface.co/me/rm/commit/abc"})()


def test_push_creates_the_repo_and_branch_and_uploads_the_folder(reward_models):
    hub = _FakeHub()
    push_to_hub(reward_models.rm_other, "me/rm", private=False, revision="v1", api=hub)
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][2]["private"] is False and hub.calls[1][2]["branch"] == "v1"
    upload = hub.calls[2][2]
    assert upload["revision"] == "v1" and upload["files"] == folder_files(reward_models.rm_other)


def test_push_refuses_without_repo_or_hub(reward_models, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="hub_model_id"):
        push_to_hub(reward_models.rm_other, None)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_to_hub(tmp_path, "me/rm", dry_run=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=0"):
        push_to_hub(reward_models.rm_other, "me/rm")


def test_export_recipe_yaml_cli_and_dry_run(reward_models, tmp_path, capsys):
    make_parser, main = export_recipe.make_parser, export_recipe.main
    config = tmp_path / "export.yaml"
    config.write_text(f"run_dir: {reward_models.run_other}\noutput_dir: {tmp_path / 'from_yaml'}\nverify_items: 8\n")
    (args,) = make_parser().parse_args_and_config(
        ["--config", str(config), "--output_dir", str(tmp_path / "rm"), "--round", "last", "--dry_run",
         "--hub_model_id", "me/tiny-rm"])
    folder = main(args)
    assert Path(folder) == tmp_path / "rm" and not (tmp_path / "from_yaml").exists()
    assert _config(folder)["refinement_round"] == load_run(reward_models.run_other)[0]["rounds"][-1]["round"]
    printed = capsys.readouterr().out
    assert "would push" in printed and 'from_pretrained("me/tiny-rm")' in printed
    config.write_text("run_dir: x\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        make_parser().parse_args_and_config(["--config", str(config)])
