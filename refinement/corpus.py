"""The run's data as arrays: texts, gold labels (optional) and round-0 pseudo-labels for train/val/test."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from .config import RefineConfig
from .data import DataError, format_example, load_rows, scores_to_pseudo_labels, split_by_prompt

SPLITS = ("train", "val", "test")
ANNOTATION_DIR = "annotation"  # of a run with an `annotator:` block: the judgements and annotated.jsonl


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
    (load_rows names them when missing); response, label and pseudo-label columns are optional. A pseudo-label
    column that is the gold column (gold-supervised training) is not renamed: the gold labels are copied."""
    pseudo = cfg.pseudo_label_column if cfg.pseudo_label_column != cfg.label_column else None
    pairs = ((cfg.prompt_column, "prompt"), (cfg.response_column, "response"), (cfg.label_column, "label"),
             (pseudo, "pseudo_label"), (cfg.score_column, "pseudo_score"))
    return {source: target for source, target in pairs
            if source and source != target and (source in columns or target in ("prompt", "pseudo_score"))}


def load_schema_rows(cfg: RefineConfig) -> datasets.Dataset:
    """The run's dataset in the row schema (prompt, response, label, pseudo_label, pseudo_score, ...)."""
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
    return rows


def split_parts(cfg: RefineConfig, rows: datasets.Dataset, source: str) -> dict[str, datasets.Dataset]:
    """train/val/test by prompt (a split column wins), the training split cut to max_train_items."""
    split_column = cfg.split_column if cfg.split_column in rows.column_names else None
    parts = dict(split_by_prompt(rows, seed=cfg.seed, split_column=split_column))
    if cfg.max_train_items and len(parts["train"]) > cfg.max_train_items:
        parts["train"] = parts["train"].shuffle(seed=cfg.seed).select(range(cfg.max_train_items))
    for split in SPLITS:
        if len(parts[split]) == 0:
            raise DataError(f"{source}: the {split} split is empty")
    return parts


def load_corpus(cfg: RefineConfig) -> Corpus:
    """Loads, splits (by prompt; a split column wins) and round-0-labels the dataset of a run."""
    rows = load_schema_rows(cfg)
    return corpus_from_parts(cfg, split_parts(cfg, rows, cfg.dataset_path), rows.column_names, cfg.dataset_path)


def annotate_run_rows(cfg: RefineConfig, out_dir: Path) -> Path:
    """The `annotator:` path: split the rows first (so the annotator's few-shot demonstrations and threshold
    calibration can only spend val labels), then judge them into out_dir/annotated.jsonl. A finished annotation
    with the same settings is reused; an interrupted one resumes from its cache."""
    from .annotation import AnnotatorConfig, annotate_rows

    parts = split_parts(cfg, load_schema_rows(cfg), cfg.dataset_path)
    rows = datasets.concatenate_datasets([
        (parts[s].remove_columns("split") if "split" in parts[s].column_names else parts[s])
        .add_column("split", [s] * len(parts[s])) for s in SPLITS])
    path, _ = annotate_rows(rows, AnnotatorConfig.from_block(cfg.annotator), out_dir, source=cfg.dataset_path)
    return path


def load_annotated_corpus(cfg: RefineConfig, path: Path) -> Corpus:
    """The corpus of an annotated run: its split column and the annotator's labels (scores kept for reports)."""
    annotated = load_rows(str(path), column_map={"annotator_score": "pseudo_score"}, adapter="none")
    parts = split_parts(dataclasses.replace(cfg, split_column="split"), annotated, str(path))
    return corpus_from_parts(cfg, parts, annotated.column_names, cfg.dataset_path)


def run_corpus(cfg: RefineConfig, run_dir: str | Path | None = None) -> Corpus:
    """The corpus a finished run trained on, read back (its annotation, for a run with an `annotator:` block)."""
    if cfg.annotator is None:
        return load_corpus(cfg)
    return load_annotated_corpus(cfg, Path(run_dir or cfg.output_dir) / ANNOTATION_DIR / "annotated.jsonl")


def corpus_from_parts(cfg: RefineConfig, parts: dict[str, datasets.Dataset], columns: list[str],
                      source: str) -> Corpus:
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
    elif cfg.pseudo_label_column and cfg.pseudo_label_column == cfg.label_column and gold is not None:
        pseudo = {s: gold[s].copy() for s in SPLITS}
    elif "pseudo_label" in columns:
        pseudo = {s: np.asarray(parts[s]["pseudo_label"], dtype=np.int64) for s in SPLITS}
    else:
        raise DataError(
            f"{source}: no round-0 pseudo-labels: give a '{cfg.pseudo_label_column}' column, or "
            "score_column with score_threshold or score_quantile, or an annotator block (available columns: "
            + ", ".join(columns) + ")")
    return Corpus(texts=texts, gold=gold, pseudo=pseudo, scores=scores, source=source)
