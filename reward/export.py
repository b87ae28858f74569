"""A refinement run's classifier as a self-describing reward model folder.

    export_reward_model("runs/refine_cpu_minilm", "runs/reward/minilm")              # the round the run ships
    export_reward_model("runs/refine_cpu_minilm", "runs/reward/minilm_r5", round="last")

The folder is a stock `AutoModelForSequenceClassification` (LoRA merged, 4-bit layers dequantized, fp32
safetensors) with its tokenizer (pad token set) and a config that says how to read the logit:
  num_labels 1, id2label {0: "harmless"}   the one logit scores the harmless direction
  reward_direction                         "higher_is_more_harmless"
  decision_threshold                       harmless iff logit > threshold (the round's relabel threshold)
  refinement_priors / training_priors      pi, theta_p, theta_n of the round's own labels / of the labels it
                                           was trained on (with bootstrap intervals in few-labeled mode)
  logit_calibration                        mean, std, quantiles of the logits on the training corpus
  refinement_history                       per round: priors, selection score, flips, gold metrics
  reward_max_length, reward_text_format,   how texts are built and truncated (scoring cuts a long text's start,
  reward_truncation_side                   so the reply is never lost)
  export_check                             the reload comparison below
plus README.md, a model card rendered from those fields (reward.card).

The folder is written beside its target and renamed only after it has been reloaded with plain transformers and
its logits compared with the training-time logits of the round (relabels.jsonl): an export that does not
reproduce them fails and leaves nothing behind.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from refinement.backends import HEAD_FILE
from refinement.config import RefineConfig
from refinement.corpus import SPLITS, run_corpus
from refinement.data import format_example
from refinement.features import head_module_names, load_stock_classifier
from refinement.finetune import EXPORT_SUBDIR, load_tokenizer
from refinement.heads import build_head, load_head_into
from refinement.io import atomic_dir, write_json, write_text
from refinement.loop import VANILLA_DIR, Refinement

from .card import base_model_id, render_model_card
from .scoring import RewardClassifier

DIRECTION = "higher_is_more_harmless"
TEXT_FORMAT = format_example("{prompt}", "{response}")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class ExportMismatch(RuntimeError):
    """The reloaded folder does not reproduce the round's training-time logits."""


# ---------------------------------------------------------------------------------------------- reading a run


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def load_run(run_dir: str | os.PathLike) -> tuple[dict, RefineConfig]:
    """summary.json and the run's RefineConfig (fields a newer RefineConfig lacks are refused by name)."""
    run = Path(run_dir)
    summary = read_json(run / "summary.json", "is this a finished refinement run (recipes/refine_classifier.py)?")
    known = {f.name for f in dataclasses.fields(RefineConfig)}
    unknown = sorted(set(summary.get("config", {})) - known)
    if unknown:
        raise ValueError(f"{run / 'summary.json'}: config field(s) {unknown} unknown to this RefineConfig")
    return summary, RefineConfig(**summary["config"])


def pick_round(summary: dict, which: str | int, run_dir: str | os.PathLike = "") -> int:
    """`selected` (the round the run ships; 0 when it ships the vanilla PN classifier of the annotator's labels),
    `best_refined` (the trained round the run's selection rates best, whether or not it ships: what refinement made
    of the labels; the last one when the run rated none), `last` (the last trained round) or a round number."""
    trained = [r["round"] for r in summary["rounds"] if r["round"] > 0]
    if not trained:
        raise ValueError(f"{run_dir}: the run trained no round, so there is no classifier to export")
    if which == "selected":
        return int(summary["selected_round"])
    if which == "best_refined":
        rated = [r for r in summary["rounds"] if r["round"] > 0 and r.get("selection_score") is not None]
        return max(rated, key=lambda r: r["selection_score"])["round"] if rated else trained[-1]
    if which == "last":
        return trained[-1]
    try:
        index = int(which)
    except (TypeError, ValueError):
        raise ValueError(f"round={which!r}: expected 'selected', 'best_refined', 'last' or a round number") from None
    if index not in trained:
        raise ValueError(f"{run_dir}: round {index} was not trained; trained rounds: {trained}")
    return index


