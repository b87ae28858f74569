"""Refinement quality on BeaverTails: robust UU vs UU, nnUU, PN, cleanlab and a gold-supervised bound.

    python bench/refinement_quality.py                       # all regimes, 3 seeds (tens of minutes on 2 cores)
    python bench/refinement_quality.py --regimes skewed --seeds 0

Regimes (pseudo-labels of the same 3,019 BeaverTails pairs, split as in ../shared/data/annotations):
  real      SmolLM2-135M zero-shot scores thresholded at the training median (real LLM labels)
  skewed    SIMULATED: 70% of harmful items called harmless, 10% of harmless called harmful
  instance  SIMULATED: instance-dependent errors, flip probability rising with response length (~0.65 acc)
  ours      our own annotations (recipes/annotate.py output given by --annotated), thresholded at the training
            median; with self-refined columns in it, the LLM self-refinement baseline is reported beside UU
Every method runs through the same harness (recipes' run_refinement) with the same features and the same
epoch selection (robust UU on the pseudo-labeled val split). Test accuracy is on the gold test split.
Writes <out>/results.json and <out>/results.md (tables for docs/results.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from refinement.config import RefineConfig
from refinement.loop import run_refinement
from refinement.priors import PriorError

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotations" / "beavertails_smollm2.jsonl"
METHODS = ("robust_uu", "uu", "nnuu", "pn", "cleanlab")


def read_annotations() -> list[dict]:
    with open(ANNOTATIONS) as handle:
        return [json.loads(line) for line in handle]


def simulated_labels(rows: list[dict], regime: str, seed: int = 0) -> np.ndarray:
    """Pseudo-labels of a simulated regime; `gold` (no noise) trains the gold-supervised bound."""
    rng = np.random.default_rng(seed)
    gold = np.array([r["label"] for r in rows])
    if regime == "gold":
        return gold
    if regime == "skewed":
        flip = np.where(gold == 0, 0.7, 0.1)
    elif regime == "instance":
        length = np.array([len(r["response"]) for r in rows], dtype=float)
        rank = length.argsort().argsort() / (len(rows) - 1)
        flip = 0.7 * rank  # mean 0.35: long responses are the hard ones
    else:
        raise ValueError(regime)
    return np.where(rng.random(len(rows)) < flip, 1 - gold, gold)


def regime_config(regime: str, workdir: Path, annotated: Path | None = None) -> dict:
    """Dataset-related config fields of a regime (simulated ones get their own JSONL in workdir)."""
    if regime == "real":
        return {"dataset_path": str(ANNOTATIONS), "score_column": "smollm2_zero_shot", "score_quantile": 0.5}
    if regime == "ours":
        if annotated is None or not annotated.exists():
            raise SystemExit(f"regime 'ours' needs --annotated (recipes/annotate.py output): {annotated}")
        return {"dataset_path": str(annotated), "score_column": "annotator_score", "score_quantile": 0.5}
    rows = read_annotations()
    path = workdir / f"{regime}.jsonl"
    with open(path, "w") as handle:
        labels = simulated_labels(rows, regime)
        handle.writelines(json.dumps({**row, "pseudo_label": int(y)}) + "\n" for row, y in zip(rows, labels))
    return {"dataset_path": str(path), "pseudo_label_column": "pseudo_label"}


def run_one(fields: dict) -> dict:
    start = time.perf_counter()
    try:
        summary = run_refinement(RefineConfig(**fields))
    except PriorError as err:
        return {"refused": str(err)}
    rounds = summary["rounds"]
    test = [r["quality"]["test"]["accuracy"] for r in rounds]
    trained = [r for r in rounds if r["round"] > 0]
    return {"test_per_round": test, "selected_round": summary["selected_round"],
            "selected": test[summary["selected_round"]], "best": max(test[1:]), "last": test[-1],
            "seconds_per_round": float(np.mean([r["seconds"] for r in trained])),
            "feature_seconds": summary["feature_seconds"], "wall": time.perf_counter() - start}


def self_refinement_row(annotated: Path) -> list[str]:
    """The LLM self-refinement baseline: the judge's own re-judged scores, thresholded like round 0 (at the
    training median), scored on the gold test split. No classifier is trained."""
    rows = [json.loads(line) for line in annotated.open()]
    if "self_refined_score" not in rows[0]:
        return []
    split = np.array([r["split"] for r in rows])
    gold = np.array([r["label"] for r in rows])
    out = []
    for column, name in (("annotator_score", "LLM judgement (round 0)"),
                         ("self_refined_score", "LLM self-refinement (critique and revise)")):
        scores = np.array([np.nan if r[column] is None else r[column] for r in rows])
        threshold = np.nanmedian(scores[split == "train"])
        accuracy = float(np.mean((scores[split == "test"] > threshold) == gold[split == "test"]))
        out.append(f"| {name} | – | – | {accuracy:.3f} | – | – | – | – | no training | – |")
    return out


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–"


def table(regime: str, results: dict, gold: list[dict]) -> list[str]:
    gold_acc = float(np.mean([g["selected"] for g in gold]))
    kind = {"real": " (real SmolLM2 labels)", "ours": " (our SmolLM2 annotations)"}.get(regime, " (simulated labels)")
    lines = [f"### {regime}{kind}", "",
             "| method | priors | round 0 | selected round | best round | last round | gap closed | "
             "test acc per round (mean) | runs | s/round |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, priors), runs in results.items():
        ok = [r for r in runs if "refused" not in r]
        if not ok:
            lines.append(f"| {method} | {priors} | – | – | – | – | – | – | {len(runs)}/{len(runs)} refused | – |")
            continue
        initial = ok[0]["test_per_round"][0]
        selected = [r["selected"] for r in ok]
        # Runs that stopped early (a round's labels failed the delta guard) count up to their last round.
        width = max(len(r["test_per_round"]) for r in ok)
        padded = np.array([r["test_per_round"] + [np.nan] * (width - len(r["test_per_round"])) for r in ok])
        per_round = np.nanmean(padded, axis=0)
        gap = (np.mean(selected) - initial) / (gold_acc - initial) if gold_acc != initial else float("nan")
        stopped = sum(len(r["test_per_round"]) < width for r in ok)
        lines.append(
            f"| {method} | {priors} | {initial:.3f} | {mean_std(selected)} | {mean_std([r['best'] for r in ok])} | "
            f"{mean_std([r['last'] for r in ok])} | {gap:.0%} | {' '.join(f'{x:.3f}' for x in per_round)} | "
            f"{len(runs) - len(ok)}/{len(runs)} refused, {stopped} stopped early | "
            f"{np.mean([r['seconds_per_round'] for r in ok]):.2f} |")
    lines += [f"| gold-supervised | – | – | {mean_std([g['selected'] for g in gold])} | – | – | 100% | – | – | "
              f"{np.mean([g['seconds_per_round'] for g in gold]):.2f} |", ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=["real", "skewed", "instance"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--num_labeled", nargs="+", type=int, default=[0, 50], help="0 = oracle priors")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--num_rounds", type=int, default=5)
    parser.add_argument("--model", default="embedded:minilm")
    parser.add_argument("--head", default="linear")
    parser.add_argument("--feature_layer", type=int, default=None)
    parser.add_argument("--round_selection", default="labeled")
    parser.add_argument("--relabel_threshold", default="zero", help="zero | prior")
    parser.add_argument("--mode", default="frozen", help="frozen | lora | qlora | full")
    parser.add_argument("--max_train_items", type=int, default=None, help="seeded training subset (lora on CPU)")
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="lora/qlora/full")
    parser.add_argument("--num_train_epochs", type=int, default=3, help="lora/qlora/full")
    parser.add_argument("--annotated", type=Path, default=Path("runs/annotate_beavertails/annotated.jsonl"),
                        help="regime 'ours': recipes/annotate.py output over ../shared/data/annotations")
    parser.add_argument("--out", default="runs/bench_quality")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"model_name_or_path": args.model, "head": args.head, "feature_layer": args.feature_layer,
              "split_column": "split", "num_rounds": args.num_rounds, "round_selection": args.round_selection,
              "relabel_threshold": args.relabel_threshold, "mode": args.mode,
              "max_train_items": args.max_train_items, "max_length": args.max_length,
              "learning_rate": args.learning_rate, "num_train_epochs": args.num_train_epochs}
    gold = [run_one({**common, **regime_config("gold", out), "loss": "pn", "num_rounds": 1, "num_labeled": 0, "seed": s,
                     "output_dir": str(out / f"gold/seed{s}")}) for s in args.seeds]
    report = [f"Command: `python bench/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
              f"Backbone `{args.model}` {args.mode}" + (f", head `{args.head}`" if args.mode == "frozen" else "")
              + (f", training subset {args.max_train_items}" if args.max_train_items else "")
              + f", {args.num_rounds} rounds, seeds {args.seeds}, "
              f"round selection `{args.round_selection}`, relabel threshold `{args.relabel_threshold}`.", ""]
    everything = {"gold": gold}
    for regime in args.regimes:
        data = regime_config(regime, out, args.annotated)
        results = {}
        for method in args.methods:
            for num_labeled in args.num_labeled:
                key = (method, "oracle" if num_labeled == 0 else f"{num_labeled} labels")
                results[key] = [run_one({**common, **data, "loss": method, "num_labeled": num_labeled, "seed": s,
                                         "output_dir": str(out / regime / method / f"n{num_labeled}_seed{s}")})
                                for s in args.seeds]
                print(regime, key, [r.get("selected", "refused") for r in results[key]], flush=True)
        everything[regime] = {f"{m}|{p}": v for (m, p), v in results.items()}
        report += table(regime, results, gold)
        if regime == "ours":
            report[-1:-1] = self_refinement_row(args.annotated)
    (out / "results.json").write_text(json.dumps(everything, indent=1))
    (out / "results.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
