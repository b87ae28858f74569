"""Best-of-n probe: does a reward model steer a policy's replies toward harmless ones?

For every held-out prompt the policy samples n replies once (seeded); each reward model under test picks, among
the first k of them, the reply it scores highest (k = 1, 4, 16 ...). The pick is then measured by the instrument:
the evaluation judge's verdict (harmless rate on harmful prompts) and the refusal-phrase detector (refusals on
harmful and on benign prompts), each rate with a Wilson interval, and the harmless rate's difference from the
random pick on the same prompts with a paired (Newcombe) interval. All arms share one sampling pass, so the probe
costs one generation of n replies per prompt plus one scoring pass per model. It is the cheap, sensitive measure
of what RL against the same reward could reach: a reward whose best-of-16 is no better than a random reply gives
RL nothing to climb.

Arms: `random` (a seeded uniform pick: the policy as it is), every reward model given, and the evaluation judge
itself (`judge`, the ceiling: it picks by the very verdict it is scored on).

Output folder: `replies.jsonl` (every sampled reply with its refusal flag and every model's logit), `probe.json`
(settings, per-arm per-k outcomes and intervals, the two views' agreement) and `probe.md` (the table).
A folder whose replies were sampled with the same policy, prompts and settings is reused (only the scoring
runs again), so adding an arm costs one scoring pass.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from alignment.evaluate import SamplingConfig, generate, load_policy, score_texts
from alignment.intervals import agreement, paired_difference_interval, ranking_auc, rate_interval
from alignment.prompts import Prompt
from alignment.refusal import is_refusal
from refinement.data import format_example
from refinement.io import atomic_dir, write_json, write_text

RANDOM, JUDGE = "random", "judge"


def best_of_n_picks(scores: np.ndarray, k: int) -> np.ndarray:
    """Per prompt (row), the index of the highest-scoring reply among its first k (ties: the first)."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k={k}: each prompt has {scores.shape[1]} replies")
    return np.argmax(scores[:, :k], axis=1)


def random_picks(num_prompts: int, k: int, seed: int) -> np.ndarray:
    """A seeded uniform pick among each prompt's first k replies."""
    return np.random.default_rng(seed).integers(0, k, size=num_prompts)


def picked(values: np.ndarray, picks: np.ndarray) -> list[bool]:
    """values[prompt, picks[prompt]] for every prompt, as booleans."""
    return [bool(v) for v in values[np.arange(len(picks)), picks]]


def sample_replies(policy: str, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig) -> list[list[str]]:
    """n sampled replies per prompt (one seeded pass; each prompt repeated n times, so the copies batch together)."""
    if not sampling.do_sample:
        raise ValueError("best-of-n needs sampled replies (do_sample true)")
    model, tokenizer = load_policy(policy)
    generations = generate(model, tokenizer, [p.text for p in prompts for _ in range(n)], sampling)
    texts = [g.text for g in generations]
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def _sampling_key(policy: str, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig) -> dict:
    return {"policy": policy, "n": n, "sampling": asdict(sampling),
            "prompts": [[p.text, p.is_harmful] for p in prompts]}


def load_or_sample(output_dir: Path, policy: str, prompts: Sequence[Prompt], n: int,
                   sampling: SamplingConfig, rescore: bool = False) -> tuple[list[list[str]], float | None]:
    """The replies of an earlier probe in output_dir when it sampled the same way, else a new sampling pass
    (with `rescore`, an error instead: only the saved replies may be scored); returns (replies, seconds spent
    sampling now or None)."""
    key = _sampling_key(policy, prompts, n, sampling)
    cached = output_dir / "replies.jsonl"
    meta = output_dir / "probe.json"
    if cached.exists() and meta.exists() and json.loads(meta.read_text()).get("sampled") == key:
        rows = [json.loads(line) for line in cached.read_text().splitlines()]
        return [row["replies"] for row in rows], None
    if rescore:
        raise ValueError(f"{output_dir} holds no replies sampled with this policy, these prompts and settings: "
                         "nothing to rescore")
    started = time.perf_counter()
    replies = sample_replies(policy, prompts, n, sampling)
    return replies, time.perf_counter() - started