def load_round_classifier(round_dir: Path, cfg: RefineConfig):
    """(model, tokenizer) of a trained round, as a plain classifier.

    Frozen mode: the stock backbone with the round's head copied in. Fine-tuning modes: the round's `model/`
    folder (the loop already merges LoRA there); a PEFT adapter folder in its place is merged into its base."""
    if (round_dir / HEAD_FILE).is_file():
        model, tokenizer = load_stock_classifier(cfg.model_name_or_path, cfg.feature_layer)
        state = load_file(str(round_dir / HEAD_FILE))
        linear = [k for k in state if k.endswith("weight")]
        head = build_head(cfg.head, state[linear[0]].shape[1], bias=linear[-1].replace("weight", "bias") in state)
        head.load_state_dict(state)
        return load_head_into(model, head, head_module_names(model, cfg.head)), tokenizer
    folder = round_dir / EXPORT_SUBDIR
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        peft_model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), num_labels=1)
        return peft_model.merge_and_unload().float(), load_tokenizer(str(folder))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{round_dir}: neither {HEAD_FILE} nor a model/ folder with config.json")
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32)
    return model, load_tokenizer(str(folder))


# ---------------------------------------------------------------------------------------------- the fields


def logit_calibration(train_logits: np.ndarray, threshold: float) -> dict:
    """Statistics of the logits on the training corpus (what the `standardized` reward transform divides by)."""
    g = np.asarray(train_logits, dtype=np.float64)
    if g.size == 0 or not np.all(np.isfinite(g)):
        raise ValueError("logit calibration needs a non-empty set of finite training logits")
    return {"corpus": "train", "n": int(g.size), "mean": float(g.mean()), "std": float(g.std()),
            "min": float(g.min()), "max": float(g.max()),
            "quantiles": {str(q): float(np.quantile(g, q)) for q in QUANTILES},
            "harmless_rate": float(np.mean(g > threshold))}


def _priors(p: dict | None) -> dict | None:
    return None if p is None else {k: p.get(k) for k in ("prior", "theta_p", "theta_n", "delta", "source", "interval")}


def refinement_history(rounds: list[dict]) -> list[dict]:
    """One entry per round of the run (round 0 = the annotator's labels): priors, selection, gold quality."""
    history = []
    for r in rounds:
        p = r["label_priors"]
        history.append({
            "round": r["round"], "prior": p["prior"], "theta_p": p["theta_p"], "theta_n": p["theta_n"],
            "delta": p["delta"], "selection_score": r.get("selection_score"),
            "positive_rate": r.get("positive_rate"), "threshold": r.get("threshold"),
            "flips_train": r.get("flips", {}).get("train"), "quality": r.get("quality", {})})
    return history


def shipped_classifier(run: Path, summary: dict, index: int) -> tuple[Path, dict]:
    """The folder and metrics of round `index`'s classifier; round 0 is the vanilla PN classifier of the
    annotator's labels, which a run trains only when it ships it."""
    if index == 0:
        if summary.get("shipped") != "vanilla":
            raise ValueError(f"{run}: round 0 holds the annotator's labels; this run shipped no classifier of them")
        return run / VANILLA_DIR, summary["shipped_metrics"]
    return run / f"round_{index:02d}", next(r for r in summary["rounds"] if r["round"] == index)


def reward_fields(summary: dict, cfg: RefineConfig, selected: dict, train_logits: np.ndarray, license: str) -> dict:
    """Everything the exported config records beyond the stock classifier's own fields."""
    index = selected["round"]
    threshold = float(selected.get("threshold", 0.0))
    return {
        "id2label": {0: "harmless"}, "label2id": {"harmless": 0},
        "reward_direction": DIRECTION, "decision_threshold": threshold,
        "reward_text_format": TEXT_FORMAT, "reward_max_length": cfg.max_length, "reward_truncation_side": "left",
        "refinement_round": index, "refinement_selected_round": summary["selected_round"],
        "reward_source": "vanilla_pn" if selected.get("vanilla") else "refined",
        "shipped_quality": selected.get("quality", {}),
        "refinement_priors": _priors(selected["label_priors"]), "training_priors": _priors(selected.get("priors")),
        "logit_calibration": logit_calibration(train_logits, threshold),
        "refinement_history": refinement_history(summary["rounds"]),
        "refinement_run": {k: getattr(cfg, k) for k in (
            "dataset_path", "model_name_or_path", "mode", "head", "feature_layer", "loss", "num_rounds",
            "num_labeled", "round_selection", "relabel_threshold", "seed")},
        "base_model": base_model_id(cfg.model_name_or_path), "license": license,
    }


