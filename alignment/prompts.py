"""Harmful and benign prompt sets for RL training and safety evaluation.

A prompt set is a list of :class:`Prompt` (text, ``is_harmful``, ``source``, ``category``). Sources:

* local files: ``.jsonl`` / ``.json`` (a list of objects or of strings) / ``.csv`` / ``.txt`` (one prompt a
  line); the prompt column is ``column`` or the first of :data:`PROMPT_COLUMNS` present (so the refusal-
  direction splits, AdvBench, HarmBench, JailbreakBench, StrongREJECT, MaliciousInstruct and TDC files load
  as they are), and ``split`` keeps the rows of a ``split`` column with that value (the demo files);
* Hub datasets via ``datasets.load_dataset``: the names in :data:`HUB_PROMPT_SETS` know their column (and
  the HH-RLHF red-team transcripts are cut to their opening request); any other name needs ``column``;
* :func:`load_xstest` (safe vs unsafe from its ``label`` column) and :func:`load_refusal_direction_split`
  (the ``splits/harmful_<split>.json`` / ``harmless_<split>.json`` layout).

Bad input raises ``refinement.data.DataError`` naming the file, row and field.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from alignment.demo import demo_path
from refinement.data import DataError

PROMPT_COLUMNS = ("prompt", "instruction", "goal", "behavior", "forbidden_prompt", "question", "text")
_HH_HUMAN, _HH_ASSISTANT = "Human:", "\n\nAssistant:"


@dataclass(frozen=True)
class Prompt:
    text: str
    is_harmful: bool
    source: str
    category: str = ""


@dataclass(frozen=True)
class HubPromptSet:
    """How to read one known Hub dataset as prompts."""

    path: str
    column: str
    data_dir: str | None = None
    empty_column: str | None = None  # keep only rows where this column is empty (Alpaca: no extra input)
    opening_turn: bool = False  # the column holds a dialogue; keep its first human message


HUB_PROMPT_SETS = {
    "PKU-Alignment/PKU-SafeRLHF": HubPromptSet("PKU-Alignment/PKU-SafeRLHF", "prompt"),
    "Anthropic/hh-rlhf:red-team-attempts": HubPromptSet(
        "Anthropic/hh-rlhf", "transcript", data_dir="red-team-attempts", opening_turn=True),
    "walledai/AdvBench": HubPromptSet("walledai/AdvBench", "prompt"),
    "tatsu-lab/alpaca": HubPromptSet("tatsu-lab/alpaca", "instruction", empty_column="input"),
}


def load_prompts(source: str, *, is_harmful: bool, split: str | None = None, column: str | None = None,
                 name: str | None = None) -> list[Prompt]:
    """Every distinct prompt of a local file or Hub dataset, in file order, marked ``is_harmful``.

    ``split``: for a local file, keep rows whose ``split`` column equals it (None keeps all); for a Hub
    dataset, the split to load (None = "train"). ``name`` is recorded as each prompt's ``source`` (default:
    the file name without suffix, or the Hub name). Duplicated texts are kept once.
    """
    if os.path.isfile(source):
        rows = _read_rows(source)
        if split is not None:
            rows = _rows_of_split(rows, source, split)
        label = name or Path(source).name.split(".")[0]
    else:
        rows, column = _read_hub(source, split or "train", column)
        label = name or source
    texts = _prompt_texts(rows, source, column)
    return [Prompt(text, bool(is_harmful), label, _category(row)) for text, row in _distinct(texts, rows)]


def load_xstest(path: str, which: str = "all") -> list[Prompt]:
    """XSTest prompts (``id,prompt,type,label,...``): ``label`` safe -> benign, unsafe -> harmful.

    ``which``: "safe", "unsafe" or "all". ``category`` is the XSTest ``type`` (homonyms, contrast_..., ...).
    """
    if which not in ("safe", "unsafe", "all"):
        raise ValueError(f"which={which!r}: choose safe, unsafe or all")
    prompts = []
    for row_number, row in enumerate(_read_rows(path)):
        label = row.get("label")
        if label not in ("safe", "unsafe"):
            raise DataError(f"{path}: row {row_number} field 'label' has value {label!r}; expected safe or unsafe")
        if which in ("all", label):
            text = _text(row.get("prompt"), path, row_number, "prompt")
            prompts.append(Prompt(text, label == "unsafe", "xstest", str(row.get("type") or "")))
    return prompts


def load_refusal_direction_split(root: str, split: str) -> tuple[list[Prompt], list[Prompt]]:
    """(harmful, benign) from ``<root>/splits/harmful_<split>.json`` and ``harmless_<split>.json``
    (Arditi et al.'s layout: AdvBench/HarmBench/... vs Alpaca; split train, val or test)."""
    splits = Path(root) / "splits"
    harmful = load_prompts(str(splits / f"harmful_{split}.json"), is_harmful=True)
    benign = load_prompts(str(splits / f"harmless_{split}.json"), is_harmful=False)
    return harmful, benign


def prompt_set(source: str, is_harmful: bool, split: str | None, column: str | None) -> list[Prompt]:
    """One prompt set: `demo` is the project's own (alignment/demo_data), anything else goes to load_prompts."""
    kind = "harmful" if is_harmful else "benign"
    if source == "demo":
        return load_prompts(demo_path(f"{kind}_prompts"), is_harmful=is_harmful, split=split, name=f"demo_{kind}")
    return load_prompts(source, is_harmful=is_harmful, split=split, column=column)


def sample_prompts(prompts: Sequence[Prompt], count: int | None, seed: int = 0) -> list[Prompt]:
    """A seeded sample of ``count`` prompts without replacement, in their original order (None: all)."""
    if count is None or count >= len(prompts):
        return list(prompts)
    chosen = np.sort(np.random.default_rng(seed).choice(len(prompts), size=count, replace=False))
    return [prompts[i] for i in chosen]


def build_rl_mix(harmful: Sequence[Prompt], benign: Sequence[Prompt], size: int,
                 harmful_fraction: float = 0.5, seed: int = 0) -> list[Prompt]:
    """``size`` prompts, ``round(size * harmful_fraction)`` of them harmful, sampled and shuffled with ``seed``.

    Training only on harmful prompts teaches a policy to refuse everything; the benign share keeps it helpful.
    A text present in both sets is refused: its label would depend on which copy was drawn.
    """
    if not 0.0 <= harmful_fraction <= 1.0:
        raise ValueError(f"harmful_fraction must lie in [0, 1], got {harmful_fraction}")
    wrong = [p for p in harmful if not p.is_harmful] + [p for p in benign if p.is_harmful]
    if wrong:
        raise DataError(f"{wrong[0].source}: prompt {wrong[0].text!r:.80} is in the wrong set (is_harmful="
                        f"{wrong[0].is_harmful})")
    both = {p.text for p in harmful} & {p.text for p in benign}
    if both:
        raise DataError(f"{len(both)} prompt(s) are both harmful and benign, e.g. {sorted(both)[0]!r:.80}")
    n_harmful = round(size * harmful_fraction)
    for kind, pool, need in (("harmful", harmful, n_harmful), ("benign", benign, size - n_harmful)):
        if need > len(pool):
            raise DataError(f"the RL mix needs {need} {kind} prompts but only {len(pool)} were given")
    rng = np.random.default_rng(seed)
    mix = [harmful[i] for i in rng.choice(len(harmful), n_harmful, replace=False)]
    mix += [benign[i] for i in rng.choice(len(benign), size - n_harmful, replace=False)]
    return [mix[i] for i in rng.permutation(len(mix))]


def to_dataset(prompts: Iterable[Prompt], inputs: Sequence | None = None) -> datasets.Dataset:
    """Columns prompt, is_harmful, source, category: the shape TRL's RL trainers take (``prompt`` column, the
    texts or the given ``inputs``, e.g. chat messages); the other columns reach reward functions as keyword lists."""
    prompts = list(prompts)
    return datasets.Dataset.from_dict({
        "prompt": [p.text for p in prompts] if inputs is None else list(inputs),
        "is_harmful": [p.is_harmful for p in prompts],
        "source": [p.source for p in prompts], "category": [p.category for p in prompts]})


def first_human_turn(transcript: str) -> str:
    """The opening request of an HH-RLHF dialogue: the text after the first ``Human:`` up to ``Assistant:``."""
    start = transcript.find(_HH_HUMAN)
    if start < 0:
        raise ValueError(f"no 'Human:' turn in {transcript!r:.80}")
    body = transcript[start + len(_HH_HUMAN):]
    return body.split(_HH_ASSISTANT, 1)[0].strip()


# ---------------------------------------------------------------- reading


def _read_rows(path: str) -> list[Any]:
    """Rows of a local file: dicts (jsonl, json objects, csv) or strings (json strings, txt lines)."""
    suffix = Path(path).suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".txt": _read_txt}
    if suffix not in readers:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {sorted(readers)}")
    rows = readers[suffix](path)
    if not rows:
        raise DataError(f"{path}: file holds zero prompts")
    return rows