def arm_table(outcomes: Mapping[str, Mapping[int, dict]]) -> str:
    """Markdown: one row per (arm, k) with every rate and its 95% interval."""
    lines = ["| arm | k | harmless rate, harmful (judge) | Δ vs random (paired) | refusals, harmful (phrases) | "
             "refusals, benign (phrases) |", "|---|---|---|---|---|---|"]
    for arm, by_k in outcomes.items():
        for k, row in by_k.items():
            versus = "–" if row["harmless_vs_random"] is None else row["harmless_vs_random"]["text"]
            lines.append(f"| {arm} | {k} | {row['harmless_harmful']['text']} | {versus} | "
                         f"{row['refusal_harmful']['text']} | {row['refusal_benign']['text']} |")
    return "\n".join(lines)


def _rate(outcomes: list[bool]) -> dict:
    estimate = rate_interval(outcomes)
    return {"value": estimate.value, "low": estimate.low, "high": estimate.high, "text": estimate.text()}


def _difference(before: list[bool], after: list[bool]) -> dict:
    estimate = paired_difference_interval(before, after)
    return {"value": estimate.value, "low": estimate.low, "high": estimate.high, "text": estimate.text(sign=True)}


def probe_outcomes(prompts: Sequence[Prompt], harmless: np.ndarray, refusal: np.ndarray,
                   scores: Mapping[str, np.ndarray], ks: Sequence[int], seed: int) -> dict[str, dict[int, dict]]:
    """Per arm (random, then each scorer in order) and k: the picked replies' harmless rate on harmful prompts,
    refusal rates on harmful and benign prompts, and the harmless rate's paired difference from random.
    `harmless`, `refusal` and every score array are [prompts, replies]."""
    is_harmful = np.array([p.is_harmful for p in prompts])
    outcomes: dict[str, dict[int, dict]] = {}
    random_harmless: dict[int, list[bool]] = {}
    arms = {RANDOM: None, **scores}
    for arm, arm_scores in arms.items():
        outcomes[arm] = {}
        for k in ks:
            picks = (random_picks(len(prompts), k, seed) if arm_scores is None
                     else best_of_n_picks(arm_scores, k))
            harmful_harmless = picked(harmless[is_harmful], picks[is_harmful])
            if arm == RANDOM:
                random_harmless[k] = harmful_harmless
            outcomes[arm][k] = {
                "harmless_harmful": _rate(harmful_harmless),
                "harmless_vs_random": None if arm == RANDOM else _difference(random_harmless[k], harmful_harmless),
                "refusal_harmful": _rate(picked(refusal[is_harmful], picks[is_harmful])),
                "refusal_benign": _rate(picked(refusal[~is_harmful], picks[~is_harmful])),
                "picks": picks.tolist(),
            }
    return outcomes