# ---------------------------------------------------------------------------------------------- export


def verification_sample(sizes: dict[str, int], per_split: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Up to `per_split` seeded item indices of every split, sorted."""
    rng = np.random.default_rng(seed)
    return {s: np.sort(rng.choice(n, size=min(n, per_split), replace=False)) for s, n in sizes.items()}


def check_reload(folder: Path, texts: dict[str, list[str]], expected: dict[str, np.ndarray], per_split: int,
                 tolerance: float, batch_size: int, truncation_side: str = "right") -> dict:
    """Reload `folder` with plain transformers and compare its logits with the expected ones on a sample,
    truncating long texts on the side the run's training did."""
    scorer = RewardClassifier(folder, batch_size=batch_size, truncation_side=truncation_side)
    sample = verification_sample({s: len(expected[s]) for s in SPLITS}, per_split)
    worst, count = 0.0, 0
    for split, idx in sample.items():
        if len(texts[split]) != len(expected[split]):
            raise ExportMismatch(f"{split}: the corpus has {len(texts[split])} items but the round relabeled "
                                 f"{len(expected[split])}; was the data changed since the run?")
        got = scorer.logits([texts[split][i] for i in idx])
        worst = max(worst, float(np.max(np.abs(got - expected[split][idx]), initial=0.0)))
        count += len(idx)
    if not worst <= tolerance:
        raise ExportMismatch(f"{folder}: reloaded logits differ from the training-time logits by up to "
                             f"{worst:.3g} (> tolerance {tolerance:g}) on {count} items; export aborted")
    return {"items": count, "max_abs_logit_diff": worst, "tolerance": tolerance}


def export_reward_model(run_dir: str | os.PathLike, output_dir: str | os.PathLike, round: str | int = "selected",
                        license: str = "cc-by-nc-4.0", model_name: str | None = None, verify_items: int = 256,
                        tolerance: float = 1e-3, batch_size: int = 32, repo_id: str | None = None) -> Path:
    """Write the reward folder for one round of `run_dir` into `output_dir` (replaced if present). Returns it.

    `verify_items` items per split are rescored after reloading; the export fails (nothing written) when any
    logit differs from the round's training-time logit by more than `tolerance`. `repo_id` (the Hub repo it is
    meant for) is what the card's usage snippet loads; default: the folder."""
    run, target = Path(run_dir), Path(output_dir)
    summary, cfg = load_run(run)
    round_dir, selected = shipped_classifier(run, summary, pick_round(summary, round, run))
    expected = Refinement.read_logits(round_dir)
    model, tokenizer = load_round_classifier(round_dir, cfg)  # its tokenizer has a pad token (load_tokenizer)
    fields = reward_fields(summary, cfg, selected, expected["train"], license)
    texts = run_corpus(cfg, run).texts
    with atomic_dir(target, replace=True) as staging:
        model.config.pad_token_id = tokenizer.pad_token_id
        for key, value in fields.items():
            setattr(model.config, key, value)
        model.config.num_labels = 1
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        check = check_reload(staging, texts, expected, verify_items, tolerance, batch_size,
                             truncation_side=tokenizer.truncation_side)
        config = read_json(staging / "config.json", "just written")
        config["export_check"] = check
        write_json(staging / "config.json", config)
        card = render_model_card(config, model_name or target.name, repo_id or str(target))
        write_text(staging / "README.md", str(card))
    return target
