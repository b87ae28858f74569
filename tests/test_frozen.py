"""Frozen mode: the shipped folder is a stock AutoModelForSequenceClassification that reproduces the training-time
logits, and the on-disk feature cache is keyed and reused correctly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_rows, write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from refinement.data import format_example
from refinement.features import FrozenFeaturizer, text_key
from refinement.loop import run_refinement

SMALL = {"train": 60, "val": 20, "test": 20}


def relabel_logits(output_dir: Path, round_index: int) -> dict[str, np.ndarray]:
    logits: dict[str, list[float]] = {"train": [], "val": [], "test": []}
    with open(output_dir / f"round_{round_index:02d}" / "relabels.jsonl") as handle:
        for line in handle:
            row = json.loads(line)
            logits[row["split"]].append(row["logit"])
    return {k: np.asarray(v) for k, v in logits.items()}


def stock_logits(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Logits of the plain stock classifier, one text at a time (no padding at all)."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = []
    with torch.inference_mode():
        for text in texts:
            batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            out.append(float(model(**batch).logits.reshape(-1)[0]))
    return np.asarray(out)


@pytest.mark.parametrize("model, head, feature_layer", [
    ("embedded:minilm", "linear", None),
    ("embedded:minilm", "mlp", None),
    ("embedded:smollm2", "linear", 2),
])
def test_exported_model_reproduces_training_logits(tmp_path, make_config, model, head, feature_layer):
    rows = make_rows(SMALL)
    data = write_jsonl(tmp_path / "small.jsonl", rows)
    out = tmp_path / "run"
    cfg = make_config(data, out, model_name_or_path=model, head=head, feature_layer=feature_layer,
                      num_rounds=1, num_labeled=0, loss="robust_uu", min_delta=0.0, round_selection="last")
    summary = run_refinement(cfg)
    assert summary["selected_round"] == 1
    model_dir = out / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert len(config.get("id2label", {"0": "LABEL_0"})) == 1  # num_labels == 1 as saved
    assert "auto_map" not in config, "the shipped classifier must not need remote code"
    assert not list(model_dir.glob("*.py"))
    stock = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert stock.config.num_labels == 1
    if feature_layer is not None:
        assert stock.config.num_hidden_layers == feature_layer

    trained = relabel_logits(out, 1)
    test_rows = [r for r in rows if r["split"] == "test"]
    texts = [format_example(r["prompt"], r["response"]) for r in test_rows]
    shipped = stock_logits(model_dir, texts, cfg.max_length)
    np.testing.assert_allclose(shipped, trained["test"], atol=1e-4, rtol=0)
    # The head learned something (not the fresh random init): its logits vary across texts.
    assert np.std(shipped) > 1e-3


def test_feature_cache_reuse_extension_and_keying(tmp_path, noisy_rows):
    cache_dir = tmp_path / "cache"
    texts = [format_example(r["prompt"], r["response"]) for r in noisy_rows[:12]]
    first = FrozenFeaturizer("embedded:minilm", head="linear", max_length=64, cache_dir=str(cache_dir))
    features = first(texts)
    assert features.shape == (12, first.model.config.hidden_size)
    assert np.all(np.isfinite(features))
    shards = sorted(first.cache.directory.glob("shard-*.npz"))
    assert shards

    second = FrozenFeaturizer("embedded:minilm", head="linear", max_length=64, cache_dir=str(cache_dir))
    assert second.cache.directory == first.cache.directory
    keys = [text_key(t) for t in texts]
    assert second.cache.missing(keys) == []
    np.testing.assert_array_equal(second(texts), features)
    assert sorted(second.cache.directory.glob("shard-*.npz")) == shards  # nothing recomputed

    new_text = format_example("A brand new question nobody asked?", "A brand new answer.")
    assert second.cache.missing([text_key(new_text)]) == [text_key(new_text)]
    new_features = second([new_text])
    assert second.cache.missing([text_key(new_text)]) == []
    assert len(list(second.cache.directory.glob("shard-*.npz"))) == len(shards) + 1
    # The cached value is what the model computes for that text, and the old entries are untouched.
    np.testing.assert_allclose(new_features[0], second._encode([new_text])[0], atol=1e-5)
    np.testing.assert_array_equal(second(texts), features)
    third = FrozenFeaturizer("embedded:minilm", head="linear", max_length=64, cache_dir=str(cache_dir))
    assert third.cache.missing(keys + [text_key(new_text)]) == []

    other_length = FrozenFeaturizer("embedded:minilm", head="linear", max_length=32, cache_dir=str(cache_dir))
    assert other_length.cache.directory != first.cache.directory
    assert other_length.cache.missing(keys) == keys
    other_head = FrozenFeaturizer("embedded:minilm", head="mlp", max_length=64, cache_dir=str(cache_dir))
    assert other_head.cache.directory not in (first.cache.directory, other_length.cache.directory)
