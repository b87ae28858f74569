"""Label the i.i.d. gold sample the priors need, by hand, in a plain terminal; resumable.

    python recipes/label_sample.py --config recipes/configs/label_sample/default.yaml \\
        --dataset_path runs/my_annotation/annotated.jsonl --output_path runs/gold/sample --num_items 50 --seed 0

Draws N items uniformly at random without replacement (``refinement.priors.sample_labeled_indices``; never
class-balanced) from the rows of the source's ``train`` split when it has a split column (``--split_column``),
else from all rows, and shows them one at a time in a seeded random order: "item k/N", a progress line
(labelled / skipped / remaining), the prompt and the response wrapped to the terminal width. Gold labels,
pseudo-labels and scores in the source are never shown. Answer (then Enter):

    h  harmless (label 1)    x  harmful (label 0)    s  skip    b  back to the previous item    q  save and quit

Ctrl-D and Ctrl-C save and quit too. Every answer rewrites ``<output_path>.jsonl`` atomically, so a killed session
loses nothing; rerun the same command to resume at the first unanswered item. ``<output_path>.meta.json``
records the source (path, sha256), seed, N and the drawn items; a rerun whose source content, seed, N or settings
differ is refused. The end prints the counts and pi_hat (the harmless rate of the labelled items).

Format of both files: ``refinement/labeled_sample.py``; ``read_labeled_sample(path)`` reads the answers back as
(source row indices, gold labels). A refinement run reads them with ``--labeled_sample_path <output_path>``: each
labelled item is found in its training split by text and its label sets the priors, so the source needs no gold
column (label rows of its train split: a source with a split column, or the run's own annotated.jsonl).
"""
from __future__ import annotations

import os
import shutil
import signal
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from refinement.cli import run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

import datasets
import numpy as np

from alignment.trl_api import TrlParser
from refinement.config import DatasetArguments
from refinement.data import DataError, split_by_prompt
from refinement.labeled_sample import (
    Answer,
    LabeledSampleError,
    check_resume,
    display_order,
    file_sha256,
    output_paths,
    read_answers,
    read_meta,
    summarize,
    write_answers,
    write_meta,
)

QUESTION = "[h]armless / [x] harmful / [s]kip / [b]ack / [q]uit > "
ANSWERS = {"h": 1, "harmless": 1, "x": 0, "harmful": 0, "s": None, "skip": None}
WORDS = {1: "harmless", 0: "harmful", None: "skipped"}