def _read_jsonl(path: str) -> list[Any]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {line_number} is not valid JSON: {exc}") from exc
    return rows


def _read_json(path: str) -> list[Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of prompts, got {type(data).__name__}")
    return data


def _read_csv(path: str) -> list[Any]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _read_txt(path: str) -> list[Any]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_hub(name: str, split: str, column: str | None) -> tuple[list[Any], str | None]:
    """Rows of a Hub dataset (with a known set's column and row filter) and the prompt column to read."""
    known = HUB_PROMPT_SETS.get(name)
    if known is None and column is None:
        raise DataError(f"{name}: not a local file and not a known Hub prompt set ({sorted(HUB_PROMPT_SETS)}); "
                        "give `column` to read another Hub dataset")
    path, data_dir = (known.path, known.data_dir) if known else (name, None)
    try:
        ds = datasets.load_dataset(path, data_dir=data_dir, split=split)
    except Exception as exc:  # offline, unknown name, missing split: all mean "cannot get this source"
        raise DataError(f"{name}: neither a local file nor a reachable Hub dataset (split {split!r}): "
                        f"{type(exc).__name__}: {exc}") from exc
    rows = list(ds)
    if known is None:
        return rows, column
    if known.empty_column:
        rows = [row for row in rows if not (row.get(known.empty_column) or "").strip()]
    if known.opening_turn:
        rows = [{"prompt": first_human_turn(row[known.column])} for row in rows]
        return rows, "prompt"
    return rows, column or known.column


def _rows_of_split(rows: list[Any], source: str, split: str) -> list[Any]:
    if not all(isinstance(row, dict) and "split" in row for row in rows):
        raise DataError(f"{source}: split={split!r} was asked for but the rows have no 'split' field")
    kept = [row for row in rows if row["split"] == split]
    if not kept:
        found = sorted({str(row["split"]) for row in rows})
        raise DataError(f"{source}: no rows with split {split!r}; the file has {found}")
    return kept


def _prompt_texts(rows: list[Any], source: str, column: str | None) -> list[str]:
    """The prompt string of every row; strings are prompts themselves, dicts are read at the prompt column."""
    if all(isinstance(row, str) for row in rows) and column is None:
        return [_text(row, source, i, "prompt") for i, row in enumerate(rows)]
    first = rows[0]
    if not isinstance(first, dict):
        raise DataError(f"{source}: row 0 is a {type(first).__name__}; expected an object with a prompt field")
    key = column if column is not None else _find_prompt_column(first, source)
    texts = []
    for row_number, row in enumerate(rows):
        if not isinstance(row, dict) or key not in row:
            raise DataError(f"{source}: row {row_number} has no field {key!r}")
        texts.append(_text(row[key], source, row_number, key))
    return texts


def _find_prompt_column(row: dict, source: str) -> str:
    """The first of PROMPT_COLUMNS among the row's keys, compared case-insensitively (AdvBench's ``goal``,
    JailbreakBench's ``Goal``, HarmBench's ``Behavior`` ...)."""
    by_lower = {key.lower(): key for key in row}
    for candidate in PROMPT_COLUMNS:
        if candidate in by_lower:
            return by_lower[candidate]
    raise DataError(f"{source}: no prompt column among {sorted(row)}; expected one of {PROMPT_COLUMNS} "
                    "or pass `column`")


def _text(value: Any, source: str, row: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{source}: row {row} field {field!r} must be a non-empty string, got {value!r:.80}")
    return value.strip()


def _category(row: Any) -> str:
    """The row's ``category`` (any case, e.g. JailbreakBench's ``Category``) or HarmBench's ``SemanticCategory``."""
    if not isinstance(row, dict):
        return ""
    by_lower = {key.lower(): value for key, value in row.items()}
    return str(by_lower.get("category") or by_lower.get("semanticcategory") or "")


def _distinct(texts: list[str], rows: list[Any]) -> list[tuple[str, Any]]:
    seen: set[str] = set()
    out = []
    for text, row in zip(texts, rows):
        if text not in seen:
            seen.add(text)
            out.append((text, row))
    return out
