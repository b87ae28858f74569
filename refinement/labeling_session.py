"""A labelling session in a plain terminal: the i.i.d. sample's items one at a time, every answer saved at once
(refinement.labeled_sample's files), resumable. The settings and the keys are recipes/label_sample.py's."""
from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .data import DataError, split_by_prompt
from .labeled_sample import (
    Answer,
    LabeledSampleError,
    check_resume,
    display_order,
    file_sha256,
    output_paths,
    read_answers,
    read_meta,
    write_answers,
    write_meta,
)

QUESTION = "[h]armless / [x] harmful / [s]kip / [b]ack / [q]uit > "
ANSWERS = {"h": 1, "harmless": 1, "x": 0, "harmful": 0, "s": None, "skip": None}
WORDS = {1: "harmless", 0: "harmful", None: "skipped"}


@dataclass
class Item:
    item: int
    index: int
    pool_index: int
    prompt: str
    response: str


def load_sample(cfg) -> tuple[list[Item], dict]:
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


def open_answers(cfg, meta: dict) -> tuple[Path, dict[int, Answer]]:
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


