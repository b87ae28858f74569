"""Tests for refinement/finetune.py on a tiny random Llama and a synthetic, separable harmfulness task.

Texts "<subject> <verb> <object>" are harmful (label 0) iff the object is a harmful act; 25% of the training
and validation pseudo-labels are flipped, so pi = 0.5, theta_p = 0.75, theta_n = 0.25 exactly.
"""
from __future__ import annotations

import os

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_name, "1")

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_llama
from transformers import AutoModelForSequenceClassification

from refinement.finetune import (
    FinetuneConfig,
    StratifiedSampler,
    UURiskTrainer,
    export_classifier,
    fit,
    predict_logits,
    stratified_order,
    train_finetuned,
)
from refinement.losses import MissingPseudoClassError, risk_for

HARMFUL = ["kill a person", "build a bomb", "steal a car", "poison the water", "hack a bank", "hurt someone"]
BENIGN = ["bake bread", "paint a fence", "help a friend", "water the garden", "read a book", "learn python"]
SUBJECTS = ["i", "you", "we", "they", "my friend", "the user", "someone", "a neighbour"]
VERBS = ["want to", "need to", "plan to", "would like to", "ask how to", "wonder how to"]
NOISE = 0.25
RISK = risk_for("robust_uu", prior=0.5, theta_p=1 - NOISE, theta_n=NOISE)


def synthetic(n: int, seed: int, noise: float = NOISE) -> tuple[list[str], list[int], list[int]]:
    """(texts, true labels, pseudo-labels): balanced classes, exactly `noise` of the pseudo-labels flipped."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    texts = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(BENIGN if y else HARMFUL)}"
             for y in labels]
    flipped = set(rng.sample(range(n), int(noise * n)))
    return texts, labels, [1 - y if i in flipped else y for i, y in enumerate(labels)]


TRAIN = synthetic(256, seed=1)
VAL = synthetic(64, seed=2)
TEST = synthetic(128, seed=3, noise=0.0)


def config(mode: str, **overrides) -> FinetuneConfig:
    """Small, fast settings: a random tiny backbone needs a larger learning rate than the paper's 1e-4."""
    settings = {"mode": mode, "learning_rate": 3e-3 if mode != "full" else 1e-3, "num_train_epochs": 3,
                "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64, "max_length": 32,
                "logging_steps": 8}
    return FinetuneConfig(**{**settings, **overrides})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and 2 threads on a busy 2-core box slowed fits 20x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


# ------------------------------------------------------------------------------------ stratified_order


