"""How often the prior guard lets a few-labeled run train, per label regime and guard rule.

    python bench/prior_guard_rate.py
    python bench/prior_guard_rate.py --sizes 50 --samples 200 --confidences 0.8 0.9

For each regime (BeaverTails training split: SmolLM2 zero-shot labels at chance, the 4-shot labels, and the
simulated skewed and instance-dependent regimes of bench/refinement_quality.py) and each labeled-sample size N,
draws i.i.d. samples exactly as a run does (refinement.priors.sample_labeled_indices, seeds 0..samples-1) and
applies the run's own guard (refinement.priors.labeled_priors + check_priors) with the point rule and with the
interval rule at each confidence. A good guard refuses the chance-level labels and passes the others.
"""
from __future__ import annotations

import argparse

import numpy as np
from refinement_quality import read_annotations, simulated_labels

from refinement.data import scores_to_pseudo_labels
from refinement.priors import PriorError, check_priors, labeled_priors, point_estimate, sample_labeled_indices


def regimes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(gold, pseudo) of the training split per regime; scores are cut at the training median as in a run."""
    rows = read_annotations()
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    gold = np.array([r["label"] for r in rows])
    out = {}
    for name, column in (("zero-shot (chance)", "smollm2_zero_shot"), ("4-shot", "smollm2_4shot")):
        keep = [i for i in train if rows[i][column] is not None]
        scores = np.array([rows[i][column] for i in keep], dtype=float)
        out[name] = gold[keep], scores_to_pseudo_labels(scores, quantile=0.5)
    for name in ("skewed", "instance"):
        out[f"{name} (simulated)"] = gold[train], simulated_labels(rows, name)[train]
    return out


def passes(gold: np.ndarray, pseudo: np.ndarray, seed: int, rule: str, confidence: float, min_delta: float) -> bool:
    try:
        check_priors(labeled_priors(gold, pseudo, seed + 1, min_delta=None, confidence=confidence), min_delta, rule)
    except PriorError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--confidences", nargs="+", type=float, default=[0.975, 0.9, 0.8])
    parser.add_argument("--min_delta", type=float, default=0.02)
    args = parser.parse_args()
    rules = [("point", 0.8)] + [("interval", c) for c in args.confidences]
    names = ["point estimate"] + [f"{c:.1%} lower bound" for c in args.confidences]
    print(f"Share of {args.samples} labeled samples that pass the guard (delta > min_delta = {args.min_delta}):\n")
    print("| regime | oracle delta | N | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for name, (gold, pseudo) in regimes().items():
        _, theta_p, theta_n = point_estimate(gold, pseudo)
        for n in args.sizes:
            shares = []
            for rule, confidence in rules:
                ok = []
                for seed in range(args.samples):
                    idx = sample_labeled_indices(len(gold), n, seed)
                    ok.append(len(np.unique(gold[idx])) == 2
                              and passes(gold[idx], pseudo[idx], seed, rule, confidence, args.min_delta))
                shares.append(f"{np.mean(ok):.0%}")
            print(f"| {name} | {theta_p - theta_n:.3f} | {n} | " + " | ".join(shares) + " |", flush=True)


if __name__ == "__main__":
    main()
