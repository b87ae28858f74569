"""The annotation stage of a run: rows in, an annotated JSONL out (round-0 pseudo-labels for the loop).

out_dir/
  judgements.jsonl                 every judgement, appended as it completes (the resume cache)
  judgements.provenance.json       model, template, backend, dates
  annotated.jsonl                  the rows with `annotator_score` (P(harmless)) and `pseudo_label`
                                   (+ `self_refined_score` / `self_refined_label` with self_refine_rounds)
  annotation_summary.json          settings, threshold (and the labels spent fixing it), speed, truncation,
                                   abstentions and, where gold labels exist, AUC / accuracy / θp / θn per split
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import datasets
import numpy as np

from ..data import DataError, load_rows
from ..io import write_json, write_text
from ..metrics import label_quality
from ..priors import point_estimate
from .annotator import Annotator, JudgeBackend
from .cache import JudgementCache
from .config import AnnotatorConfig
from .scoring import calibrate_threshold, labels_at
from .self_refine import self_refine
from .templates import Demonstration, get_template

logger = logging.getLogger(__name__)


def make_judge(cfg: AnnotatorConfig) -> JudgeBackend:
    if cfg.backend == "transformers":
        from .hf_backend import TransformersJudge
        return TransformersJudge(cfg.model_name_or_path, batch_size=cfg.batch_size, dtype=cfg.dtype,
                                 reuse_prefix=cfg.reuse_prefix, min_answer_mass=cfg.min_answer_mass)
    if cfg.backend == "vllm":
        from .vllm_backend import VLLMJudge
        return VLLMJudge(cfg.model_name_or_path, dtype=cfg.dtype, min_answer_mass=cfg.min_answer_mass)
    from .openai_backend import OpenAIJudge
    return OpenAIJudge(cfg.model_name_or_path, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                       concurrency=cfg.concurrency, max_retries=cfg.max_retries, min_answer_mass=cfg.min_answer_mass)


def val_rows(rows: datasets.Dataset) -> np.ndarray:
    """Indices that may spend gold labels on the annotator: the val split when the rows carry one, else all."""
    if "split" in rows.column_names:
        return np.flatnonzero(np.asarray(rows["split"]) == "val")
    return np.arange(len(rows))


def demonstrations(cfg: AnnotatorConfig, rows: datasets.Dataset, source: str) -> list[Demonstration]:
    """Few-shot demonstrations from a file, or balanced and seeded from gold-labeled val rows."""
    if cfg.demonstrations_path:
        demo_rows = load_rows(cfg.demonstrations_path, require=("prompt", "response", "label"))
        return [Demonstration(r["prompt"], r["response"], int(r["label"])) for r in demo_rows]
    if not cfg.num_demonstrations:
        return []
    if "label" not in rows.column_names:
        raise DataError(f"{source}: num_demonstrations needs gold 'label' values (or give demonstrations_path)")
    candidates = val_rows(rows)
    gold = np.asarray(rows["label"])[candidates]
    rng = np.random.default_rng(cfg.seed)
    per_class = [rng.permutation(candidates[gold == c]) for c in (0, 1)]
    picked = [int(i) for pair in zip(*per_class) for i in pair][:cfg.num_demonstrations]
    if len(picked) < cfg.num_demonstrations:
        raise DataError(f"{source}: not enough gold-labeled val rows of both classes for "
                        f"{cfg.num_demonstrations} demonstrations")
    return [Demonstration(rows[i]["prompt"], rows[i]["response"], int(rows[i]["label"])) for i in picked]


def choose_threshold(cfg: AnnotatorConfig, scores: np.ndarray, rows: datasets.Dataset,
                     source: str) -> tuple[float, dict]:
    """The threshold on P(harmless) and how it was set (with the gold labels spent, if any)."""
    if cfg.threshold_quantile is not None:
        threshold = float(np.nanquantile(scores, cfg.threshold_quantile))
        return threshold, {"rule": f"quantile {cfg.threshold_quantile}", "labels_spent": 0}
    if cfg.calibrate_on_labeled:
        if "label" not in rows.column_names:
            raise DataError(f"{source}: calibrate_on_labeled needs gold 'label' values")
        candidates = val_rows(rows)
        if len(candidates) < cfg.calibrate_on_labeled:
            raise DataError(f"{source}: calibrate_on_labeled={cfg.calibrate_on_labeled} but only "
                            f"{len(candidates)} val rows")
        sample = np.random.default_rng(cfg.seed + 1).choice(candidates, cfg.calibrate_on_labeled, replace=False)
        threshold = calibrate_threshold(scores[sample], np.asarray(rows["label"])[sample])
        return threshold, {"rule": f"calibrated on {len(sample)} gold labels of the val split",
                           "labels_spent": len(sample)}
    return cfg.threshold, {"rule": "fixed", "labels_spent": 0}


def quality(rows: datasets.Dataset, scores: np.ndarray, labels: np.ndarray) -> dict:
    """Per split (and overall): AUC, accuracy, F1, θp, θn of the judgements against gold, abstentions left out."""
    if "label" not in rows.column_names:
        return {}
    gold = np.asarray(rows["label"])
    splits = np.asarray(rows["split"]) if "split" in rows.column_names else np.full(len(rows), "all")
    out = {}
    for name in ["all", *sorted(str(s) for s in set(splits) - {"all"})]:
        keep = (splits == name if name != "all" else np.ones(len(rows), bool)) & (labels >= 0)
        if keep.sum() == 0:
            continue
        _, theta_p, theta_n = point_estimate(gold[keep], labels[keep])
        out[name] = {**label_quality(gold[keep], labels[keep], scores[keep]), "theta_p": theta_p,
                     "theta_n": theta_n, "harmless_rate": float(labels[keep].mean()), "items": int(keep.sum())}
    return out


def resolve_abstentions(labels: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels with abstentions filled by the policy, mask of the rows kept)."""
    abstained = labels < 0
    if policy == "drop":
        return labels, ~abstained
    filled = labels.copy()
    filled[abstained] = 1 if policy == "harmless" else 0
    return filled, np.ones(len(labels), bool)


