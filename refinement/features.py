"""Frozen-backbone features, computed by the stock sequence classifier itself and cached on disk.

A frozen-mode classifier must ship as a stock `AutoModelForSequenceClassification` whose logits equal the
training-time logits. So the features are not a pooling of our own: they are exactly what the stock model feeds
its head. `linear` head: the input of the final 1-logit Linear (BERT: the pooler output; Llama: the final-norm
state of the last non-pad token). `mlp` head (BERT-like models with a pooler): the [CLS] state, and the trained
two-layer tanh MLP becomes the pooler's dense layer plus the classifier. We get the features by swapping those
modules for Identity for the duration of one forward pass.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .embedded import cache_root, resolve_model
from .io import distributed_state, map_by_length

HEADS = ("linear", "mlp")


def load_stock_classifier(model_name_or_path: str, feature_layer: int | None = None, seed: int = 0):
    """The stock one-logit classifier and its tokenizer, optionally truncated to its first `feature_layer`
    layers (a truncated decoder is still a stock model: its config just says fewer layers).

    New heads are initialised under a fixed seed, so a cache key built from the weights is stable."""
    path = resolve_model(model_name_or_path)
    config = AutoConfig.from_pretrained(path, num_labels=1)
    if feature_layer is not None:
        if not 0 < feature_layer <= config.num_hidden_layers:
            raise ValueError(f"feature_layer={feature_layer} must be in 1..{config.num_hidden_layers} for {path}")
        config.num_hidden_layers = feature_layer
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:feature_layer]
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=torch.float32)
    return model.eval(), tokenizer


def final_linear_name(model: nn.Module) -> str:
    """Name of the last Linear with one output: the score/classifier layer of any stock 1-logit model."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if not names:
        raise ValueError(f"{type(model).__name__} has no 1-output Linear head (was it loaded with num_labels=1?)")
    return names[-1]


def head_module_names(model: nn.Module, head: str) -> list[str]:
    """The modules a head replaces: the final Linear, plus the pooler's dense+activation for `mlp`."""
    if head == "linear":
        return [final_linear_name(model)]
    if head == "mlp":
        pooler = next((n for n, m in model.named_modules() if n.endswith("pooler") and hasattr(m, "dense")), None)
        if pooler is None:
            raise ValueError(f"head='mlp' needs a BERT-like pooler (dense + activation) that the stock "
                             f"{type(model).__name__} runs before its classifier; use head='linear'")
        return [f"{pooler}.dense", f"{pooler}.activation", final_linear_name(model)]
    raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")


@contextlib.contextmanager
def swapped_for_identity(model: nn.Module, names: list[str]):
    originals = {name: model.get_submodule(name) for name in names}
    try:
        for name in names:
            model.set_submodule(name, nn.Identity())
        yield model
    finally:
        for name, module in originals.items():
            model.set_submodule(name, module)


def weights_fingerprint(model: nn.Module) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class FeatureCache:
    """Features of one (model weights, head, max_length) on disk, one .npz shard per batch of new texts.

    Shards are written to a temp file and renamed, so a killed run leaves only complete shards behind."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.features: dict[str, np.ndarray] = {}
        for shard in sorted(self.directory.glob("shard-*.npz")):
            with np.load(shard) as data:
                self.features.update(zip(data["keys"].tolist(), data["features"]))

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.features]

    def add(self, keys: list[str], features: np.ndarray, write: bool = True) -> None:
        """Hold the features; with `write`, also save them as a new shard (write=False: another process does)."""
        if write:
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=np.array(keys), features=features.astype(np.float32))
            os.replace(tmp, self.directory
                       / f"shard-{len(list(self.directory.glob('shard-*.npz'))):06d}-{keys[0][:8]}.npz")
        self.features.update(zip(keys, features.astype(np.float32)))

    def get(self, keys: list[str]) -> np.ndarray:
        return np.stack([self.features[k] for k in keys])


class FrozenFeaturizer:
    """Computes (and caches) the head-input features of a frozen stock classifier.

    Under a multi-process launch the processes share the work: every process must call it with the same texts
    and a `cache_dir` they all see (each reads it to know what is missing); each encodes its share of the
    missing texts, all receive every feature, and the main process alone writes the cache."""

    def __init__(self, model_name_or_path: str, head: str = "linear", max_length: int = 256,
                 feature_layer: int | None = None, batch_size: int = 32, cache_dir: str | None = None):
        self.model, self.tokenizer = load_stock_classifier(model_name_or_path, feature_layer)
        self.head, self.max_length, self.batch_size = head, max_length, batch_size
        self.swapped = head_module_names(self.model, head)
        key = hashlib.sha1(f"{weights_fingerprint(self.model)}|{head}|{max_length}".encode()).hexdigest()[:20]
        base = Path(cache_dir) if cache_dir else cache_root() / "features"
        self.cache = FeatureCache(base / key)

    @property
    def head_has_bias(self) -> bool:
        return self.model.get_submodule(self.swapped[-1]).bias is not None

    @property
    def feature_dim(self) -> int:
        return self.model.get_submodule(self.swapped[0]).in_features

    def _encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode(), swapped_for_identity(self.model, self.swapped):
            return self.model(**batch).logits.float().numpy()

    def _encode_positions(self, texts: list[str], positions: np.ndarray) -> np.ndarray:
        """Features of texts[positions], in batches of consecutive positions."""
        batches = [self._encode([texts[i] for i in positions[start:start + self.batch_size]])
                   for start in range(0, len(positions), self.batch_size)]
        return np.concatenate(batches) if batches else np.empty((0, self.feature_dim), dtype=np.float32)

    def __call__(self, texts: list[str], desc: str = "features") -> np.ndarray:
        keys = [text_key(t) for t in texts]
        todo = self.cache.missing(keys)
        if todo:
            text_of = dict(zip(keys, texts))
            # Length-sorted chunks, each encoded in length-sorted batches: far less padding than input order.
            todo.sort(key=lambda k: len(text_of[k]))
            state = distributed_state()
            chunk = self.batch_size * 16 * state.num_processes  # a cache shard per 16 batches of each process
            for start in tqdm(range(0, len(todo), chunk), desc=desc, unit="shard",
                              disable=not state.is_main_process):
                part = todo[start:start + chunk]
                part_texts = [text_of[k] for k in part]
                feats = map_by_length(functools.partial(self._encode_positions, part_texts),
                                      [len(t) for t in part_texts])
                self.cache.add(part, feats, write=state.is_main_process)
        return self.cache.get(keys)
