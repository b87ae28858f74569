"""A human's gold labels on the i.i.d. sample the priors use: the files `recipes/label_sample.py` writes.

The sample. The pool is the rows of the source's ``train`` split when it has a split column, else every row.
``refinement.priors.sample_labeled_indices(pool_size, N, seed)`` picks N pool positions uniformly without
replacement (never class-balanced): with the same seed, N and training split, the very items the refinement
loop's labeled sample L holds. They are shown in a seeded random order, so the items answered before a stop are
themselves a uniform sample of the pool.

``<name>.jsonl``, one JSON object per answered item, sorted by ``item``, rewritten atomically after every answer:

  item        int   0-based position in the display order (shown as "item item+1/N")
  index       int   0-based row of the item in the source, as ``refinement.data.load_rows`` reads it
                    (for a .jsonl file: the index-th JSON line)
  pool_index  int   the row's position in the pool (the value sample_labeled_indices returned)
  label       1 harmless, 0 harmful, or null when skipped
  skipped     bool  true exactly when label is null
  prompt, response  str  the text shown to the annotator (``format_example(prompt, response)`` is what the
                    loop's classifier sees, so a loop can find the item in its own corpus by text)
  time        str   ISO-8601 UTC time of the (last) answer

``<name>.meta.json``, written before the first item: format, version, source (absolute path), source_sha256,
seed, num_items, pool ("train" or "all"), pool_size, num_rows, settings (adapter and column names), items (source
rows in display order) and pool_items (their pool positions). A resume must match it.

``read_labeled_sample(path)`` returns the (indices, gold labels) of the labelled items; skipped items are left
out. Skipping should stay rare: skipping the hard cases makes the remaining sample no longer i.i.d.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import DataError, format_example
from .io import write_json, write_text
from .priors import sample_labeled_indices

FORMAT = "rlaif_uu.labeled_sample"
VERSION = 1
FIELDS = ("item", "index", "pool_index", "label", "skipped", "prompt", "response", "time")
# Saved meta fields a resume must match, with the words its refusal uses.
RESUME_KEYS = {
    "source_sha256": "the source file's content",
    "seed": "seed",
    "num_items": "num_items (N)",
    "pool": "the pool (train split or all rows)",
    "pool_size": "the pool size",
    "num_rows": "the number of rows",
    "settings": "the adapter/column settings",
    "items": "the drawn items",
}


class LabeledSampleError(DataError):
    """A bad or mismatched labelled-sample file; the message names the file, and the line and field if any."""


@dataclass(frozen=True)
class Answer:
    item: int
    index: int
    pool_index: int
    label: int | None  # 1 harmless, 0 harmful, None skipped
    prompt: str
    response: str
    time: str

    @property
    def skipped(self) -> bool:
        return self.label is None

    def to_record(self) -> dict[str, Any]:
        return {"item": self.item, "index": self.index, "pool_index": self.pool_index, "label": self.label,
                "skipped": self.skipped, "prompt": self.prompt, "response": self.response, "time": self.time}


def output_paths(output_path: str | os.PathLike) -> tuple[Path, Path]:
    """(answers .jsonl, meta .meta.json) for ``runs/gold`` or ``runs/gold.jsonl`` alike."""
    path = Path(output_path)
    stem = path.with_suffix("") if path.suffix == ".jsonl" else path
    return stem.with_name(stem.name + ".jsonl"), stem.with_name(stem.name + ".meta.json")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def display_order(pool_size: int, num_items: int, seed: int) -> np.ndarray:
    """Pool positions of the N sampled items, in the order they are shown (a seeded shuffle of the sample)."""
    positions = sample_labeled_indices(pool_size, num_items, seed)
    return positions[np.random.default_rng([seed, 1]).permutation(num_items)]


def check_resume(saved: dict, current: dict, meta_path: Path) -> None:
    """Refuse to continue answers given for another sample, naming what changed."""
    changed = [words for key, words in RESUME_KEYS.items() if saved.get(key) != current.get(key)]
    if changed:
        moved = (f"; source then {saved.get('source')!r}, now {current.get('source')!r}"
                 if saved.get("source") != current.get("source") else "")
        raise LabeledSampleError(
            f"{meta_path}: these answers belong to another sample ({', '.join(changed)} changed{moved}). Rerun "
            "with the original file and settings to resume, or choose a new --output_path.")


def read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(Path(meta_path).read_text())
    except FileNotFoundError as exc:
        raise LabeledSampleError(f"{meta_path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise LabeledSampleError(f"{meta_path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LabeledSampleError(f"{meta_path}: not a labelled-sample meta file (field 'format' is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise LabeledSampleError(f"{meta_path}: field 'version' is {meta.get('version')!r}; this reader knows "
                                 f"version {VERSION}")
    for key in ("items", "pool_items"):
        if not (isinstance(meta.get(key), list) and len(meta[key]) == meta.get("num_items")):
            raise LabeledSampleError(f"{meta_path}: field {key!r} must be a list of num_items source rows")
    return meta


def write_meta(meta_path: Path, meta: dict) -> None:
    write_json(meta_path, {"format": FORMAT, "version": VERSION, **meta})


def write_answers(path: Path, answers: list[Answer]) -> None:
    """Rewrite the whole file atomically: a kill leaves the previous or the new answers, never half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps(a.to_record(), ensure_ascii=False) + "\n"
                             for a in sorted(answers, key=lambda a: a.item)))


