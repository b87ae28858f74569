"""Judge prompts for SmolLM2: which question, with how many demonstrations, makes a 135M model the best judge?

    python bench/annotation_quality.py                    # BeaverTails val + test (905 pairs), ~20-40 min on 2 cores
    python bench/annotation_quality.py --dataset demo     # the demo corpus: 4, 8 or 12 demonstrations

Every variant judges the same val and test pairs (BeaverTails: ../shared/data/annotations, its split; demo:
alignment/demo_data/pairs.jsonl); the variant is chosen on val AUC only, and test numbers are reported for all.
The few-shot variants show the first k of the demonstrations the annotation stage would draw for the largest k
(balanced val pairs, seed 0: the stage's own draw for every k), and all of those are left out of the scored pairs.
Accuracy and θp/θn on test use the threshold that maximizes val accuracy (a label-spending calibration on the val
labels) and, for reference, 0.5. Judgements are cached in <out>/cache, so a rerun costs nothing. Writes
<out>/results.md and <out>/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import numpy as np
from sklearn.metrics import roc_auc_score

from refinement.annotation.annotator import Annotator
from refinement.annotation.cache import JudgementCache
from refinement.annotation.config import AnnotatorConfig
from refinement.annotation.hf_backend import TransformersJudge
from refinement.annotation.scoring import calibrate_threshold
from refinement.annotation.stage import demonstrations
from refinement.annotation.templates import get_template
from refinement.priors import point_estimate

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {  # name: (pairs, the column of scores shipped with them, default variants)
    "beavertails": (ROOT.parent / "shared" / "data" / "annotations" / "beavertails_smollm2.jsonl",
                    "smollm2_zero_shot", ("response_harmful (zero-shot)", "response_safe (zero-shot)",
                                          "decomposed: harmful request × complies (zero-shot)",
                                          "response_harmful (4-shot)")),
    "demo": (ROOT / "alignment" / "demo_data" / "pairs.jsonl", "smollm2_12shot",
             ("response_harmful (4-shot)", "response_harmful (8-shot)", "response_harmful (12-shot)")),
}
VARIANTS = {  # name: (template, number of demonstrations)
    "response_harmful (zero-shot)": ("response_harmful", 0),
    "response_safe (zero-shot)": ("response_safe", 0),
    "decomposed: harmful request × complies (zero-shot)": ("decomposed", 0),
    "response_harmful (4-shot)": ("response_harmful", 4),
    "response_harmful (8-shot)": ("response_harmful", 8),
    "response_harmful (12-shot)": ("response_harmful", 12),
}
ENSEMBLES = {  # mean of P(harmless) of these variants: free, their judgements already exist
    "mean of response_harmful + response_safe": ("response_harmful (zero-shot)", "response_safe (zero-shot)"),
    "mean of response_harmful + decomposed": ("response_harmful (zero-shot)",
                                              "decomposed: harmful request × complies (zero-shot)"),
}


def split_metrics(scores: np.ndarray, gold: np.ndarray, threshold: float) -> dict:
    labels = (scores > threshold).astype(int)
    _, theta_p, theta_n = point_estimate(gold, labels)
    return {"auc": float(roc_auc_score(gold, scores)), "accuracy": float(np.mean(labels == gold)),
            "accuracy_at_0.5": float(np.mean((scores > 0.5) == gold)), "theta_p": theta_p, "theta_n": theta_n,
            "harmless_rate": float(labels.mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:smollm2")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--dataset", default="beavertails", choices=list(DATASETS))
    parser.add_argument("--variants", nargs="+", default=None, help="default: the dataset's own list")
    parser.add_argument("--out", default=None, help="default: runs/bench_annotation_quality[_demo]")
    args = parser.parse_args(argv)
    path, shipped_column, default_variants = DATASETS[args.dataset]
    args.variants = args.variants or list(default_variants)
    args.out = args.out or "runs/bench_annotation_quality" + ("" if args.dataset == "beavertails" else "_demo")

    rows = [json.loads(line) for line in path.open()]
    # The demonstrations the annotation stage itself would draw for the most shots (balanced val pairs, seed 0);
    # at least its default 4, so a zero-shot-only run scores the same pairs as the full one.
    most_shots = max(VARIANTS[name][1] for name in args.variants)
    demos = demonstrations(AnnotatorConfig(num_demonstrations=max(most_shots, 4), seed=0),
                           datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "response", "label", "split")}
                                                       for r in rows]), str(path))
    demo_keys = {(d.prompt, d.response) for d in demos}
    items = {s: [r for r in rows if r["split"] == s and (r["prompt"], r["response"]) not in demo_keys]
             for s in ("val", "test")}
    gold = {s: np.array([r["label"] for r in items[s]]) for s in items}
    judge = TransformersJudge(args.model, batch_size=args.batch_size, dtype=args.dtype)
    out = Path(args.out)
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name in args.variants:
        template_name, shots = VARIANTS[name]
        template = get_template(template_name)
        shown = demos[:shots]
        cache = JudgementCache(out / "cache" / f"{template_name}_{shots}shot.jsonl",
                               {"model": args.model, "template": template_name, "demonstrations": shots})
        annotator = Annotator(judge, template, shown, cache=cache)
        scores[name] = {s: annotator.annotate([r["prompt"] for r in items[s]],
                                              [r["response"] for r in items[s]]).scores for s in items}
        print(name, {s: round(roc_auc_score(gold[s], v), 3) for s, v in scores[name].items()}, flush=True)
    for name, parts in ENSEMBLES.items():
        if all(p in scores for p in parts):
            scores[name] = {s: np.mean([scores[p][s] for p in parts], axis=0) for s in items}
    scores[f"shipped `{shipped_column}` column"] = {s: np.array([r[shipped_column] for r in items[s]]) for s in items}

    results = {}
    for name, by_split in scores.items():
        threshold = calibrate_threshold(by_split["val"], gold["val"])
        results[name] = {"val_auc": float(roc_auc_score(gold["val"], by_split["val"])), "threshold": threshold,
                         "test": split_metrics(by_split["test"], gold["test"], threshold)}
    chosen = max((n for n in results if not n.startswith("shipped")), key=lambda n: results[n]["val_auc"])
    command = f"python bench/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}".strip()
    lines = [f"Command: `{command}`", "",
             f"`{args.model}` ({args.dtype}); {len(items['val'])} val / {len(items['test'])} test {args.dataset} pairs "
             f"(the {len(demos)} val pairs the annotation stage draws as few-shot demonstrations with seed 0 are left "
             "out). "
             "Chosen on val AUC: "
             f"**{chosen}**.", "",
             "| judge prompt | val AUC | test AUC | test acc (val-fit threshold) | test acc at 0.5 | θp | θn | "
             "θp − θn | harmless rate |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        t = r["test"]
        lines.append(f"| {name} | {r['val_auc']:.3f} | {t['auc']:.3f} | {t['accuracy']:.3f} | "
                     f"{t['accuracy_at_0.5']:.3f} | {t['theta_p']:.3f} | {t['theta_n']:.3f} | "
                     f"{t['theta_p'] - t['theta_n']:.3f} | {t['harmless_rate']:.2f} |")
    lines.append("")
    kinds = sorted({r["kind"] for r in items["test"]}) if "kind" in items["test"][0] else []
    if kinds:  # which kinds of pair each judge gets wrong (demo corpus): the harmless rate it gives each
        kind = np.array([r["kind"] for r in items["test"]])
        lines += ["Called harmless at the median of the val scores (the loop's round-0 rule: the training median), "
                  "test pairs by kind (gold: " + ", ".join(
                      f"{k} {gold['test'][kind == k].mean():.0f}" for k in kinds) + "):", "",
                  "| judge prompt | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for name, by_split in scores.items():
            called = by_split["test"] > np.median(by_split["val"])
            lines.append(f"| {name} | " + " | ".join(f"{called[kind == k].mean():.2f}" for k in kinds) + " |")
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"chosen": chosen, "results": results}, indent=1))
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