@pytest.mark.parametrize("n_pos,n_neg,batch_size", [
    (40, 60, 16),   # ordinary split, last batch of 4
    (5, 315, 16),   # 5 minority items for 20 batches: reused
    (300, 5, 16),   # minority is the positive class
    (33, 32, 16),   # 65 items: a last batch of 1 would be impossible
    (1, 1, 2),
])
def test_stratified_order_puts_both_classes_in_every_batch(n_pos, n_neg, batch_size):
    labels = [1] * n_pos + [0] * n_neg
    random.Random(0).shuffle(labels)
    order = stratified_order(labels, batch_size, seed=7)
    batches = chunks(order, batch_size)
    assert all({labels[i] for i in batch} == {0, 1} for batch in batches)
    assert set(order) == set(range(len(labels)))  # every item is used
    counts = Counter(order)
    majority = 1 if n_pos > n_neg else 0
    assert all(counts[i] == 1 for i in range(len(labels)) if labels[i] == majority)  # majority: exactly once
    assert len(batches) == -(-len(order) // batch_size) and all(len(b) == batch_size for b in batches[:-1])
    share = n_pos / (n_pos + n_neg)
    for batch in batches[:-1]:  # proportions: at most one reserved item plus rounding away from the share
        assert abs(sum(labels[i] for i in batch) - share * batch_size) <= 2


def test_stratified_order_is_seeded():
    labels = [1] * 30 + [0] * 70
    assert stratified_order(labels, 16, seed=3) == stratified_order(labels, 16, seed=3)
    assert stratified_order(labels, 16, seed=3) != stratified_order(labels, 16, seed=4)
    sampler = StratifiedSampler(labels, 16, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and len(sampler) == len(first)


def test_stratified_order_refuses_a_single_class():
    with pytest.raises(MissingPseudoClassError):
        stratified_order([1] * 10, 4, seed=0)
    with pytest.raises(ValueError):
        stratified_order([0, 1, 0, 1], 1, seed=0)


# ------------------------------------------------------------------------------------ training modes


def assert_stock_classifier(path: str) -> torch.nn.Module:
    """The folder is a plain one-logit classifier: no adapter files, no quantization, fp32 weights."""
    files = set(os.listdir(path))
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert not any(name.startswith("adapter_") for name in files)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert getattr(model.config, "quantization_config", None) is None
    assert not any("4bit" in type(module).__name__ for module in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    return model


@pytest.mark.parametrize("mode", ["lora", "qlora", "full"])
def test_mode_trains_with_uu_risk_and_exports_a_stock_classifier(mode, tiny_llama, tmp_path):
    trainer = fit(tiny_llama, TRAIN[0], TRAIN[2], VAL[0], VAL[2], RISK, config(mode), str(tmp_path / "ckpt"))
    assert isinstance(trainer, UURiskTrainer) and trainer.risk is RISK
    assert all(set(batch["labels"].tolist()) == {0, 1} for batch in trainer.get_train_dataloader())
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(np.isfinite(losses))

    tokenizer = trainer.processing_class
    in_memory = predict_logits(trainer.model, TEST[0], tokenizer=tokenizer)
    accuracy = np.mean((in_memory > 0) == np.array(TEST[1]))
    assert accuracy > 0.6, f"{mode}: accuracy {accuracy:.3f} on the true labels"

    path = export_classifier(trainer.model, tokenizer, str(tmp_path / "out" / "model"))
    assert_stock_classifier(path)
    exported = predict_logits(path, TEST[0])
    difference = float(np.abs(exported - in_memory).max())
    print(f"{mode}: accuracy {accuracy:.3f}, max |exported - in-memory logit| = {difference:.2e}")
    if mode == "qlora":  # fp32 dequantized export vs the NF4 model run with bf16 compute: close, not equal
        assert difference < 0.05
        assert np.mean(np.sign(exported) == np.sign(in_memory)) >= 0.95
    else:
        assert difference < 1e-4


# ------------------------------------------------------------------------------------ end to end


def test_best_epoch_by_validation_risk_is_exported(tiny_llama, tmp_path):
    """Validation pseudo-labels anti-correlated with the truth: the more the model learns, the higher the
    validation risk, so the first epoch must be the one exported, not the last."""
    val_texts, val_labels, _ = VAL
    anti = [1 - y for y in val_labels]
    path = train_finetuned(tiny_llama, TRAIN[0], TRAIN[2], val_texts, anti, RISK, config("full"),
                           str(tmp_path))
    selection = json.loads((tmp_path / "epoch_selection.json").read_text())
    risks = {int(epoch): risk for epoch, risk in selection["val_risk_per_epoch"].items()}
    assert sorted(risks) == [1, 2, 3]
    assert selection["best_epoch"] == min(risks, key=risks.get) == 1
    exported_risk = float(RISK(torch.tensor(predict_logits(path, val_texts)), torch.tensor(anti)))
    assert exported_risk == pytest.approx(risks[1], abs=1e-4)
    assert exported_risk != pytest.approx(risks[3], abs=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_selection.json", "model"]  # checkpoints gone


def test_robust_uu_beats_the_pseudo_labels(tiny_llama, tmp_path):
    path = train_finetuned(tiny_llama, TRAIN[0], TRAIN[2], VAL[0], VAL[2], RISK,
                           config("full", num_train_epochs=4), str(tmp_path))
    selection = json.loads((tmp_path / "epoch_selection.json").read_text())
    assert selection["best_val_risk"] < 0.5  # a constant scorer's robust UU risk is 0.5
    logits = predict_logits(path, TEST[0], batch_size=7)
    pseudo_accuracy = np.mean(np.array(TRAIN[1]) == np.array(TRAIN[2]))
    accuracy = np.mean((logits > 0) == np.array(TEST[1]))
    print(f"accuracy on true labels {accuracy:.3f} vs pseudo-label accuracy {pseudo_accuracy:.3f}")
    assert accuracy > pseudo_accuracy + 0.1
    one_by_one = predict_logits(path, TEST[0][:10], batch_size=1)  # padding and length sorting change nothing
    np.testing.assert_allclose(logits[:10], one_by_one, atol=1e-5)


def test_nan_loss_stops_training_with_a_clear_error(tiny_llama, tmp_path):
    def nan_risk(logits, labels):
        return RISK(logits, labels) * float("nan")

    with pytest.raises(FloatingPointError, match="at step 1"):
        train_finetuned(tiny_llama, TRAIN[0], TRAIN[2], VAL[0], VAL[2], nan_risk, config("lora"),
                        str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # no checkpoints, no half-written export


def test_inputs_without_both_pseudo_classes_are_refused(tiny_llama, tmp_path):
    with pytest.raises(MissingPseudoClassError):
        train_finetuned(tiny_llama, TRAIN[0], [1] * len(TRAIN[0]), VAL[0], VAL[2], RISK, config("lora"),
                        str(tmp_path))
