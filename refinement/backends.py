"""How one round's classifier is trained, how it relabels the corpus, and how it is exported.

`FrozenBackend`: cached features of a frozen stock classifier + a small head (the fast CPU default).
`FinetuneBackend`: lora / qlora / full fine-tuning through a transformers.Trainer subclass.
Both ship the classifier as a stock AutoModelForSequenceClassification folder."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import cleanlab_baseline
from . import relabel as relabel_lib
from .config import RefineConfig
from .corpus import SPLITS, Corpus
from .embedded import resolve_model
from .features import FrozenFeaturizer
from .heads import HeadTrainingConfig, build_head, head_logits, load_head_into, train_head
from .io import atomic_dir, distributed_state, wait_for_everyone

HEAD_FILE = "head.safetensors"


class FrozenBackend:
    def __init__(self, cfg: RefineConfig, corpus: Corpus):
        self.cfg = cfg
        start = time.perf_counter()
        self.featurizer = FrozenFeaturizer(cfg.model_name_or_path, head=cfg.head, max_length=cfg.max_length,
                                           feature_layer=cfg.feature_layer, batch_size=cfg.feature_batch_size,
                                           cache_dir=cfg.feature_cache_dir)
        self.features = {s: self.featurizer(corpus.texts[s], desc=f"features/{s}") for s in SPLITS}
        self.feature_seconds = time.perf_counter() - start

    def _head_config(self, seed: int) -> HeadTrainingConfig:
        c = self.cfg
        return HeadTrainingConfig(head=c.head, epochs=c.head_epochs, batch_size=c.head_batch_size,
                                  learning_rate=c.head_learning_rate, weight_decay=c.head_weight_decay, seed=seed)

    def fit(self, train_idx, pseudo, risk, val_risk, seed):
        """A head fitted on the training items `train_idx` of the pseudo-labels, its epoch chosen by `val_risk`."""
        return train_head(self.features["train"][train_idx], pseudo["train"][train_idx], self.features["val"],
                          pseudo["val"], risk, val_risk, self._head_config(seed), self.featurizer.head_has_bias)

    def train(self, round_dir: Path, pseudo: dict, risk, val_risk, seed: int,
              init_from: Path | None = None) -> tuple[dict, dict]:
        """Trains the head (cleanlab: on the items confident learning keeps), saves it, returns logits. With
        relabel_crossfit_folds the training split's logits are out-of-fold: no item is scored by a head that
        trained on it. A head is small and always starts afresh (`init_from` is for fine-tuned backbones)."""
        train_idx = np.arange(len(pseudo["train"]))
        info = {}
        if self.cfg.loss == "cleanlab":
            def fit_predict(fold_train, held_out, fold):
                head, _ = self.fit(fold_train, pseudo, risk, val_risk, seed + 1000 * (fold + 1))
                return head_logits(head, self.features["train"][held_out])
            probs = cleanlab_baseline.cross_validated_probabilities(
                self.features["train"], pseudo["train"], self.cfg.cleanlab_folds, seed, fit_predict)
            train_idx = np.flatnonzero(cleanlab_baseline.keep_mask(pseudo["train"], probs))
            info["cleanlab_dropped"] = int(len(pseudo["train"]) - len(train_idx))
        head, history = self.fit(train_idx, pseudo, risk, val_risk, seed)
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(round_dir / HEAD_FILE))
        info["epochs"] = history
        info["selected_epoch"] = min(history, key=lambda h: h["val_risk"])["epoch"]
        logits = {s: head_logits(head, self.features[s]) for s in SPLITS}
        if self.cfg.relabel_crossfit_folds:
            logits["train"] = self.out_of_fold_train_logits(pseudo, self.cfg.relabel_crossfit_folds, risk, val_risk,
                                                            seed)
        return logits, info

    def out_of_fold_train_logits(self, pseudo, folds: int, risk, val_risk, seed: int) -> np.ndarray:
        """Each training item's logit from a head fitted on the other `folds` - 1 folds: no item is scored by a head
        that trained on it."""
        def fit_predict(fold_train, held_out):
            head, _ = self.fit(fold_train, pseudo, risk, val_risk, seed)
            return head_logits(head, self.features["train"][held_out])
        return relabel_lib.out_of_fold_logits(relabel_lib.crossfit_folds(pseudo["train"], folds, seed), fit_predict)

    def export(self, round_dir: Path, target: Path) -> Path:
        head = build_head(self.cfg.head, self.features["train"].shape[1], self.featurizer.head_has_bias)
        head.load_state_dict(load_file(str(round_dir / HEAD_FILE)))
        model = load_head_into(self.featurizer.model, head, self.featurizer.swapped)
        with atomic_dir(target, replace=True) as tmp:
            model.save_pretrained(tmp)
            self.featurizer.tokenizer.save_pretrained(tmp)
        return target


class FinetuneBackend:
    MODEL_DIR = "model"

    def __init__(self, cfg: RefineConfig, corpus: Corpus):
        from .finetune import FinetuneConfig

        self.cfg, self.corpus, self.feature_seconds = cfg, corpus, 0.0
        self.finetune_config = FinetuneConfig(**{
            name: getattr(cfg, name) for name in FinetuneConfig.__dataclass_fields__ if hasattr(cfg, name)})

    def _fit(self, start: str, train_idx: np.ndarray, pseudo: dict, risk, val_risk, seed: int, folder: Path) -> Path:
        """Fine-tunes `start` on the training items `train_idx`; writes folder/model (stock) and
        folder/epoch_selection.json and returns the model folder."""
        from dataclasses import replace

        from .finetune import train_finetuned

        train_texts = self.corpus.texts["train"]
        train_finetuned(start, [train_texts[i] for i in train_idx], pseudo["train"][train_idx].tolist(),
                        self.corpus.texts["val"], pseudo["val"].tolist(), risk,
                        replace(self.finetune_config, seed=seed), str(folder), val_risk=val_risk)
        return folder / self.MODEL_DIR

    def _logits(self, model_dir: Path, texts: list[str]) -> np.ndarray:
        from .finetune import predict_logits

        return predict_logits(str(model_dir), texts, batch_size=self.cfg.per_device_eval_batch_size,
                              max_length=self.cfg.max_length)

    def train(self, round_dir: Path, pseudo: dict, risk, val_risk, seed: int,
              init_from: Path | None = None) -> tuple[dict, dict]:
        """Fine-tunes the base model afresh, or the model of the round folder `init_from` when given. With
        relabel_crossfit_folds K the training split's logits come from K more fine-tunes, each on the other
        folds: a fine-tuned model largely memorizes its own training labels, so its in-sample logits would hand
        the next round nearly the labels it was given."""
        start = str(init_from / self.MODEL_DIR) if init_from else resolve_model(self.cfg.model_name_or_path)
        model_dir = self._fit(start, np.arange(len(pseudo["train"])), pseudo, risk, val_risk, seed, round_dir)
        # Relabel with the shipped folder itself, so relabels and the exported model agree by construction.
        logits = {s: self._logits(model_dir, self.corpus.texts[s]) for s in SPLITS}
        if self.cfg.relabel_crossfit_folds:
            logits["train"] = self._out_of_fold_logits(start, pseudo, risk, val_risk, seed, round_dir)
        selection = json.loads((round_dir / "epoch_selection.json").read_text())
        return logits, {"selected_epoch": selection["best_epoch"], "epochs": selection["val_risk_per_epoch"]}

    def _out_of_fold_logits(self, start: str, pseudo: dict, risk, val_risk, seed: int, round_dir: Path
                            ) -> np.ndarray:
        """Each training item's logit from a model fine-tuned without it (its fold's model is deleted once it
        has scored its held-out items; the folder name is the same on every rank of a multi-process run)."""
        train_texts = self.corpus.texts["train"]
        folds = relabel_lib.crossfit_folds(pseudo["train"], self.cfg.relabel_crossfit_folds, seed)

        def fit_predict(fold_train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
            folder = round_dir / f".crossfit_fold{int(folds[held_out[0]])}"
            model_dir = self._fit(start, fold_train, pseudo, risk, val_risk, seed, folder)
            logits = self._logits(model_dir, [train_texts[i] for i in held_out])
            wait_for_everyone()
            if distributed_state().is_main_process:
                shutil.rmtree(folder)
            return logits

        return relabel_lib.out_of_fold_logits(folds, fit_predict)

    def export(self, round_dir: Path, target: Path) -> Path:
        with atomic_dir(target, replace=True) as tmp:
            shutil.copytree(round_dir / self.MODEL_DIR, tmp, dirs_exist_ok=True)
        return target


def make_backend(cfg: RefineConfig, corpus: Corpus):
    torch.manual_seed(cfg.seed)
    return FrozenBackend(cfg, corpus) if cfg.mode == "frozen" else FinetuneBackend(cfg, corpus)
