"""Loading, validating and splitting the (prompt, response, label) rows every other stage consumes.

Row schema (label convention everywhere: 1 = harmless / positive, 0 = harmful):
  prompt        str, required
  response      str, may be empty ("" when the source has none; not added to chosen/rejected pair rows)
  label         int64 gold label in {0, 1}, optional (a missing value is an error unless the column is absent)
  pseudo_label  int64 in {0, 1}, optional (same rule)
  pseudo_score  float P(harmless) in [0, 1], optional
Any other column (``split``, ``smollm2_zero_shot``, ...) is carried through untouched.

Every bad-input problem raises :class:`DataError` whose message names the file or dataset and the row and/or
field, so a broken data file is diagnosed from the message alone instead of from a training crash later.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("train", "val", "test")
ADAPTERS = ("auto", "beavertails", "hh_rlhf", "none")
_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}
_LOCAL_BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}
_BINARY_FIELDS = ("label", "pseudo_label")
_BEAVERTAILS_COLUMNS = {"instruction", "input", "output"}
_BT_HUMAN, _BT_ASSISTANT = "Human user:\n", "\n\nAI assistant:\n"
_HH_HUMAN, _HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


class DataError(ValueError):
    """Bad input data; the message names the source and the offending row and/or field."""


def format_example(prompt: str, response: str | None) -> str:
    """The single text format every classifier sees, so training and scoring can never disagree on it."""
    prompt = (prompt or "").strip()
    response = (response or "").strip()
    if not response:
        return f"Human: {prompt}"
    return f"Human: {prompt}\n\nAssistant: {response}"


def load_rows(
    source: str,
    *,
    column_map: dict[str, str] | None = None,
    adapter: str = "auto",
    split: str = "train",
    require: tuple[str, ...] = ("prompt",),
) -> datasets.Dataset:
    """Load a local file or Hub dataset, map it onto the row schema and validate it.

    ``column_map`` renames source columns before the adapter runs; ``adapter`` ("auto" detects by columns)
    turns known packaged formats into schema rows; ``split`` is only used for Hub datasets (a local file is
    one split). The returned dataset carries ``source`` as ``info.dataset_name`` so later errors can name it.
    """
    if adapter not in ADAPTERS:
        raise DataError(f"{source}: unknown adapter {adapter!r}; choose one of {ADAPTERS}")
    return schema_rows(read_table(source, split), source, column_map=column_map, adapter=adapter, require=require)


def read_table(source: str, split: str = "train") -> datasets.Dataset:
    """The source as stored, before any renaming or checking: a local file, else a Hub dataset's ``split``. With
    :func:`schema_rows` it is :func:`load_rows` in two steps, for a caller that picks the renames from the columns."""
    return _read_source(source, split)


def schema_rows(
    raw: datasets.Dataset,
    source: str,
    *,
    column_map: dict[str, str] | None = None,
    adapter: str = "auto",
    require: tuple[str, ...] = ("prompt",),
) -> datasets.Dataset:
    """Rename, adapt and validate rows read by :func:`read_table` (``source`` names them in errors)."""
    if adapter not in ADAPTERS:
        raise DataError(f"{source}: unknown adapter {adapter!r}; choose one of {ADAPTERS}")
    raw = _rename_columns(raw, column_map or {}, source)
    rows = _ADAPTER_FUNCS[_resolve_adapter(raw, adapter)](raw, source)
    return _validate(rows, source, require, {new: old for old, new in (column_map or {}).items() if old != new})


def load_preference_pairs(source: str) -> datasets.Dataset:
    """Rows with ``prompt``, ``chosen``, ``rejected``: HH-RLHF dialogues or a file already in that shape."""
    return load_rows(source, require=("prompt", "chosen", "rejected"))


def split_by_prompt(
    ds: datasets.Dataset,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    split_column: str | None = None,
) -> datasets.DatasetDict:
    """Split into train/val/test so that no prompt string lands in two splits.

    Responses to one prompt are near-duplicates for a classifier; splitting by row would leak them from
    train into test. With ``split_column`` present, its values (train/val/validation/test) are used as given.
    Otherwise unique prompts are sorted, permuted with ``numpy`` under ``seed`` (so the split does not depend
    on PYTHONHASHSEED) and cut where the cumulative row count crosses each ratio.
    """
    name = _name_of(ds)
    if split_column is not None and split_column in ds.column_names:
        assignment = _assignment_from_column(ds[split_column], name, split_column)
    else:
        assignment = _random_assignment(ds["prompt"], _check_ratios(ratios, name), seed)
    indices: dict[str, list[int]] = {key: [] for key in SPLITS}
    for row, key in enumerate(assignment):
        indices[key].append(row)
    return datasets.DatasetDict({key: ds.select(indices[key]) for key in SPLITS})


def scores_to_pseudo_labels(
    scores: Iterable[float] | np.ndarray,
    threshold: float | None = None,
    quantile: float | None = None,
) -> np.ndarray:
    """Binarise annotator scores P(harmless) into pseudo-labels (1 iff score > threshold).

    ``quantile`` q sets the threshold to the q-quantile of the scores (0.5 = median, which balances the two
    pseudo-classes, as UU learning needs both). Ties: a score equal to the threshold gets 0 (harmful), the
    cautious side, so with q = 0.5 and an odd count the median item itself is labelled 0.
    """
    if (threshold is None) == (quantile is None):
        raise DataError("scores_to_pseudo_labels: give exactly one of threshold or quantile")
    values = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise DataError(f"scores: expected a non-empty 1-D sequence, got shape {values.shape}")
    nan_rows = np.flatnonzero(np.isnan(values))
    if nan_rows.size:
        raise DataError(f"scores: row {int(nan_rows[0])} is NaN ({nan_rows.size} NaN scores in all)")
    if quantile is not None:
        if not 0.0 <= quantile <= 1.0:
            raise DataError(f"scores: quantile must lie in [0, 1], got {quantile}")
        threshold = float(np.quantile(values, quantile))
    return (values > threshold).astype(np.int64)


# ---------------------------------------------------------------- reading


def _read_source(source: str, split: str) -> datasets.Dataset:
    """A local file through the matching ``datasets`` builder; anything else is tried as a Hub dataset."""
    if os.path.isfile(source):
        return _read_local(source)
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as exc:  # offline, unknown name, missing split: all mean "cannot get this source"
        raise DataError(
            f"{source}: neither a local file nor a reachable Hub dataset (split {split!r}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _read_local(path: str) -> datasets.Dataset:
    """Load one local file; wraps every reader failure so the message names the file."""
    builder = _builder_for(path)
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty")
    try:
        ds = datasets.load_dataset(builder, data_files=path, split="train")
    except Exception as exc:  # the readers raise many types (ArrowInvalid, StopIteration, generation errors)
        if _holds_zero_rows(path, builder, exc):
            raise DataError(f"{path}: file holds zero rows") from exc
        cause = _root_cause(exc)
        raise DataError(f"{path}: cannot read as {builder}: {type(cause).__name__}: {cause}") from exc
    for name in ds.column_names:  # the JSON reader lets invalid UTF-8 through, to fail on the first read of it
        try:
            ds.data.table.column(name).validate(full=True)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{path}: column {name!r} is not UTF-8 text; re-encode the file as UTF-8") from exc
    return ds


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain: the reader's own complaint, not the wrapper's "an error occurred"."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__
    return exc


def _holds_zero_rows(path: str, builder: str, exc: Exception) -> bool:
    """``datasets`` refuses a zero-row file instead of returning an empty split; tell that apart from corruption."""
    if builder == "parquet":
        try:
            return pq.read_metadata(path).num_rows == 0
        except (pa.ArrowInvalid, OSError):  # unreadable metadata: the file is corrupt, not empty
            return False
    return "corresponds to no data" in str(exc)


def _builder_for(path: str) -> str:
    """The ``datasets`` builder name for a supported file suffix."""
    lowered = path.lower()
    for suffix, builder in _LOCAL_BUILDERS.items():
        if lowered.endswith(suffix):
            return builder
    raise DataError(f"{path}: unsupported file type; expected one of {sorted(_LOCAL_BUILDERS)}")


def _rename_columns(ds: datasets.Dataset, column_map: dict[str, str], source: str) -> datasets.Dataset:
    """Apply ``column_map`` (source name -> schema name), refusing columns the source does not have."""
    missing = [column for column in column_map if column not in ds.column_names]
    if missing:
        raise DataError(
            f"{source}: column_map names column(s) {missing} not in the data; available: {ds.column_names}"
        )
    renames = {old: new for old, new in column_map.items() if old != new}
    # A column already called like a rename's target (e.g. `label` when `refusal` is mapped to label) is not the
    # one asked for: it gives way instead of clashing.
    shadowed = [new for new in renames.values() if new in ds.column_names and new not in renames]
    return ds.remove_columns(shadowed).rename_columns(renames)


# ---------------------------------------------------------------- adapters


def _resolve_adapter(ds: datasets.Dataset, adapter: str) -> str:
    """Pick the adapter for "auto" from the column names; explicit choices pass through."""
    if adapter != "auto":
        return adapter
    columns = set(ds.column_names)
    if "prompt" not in columns and _BEAVERTAILS_COLUMNS <= columns:
        return "beavertails"
    if "prompt" not in columns and {"chosen", "rejected"} <= columns:
        return "hh_rlhf"
    return "none"


def _require_columns(ds: datasets.Dataset, columns: Iterable[str], source: str, what: str) -> None:
    """Refuse data lacking a needed column, listing what it does have."""
    missing = [column for column in columns if column not in ds.column_names]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {missing}{what}; available: {ds.column_names}"
        )


def _adapt_none(ds: datasets.Dataset, source: str) -> datasets.Dataset:
    """Columns already follow the schema."""
    return ds


def _adapt_beavertails(ds: datasets.Dataset, source: str) -> datasets.Dataset:
    """GuardReasoner's BeaverTails packaging -> prompt, response, label (unharmful = 1, harmful = 0).

    ``instruction`` is one fixed classifier prompt in every row and is dropped.
    """
    _require_columns(ds, ("input", "output"), source, " for the beavertails adapter")
    prompts, responses, labels = [], [], []
    for row, (text, verdict) in enumerate(zip(ds["input"], ds["output"])):
        prompt, response = _split_beavertails_input(text, source, row)
        prompts.append(prompt)
        responses.append(response)
        labels.append(_beavertails_label(verdict, source, row))
    return datasets.Dataset.from_dict({"prompt": prompts, "response": responses, "label": labels})


def _split_beavertails_input(text: Any, source: str, row: int) -> tuple[str, str]:
    """``"Human user:\\n<prompt>\\n\\nAI assistant:\\n<response>\\n\\n"`` -> (prompt, response)."""
    if not isinstance(text, str) or not text.startswith(_BT_HUMAN) or _BT_ASSISTANT not in text:
        raise DataError(
            f"{source}: row {row} field 'input' is not 'Human user:\\n...\\n\\nAI assistant:\\n...': {text!r:.80}"
        )
    prompt, response = text[len(_BT_HUMAN):].split(_BT_ASSISTANT, 1)
    return prompt.strip(), response.strip()


def _beavertails_label(verdict: Any, source: str, row: int) -> int:
    """Last line ``Response: unharmful`` -> 1, ``Response: harmful`` -> 0."""
    last_line = verdict.strip().splitlines()[-1].strip().lower() if isinstance(verdict, str) else ""
    if last_line == "response: unharmful":
        return 1
    if last_line == "response: harmful":
        return 0
    raise DataError(f"{source}: row {row} field 'output' does not end with 'Response: harmful/unharmful'")


def _adapt_hh_rlhf(ds: datasets.Dataset, source: str) -> datasets.Dataset:
    """HH-RLHF ``{chosen, rejected}`` dialogues -> prompt, chosen, rejected (final assistant replies).

    ``prompt`` is the chosen dialogue before its final ``Assistant:`` turn with the leading ``Human: `` cut:
    the human message alone for a single turn, else ``"q1\\n\\nAssistant: a1\\n\\nHuman: q2"``. Hence
    ``format_example(prompt, chosen)`` rebuilds the whole dialogue in the one classifier format. A pair
    whose two histories differ (an upstream quirk) keeps the chosen history.
    """
    _require_columns(ds, ("chosen", "rejected"), source, " for the hh_rlhf adapter")
    prompts, chosen, rejected = [], [], []
    for row, (good, bad) in enumerate(zip(ds["chosen"], ds["rejected"])):
        history, good_reply = _split_hh_dialogue(good, source, row, "chosen")
        prompts.append(history)
        chosen.append(good_reply)
        rejected.append(_split_hh_dialogue(bad, source, row, "rejected")[1])
    return datasets.Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})


def _split_hh_dialogue(text: Any, source: str, row: int, field: str) -> tuple[str, str]:
    """``"\\n\\nHuman: q ... \\n\\nAssistant: reply"`` -> (history as prompt, final reply)."""
    cut = text.rfind(_HH_ASSISTANT) if isinstance(text, str) else -1
    if cut < 0 or not text.startswith(_HH_HUMAN):
        raise DataError(
            f"{source}: row {row} field {field!r} is not a '\\n\\nHuman: ... \\n\\nAssistant: ...' dialogue")
    history = text[len(_HH_HUMAN):cut].strip()
    return history, text[cut + len(_HH_ASSISTANT):].strip()


_ADAPTER_FUNCS = {"none": _adapt_none, "beavertails": _adapt_beavertails, "hh_rlhf": _adapt_hh_rlhf}


# ---------------------------------------------------------------- validation


def _validate(ds: datasets.Dataset, source: str, require: tuple[str, ...],
              renamed: dict[str, str] | None = None) -> datasets.Dataset:
    """Check every schema column and rebuild the table with canonical types; ``renamed`` (schema name -> the
    source's column name) lets a message name the column as the user knows it."""
    renamed = renamed or {}
    if ds.num_rows == 0:
        raise DataError(f"{source}: zero rows")
    _require_columns(ds, require, source, "")
    columns: dict[str, pa.Array] = {}
    if "prompt" in ds.column_names:
        columns["prompt"] = pa.array(_check_strings(ds["prompt"], source, "prompt", none_as_empty=False))
    if "response" in ds.column_names or not _is_preference_pairs(ds):
        response = ds["response"] if "response" in ds.column_names else [None] * ds.num_rows
        columns["response"] = pa.array(_check_strings(response, source, "response", none_as_empty=True))
    for field in ("chosen", "rejected"):
        if field in ds.column_names:
            columns[field] = pa.array(_check_strings(ds[field], source, field, none_as_empty=False))
    for field in _BINARY_FIELDS:
        if field in ds.column_names:
            columns[field] = pa.array(_check_binary(ds[field], source, _shown(field, renamed)), type=pa.int64())
    if "pseudo_score" in ds.column_names:
        columns["pseudo_score"] = pa.array(_check_scores(ds["pseudo_score"], source,
                                                         _shown("pseudo_score", renamed)), type=pa.float64())
    return _with_columns(ds, columns, source)


def _shown(field: str, renamed: dict[str, str]) -> str:
    """A schema field as a message names it: 'pseudo_score' (column 'smollm2_zero_shot') when renamed."""
    return f"{field!r}" + (f" (column {renamed[field]!r})" if field in renamed else "")


def _is_preference_pairs(ds: datasets.Dataset) -> bool:
    """Pair rows (chosen/rejected) have no single response, so none is added to them."""
    return {"chosen", "rejected"} <= set(ds.column_names)


def _check_strings(values: list[Any], source: str, field: str, *, none_as_empty: bool) -> list[str]:
    """Text fields must be strings; only ``response`` may be missing (read as "")."""
    out = []
    for row, value in enumerate(values):
        if value is None and none_as_empty:
            value = ""
        if not isinstance(value, str):
            raise DataError(f"{source}: row {row} field {field!r} must be a string, got {value!r:.80}")
        out.append(value)
    return out


def _check_binary(values: list[Any], source: str, field: str) -> list[int]:
    """Labels must be 0/1 as int, bool or an integral float; strings, other numbers and gaps are refused."""
    out = []
    for row, value in enumerate(values):
        valid = isinstance(value, (bool, int, float, np.integer, np.floating)) and value in (0, 1)
        if not valid:
            raise DataError(f"{source}: field {field} row {row} has value {value!r}; expected 0 or 1")
        out.append(int(value))
    return out


def _check_scores(values: list[Any], source: str, field: str) -> list[float]:
    """``pseudo_score`` is a probability: a real number in [0, 1], never missing or NaN."""
    out = []
    for row, value in enumerate(values):
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not number or math.isnan(value) or not 0.0 <= value <= 1.0:
            shown = "missing (NaN)" if value is None or (number and math.isnan(value)) else repr(value)
            raise DataError(f"{source}: field {field} row {row} is {shown}; expected a probability in [0, 1]")
        out.append(float(value))
    return out


def _with_columns(ds: datasets.Dataset, columns: dict[str, pa.Array], source: str) -> datasets.Dataset:
    """Replace (or append) the given columns, keep the rest untouched, and record ``source`` in the info."""
    table = ds.data.table
    for name, array in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return datasets.Dataset(table, info=datasets.DatasetInfo(dataset_name=source))


# ---------------------------------------------------------------- splitting


def _name_of(ds: datasets.Dataset) -> str:
    """The source recorded by :func:`load_rows`, for error messages."""
    return ds.info.dataset_name or "dataset"


def _check_ratios(ratios: Sequence[float], name: str) -> tuple[float, float, float]:
    """Three non-negative ratios summing to 1."""
    values = tuple(float(r) for r in ratios)
    if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise DataError(f"{name}: ratios must be three non-negative numbers summing to 1, got {tuple(ratios)}")
    return values  # type: ignore[return-value]


def _assignment_from_column(values: list[Any], name: str, field: str) -> list[str]:
    """Read a given split column, accepting ``validation``/``dev`` as ``val``."""
    out = []
    for row, value in enumerate(values):
        key = _SPLIT_ALIASES.get(value.strip().lower()) if isinstance(value, str) else None
        if key is None:
            raise DataError(f"{name}: field {field!r} row {row} has value {value!r}; expected one of {SPLITS}")
        out.append(key)
    return out


def _random_assignment(prompts: list[str], ratios: tuple[float, float, float], seed: int) -> list[str]:
    """Seeded grouping: whole prompts go to the split where their cumulative row count starts."""
    sizes: dict[str, int] = {}
    for prompt in prompts:
        sizes[prompt] = sizes.get(prompt, 0) + 1
    unique = sorted(sizes)
    order = np.random.default_rng(seed).permutation(len(unique))
    bounds = np.cumsum(ratios)[:2] * len(prompts)
    split_of: dict[str, str] = {}
    start = 0
    for prompt in (unique[i] for i in order):
        split_of[prompt] = SPLITS[int(np.searchsorted(bounds, start, side="right"))]
        start += sizes[prompt]
    return [split_of[prompt] for prompt in prompts]