def read_answers(path: str | os.PathLike, meta: dict | None = None) -> list[Answer]:
    """Every answered item of ``path``, validated; with ``meta``, each item must be the one the sample drew."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise LabeledSampleError(f"{path}: no such file") from exc
    answers: list[Answer] = []
    seen_item: dict[int, int] = {}
    seen_index: dict[int, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        answer = _parse_line(line, where)
        for key, seen in (("item", seen_item), ("index", seen_index)):
            value = getattr(answer, key)
            if value in seen:
                raise LabeledSampleError(f"{where}: field {key!r} is {value}, already answered on line {seen[value]}")
            seen[value] = number
        if meta is not None:
            _check_against_meta(answer, meta, where)
        answers.append(answer)
    return answers


def labelled_answers(path: str | os.PathLike) -> tuple[Path, list[Answer]]:
    """(the answers file, its labelled answers in file order), checked against the meta file beside it when
    present; skipped items are left out, and a file with no labelled item is an error (the priors need labels)."""
    jsonl, meta_path = output_paths(path)
    meta = read_meta(meta_path) if meta_path.is_file() else None
    labelled = [a for a in read_answers(jsonl, meta) if not a.skipped]
    if not labelled:
        raise LabeledSampleError(f"{jsonl}: holds no labelled item (only skips, or empty)")
    return jsonl, labelled


def read_labeled_sample(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(source row indices, gold labels 1/0) of the labelled items of ``path``, ascending by index.

    The meta file beside it, when present, is checked too (each item the one its sample drew). Skipped items
    are left out; a file with no labelled item is an error (the priors need labels)."""
    labelled = sorted(labelled_answers(path)[1], key=lambda a: a.index)
    return (np.asarray([a.index for a in labelled], dtype=np.int64),
            np.asarray([a.label for a in labelled], dtype=np.int64))


def labeled_positions(path: str | os.PathLike, train_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``train_texts``, gold labels) of the labelled items of ``path``, each found by its text
    ``format_example(prompt, response)``, so the sample survives the loop's splitting, subsetting and dropped
    abstentions. Equal texts (K samples of one prompt can coincide) take distinct positions. An item that is
    not in the training texts is an error naming its line: its label cannot be used, and the rest would no
    longer be the i.i.d. sample that was drawn."""
    jsonl, answers = labelled_answers(path)
    free: dict[str, list[int]] = {}
    for position, text in enumerate(train_texts):
        free.setdefault(text, []).append(position)
    positions, labels = [], []
    for answer in answers:
        left = free.get(format_example(answer.prompt, answer.response))
        if not left:
            raise LabeledSampleError(f"{jsonl}: item {answer.item + 1} (source row {answer.index}) is not in the "
                                     "training split of this run (another source, split, max_train_items, or an "
                                     "abstention dropped it); label a sample of this run's training rows")
        positions.append(left.pop(0))
        labels.append(answer.label)
    order = np.argsort(positions)
    return np.asarray(positions, dtype=np.int64)[order], np.asarray(labels, dtype=np.int64)[order]


def summarize(gold: np.ndarray, skipped: int, num_items: int) -> dict[str, Any]:
    """Counts and the harmless rate pi_hat of the gold labels (1/0) of the labelled items, with a 95% Wilson
    interval."""
    n, k = len(gold), int(np.sum(gold))
    summary: dict[str, Any] = {"num_items": num_items, "labelled": n, "harmless": k, "harmful": n - k,
                               "skipped": skipped, "remaining": num_items - n - skipped,
                               "pi_hat": k / n if n else None, "pi_interval": None}
    if n:
        z = 1.959963984540054
        centre = (k + z * z / 2) / (n + z * z)
        half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
        summary["pi_interval"] = (max(0.0, centre - half), min(1.0, centre + half))
    return summary


# ---------------------------------------------------------------- validation


def _parse_line(line: str, where: str) -> Answer:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LabeledSampleError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise LabeledSampleError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in FIELDS if key not in record]
    if missing:
        raise LabeledSampleError(f"{where}: missing field(s) {missing}")
    for key in ("item", "index", "pool_index"):
        value = record[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise LabeledSampleError(f"{where}: field {key!r} is {value!r}; expected an integer >= 0")
    label, skipped = record["label"], record["skipped"]
    if label is not None and (isinstance(label, bool) or label not in (0, 1)):
        raise LabeledSampleError(f"{where}: field 'label' is {label!r}; expected 1 (harmless), 0 (harmful) or null")
    if not isinstance(skipped, bool):
        raise LabeledSampleError(f"{where}: field 'skipped' is {skipped!r}; expected true or false")
    if skipped != (label is None):
        raise LabeledSampleError(f"{where}: field 'label' is {label!r} but field 'skipped' is {skipped!r}; "
                                 "a skipped item has label null, a labelled one 1 or 0")
    for key in ("prompt", "response", "time"):
        if not isinstance(record[key], str):
            raise LabeledSampleError(f"{where}: field {key!r} is {record[key]!r:.60}; expected a string")
    return Answer(item=record["item"], index=record["index"], pool_index=record["pool_index"],
                  label=None if label is None else int(label), prompt=record["prompt"],
                  response=record["response"], time=record["time"])


def _check_against_meta(answer: Answer, meta: dict, where: str) -> None:
    if answer.item >= meta["num_items"]:
        raise LabeledSampleError(f"{where}: field 'item' is {answer.item}; the sample has {meta['num_items']} "
                                 "items (0-based)")
    for key, saved in (("index", meta["items"]), ("pool_index", meta["pool_items"])):
        if getattr(answer, key) != saved[answer.item]:
            raise LabeledSampleError(f"{where}: field {key!r} is {getattr(answer, key)}, but the sample's item "
                                     f"{answer.item} has {key} {saved[answer.item]} (meta file)")