def finished_annotation(out_dir: Path, cfg: AnnotatorConfig, num_rows: int) -> dict | None:
    """The summary of a finished annotation of these rows with these settings, else None."""
    summary_path = out_dir / "annotation_summary.json"
    if not (summary_path.exists() and (out_dir / "annotated.jsonl").exists()):
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("annotator") != dataclasses.asdict(cfg) or summary.get("items") != num_rows:
        return None
    return summary


def annotate_rows(rows: datasets.Dataset, cfg: AnnotatorConfig, out_dir: str | Path, source: str = "",
                  judge: JudgeBackend | None = None, show_progress: bool = True) -> tuple[Path, dict]:
    """Annotates schema rows (prompt, response, optional label/split); returns (annotated.jsonl, summary).

    Rerunning with the same out_dir reads finished judgements from the cache and judges only the rest."""
    out_dir = Path(out_dir)
    source = source or out_dir.name
    finished = finished_annotation(out_dir, cfg, len(rows))
    if finished is not None:
        return out_dir / "annotated.jsonl", finished
    template = get_template(cfg.template)
    demos = demonstrations(cfg, rows, source)
    judge = judge or make_judge(cfg)
    cache = JudgementCache(out_dir / "judgements.jsonl", {
        "model": cfg.model_name_or_path, "backend": judge.settings, "template": cfg.template,
        "template_text": template.fingerprint(), "demonstrations": len(demos), "source": source})
    annotator = Annotator(judge, template, demos, cfg.max_prompt_tokens, cfg.max_response_tokens, cache,
                          show_progress=show_progress)
    prompts, responses = list(rows["prompt"]), list(rows["response"])
    result = annotator.annotate(prompts, responses)
    threshold, threshold_info = choose_threshold(cfg, result.scores, rows, source)
    rounds = [dataclasses.replace(result, labels=labels_at(result.scores, threshold), threshold=threshold)]
    if cfg.self_refine_rounds:
        rounds = self_refine(annotator, prompts, responses, cfg.self_refine_rounds, threshold, initial=rounds[0])
        # Revised scores live on another scale: each round gets the threshold by the same rule (a quantile or a
        # calibration re-fit on the same labeled items), not round 0's value.
        rounds[1:] = [dataclasses.replace(r, labels=labels_at(r.scores, t), threshold=t) for r, t in
                      ((r, choose_threshold(cfg, r.scores, rows, source)[0]) for r in rounds[1:])]
    labels, keep = resolve_abstentions(rounds[0].labels, cfg.abstain)
    columns = {"annotator_score": rounds[0].scores, "pseudo_label": labels}
    if cfg.self_refine_rounds:
        columns["self_refined_score"] = rounds[-1].scores
        columns["self_refined_label"] = resolve_abstentions(rounds[-1].labels, cfg.abstain)[0]
    demo_texts = {(d.prompt, d.response) for d in demos}
    # Demonstrations are shown to the judge with their gold answer: their judgements are not annotations.
    keep &= np.array([(p, r) not in demo_texts for p, r in zip(prompts, responses)])
    summary = {
        "annotator": dataclasses.asdict(cfg), "source": source, "threshold": threshold, **threshold_info,
        "labels_spent_on_demonstrations": len(demos) if cfg.num_demonstrations else 0,
        "items": len(rows), "kept": int(keep.sum()), "abstained": rounds[0].abstained, **rounds[0].stats,
        "quality": quality(rows, rounds[0].scores, rounds[0].labels),
        "self_refinement": [{"round": i, "threshold": r.threshold, "quality": quality(rows, r.scores, r.labels),
                             "label_flips": int(np.sum(r.labels != rounds[i - 1].labels)) if i else 0,
                             "verdict_changes": r.stats.get("verdict_changes", 0)}
                            for i, r in enumerate(rounds) if len(rounds) > 1],
    }
    path = out_dir / "annotated.jsonl"
    write_text(path, "".join(_row_line(rows[i], {k: v[i] for k, v in columns.items()}) for i in np.flatnonzero(keep)))
    write_json(out_dir / "annotation_summary.json", summary)
    summary = json.loads((out_dir / "annotation_summary.json").read_text())  # what a resumed run returns
    logger.info("annotated %d pairs (%d from the cache, %d abstained, %d truncated) at threshold %.3f -> %s",
                len(rows), result.stats["from_cache"], result.abstained, result.truncated, threshold, path)
    return path, summary


def _row_line(row: dict, extra: dict) -> str:
    record = {**row, **{k: (None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v)
                        for k, v in extra.items()}}
    return json.dumps(record, ensure_ascii=False) + "\n"
