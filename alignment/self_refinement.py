"""Generative self-refinement's pieces: one round's generations, and the per-round record, table and plot.

A round's corpus is K sampled replies to each prompt of a pool, split train/val/test by prompt (a prompt's K
replies share its split) and, when a judge is given, labelled by it. The judge's labels are the "gold" column
of the refinement run: a few-labeled run reads only its i.i.d. sample for the priors, and the rest measure the
self-judgements and the refined labels. Read the report's accuracies as agreement with that judge.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from refinement.data import format_example
from refinement.io import save_figure

from .evaluate import SamplingConfig, generate, score_texts
from .prompts import Prompt

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def prompt_splits(num_prompts: int, seed: int, fractions: dict[str, float] = SPLIT_FRACTIONS) -> list[str]:
    """A split name per prompt: a seeded permutation cut by the fractions, each split holding at least one."""
    if num_prompts < len(fractions):
        raise ValueError(f"{num_prompts} prompts cannot fill the {len(fractions)} splits {', '.join(fractions)}")
    sizes = {name: max(1, round(num_prompts * share)) for name, share in fractions.items() if name != "train"}
    sizes["train"] = num_prompts - sum(sizes.values())
    if sizes["train"] < 1:
        raise ValueError(f"{num_prompts} prompts leave none for the train split")
    order = np.random.default_rng(seed).permutation(num_prompts)
    splits = [""] * num_prompts
    start = 0
    for name in fractions:
        for position in order[start:start + sizes[name]]:
            splits[position] = name
        start += sizes[name]
    return splits


def sample_generations(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt],
                       samples_per_prompt: int, sampling: SamplingConfig) -> list[dict]:
    """K sampled replies per prompt (seeded once), as rows prompt, response, sample, is_harmful, source,
    category, n_tokens; a prompt's replies are adjacent."""
    if not sampling.do_sample and samples_per_prompt > 1:
        raise ValueError("several samples per prompt need do_sample=True (greedy replies would be copies)")
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    generations = generate(model, tokenizer, [p.text for p in repeated], sampling)
    return [{"prompt": p.text, "response": g.text, "sample": i % samples_per_prompt, "is_harmful": p.is_harmful,
             "source": p.source, "category": p.category, "n_tokens": len(g.completion_ids)}
            for i, (p, g) in enumerate(zip(repeated, generations))]


def judge_generations(rows: list[dict], judge_dir: str, batch_size: int = 16) -> None:
    """Add the judge's logit and verdict (``label``: 1 harmless iff logit > its decision threshold) in place."""
    logits, threshold = score_texts(judge_dir, [format_example(r["prompt"], r["response"]) for r in rows],
                                    batch_size)
    for row, logit in zip(rows, logits):
        row["judge_logit"] = float(logit)
        row["label"] = int(logit > threshold)


# ---------------------------------------------------------------- the per-round record

def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _accuracy(round_metrics: dict, split: str) -> float | None:
    return round_metrics.get("quality", {}).get(split, {}).get("accuracy")


def round_record(index: int, eval_dir: Path, refine_dir: Path | None = None, rl_dir: Path | None = None,
                 refused: str | None = None) -> dict:
    """What the report plots for round ``index`` (0: the starting policy, evaluated only): harmless rate on
    harmful prompts and refusal rate on benign ones (phrases) from the evaluation of the round's policy, the
    accuracy against the judge of the self-judgements (the refinement's round-0 labels) and, unless the round was
    ``refused`` (no reward trained; it kept its policy), of the shipped round's labels, on the round's training
    and test generations."""
    metrics = _read(eval_dir / "metrics.json") or {}
    record = {"round": index,
              "harmless_rate": metrics.get("harmful", {}).get("harmless_rate"),
              "benign_refusal_rate": metrics.get("benign", {}).get("refusal_rate_phrases"),
              "harmful_refusal_rate": metrics.get("harmful", {}).get("refusal_rate_phrases"),
              "mean_kl": metrics.get("overall", {}).get("mean_kl"),
              "mean_length": metrics.get("overall", {}).get("mean_length"), "refused": refused}
    round_zero = _read(refine_dir / "round_00" / "metrics.json") if refine_dir else None
    if round_zero:
        priors = round_zero.get("label_priors", {})
        record.update({"self_judgement_accuracy": _accuracy(round_zero, "train"),
                       "self_judgement_accuracy_test": _accuracy(round_zero, "test"),
                       "theta_p": priors.get("theta_p"), "theta_n": priors.get("theta_n"),
                       "prior": priors.get("prior")})
    refine = _read(refine_dir / "summary.json") if refine_dir and not refused else None
    if refine:
        shipped = next(r for r in refine["rounds"] if r["round"] == refine["selected_round"])
        record.update({
            "classifier_accuracy": _accuracy(shipped, "train"),
            "classifier_accuracy_test": _accuracy(shipped, "test"),
            "classifier_auc_test": shipped.get("quality", {}).get("test", {}).get("auc"),
            "shipped_refinement_round": refine["selected_round"], "labeled_items": refine.get("labeled_items")})
    rl = _read(rl_dir / "summary.json") if rl_dir else None
    if rl:
        reward = (rl.get("logged") or {}).get("reward") or {}
        record["rl"] = {"steps": rl.get("steps"), "train_seconds": rl.get("train_seconds"),
                        "score_first_half": reward.get("first_half_mean"),
                        "score_second_half": reward.get("second_half_mean")}
    return record


COLUMNS = (("self-judgement acc (train, vs judge)", "self_judgement_accuracy"),
           ("reward's labels acc (train, vs judge)", "classifier_accuracy"),
           ("reward acc (test prompts, vs judge)", "classifier_accuracy_test"),
           ("harmless rate, held-out harmful", "harmless_rate"),
           ("refusal rate, held-out benign", "benign_refusal_rate"),
           ("KL to the starting policy", "mean_kl"))


def format_value(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _reward_cell(record: dict) -> str:
    if record["round"] == 0:
        return "–"
    if record.get("refused"):
        return "refused (policy kept)"
    return f"refinement round {record.get('shipped_refinement_round')}"


def rounds_table(records: Sequence[dict]) -> str:
    lines = ["| round | reward | " + " | ".join(label for label, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for r in records:
        lines.append(f"| {r['round']} | {_reward_cell(r)} | "
                     + " | ".join(format_value(r.get(key)) for _, key in COLUMNS) + " |")
    refused = [r for r in records if r.get("refused")]
    lines += ["", *(f"Round {r['round']} refused: {r['refused']}" for r in refused)]
    return "\n".join(lines).rstrip()


PANELS = (("self_judgement_accuracy", "self-judgement accuracy\n(train generations, vs judge)"),
          ("classifier_accuracy", "refined-classifier accuracy\n(train generations, vs judge)"),
          ("harmless_rate", "harmless rate\n(held-out harmful prompts)"),
          ("benign_refusal_rate", "refusal rate\n(held-out benign prompts)"))


def plot_rounds(runs: dict[str, Sequence[dict]], path: Path) -> None:
    """One panel per measure, rounds on the x axis, a line per run (e.g. with and without UU refinement)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (key, title) in zip(axes, PANELS):
        for name, records in runs.items():
            points = [(r["round"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
