"""The run's data as arrays: texts, gold labels (optional) and round-0 pseudo-labels for train/val/test."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from .cli import unset
from .config import RefineConfig
from .data import (
    DataError,
    format_example,
    load_rows,
    read_table,
    schema_rows,
    scores_to_pseudo_labels,
    split_by_prompt,
)

SPLITS = ("train", "val", "test")
ANNOTATION_DIR = "annotation"  # of a run with an `annotator:` block: the judgements and annotated.jsonl
logger = logging.getLogger(__name__)


@dataclass
class Corpus:
    texts: dict[str, list[str]]
    gold: dict[str, np.ndarray] | None      # None when the data has no gold labels
    pseudo: dict[str, np.ndarray]           # round-0 pseudo-labels
    scores: dict[str, np.ndarray] | None    # annotator P(harmless), when given
    source: str

    def size(self, split: str) -> int:
        return len(self.texts[split])


def round_zero_columns(cfg: RefineConfig, columns: list[str], source: str) -> tuple[str | None, str | None]:
    """(score column, pseudo-label column) of the data that give the round-0 labels, by one precedence:

    1. ``score_column`` when the data has it (the command line's value overrides the YAML's, as for every field),
       thresholded at ``score_threshold`` or the ``score_quantile`` of the training split;
    2. else ``pseudo_label_column`` when the data has it (the gold column itself for gold-supervised training);
       a named score column the data lacks is then reported in the log, so a file that brings its own
       ``pseudo_label`` works with any shipped config;
    3. else an error naming the missing column, the columns the data has, and the flags that fix it.

    ``--score_column none`` skips step 1."""
    named = None if unset(cfg.score_column) else cfg.score_column
    score = named if named in columns else None
    if score is not None:
        if cfg.score_threshold is None and cfg.score_quantile is None:
            raise DataError(f"{source}: score_column {score!r} needs a threshold: pass --score_threshold t or "
                            "--score_quantile q (0.5: the median of the training split)")
        return score, None
    pseudo = cfg.pseudo_label_column if cfg.pseudo_label_column in columns else None
    if pseudo is None:
        raise DataError(f"{source}: no round-0 labels: " + _missing_labels(cfg, columns))
    if named:
        logger.info("%s has no column %r (score_column); round-0 labels: its %r column", source, named, pseudo)
    return None, pseudo


def _missing_labels(cfg: RefineConfig, columns: list[str]) -> str:
    named = None if unset(cfg.score_column) else cfg.score_column
    wanted = [f"'{c}' ({name})" for c, name in ((named, "score_column"),
                                               (cfg.pseudo_label_column, "pseudo_label_column")) if c]
    return (f"the data has no {' and no '.join(wanted) or 'score or pseudo-label'} column; it has "
            f"{', '.join(columns)}: pass --score_column <column> with --score_quantile 0.5 (or --score_threshold), "
            "add a pseudo_label column, or judge the pairs with an annotator: block")


def column_map(cfg: RefineConfig, columns: list[str], source: str, labels: bool = True) -> dict[str, str]:
    """Renames from the user's column names to the row schema: prompt, response and label (when present) and, with
    ``labels``, the round-0 column chosen by :func:`round_zero_columns` (as pseudo_score or pseudo_label). A
    pseudo-label column that is the gold column is not renamed: the gold labels are copied."""
    pairs = [(cfg.prompt_column, "prompt"), (cfg.response_column, "response"), (cfg.label_column, "label")]
    if labels:
        score, pseudo = round_zero_columns(cfg, columns, source)
        pairs += [(score, "pseudo_score"), (pseudo if pseudo != cfg.label_column else None, "pseudo_label")]
    return {name: target for name, target in pairs if name and name != target and name in columns}


def drop_unscored(raw: datasets.Dataset, column: str, source: str) -> datasets.Dataset:
    """The rows whose `column` holds a score: items the annotator did not label are left out at round 0."""
    kept = raw.filter(lambda value: value is not None and value == value, input_columns=column).flatten_indices()
    if len(kept) < len(raw):
        logger.info("%s: %d of %d rows have no %r score and are left out", source, len(raw) - len(kept),
                    len(raw), column)
    return kept


def read_rows(cfg: RefineConfig, labels: bool = True) -> datasets.Dataset:
    """The run's dataset in the row schema (prompt, response, label, pseudo_label, pseudo_score, ...), read once;
    with ``labels``, refused when it holds no round-0 labels."""
    source = cfg.dataset_path
    raw = read_table(source, cfg.dataset_split)
    if not isinstance(raw, datasets.Dataset):
        raise DataError(f"{source}: expected one table of rows")
    no_prompt = DataError(f"{source}: no '{cfg.prompt_column}' column (available: {', '.join(raw.column_names)}); "
                          "name the prompt column with --prompt_column")
    if cfg.prompt_column in raw.column_names:  # the user's columns, renamed onto the schema
        score = round_zero_columns(cfg, raw.column_names, source)[0] if labels else None
        if score and cfg.score_missing == "drop":
            raw = drop_unscored(raw, score, source)
        mapping = column_map(cfg, raw.column_names, source, labels)
        return schema_rows(raw, source, column_map=mapping, adapter=cfg.dataset_adapter)
    if cfg.prompt_column != "prompt" or cfg.dataset_adapter == "none":
        raise no_prompt
    rows = schema_rows(raw, source, adapter=cfg.dataset_adapter, require=())  # a packaged format names them
    if "prompt" not in rows.column_names:
        raise no_prompt
    if labels:
        round_zero_columns(cfg, rows.column_names, source)
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
    """Read -> map -> split (by prompt; a split column wins) -> round-0 labels, for a run without an annotator."""
    rows = read_rows(cfg)
    return corpus_from_parts(cfg, split_parts(cfg, rows, cfg.dataset_path), cfg.dataset_path)


def annotate_run_rows(cfg: RefineConfig, out_dir: Path) -> Path:
    """The `annotator:` path: split the rows first (so the annotator's few-shot demonstrations and threshold
    calibration can only spend val labels), then judge them into out_dir/annotated.jsonl. A finished annotation
    with the same settings is reused; an interrupted one resumes from its cache."""
    from .annotation import AnnotatorConfig, annotate_rows

    parts = split_parts(cfg, read_rows(cfg, labels=False), cfg.dataset_path)
    rows = datasets.concatenate_datasets([
        (parts[s].remove_columns("split") if "split" in parts[s].column_names else parts[s])
        .add_column("split", [s] * len(parts[s])) for s in SPLITS])
    path, _ = annotate_rows(rows, AnnotatorConfig.from_block(cfg.annotator), out_dir, source=cfg.dataset_path)
    return path


def load_annotated_corpus(cfg: RefineConfig, path: Path) -> Corpus:
    """The corpus of an annotated run: its split column and the annotator's labels (its scores kept for reports,
    and thresholded instead when the config sets score_threshold or score_quantile)."""
    annotated = load_rows(str(path), column_map={"annotator_score": "pseudo_score"}, adapter="none")
    parts = split_parts(dataclasses.replace(cfg, split_column="split"), annotated, str(path))
    return corpus_from_parts(cfg, parts, cfg.dataset_path)


def run_corpus(cfg: RefineConfig, run_dir: str | Path | None = None) -> Corpus:
    """The corpus a finished run trained on, read back (its annotation, for a run with an `annotator:` block)."""
    if cfg.annotator is None:
        return load_corpus(cfg)
    return load_annotated_corpus(cfg, Path(run_dir or cfg.output_dir) / ANNOTATION_DIR / "annotated.jsonl")


def corpus_from_parts(cfg: RefineConfig, parts: dict[str, datasets.Dataset], source: str) -> Corpus:
    """Texts, gold labels and round-0 labels of each split: the scores thresholded when the config sets a threshold
    or quantile (a quantile is taken over the training split, then applied to every split), else the pseudo-labels
    (or a copy of the gold labels when the pseudo-label column is the gold column). Scores are kept for reports."""
    columns = parts["train"].column_names
    texts = {s: [format_example(p, r) for p, r in zip(parts[s]["prompt"], parts[s]["response"])] for s in SPLITS}
    gold = {s: np.asarray(parts[s]["label"], dtype=np.int64) for s in SPLITS} if "label" in columns else None
    scores = {s: np.asarray(parts[s]["pseudo_score"], dtype=float) for s in SPLITS} if "pseudo_score" in columns \
        else None
    if scores is not None and (cfg.score_threshold is not None or cfg.score_quantile is not None):
        threshold = cfg.score_threshold
        if threshold is None:
            threshold = float(np.quantile(scores["train"], cfg.score_quantile))
        pseudo = {s: scores_to_pseudo_labels(scores[s], threshold=threshold) for s in SPLITS}
    elif gold is not None and cfg.pseudo_label_column == cfg.label_column:
        pseudo = {s: gold[s].copy() for s in SPLITS}
    elif "pseudo_label" in columns:
        pseudo = {s: np.asarray(parts[s]["pseudo_label"], dtype=np.int64) for s in SPLITS}
    else:
        raise DataError(f"{source}: no round-0 labels: " + _missing_labels(cfg, columns))
    return Corpus(texts=texts, gold=gold, pseudo=pseudo, scores=scores, source=source)
