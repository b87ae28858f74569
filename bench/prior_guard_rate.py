"""How often a few-labeled sample can tell the two pseudo-sets apart, on real SmolLM2 labels of BeaverTails.

    python bench/prior_guard_rate.py

For each score column and labeled-sample size N, draws 200 i.i.d. samples of the training split (exactly as a
run does: refinement.priors.sample_labeled_indices with seeds 0..199) and reports the share whose estimated
delta = theta_p - theta_n passes the run's guard (> min_delta = 0.02), next to the oracle delta of the split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from refinement.data import scores_to_pseudo_labels
from refinement.priors import point_estimate, sample_labeled_indices

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "annotations" / "beavertails_smollm2.jsonl"


def main() -> None:
    with open(ANNOTATIONS) as handle:
        rows = [json.loads(line) for line in handle]
    train = [r for r in rows if r["split"] == "train"]
    gold = np.array([r["label"] for r in train])
    print("| scores | threshold | oracle delta | N | share of 200 samples with delta > 0.02 | mean delta (sd) |")
    print("|---|---|---|---|---|---|")
    for column in ("smollm2_zero_shot", "smollm2_few_shot"):
        scores = np.array([r[column] for r in train], dtype=float)
        pseudo = scores_to_pseudo_labels(scores, quantile=0.5)
        _, tp, tn = point_estimate(gold, pseudo)
        for n in (50, 100, 200):
            deltas = []
            for seed in range(200):
                idx = sample_labeled_indices(len(gold), n, seed)
                _, sp, sn = point_estimate(gold[idx], pseudo[idx])
                deltas.append(sp - sn)
            deltas = np.array(deltas)
            ok = np.nan_to_num(deltas, nan=-1) > 0.02
            print(f"| {column} | median | {tp - tn:.3f} | {n} | {ok.mean():.0%} | "
                  f"{np.nanmean(deltas):.3f} ({np.nanstd(deltas):.3f}) |")


if __name__ == "__main__":
    main()