def run_probe(policy: str, harmful: Sequence[Prompt], benign: Sequence[Prompt], rewards: Mapping[str, str],
              judge: str, output_dir: str | Path, ks: Sequence[int] = (1, 4, 16),
              sampling: SamplingConfig | None = None, score_batch_size: int = 32, rescore: bool = False) -> dict:
    """Sample max(ks) replies per prompt (or reuse them; with `rescore` only reuse them), score them with every
    reward model (name -> exported classifier folder) and the judge, and measure each arm at each k. Writes
    output_dir; returns probe.json's content."""
    sampling = sampling or SamplingConfig(do_sample=True, temperature=0.7, max_new_tokens=48, batch_size=16)
    if not harmful or not benign:
        raise ValueError(f"need harmful and benign prompts, got {len(harmful)} and {len(benign)}")
    if RANDOM in rewards or JUDGE in rewards:
        raise ValueError(f"reward names {RANDOM!r} and {JUDGE!r} are the probe's own arms")
    prompts, n, out = [*harmful, *benign], max(ks), Path(output_dir)
    replies, sampling_seconds = load_or_sample(out, policy, prompts, n, sampling, rescore)
    texts = [format_example(p.text, reply) for p, row in zip(prompts, replies) for reply in row]
    started = time.perf_counter()
    scores, thresholds = {}, {}
    for name, folder in {**rewards, JUDGE: judge}.items():
        logits, thresholds[name] = score_texts(folder, texts, score_batch_size)
        scores[name] = logits.reshape(len(prompts), n)
    scoring_seconds = time.perf_counter() - started
    harmless = scores[JUDGE] > thresholds[JUDGE]
    refusal = np.array([[is_refusal(reply) for reply in row] for row in replies])
    is_harmful = np.array([p.is_harmful for p in prompts])
    views = agreement(harmless[is_harmful].ravel().tolist(), refusal[is_harmful].ravel().tolist())
    rankings = {name: {"auc_vs_judge": ranking_auc(s[is_harmful], harmless[is_harmful]),
                       "auc_vs_refusal_phrases": ranking_auc(s[is_harmful], refusal[is_harmful])}
                for name, s in scores.items()}
    result = {
        "sampled": _sampling_key(policy, prompts, n, sampling),
        "models": {**rewards, JUDGE: judge}, "thresholds": thresholds, "ks": list(ks),
        "n_harmful": len(harmful), "n_benign": len(benign),
        "all_replies": {"harmless_rate_harmful": float(harmless[is_harmful].mean()),
                        "refusal_rate_harmful": float(refusal[is_harmful].mean()),
                        "refusal_rate_benign": float(refusal[~is_harmful].mean()),
                        "judge_vs_phrases_on_harmful": views, "rankings_on_harmful": rankings},
        "outcomes": probe_outcomes(prompts, harmless, refusal, scores, ks,
                                   sampling.seed),
        "seconds": {"sampling": sampling_seconds, "scoring": scoring_seconds},
    }
    rows = [{"prompt": p.text, "is_harmful": p.is_harmful, "category": p.category, "replies": row,
             "refusal": refusal[i].tolist(), "logits": {name: s[i].tolist() for name, s in scores.items()}}
            for i, (p, row) in enumerate(zip(prompts, replies))]
    with atomic_dir(out, replace=True) as tmp:
        write_text(tmp / "replies.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        write_json(tmp / "probe.json", result)
        write_text(tmp / "probe.md", probe_report(result))
    return result


def logit_spreads(output_dir: str | Path) -> dict[str, float]:
    """Each scorer's logit standard deviation over every reply of a probe (its `replies.jsonl`): the scale of a
    cost read from that logit, so that a Lagrangian weight can push equally hard whichever reward it weighs."""
    path = Path(output_dir) / "replies.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no probe replies; run bench/best_of_n.py (or recipes/best_of_n_probe.py)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    names = rows[0]["logits"] if rows else {}
    return {name: float(np.std([x for row in rows for x in row["logits"][name]])) for name in names}


def _auc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def probe_report(result: dict) -> str:
    """probe.md: settings, the arm table and the agreement of the two harmlessness views."""
    sampled, every = result["sampled"], result["all_replies"]
    sampling, views = sampled["sampling"], every["judge_vs_phrases_on_harmful"]
    kappa = "–" if views["kappa"] is None else f"{views['kappa']:.3f}"
    lines = [
        "# Best-of-n probe", "",
        f"Policy `{sampled['policy']}`; {result['n_harmful']} harmful and {result['n_benign']} benign held-out "
        f"prompts; {sampled['n']} replies each (temperature {sampling['temperature']}, top_p {sampling['top_p']}, "
        f"up to {sampling['max_new_tokens']} tokens, seed {sampling['seed']}). Harmless: the judge "
        f"`{result['models'][JUDGE]}`; refusals: `alignment.refusal` phrases. Rates with 95% Wilson intervals; "
        "Δ vs random: paired difference of the harmless rate on the same prompts (Newcombe).", "",
        "Models: " + ", ".join(f"{name} `{folder}`" for name, folder in result["models"].items()) + ".", "",
        arm_table(result["outcomes"]), "",
        f"All {sampled['n']} replies per prompt: harmless rate on harmful prompts "
        f"{every['harmless_rate_harmful']:.3f}, refusal phrases on harmful {every['refusal_rate_harmful']:.3f} "
        f"and on benign {every['refusal_rate_benign']:.3f}. Judge vs refusal phrases on the {views['n']} replies to "
        f"harmful prompts: agreement {views['agreement']:.3f}, Cohen's kappa {kappa}.", "",
        "How each model ranks the replies to harmful prompts (ROC AUC of its logit; 0.5 = no signal):", "",
        "| model | vs the judge's verdict | vs refusal phrases |", "|---|---|---|",
        *[f"| {name} | {_auc(r['auc_vs_judge'])} | {_auc(r['auc_vs_refusal_phrases'])} |"
          for name, r in every["rankings_on_harmful"].items()], "",
    ]
    return "\n".join(lines)
