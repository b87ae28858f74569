"""Refinement quality: robust UU vs UU, nnUU, PN, cleanlab and a gold-supervised bound, round by round.

    python bench/refinement_quality.py                       # the default regimes, 3 seeds (tens of minutes)
    python bench/refinement_quality.py --regimes skewed --seeds 0 --relabels plain anchor=0.5 crossfit=2 ensemble
    python bench/refinement_quality.py --model embedded:smollm2 --feature_layer 20 --relabel_threshold prior \
        --regimes skewed --relabels anchor=0.5+ensemble+view=embedded:minilm --rating_folds 2

Regimes (BeaverTails: the 3,019 pairs of ../shared/data/annotations, split as there):
  real      SmolLM2-135M zero-shot scores at the training median: labels at chance (AUC 0.545), which the
            prior guard should refuse
  fewshot   the project's own 4-shot SmolLM2 judgements (`smollm2_4shot`) at the training median: the paper's
            regime with real, instance-dependent LLM noise
  skewed    SIMULATED: 70% of harmful items called harmless, 10% of harmless called harmful
  instance  SIMULATED: instance-dependent errors, flip probability rising with response length (~0.65 acc)
  ours      our own annotations (recipes/annotate.py output given by --annotated), thresholded at the training
            median; with self-refined columns in it, the LLM self-refinement baseline is reported beside UU
  demo      the project's demo corpus (alignment/demo_data) with SmolLM2's 12-shot judgements that ship with it
            (`smollm2_12shot`), at the training median
Every method runs through the same harness (recipes' run_refinement) with the same features, the same epoch
selection (robust UU on the pseudo-labeled val split; `--epoch_selection own_loss`: each method's own risk there)
and the same round selection, which may ship round 0 as a
PN classifier of the annotator's labels. Accuracy and AUC are on the gold test split; "shipped" is the exported
classifier's. Writes <out>/results.json, <out>/results.md (tables for docs/results.md) and <out>/<regime>.png
(test accuracy per round per method).
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
DEMO_PAIRS = Path(__file__).resolve().parents[1] / "alignment" / "demo_data" / "pairs.jsonl"
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
    if regime in ("fewshot", "demo"):  # their few-shot demonstrations have no score
        path, column = (ANNOTATIONS, "smollm2_4shot") if regime == "fewshot" else (DEMO_PAIRS, "smollm2_12shot")
        return {"dataset_path": str(path), "score_column": column, "score_quantile": 0.5, "score_missing": "drop"}
    if regime == "ours":
        if annotated is None or not annotated.exists():
            raise SystemExit(f"regime 'ours' needs --annotated (an annotated.jsonl): {annotated}")
        return {"dataset_path": str(annotated), "score_column": "annotator_score", "score_quantile": 0.5,
                "score_missing": "drop", "pseudo_label_column": None}
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
    shipped = summary["shipped_metrics"]["quality"]["test"]
    return {"test_per_round": test, "auc_per_round": [r["quality"]["test"].get("auc") for r in rounds],
            "selected_round": summary["selected_round"], "shipped": summary["shipped"],
            "selected": shipped["accuracy"], "selected_auc": shipped.get("auc"), "best": max(test[1:]),
            "last": test[-1], "stopped": summary["stopped"],
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
        out.append(f"| {name} | – | – | – | {accuracy:.3f} | – | – | – | – | – | no training | – |")
    return out


def relabel_fields(spec: str) -> dict:
    """RefineConfig relabelling fields of a variant: `default` (the config's defaults), `plain` (the classifier's
    own labels), `anchor=W`, `crossfit=K`, `ensemble`, `view=MODEL` or `view=MODEL@LAYER` (relabel with a head
    on a second frozen backbone, fitted on the annotator's labels), `cotrain` (that head learns every round), or
    several joined by '+' (e.g. `anchor=0.5+ensemble+view=embedded:minilm`)."""
    if spec == "default":
        return {}
    fields = {"relabel_anchor_weight": 0.0, "relabel_ensemble": False, "relabel_crossfit_folds": 0,
              "relabel_view_model": None, "relabel_view_feature_layer": None, "relabel_view_training": "annotator"}
    for part in spec.split("+"):
        name, _, value = part.partition("=")
        if name == "anchor" and value:
            fields["relabel_anchor_weight"] = float(value)
        elif name == "crossfit" and value:
            fields["relabel_crossfit_folds"] = int(value)
        elif name == "ensemble" and not value:
            fields["relabel_ensemble"] = True
        elif name == "view" and value:
            model, _, layer = value.partition("@")
            fields["relabel_view_model"] = model
            fields["relabel_view_feature_layer"] = int(layer) if layer else None
        elif name == "cotrain" and not value:
            fields["relabel_view_training"] = "cotrain"
        elif name != "plain":
            raise SystemExit(f"--relabels {spec!r}: use default, plain, anchor=W, crossfit=K, ensemble, "
                             "view=MODEL[@LAYER], cotrain, joined by +")
    return fields


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–"


def per_round_mean(runs: list[dict], key: str = "test_per_round") -> np.ndarray:
    """Mean over runs of a per-round series; a run that stopped early counts up to its last round."""
    width = max(len(r[key]) for r in runs)
    padded = np.array([[np.nan if v is None else v for v in r[key]] + [np.nan] * (width - len(r[key])) for r in runs])
    return np.nanmean(padded, axis=0)


def table(regime: str, results: dict, gold: list[dict]) -> list[str]:
    gold_acc = float(np.mean([g["selected"] for g in gold]))
    kind = {"real": " (real SmolLM2 zero-shot labels)", "fewshot": " (real SmolLM2 4-shot labels)",
            "ours": " (our SmolLM2 annotations)", "demo": " (demo corpus, SmolLM2 12-shot)"}.get(
        regime, " (simulated labels)")
    lines = [f"### {regime}{kind}", "",
             "| method | relabel | priors | round 0 acc / AUC | shipped acc | shipped AUC | best round | last round | "
             "gap closed | test acc per round (mean) | runs | s/round |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, relabel, priors), runs in results.items():
        ok = [r for r in runs if "refused" not in r]
        if not ok:
            lines.append(f"| {method} | {relabel} | {priors} | – | – | – | – | – | – | – | "
                         f"{len(runs)}/{len(runs)} refused | – |")
            continue
        initial, initial_auc = ok[0]["test_per_round"][0], ok[0]["auc_per_round"][0]
        selected = [r["selected"] for r in ok]
        gap = (np.mean(selected) - initial) / (gold_acc - initial) if gold_acc != initial else float("nan")
        stopped = sum(r["stopped"] is not None for r in ok)
        vanilla = sum(r["shipped"] == "vanilla" for r in ok)
        auc = "–" if initial_auc is None else f"{initial_auc:.3f}"
        lines.append(
            f"| {method} | {relabel} | {priors} | {initial:.3f} / {auc} | "
            f"{mean_std(selected)} | {mean_std([r['selected_auc'] for r in ok])} | "
            f"{mean_std([r['best'] for r in ok])} | {mean_std([r['last'] for r in ok])} | {gap:.0%} | "
            f"{' '.join(f'{x:.3f}' for x in per_round_mean(ok))} | "
            f"{len(runs) - len(ok)}/{len(runs)} refused, {stopped} stopped early, {vanilla} shipped vanilla | "
            f"{np.mean([r['seconds_per_round'] for r in ok]):.2f} |")
    lines += [f"| gold-supervised | – | – | – | {mean_std([g['selected'] for g in gold])} | "
              f"{mean_std([g['selected_auc'] for g in gold])} | – | – | 100% | – | – | "
              f"{np.mean([g['seconds_per_round'] for g in gold]):.2f} |", ""]
    refusals = sorted({r["refused"].split(". ")[0] for runs in results.values() for r in runs if "refused" in r})
    lines += [f"Refused: {text}." for text in refusals[:3]] + ([""] if refusals else [])
    return lines


def plot(regime: str, results: dict, gold: list[dict], path: Path) -> None:
    """Test accuracy per round per method (mean over seeds), gold-supervised as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for (method, relabel, priors), runs in results.items():
        ok = [r for r in runs if "refused" not in r]
        if ok:
            series = per_round_mean(ok)
            ax.plot(range(len(series)), series, marker="o", label=f"{method}, {relabel}, {priors}")
    ax.axhline(float(np.mean([g["selected"] for g in gold])), color="black", ls="--", lw=1, label="gold-supervised")
    ax.set(xlabel="round (0 = annotator's labels)", ylabel="test accuracy (gold)",
           title=f"{regime}: accuracy per round")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=["real", "fewshot", "skewed", "instance"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--num_labeled", nargs="+", type=int, default=[0, 50], help="0 = oracle priors")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--num_rounds", type=int, default=5)
    parser.add_argument("--model", default="embedded:minilm")
    parser.add_argument("--head", default="linear")
    parser.add_argument("--feature_layer", type=int, default=None)
    parser.add_argument("--round_selection", default="labeled")
    parser.add_argument("--relabel_threshold", default="zero", help="zero | prior")
    parser.add_argument("--relabels", nargs="+", default=["default"],
                        help="relabelling variants: default, plain, anchor=W, crossfit=K, ensemble, joined by +")
    parser.add_argument("--prior_guard", default="interval", help="interval | point")
    parser.add_argument("--epoch_selection", default="robust_uu", help="robust_uu (every method alike) | own_loss")
    parser.add_argument("--rating_folds", type=int, default=None,
                        help="rate rounds on K-fold out-of-fold training logits (0 = in-sample; default: the config's)")
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
              "relabel_threshold": args.relabel_threshold,
              "prior_guard": args.prior_guard, "epoch_selection": args.epoch_selection, "mode": args.mode,
              "max_train_items": args.max_train_items, "max_length": args.max_length,
              "learning_rate": args.learning_rate, "num_train_epochs": args.num_train_epochs,
              "export_model": False,  # a sweep measures; it ships nothing
              **({} if args.rating_folds is None else {"rating_folds": args.rating_folds})}
    report = [f"Command: `python bench/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
              f"Backbone `{args.model}` {args.mode}" + (f", head `{args.head}`" if args.mode == "frozen" else "")
              + (f", training subset {args.max_train_items}" if args.max_train_items else "")
              + f", {args.num_rounds} rounds, seeds {args.seeds}, round selection `{args.round_selection}`, "
              f"relabel threshold `{args.relabel_threshold}`, relabelling {args.relabels}, "
              f"prior guard `{args.prior_guard}`, epoch selection `{args.epoch_selection}`"
              + ("" if args.rating_folds is None else f", rating folds {args.rating_folds}") + ".", ""]
    everything, golds = {}, {}
    for regime in args.regimes:
        data = regime_config(regime, out, args.annotated)
        dataset = "demo" if regime == "demo" else "beavertails"
        if dataset not in golds:  # the gold-supervised bound of the regime's corpus, with the same harness
            gold_data = {**data, "pseudo_label_column": "label", "score_column": None, "score_quantile": None}
            # one round on the gold labels, shipped as is: rating it against round 0 (the gold labels themselves)
            # would only add a vanilla head on the same labels, a second fine-tune in the fine-tuning modes
            golds[dataset] = [run_one({**common, **gold_data, "loss": "pn", "num_rounds": 1, "num_labeled": 0,
                                       "round_selection": "last",
                                       "seed": s, "output_dir": str(out / f"gold_{dataset}/seed{s}")})
                              for s in args.seeds]
            everything[f"gold_{dataset}"] = golds[dataset]
        results = {}
        for method in args.methods:
            for spec in args.relabels:
                for num_labeled in args.num_labeled:
                    key = (method, spec, "oracle" if num_labeled == 0 else f"{num_labeled} labels")
                    folder = out / regime / method / spec
                    results[key] = [run_one({**common, **data, **relabel_fields(spec), "loss": method,
                                             "num_labeled": num_labeled, "seed": s,
                                             "output_dir": str(folder / f"n{num_labeled}_seed{s}")})
                                    for s in args.seeds]
                    print(regime, key, [r.get("selected", "refused") for r in results[key]], flush=True)
        everything[regime] = {"|".join(key): v for key, v in results.items()}
        report += table(regime, results, golds[dataset])
        report += [f"![{regime}: test accuracy per round]({regime}.png)", ""]
        plot(regime, results, golds[dataset], out / f"{regime}.png")
        if regime == "ours":
            report[-1:-1] = self_refinement_row(args.annotated)
    (out / "results.json").write_text(json.dumps(everything, indent=1))
    (out / "results.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
