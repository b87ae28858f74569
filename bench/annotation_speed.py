"""Annotation speed: our transformers judge vs a naive per-example `model.generate`, and few-shot prefix reuse.

    OMP_NUM_THREADS=1 python bench/annotation_speed.py   # 128 BeaverTails pairs, SmolLM2-135M, bf16, 3 repeats
    python bench/annotation_speed.py --items 32 --repeats 5 --dtype float32

Same model, items and prompts for every method; each repeat runs every method over all items, interleaved in
chunks (the order rotating from repeat to repeat) so they share whatever else the machine is doing; the tables give
the median over the repeats and its range, and each ratio is taken within a repeat.

"naive" applies the chat template to each pair and calls
`model.generate(max_new_tokens=3, greedy)` one item at a time, then parses Yes/No from the text: once with the
model as `from_pretrained` loads it by default (float32, what a first script gets) and once in our dtype (which
isolates batching and the single forward pass). Agreement is the share of items where the parsed answer equals
ours (P(yes) > 0.5), among the items whose generation starts with Yes or No (SmolLM2 often starts "The AI
assistant ..." instead: that share is reported too). Writes <out>/results.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from refinement.annotation.annotator import make_truncator
from refinement.annotation.hf_backend import TransformersJudge
from refinement.annotation.scoring import parse_answer
from refinement.annotation.templates import Demonstration, conversations, get_template
from refinement.embedded import resolve_model

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotations" / "beavertails_smollm2.jsonl"


def load_items(count: int, seed: int) -> tuple[list[dict], list[Demonstration]]:
    """`count` test-split pairs (seeded) and 4 fixed val-split demonstrations (2 harmless, 2 harmful)."""
    rows = [json.loads(line) for line in ANNOTATIONS.open()]
    test = [r for r in rows if r["split"] == "test"]
    picked = [test[i] for i in np.random.default_rng(seed).choice(len(test), count, replace=False)]
    val = [r for r in rows if r["split"] == "val"]
    demos = [r for label in (1, 0) for r in [v for v in val if v["label"] == label][:2]]
    return picked, [Demonstration(d["prompt"], d["response"], d["label"]) for d in demos]


def naive_generate(model, tokenizer, conversations: list[list[dict]]) -> np.ndarray:
    """What a first script would do: template, generate a few tokens, parse the word."""
    answers = []
    with torch.inference_mode():
        for messages in conversations:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True).to(model.device)
            out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            answers.append(parse_answer(tokenizer.decode(out[0, ids["input_ids"].shape[1]:],
                                                         skip_special_tokens=True)))
    return np.array(answers)


def agreement(ours: np.ndarray, generated: np.ndarray) -> float:
    answered = ~np.isnan(generated)
    return float(np.mean(ours[answered] == generated[answered])) if answered.any() else float("nan")


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def spread(values: list[float]) -> dict:
    """Median and range of a figure over the repeats."""
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values)),
            "values": [float(v) for v in values]}


def shown(stat: dict, digits: int = 2, unit: str = "") -> str:
    return f"{stat['median']:.{digits}f}{unit} ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"


METHODS = ("naive", "naive_same_dtype", "ours", "few_no_reuse", "few_reuse")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over all items, interleaved")
    parser.add_argument("--chunks", type=int, default=4, help="interleave the methods over this many chunks")
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_annotation_speed")
    args = parser.parse_args(argv)

    items, demos = load_items(args.items, args.seed)
    judge = TransformersJudge(args.model, batch_size=args.batch_size, dtype=args.dtype)
    default_model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model)).eval()  # float32
    template = get_template("response_harmful")
    question = template.questions[0]
    cut_prompt, cut_response = make_truncator(judge.tokenizer, 64), make_truncator(judge.tokenizer, 224)
    pairs = [(cut_prompt(r["prompt"])[0], cut_response(r["response"])[0]) for r in items]

    zero_prefix, zero_items = conversations(template, question, pairs)
    few_prefix, few_items = conversations(template, question, pairs, demos)

    def run(method: str, lo: int, hi: int):
        dialogues = [zero_prefix + item for item in zero_items[lo:hi]]
        judge.reuse_prefix = method != "few_no_reuse"
        if method == "naive":
            return timed(naive_generate, default_model, judge.tokenizer, dialogues)
        if method == "naive_same_dtype":
            return timed(naive_generate, judge.model, judge.tokenizer, dialogues)
        if method == "ours":
            return timed(judge.p_yes, zero_prefix, zero_items[lo:hi])
        return timed(judge.p_yes, few_prefix, few_items[lo:hi])

    judge.p_yes(zero_prefix, zero_items[:4])  # warm-up: first-call allocations, not per-item work
    bounds = np.linspace(0, len(pairs), args.chunks + 1).astype(int)
    seconds = {m: [0.0] * args.repeats for m in METHODS}
    answers = {m: [] for m in METHODS}
    for repeat in range(args.repeats):
        # Each repeat starts the rotation one method later, so no method always follows the same one.
        order = METHODS[repeat % len(METHODS):] + METHODS[:repeat % len(METHODS)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            for method in order:
                value, t = run(method, lo, hi)
                seconds[method][repeat] += t
                if repeat == 0:
                    answers[method].append(value)
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{m} {seconds[m][repeat]:.1f}s" for m in METHODS),
              flush=True)
    ours, naive, naive_same, few_reuse, few_plain = (np.concatenate(answers[m]) for m in
                                                     ("ours", "naive", "naive_same_dtype", "few_reuse", "few_no_reuse"))
    per_repeat = {m: [len(pairs) / s for s in seconds[m]] for m in METHODS}
    rate = {m: spread(v) for m, v in per_repeat.items()}

    def ratio(a: str, b: str) -> dict:  # per repeat, then summarised: the two methods ran side by side
        return spread([x / y for x, y in zip(per_repeat[a], per_repeat[b])])

    ours_answer = (ours > 0.5).astype(float)
    results = {
        "items": len(pairs), "repeats": args.repeats, "model": args.model, "dtype": args.dtype,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "items_per_second": rate,
        "speedup_vs_naive_generate": ratio("ours", "naive"),
        "speedup_vs_naive_generate_same_dtype": ratio("ours", "naive_same_dtype"),
        "naive_dtype_speedup": ratio("naive_same_dtype", "naive"),
        "speedup_prefix_reuse": ratio("few_reuse", "few_no_reuse"),
        "agreement_with_naive": agreement(ours_answer, naive),
        "agreement_with_naive_same_dtype": agreement(ours_answer, naive_same),
        "naive_answered_yes_no": float(np.mean(~np.isnan(naive))),
        "naive_same_dtype_answered_yes_no": float(np.mean(~np.isnan(naive_same))),
        "prefix_reuse_max_abs_diff": float(np.max(np.abs(few_reuse - few_plain))),
        "few_shot_prefix_tokens": len(judge.token_ids(few_prefix, few_items[:1])[0]),
    }
    command = f"python bench/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}".strip()
    lines = [f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} {command}`", "",
             f"{len(pairs)} BeaverTails test pairs, `{args.model}` in {args.dtype}, batch {args.batch_size}, "
             f"{torch.get_num_threads()} threads; {args.repeats} repeats, each interleaving the methods over "
             f"{args.chunks} chunks. Median over the repeats (min–max).", "",
             "| method | items/s | ratio |", "|---|---|---|",
             f"| naive per-example `generate`, default float32 (zero-shot) | {shown(rate['naive'])} | 1 |",
             f"| naive per-example `generate`, {args.dtype} (zero-shot) | {shown(rate['naive_same_dtype'])} | "
             f"{shown(results['naive_dtype_speedup'], unit='×')} |",
             f"| ours, one forward pass, batched, {args.dtype} (zero-shot) | {shown(rate['ours'])} | "
             f"{shown(results['speedup_vs_naive_generate'], unit='×')}; "
             f"{shown(results['speedup_vs_naive_generate_same_dtype'], unit='×')} over naive in {args.dtype} |",
             f"| few-shot (4 demos, {results['few_shot_prefix_tokens']}-token prefix), prefix re-encoded | "
             f"{shown(rate['few_no_reuse'])} | 1 |",
             f"| few-shot, prefix KV cache reused | {shown(rate['few_reuse'])} | "
             f"{shown(results['speedup_prefix_reuse'], unit='×')} |",
             "",
             f"Agreement of our label with the naive generated answer, where that answer starts with Yes/No: "
             f"{results['agreement_with_naive']:.1%} (float32; {results['naive_answered_yes_no']:.0%} of items "
             f"answered Yes/No), {results['agreement_with_naive_same_dtype']:.1%} ({args.dtype}; "
             f"{results['naive_same_dtype_answered_yes_no']:.0%}). Largest |P(yes)| difference "
             f"between few-shot with and without prefix reuse: {results['prefix_reuse_max_abs_diff']:.2e}.", ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
