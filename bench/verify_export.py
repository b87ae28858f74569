"""Does a run's shipped classifier reproduce the logits its selected round relabeled with?

    python bench/verify_export.py runs/refine_cpu_minilm

Loads `<run>/model` with plain `AutoModelForSequenceClassification.from_pretrained` (offline, no project code on
the model path), scores the run's test split in the one `format_example` text format, and prints the largest
difference from the `logit` field of the selected round's relabels.jsonl.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from refinement.config import RefineConfig
from refinement.corpus import run_corpus


def main(run_dir: str) -> float:
    run = Path(run_dir)
    summary = json.loads((run / "summary.json").read_text())
    selected = summary["selected_round"]
    with open(run / f"round_{selected:02d}" / "relabels.jsonl") as handle:
        expected = np.array([row["logit"] for row in map(json.loads, handle) if row["split"] == "test"])
    cfg = RefineConfig(**summary["config"])
    texts = run_corpus(cfg, run).texts["test"]
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    with torch.inference_mode():
        logits = np.concatenate([
            model(**tokenizer(texts[i:i + 64], padding=True, truncation=True, max_length=cfg.max_length,
                              return_tensors="pt")).logits[:, 0].numpy()
            for i in range(0, len(texts), 64)])
    worst = float(np.abs(logits - expected).max())
    print(f"{run}/model: round {selected}, {len(texts)} test items, num_labels {model.config.num_labels}, "
          f"max |logit - training-time logit| = {worst:.2e}")
    return worst


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/refine_cpu_minilm")
