"""An exported reward folder, loaded once with plain transformers, and the transforms of its logit.

The folder is a stock `AutoModelForSequenceClassification` (one logit g, higher = more harmless). Its config
may carry what `reward.export` writes: `decision_threshold` t (harmless iff g > t), `logit_calibration` (mean
and std of g on the training corpus), `reward_max_length` and `reward_truncation_side`. A folder without
them (e.g. a refinement run's `model/`) scores with t = 0 and no standardisation.

A text longer than max_length loses its beginning (truncation side "left"): the response being judged sits at
the end of `format_example`'s text, so long dialogue histories are cut, never the reply.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from refinement.finetune import load_tokenizer, predict_logits

TRANSFORMS = ("logit", "probability", "log_probability", "standardized")
DEFAULT_MAX_LENGTH = 512


def transform_logits(logits: np.ndarray, transform: str, threshold: float = 0.0,
                     calibration: dict | None = None) -> np.ndarray:
    """Reward values from logits g (float64).

    logit: g unchanged. probability: P(harmless) = sigmoid(g - t), so the decision threshold t sits at 0.5.
    log_probability: log sigmoid(g - t), computed stably (-softplus(t - g)). standardized: (g - mean) / std with
    the training-corpus statistics of `calibration` (the exported config's `logit_calibration`).
    """
    g = np.asarray(logits, dtype=np.float64)
    if transform == "logit":
        return g
    if transform == "probability":
        return 1.0 / (1.0 + np.exp(-(g - threshold)))
    if transform == "log_probability":
        return -np.logaddexp(0.0, threshold - g)
    if transform == "standardized":
        if not calibration or not calibration.get("std"):
            raise ValueError("transform 'standardized' needs logit_calibration with a non-zero std in the model "
                             "config; export the model with reward.export (or recipes/export_reward_model.py)")
        return (g - calibration["mean"]) / calibration["std"]
    raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")


@contextmanager
def whole_weights():
    """Models loaded inside are whole on this process even under DeepSpeed ZeRO-3. Once TrainingArguments has
    registered a ZeRO-3 config, transformers partitions every `from_pretrained` across the ranks (whatever accelerate's
    zero3_init_flag says), which suits models a DeepSpeed engine will own but not a classifier scored with plain
    forward passes, nor a model one process loads alone (partitioning would wait for the other ranks)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref  # the one private name; tests/test_safety_rl.py checks it
    config = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            hf_deepspeed.set_hf_deepspeed_config(config)


class RewardClassifier:
    """An exported folder (or any stock one-logit classifier folder) ready to score texts in batches."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None, batch_size: int = 32,
                 max_length: int | None = None, truncation_side: str | None = None):
        self.path = str(path)
        if not os.path.isfile(os.path.join(self.path, "config.json")):
            raise FileNotFoundError(f"{self.path}: no config.json; expected an exported reward model folder")
        with whole_weights():  # scored outside any DeepSpeed engine, also during ZeRO-3 RL training
            self.model = AutoModelForSequenceClassification.from_pretrained(self.path).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{self.path}: num_labels is {self.model.config.num_labels}; a reward model has one "
                             "logit (num_labels=1)")
        if device is not None:
            self.model.to(device)
        self.tokenizer = load_tokenizer(self.path)
        config = self.model.config
        self.threshold = float(getattr(config, "decision_threshold", 0.0) or 0.0)
        self.calibration = getattr(config, "logit_calibration", None)
        self.max_length = max_length or getattr(config, "reward_max_length", None) or min(
            self.tokenizer.model_max_length, DEFAULT_MAX_LENGTH)
        self.tokenizer.truncation_side = truncation_side or getattr(config, "reward_truncation_side", None) or "left"
        self.batch_size = batch_size

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """g(x) for every text, in input order (length-sorted batches under inference mode)."""
        return predict_logits(self.model, list(texts), batch_size=self.batch_size, max_length=self.max_length,
                              tokenizer=self.tokenizer)

    def rewards(self, texts: Sequence[str], transform: str = "logit") -> np.ndarray:
        return transform_logits(self.logits(texts), transform, self.threshold, self.calibration)
