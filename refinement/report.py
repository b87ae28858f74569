"""report.md and rounds.png of a refinement run, made from its summary."""
from __future__ import annotations

from pathlib import Path

from .cli import fmt
from .io import save_figure, write_text


def plot_rounds(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    x = [r["round"] for r in rounds]
    fig, (acc_ax, theta_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split in ("train", "test"):
        ys = [r.get("quality", {}).get(split, {}).get("accuracy") for r in rounds]
        if any(y is not None for y in ys):
            acc_ax.plot(x, ys, marker="o", label=f"{split} accuracy (gold)")
    acc_ax.plot(x, [r.get("selection_score") for r in rounds], marker="s", ls="--", label="selection score")
    acc_ax.axvline(summary["selected_round"], color="grey", lw=0.8, ls=":")
    acc_ax.set(xlabel="round", title="labels per round", xticks=x)
    acc_ax.legend(fontsize=8)
    for key in ("theta_p", "theta_n", "prior"):
        theta_ax.plot(x, [r["label_priors"][key] for r in rounds], marker="o", label=key)
    theta_ax.set(xlabel="round", title=f"priors of each round's labels ({rounds[0]['label_priors']['source']})",
                 xticks=x)
    theta_ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(output_dir: Path, summary: dict) -> None:
    plot_rounds(summary, output_dir / "rounds.png")
    cfg = summary["config"]
    lines = [
        f"# Refinement run: {cfg['loss']} on {cfg['dataset_path']}", "",
        f"Classifier `{cfg['model_name_or_path']}` ({cfg['mode']}, head {cfg['head']}); priors from "
        + (f"{summary['labeled_items']} labeled items; " if summary["labeled_items"] else "oracle gold labels; ")
        + f"seed {cfg['seed']}. Selected round: **{summary['selected_round']}**"
        + (f". Stopped early: {summary['stopped']}" if summary["stopped"] else "") + ".", "",
        f"**Shipped: {summary.get('note', '')}.**", "",
        "Round 0 holds the annotator's labels. The priors of a round's labels (pi, theta_p, theta_n) train the "
        "next round; the selection score is the labels' accuracy estimated from those priors.", "",
        "| round | pi | theta_p | theta_n | delta (95% CI) | selection score | flips (train) | train acc | "
        "test acc | test F1 | test AUC | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        p = r["label_priors"]
        ci = (p.get("interval") or {}).get("delta")
        q = r.get("quality", {})
        lines.append(" | ".join([
            f"| {r['round']}", fmt(p["prior"]), fmt(p["theta_p"]), fmt(p["theta_n"]),
            fmt(p["delta"]) + (f" ({ci[0]:.2f}, {ci[1]:.2f})" if ci else ""), fmt(r.get("selection_score")),
            str(r.get("flips", {}).get("train", "–")), fmt(q.get("train", {}).get("accuracy")),
            fmt(q.get("test", {}).get("accuracy")), fmt(q.get("test", {}).get("f1")),
            fmt(q.get("test", {}).get("auc")), fmt(r.get("seconds"), 1)]) + " |")
    shipped = summary.get("shipped_metrics") or {}
    if shipped.get("vanilla"):
        q, p = shipped.get("quality", {}), shipped["label_priors"]
        lines.append(" | ".join([
            "| vanilla (PN on round 0)", fmt(p["prior"]), fmt(p["theta_p"]), fmt(p["theta_n"]), fmt(p["delta"]),
            fmt(shipped.get("selection_score")), "–", fmt(q.get("train", {}).get("accuracy")),
            fmt(q.get("test", {}).get("accuracy")), fmt(q.get("test", {}).get("f1")),
            fmt(q.get("test", {}).get("auc")), "–"]) + " |")
    relabelled = [r for r in summary["rounds"] if "relabel" in r]
    if relabelled:
        view = cfg.get("relabel_view_model")
        source = (f"a head on a second backbone, {view} (trained: {cfg.get('relabel_view_training')})" if view
                  else "the classifier")
        lines += ["", f"The next round's labels come from {source}, combined with the annotator's score (anchor "
                  f"weight {cfg.get('relabel_anchor_weight')}, ensemble {cfg.get('relabel_ensemble')}, cross-fit "
                  f"folds {cfg.get('relabel_crossfit_folds')}), cut at the prior-matching threshold:", "",
                  "| round | agreement with the classifier | harmless rate | train acc | test acc |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {fmt(r['relabel']['agreement_with_classifier'])} | "
                  f"{fmt(r['relabel']['positive_rate'])} | "
                  f"{fmt(r['relabel'].get('quality', {}).get('train', {}).get('accuracy'))} | "
                  f"{fmt(r['relabel'].get('quality', {}).get('test', {}).get('accuracy'))} |" for r in relabelled]
    lines += ["", "![accuracy and priors per round](rounds.png)", ""]
    if summary.get("model_dir"):
        lines += ["The shipped classifier is a stock `AutoModelForSequenceClassification` folder (one logit, "
                  f"higher = more harmless): `{summary['model_dir']}`.", ""]
    write_text(output_dir / "report.md", "\n".join(lines))
