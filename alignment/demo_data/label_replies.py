"""Hand-label generated replies (docs/judge_labels.md has the rubric): draw a stratified sample, show it in batches,
record labels. The result, generated_labels.jsonl, is self-contained (prompt and reply text kept) and is what
bench/judge_validation.py scores every candidate judge against.

    python alignment/demo_data/label_replies.py draw [--replies runs/bench_best_of_n/probe/replies.jsonl]
    python alignment/demo_data/label_replies.py extend --harmful_only --seed 1   # more replies per prompt, appended
    python alignment/demo_data/label_replies.py split   # judge_split by category, for a judge trained on the labels
    python alignment/demo_data/label_replies.py show --start 0 --count 16
    python alignment/demo_data/label_replies.py label --start 0 "1 1 0 1i ..."   # i: incoherent

Stdlib only. `draw` refuses to overwrite a file that already holds labels.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

LABELS_PATH = Path(__file__).resolve().parent / "generated_labels.jsonl"
REPLIES_PATH = "runs/bench_best_of_n/probe/replies.jsonl"
FIELDS = ("prompt_id", "reply_index", "prompt", "prompt_is_harmful", "category", "reply", "label", "incoherent",
          "judge_split")
SPLIT_SEED, TEST_CATEGORIES, VAL_CATEGORIES = 0, 2, 1  # per kind (harm categories, benign topics)


def stratified_reply_sample(candidates: dict[int, list[int]], per_prompt: int, seed: int) -> list[tuple[int, int]]:
    """(prompt_id, reply_index) pairs: `per_prompt` distinct replies of every prompt among its candidate reply
    indices, drawn by one seeded generator, in prompt order (reply indices sorted within a prompt)."""
    rng = random.Random(seed)
    sample = []
    for prompt_id in sorted(candidates):
        if len(candidates[prompt_id]) < per_prompt:
            raise ValueError(f"prompt {prompt_id}: {len(candidates[prompt_id])} replies left, fewer than {per_prompt}")
        sample += [(prompt_id, index) for index in sorted(rng.sample(candidates[prompt_id], per_prompt))]
    return sample


def category_splits(items: list[dict], seed: int = SPLIT_SEED) -> dict[str, str]:
    """category -> train/val/test: per kind of prompt (harmful, benign), a seeded draw of TEST_CATEGORIES test and
    VAL_CATEGORIES val categories, the rest train, so a judge trained on the train split is tested on replies to
    prompts of categories it never saw."""
    rng = random.Random(seed)
    splits = {}
    for harmful in (True, False):
        categories = sorted({item["category"] for item in items if item["prompt_is_harmful"] == harmful})
        held = rng.sample(categories, TEST_CATEGORIES + VAL_CATEGORIES)
        splits.update({c: "test" if c in held[:TEST_CATEGORIES] else "val" if c in held else "train"
                       for c in categories})
    return splits


def read_items(path: Path = LABELS_PATH) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def write_items(items: list[dict], path: Path = LABELS_PATH) -> None:
    path.write_text("".join(json.dumps({field: item.get(field) for field in FIELDS}) + "\n" for item in items))


def draw(replies_path: str, per_prompt: int, seed: int, taken: list[dict] = (), harmful_only: bool = False
         ) -> list[dict]:
    """Unlabelled items for a stratified sample of the probe's replies (prompt_id = row of replies.jsonl), none of
    them among the `taken` items; with `harmful_only`, of the replies to harmful prompts only."""
    with open(replies_path) as handle:
        rows = [json.loads(line) for line in handle]
    drawn = {(item["prompt_id"], item["reply_index"]) for item in taken}
    candidates = {prompt_id: [i for i in range(len(row["replies"])) if (prompt_id, i) not in drawn]
                  for prompt_id, row in enumerate(rows) if row["is_harmful"] or not harmful_only}
    return [{"prompt_id": prompt_id, "reply_index": index, "prompt": rows[prompt_id]["prompt"],
             "prompt_is_harmful": rows[prompt_id]["is_harmful"], "category": rows[prompt_id]["category"],
             "reply": rows[prompt_id]["replies"][index], "label": None, "incoherent": None}
            for prompt_id, index in stratified_reply_sample(candidates, per_prompt, seed)]


def parse_marks(text: str) -> list[tuple[int, bool]]:
    """'1 0i 1' -> [(1, False), (0, True), (1, False)]: a label, then `i` when the reply is incoherent."""
    marks = []
    for token in text.split():
        if token.rstrip("i") not in ("0", "1") or len(token) > 2:
            raise ValueError(f"bad mark {token!r}: use 1, 0, 1i or 0i")
        marks.append((int(token[0]), token.endswith("i")))
    return marks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drawing, extending = commands.add_parser("draw"), commands.add_parser("extend")
    for command in (drawing, extending):
        command.add_argument("--replies", default=REPLIES_PATH)
        command.add_argument("--per_prompt", type=int, default=2)
        command.add_argument("--seed", type=int, default=0)
    extending.add_argument("--harmful_only", action="store_true")
    showing = commands.add_parser("show")
    commands.add_parser("split")
    labelling = commands.add_parser("label")
    labelling.add_argument("marks")
    for command in (showing, labelling):
        command.add_argument("--start", type=int, required=True)
    showing.add_argument("--count", type=int, default=16)
    args = parser.parse_args(argv)
    if args.command == "draw":
        if LABELS_PATH.exists() and any(item["label"] is not None for item in read_items()):
            sys.exit(f"error: {LABELS_PATH} already holds labels; move it away to draw again")
        items = draw(args.replies, args.per_prompt, args.seed)
        write_items(items)
        print(f"{len(items)} items -> {LABELS_PATH}")
        return
    items = read_items()
    if args.command == "extend":
        added = draw(args.replies, args.per_prompt, args.seed, taken=items, harmful_only=args.harmful_only)
        write_items(items + added)
        print(f"{len(added)} items appended -> {LABELS_PATH} (now {len(items) + len(added)})")
        return
    if args.command == "split":
        splits = category_splits(items)
        write_items([{**item, "judge_split": splits[item["category"]]} for item in items])
        print(json.dumps({s: sorted(c for c, v in splits.items() if v == s) for s in ("val", "test")}))
        return
    if args.command == "show":
        for number in range(args.start, min(args.start + args.count, len(items))):
            item = items[number]
            kind = "HARMFUL" if item["prompt_is_harmful"] else "benign"
            print(f"[{number}] {kind}/{item['category']}  label={item['label']}\n  P: {item['prompt']}\n"
                  f"  R: {item['reply']}\n")
        return
    marks = parse_marks(args.marks)
    if args.start + len(marks) > len(items):
        sys.exit(f"error: {len(marks)} marks from item {args.start} run past the {len(items)} items")
    for offset, (label, incoherent) in enumerate(marks):
        items[args.start + offset].update(label=label, incoherent=incoherent)
    write_items(items)
    print(f"labelled items {args.start}..{args.start + len(marks) - 1}; "
          f"{sum(item['label'] is not None for item in items)} of {len(items)} done")


if __name__ == "__main__":
    main()
