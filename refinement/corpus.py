"""The run's data as arrays: texts, gold labels (optional) and round-0 pseudo-labels for train/val/test."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RefineConfig
from .data import DataError, format_example, load_rows, scores_to_pseudo_labels, split_by_prompt

SPLITS = ("train", "val", "test")


@dataclass
class Corpus:
    texts: dict[str, list[str]]
    gold: dict[str, np.ndarray] | None      # None when the data has no gold labels
    pseudo: dict[str, np.ndarray]           # round-0 pseudo-labels
    scores: dict[str, np.ndarray] | None    # annotator P(harmless), when given
    source: str

    def size(self, split: str) -> int:
        return len(self.texts[split])


def column_map(cfg: RefineConfig, columns: list[str]) -> dict[str, str]:
    """Renames from the user's column names to the row schema. The prompt and a named score column must exist
    (load_rows names them when missing); response, label and pseudo-label columns are optional."""
    pairs = ((cfg.prompt_column, "prompt"), (cfg.response_column, "response"), (cfg.label_column, "label"),
             (cfg.pseudo_label_column, "pseudo_label"), (cfg.score_column, "pseudo_score"))
    return {source: target for source, target in pairs
            if source and source != target and (source in columns or target in ("prompt", "pseudo_score"))}


def load_corpus(cfg: RefineConfig) -> Corpus:
    """Loads, splits (by prompt; a split column wins) and round-0-labels the dataset of a run."""
    import datasets

    raw = load_rows(cfg.dataset_path, adapter=cfg.dataset_adapter, split=cfg.dataset_split, require=())
    mapping = column_map(cfg, raw.column_names)
    if mapping:
        rows = load_rows(cfg.dataset_path, column_map=mapping, adapter=cfg.dataset_adapter,
                         split=cfg.dataset_split, require=("prompt", "response"))
    elif "prompt" not in raw.column_names:
        raise DataError(f"{cfg.dataset_path}: no '{cfg.prompt_column}' column (available: "
                        + ", ".join(raw.column_names) + "); name the prompt column with --prompt_column")
    else:
        rows = raw
    if not isinstance(rows, datasets.Dataset):
        raise DataError(f"{cfg.dataset_path}: expected one table of rows")
    split_column = cfg.split_column if cfg.split_column in rows.column_names else None
    parts = split_by_prompt(rows, seed=cfg.seed, split_column=split_column)
    if cfg.max_train_items and len(parts["train"]) > cfg.max_train_items:
        parts["train"] = parts["train"].shuffle(seed=cfg.seed).select(range(cfg.max_train_items))
    for split in SPLITS:
        if len(parts[split]) == 0:
            raise DataError(f"{cfg.dataset_path}: the {split} split is empty")
    columns = rows.column_names
    texts = {s: [format_example(p, r) for p, r in zip(parts[s]["prompt"], parts[s]["response"])] for s in SPLITS}
    gold = {s: np.asarray(parts[s]["label"], dtype=np.int64) for s in SPLITS} if "label" in columns else None
    scores = None
    if "pseudo_score" in columns:
        scores = {s: np.asarray(parts[s]["pseudo_score"], dtype=float) for s in SPLITS}
    if scores is not None and (cfg.score_threshold is not None or cfg.score_quantile is not None):
        # A quantile is taken over the training split only, then applied to every split.
        threshold = cfg.score_threshold
        if threshold is None:
            threshold = float(np.quantile(scores["train"], cfg.score_quantile))
        pseudo = {s: scores_to_pseudo_labels(scores[s], threshold=threshold) for s in SPLITS}
    elif "pseudo_label" in columns:
        pseudo = {s: np.asarray(parts[s]["pseudo_label"], dtype=np.int64) for s in SPLITS}
    else:
        raise DataError(
            f"{cfg.dataset_path}: no round-0 pseudo-labels: give a '{cfg.pseudo_label_column}' column, or "
            "score_column with score_threshold or score_quantile (available columns: " + ", ".join(columns) + ")")
    return Corpus(texts=texts, gold=gold, pseudo=pseudo, scores=scores, source=cfg.dataset_path)