@dataclass
class LabelSampleConfig(DatasetArguments):
    output_path: str = field(default=None, metadata={"help": "Answers go to <output_path>.jsonl, the sample's "
                                                     "record to <output_path>.meta.json; rerun to resume."})
    num_items: int = field(default=50, metadata={"help": "N, the size of the i.i.d. sample to label."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample (use the refinement run's seed)."})
    split_column: str | None = field(default="split", metadata={"help": "Draw from this column's train rows "
                                                                "if the source has it, else from all rows."})
    width: int | None = field(default=None, metadata={"help": "Wrap text to this width (default: the terminal's)."})


@dataclass
class Item:
    item: int
    index: int
    pool_index: int
    prompt: str
    response: str


def load_sample(cfg: LabelSampleConfig) -> tuple[list[Item], dict]:
    """The N items in display order and the meta record of the sample (source, sha256, seed, N, items)."""
    if not os.path.isfile(cfg.dataset_path):
        raise DataError(f"{cfg.dataset_path}: not a local file (a local file is needed: its sha256 is recorded "
                        "so that a resume can check the data did not change)")
    if cfg.num_items < 1:
        raise DataError(f"num_items={cfg.num_items}: must be at least 1")
    sha256 = file_sha256(cfg.dataset_path)
    rows = cfg.load_pairs()
    rows = rows.add_column("_source_row", list(range(len(rows))))
    if cfg.split_column and cfg.split_column in rows.column_names:
        pool_name, pool = "train", split_by_prompt(rows, split_column=cfg.split_column)["train"]
    else:
        pool_name, pool = "all", rows
    if cfg.num_items > len(pool):
        raise DataError(f"{cfg.dataset_path}: num_items={cfg.num_items} but the pool ({pool_name} rows) holds only "
                        f"{len(pool)}")
    positions = [int(p) for p in display_order(len(pool), cfg.num_items, cfg.seed)]
    chosen = pool.select(positions)
    items = [Item(item=k, index=row["_source_row"], pool_index=p, prompt=row["prompt"], response=row["response"])
             for k, (p, row) in enumerate(zip(positions, chosen))]
    meta = {"source": os.path.abspath(cfg.dataset_path), "source_sha256": sha256, "seed": cfg.seed,
            "num_items": cfg.num_items, "pool": pool_name, "pool_size": len(pool), "num_rows": len(rows),
            "settings": {"dataset_adapter": cfg.dataset_adapter, "prompt_column": cfg.prompt_column,
                         "response_column": cfg.response_column, "split_column": cfg.split_column},
            "items": [it.index for it in items], "pool_items": positions}
    return items, meta


def open_answers(cfg: LabelSampleConfig, meta: dict) -> tuple[Path, dict[int, Answer]]:
    """The answers file and what it holds: new (meta written), or resumed (refused if the sample changed)."""
    jsonl, meta_path = output_paths(cfg.output_path)
    if meta_path.is_file():
        check_resume(read_meta(meta_path), meta, meta_path)  # refuses before anything is read or written
    elif jsonl.is_file():
        raise LabeledSampleError(f"{jsonl}: answers without their meta file {meta_path.name}; cannot check they "
                                 "belong to this sample (restore it or choose a new --output_path)")
    else:
        write_meta(meta_path, meta)
    answers = read_answers(jsonl, meta) if jsonl.is_file() else []
    return jsonl, {a.item: a for a in answers}


def wrapped(text: str, width: int, indent: str = "  ") -> str:
    lines = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width=width, initial_indent=indent, subsequent_indent=indent) or [""]
    return "\n".join(lines)


def progress(answers: dict[int, Answer], num_items: int) -> str:
    skipped = sum(a.skipped for a in answers.values())
    return f"labelled {len(answers) - skipped} / skipped {skipped} / remaining {num_items - len(answers)}"


def show(item: Item, answers: dict[int, Answer], num_items: int, width: int) -> None:
    print(f"\n---- item {item.item + 1}/{num_items} ----  ({progress(answers, num_items)})")
    print("PROMPT:")
    print(wrapped(item.prompt, width))
    print("RESPONSE:")
    print(wrapped(item.response, width) if item.response.strip() else "  (empty)")
    if item.item in answers:
        print(f"(current answer: {WORDS[answers[item.item].label]})")


def next_unanswered(answers: dict[int, Answer], num_items: int, after: int = -1) -> int | None:
    open_items = [k for k in range(num_items) if k not in answers]
    later = [k for k in open_items if k > after]
    return (later or open_items or [None])[0]


def label_items(items: list[Item], answers: dict[int, Answer], jsonl: Path, ask, width: int) -> str:
    """The question loop; returns why it ended: done, quit, Ctrl-D or Ctrl-C. Every answer is saved at once."""
    current = next_unanswered(answers, len(items))
    try:
        while current is not None:
            show(items[current], answers, len(items), width)
            while True:
                key = ask(QUESTION).strip().lower()
                if key in ("q", "quit"):
                    return "quit"
                if key in ("b", "back"):
                    if current == 0:
                        print("no previous item; this is item 1")
                        continue
                    current -= 1
                    break
                if key not in ANSWERS:
                    print(f"{key!r} is not an answer; type h, x, s, b or q, then Enter")
                    continue
                it = items[current]
                answers[current] = Answer(item=it.item, index=it.index, pool_index=it.pool_index,
                                          label=ANSWERS[key], prompt=it.prompt, response=it.response,
                                          time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                write_answers(jsonl, list(answers.values()))
                current = next_unanswered(answers, len(items), after=current)
                break
        return "done"
    except EOFError:
        return "Ctrl-D"
    except KeyboardInterrupt:
        return "Ctrl-C"
    finally:
        write_answers(jsonl, list(answers.values()))  # idempotent; covers an interrupt between answer and save


def report(summary: dict, jsonl: Path, first_open: int | None, width: int) -> None:
    print(f"\nlabelled {summary['labelled']} of {summary['num_items']} (harmless {summary['harmless']}, harmful "
          f"{summary['harmful']}), skipped {summary['skipped']}, remaining {summary['remaining']}")
    if summary["labelled"]:
        low, high = summary["pi_interval"]
        print(f"π̂ = {summary['pi_hat']:.3f} (95% Wilson interval {low:.3f}-{high:.3f}) over the "
              f"{summary['labelled']} labelled items")
    if summary["skipped"]:
        print(textwrap.fill("note: skipped items are left out of the sample; skipping the hard cases makes it no "
                            "longer i.i.d.", width=width))
    print(f"answers: {jsonl}")
    if first_open is not None:
        print(f"rerun the same command to resume at item {first_open + 1}/{summary['num_items']}")


def main(cfg: LabelSampleConfig, ask=input) -> dict:
    """Runs the session; ``ask`` reads one answer (``input`` in the terminal). Returns the summary."""
    if not cfg.dataset_path or not cfg.output_path:
        raise SystemExit("--dataset_path and --output_path are required (in the YAML or on the command line)")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    items, meta = load_sample(cfg)
    jsonl, answers = open_answers(cfg, meta)
    width = cfg.width or shutil.get_terminal_size((100, 24)).columns
    if answers:
        first = next_unanswered(answers, len(items))
        print(f"resuming {jsonl}: {len(answers)} of {len(items)} answered"
              + (f"; next is item {first + 1}/{len(items)}" if first is not None else "; all answered"))
    # A process started from a background job inherits SIGINT ignored, and Python then keeps it ignored: Ctrl-C
    # must still stop a labelling session (and save), so the default KeyboardInterrupt handler is put back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ended = label_items(items, answers, jsonl, ask, width) if len(answers) < len(items) else "done"
    if ended != "done":
        print(f"\nstopped ({ended}); answers saved")
    skipped = sum(a.skipped for a in answers.values())
    gold = np.asarray([a.label for a in answers.values() if not a.skipped], dtype=np.int64)
    summary = summarize(gold, skipped, len(items))
    report(summary, jsonl, next_unanswered(answers, len(items)), width)
    return {**summary, "ended": ended, "path": str(jsonl)}


def make_parser() -> TrlParser:
    return TrlParser((LabelSampleConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config)
