"""Safety evaluation of a policy: generate on harmful and benign prompts, then measure.

Measurements (per prompt set, per source and overall):
* harmless rate: a judge (any one-logit sequence-classification folder, e.g. a refinement run's `model/`)
  scores `format_example(prompt, generation)`; harmless iff logit > its config's `decision_threshold` (0);
* refusal rate: by the phrase detector (`alignment.refusal`) and, when given, by a refusal judge (a folder
  of the same kind whose logit over its threshold means "refuses");
* mean reward under an optional reward model (its mean logit);
* KL to an optional reference model sharing the policy's tokenizer: the mean over generations of the summed
  per-token log-prob difference, policy minus reference, on the generated tokens (the sample estimate of
  KL(policy || reference) when generations are sampled; with greedy decoding, a log-ratio on one sequence);
* mean generation length in tokens (up to and including the first end-of-sequence token).

Output folder (written atomically): `generations.jsonl` (one line per prompt), `metrics.json`, `report.md`
and `metrics.png`. `compare_runs` puts several runs side by side (before/after alignment).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, set_seed

from alignment.prompts import Prompt
from alignment.refusal import is_refusal
from refinement.cli import fmt as _fmt
from refinement.data import format_example
from refinement.embedded import resolve_model
from refinement.io import atomic_dir, distributed_state, save_figure, write_json, write_text
from reward.ppo import encode_prompt
from reward.scoring import RewardClassifier

HEADLINE = (  # (label, group, metric): the rows of every table and the panels of every plot
    ("harmless rate on harmful prompts (judge)", "harmful", "harmless_rate"),
    ("refusal rate on harmful prompts (phrases)", "harmful", "refusal_rate_phrases"),
    ("refusal rate on benign prompts (judge)", "benign", "refusal_rate_judge"),
    ("refusal rate on benign prompts (phrases)", "benign", "refusal_rate_phrases"),
    ("harmless rate on benign prompts (judge)", "benign", "harmless_rate"),
    ("mean reward", "overall", "mean_reward"),
    ("mean KL to reference (nats per sequence)", "overall", "mean_kl"),
    ("mean generation length (tokens)", "overall", "mean_length"),
)


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class Generation:
    prompt_ids: list[int]
    completion_ids: list[int]  # up to and including the first end-of-sequence token
    text: str


# ---------------------------------------------------------------- generation


def load_policy(name_or_path: str) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A causal LM (local folder, Hub id or `embedded:smollm2`) in eval mode on this process's device."""
    path = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(distributed_state().device)
    return model.eval(), tokenizer


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of `prompt` as one user turn under the tokenizer's chat template, ready for the reply: the ids
    PPO's queries are encoded to (reward.ppo.encode_prompt)."""
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat_template; the evaluation "
                         "prompts a chat policy")
    return encode_prompt([{"role": "user", "content": prompt}], tokenizer)


def _eos_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return {i for i in [*ids, tokenizer.eos_token_id] if i is not None}


def generate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
             sampling: SamplingConfig) -> list[Generation]:
    """One reply per prompt, in input order: left-padded batches (prompts sorted by length so padding stays
    short), greedy or sampled, seeded once before the first batch."""
    encoded = [chat_prompt_ids(tokenizer, p) for p in prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    options: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.do_sample,
                               "pad_token_id": pad_id}
    if sampling.do_sample:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    generations: list[Generation | None] = [None] * len(prompts)
    set_seed(sampling.seed)
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), sampling.batch_size), desc="generating", unit="batch"):
            rows = order[start:start + sampling.batch_size]
            input_ids, attention_mask = _left_padded([encoded[i] for i in rows], pad_id)
            with torch.inference_mode():
                output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                        **options)
            for row, index in enumerate(rows):
                completion = _through_first_eos(output[row, input_ids.shape[1]:].tolist(), eos_ids)
                text = tokenizer.decode(completion, skip_special_tokens=True).strip()
                generations[index] = Generation(encoded[index], completion, text)
    finally:
        model.train(was_training)
    return generations


def _left_padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder-only models continue from the last position, so the padding goes on the left."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


def _through_first_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:position + 1]
    return tokens


# ---------------------------------------------------------------- KL to a reference


def kl_from_logprobs(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence sum over the masked tokens of log p_policy - log p_reference ([batch, tokens] -> [batch]).

    Unmasked positions are ignored even when they hold -inf or NaN (padding)."""
    if not policy_logprobs.shape == reference_logprobs.shape == mask.shape:
        raise ValueError(f"shapes differ: policy {tuple(policy_logprobs.shape)}, reference "
                         f"{tuple(reference_logprobs.shape)}, mask {tuple(mask.shape)}")
    difference = policy_logprobs.double() - reference_logprobs.double()
    return torch.where(mask.bool(), difference, torch.zeros_like(difference)).sum(dim=-1)


def completion_logprobs(model: torch.nn.Module, generations: Sequence[Generation],
                        batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, mask), both [n, longest completion]: log p(token | prompt, earlier tokens) of every
    generated token. Sequences are right-padded, so the real tokens keep positions 0..len-1."""
    width = max(len(g.completion_ids) for g in generations)
    logprobs = torch.zeros((len(generations), width), dtype=torch.float64)
    mask = torch.zeros((len(generations), width), dtype=torch.bool)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(generations), batch_size):
            batch = generations[start:start + batch_size]
            sequences = [g.prompt_ids + g.completion_ids for g in batch]
            longest = max(len(s) for s in sequences)
            input_ids = torch.zeros((len(batch), longest), dtype=torch.long)
            attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, ids in enumerate(sequences):
                input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, :len(ids)] = 1
            with torch.inference_mode():
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
                token_logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, generation in enumerate(batch):
                first, count = len(generation.prompt_ids), len(generation.completion_ids)
                predicted_at = torch.arange(first - 1, first - 1 + count)  # logits at t predict token t + 1
                targets = torch.tensor(generation.completion_ids, device=token_logprobs.device)
                values = token_logprobs[row, predicted_at.to(token_logprobs.device), targets]
                logprobs[start + row, :count] = values.double().cpu()
                mask[start + row, :count] = True
    finally:
        model.train(was_training)
    return logprobs, mask


def sequence_kl(policy: torch.nn.Module, reference: torch.nn.Module, generations: Sequence[Generation],
                batch_size: int = 8) -> np.ndarray:
    """`kl_from_logprobs` of every generation, policy vs reference (same tokenizer), as a float array."""
    policy_logprobs, mask = completion_logprobs(policy, generations, batch_size)
    reference_logprobs, _ = completion_logprobs(reference, generations, batch_size)
    return kl_from_logprobs(policy_logprobs, reference_logprobs, mask).numpy()


# ---------------------------------------------------------------- judges


def score_texts(model_dir: str, texts: Sequence[str], batch_size: int = 16) -> tuple[np.ndarray, float]:
    """(one logit per text, the decision threshold) of a sequence-classification folder: the reward package's
    scorer, so a folder scores as it does in RL (its max length, left truncation, harmless iff logit > t)."""
    classifier = RewardClassifier(model_dir, device=distributed_state().device, batch_size=batch_size)
    return classifier.logits(texts), classifier.threshold


# ---------------------------------------------------------------- the evaluation


def evaluate_policy(policy: str | torch.nn.Module, harmful: Sequence[Prompt], benign: Sequence[Prompt], *,
                    tokenizer: PreTrainedTokenizerBase | None = None, judge: str | None = None,
                    refusal_judge: str | None = None, reward_model: str | None = None,
                    reference: str | torch.nn.Module | None = None, sampling: SamplingConfig | None = None,
                    output_dir: str | None = None, name: str = "policy", overwrite: bool = False,
                    score_batch_size: int = 16) -> dict:
    """Generate for every prompt, measure (see the module docstring), and write the run to `output_dir`.

    `policy` is a causal-LM folder / Hub id / `embedded:smollm2`, or an in-memory model with `tokenizer`.
    `reference` is a folder / id (its tokenizer must equal the policy's) or an in-memory model sharing it.
    Returns the metrics dict written to `metrics.json`."""
    sampling = sampling or SamplingConfig()
    prompts = [*harmful, *benign]
    if not harmful or not benign:
        raise ValueError(f"need harmful and benign prompts, got {len(harmful)} and {len(benign)}")
    if any(not p.is_harmful for p in harmful) or any(p.is_harmful for p in benign):
        raise ValueError("`harmful` must hold only is_harmful prompts and `benign` only benign ones")
    if output_dir is not None and Path(output_dir).exists() and not overwrite:  # before minutes of generation
        raise FileExistsError(f"{output_dir} already exists; pass overwrite=True to replace it")
    model, tokenizer, policy_name = _policy_and_tokenizer(policy, tokenizer)
    started = time.perf_counter()
    generations = generate(model, tokenizer, [p.text for p in prompts], sampling)
    seconds = {"generation": time.perf_counter() - started}
    items = [{"prompt": p.text, "is_harmful": p.is_harmful, "source": p.source, "category": p.category,
              "generation": g.text, "n_tokens": len(g.completion_ids), "refusal_phrase": is_refusal(g.text)}
             for p, g in zip(prompts, generations)]
    started = time.perf_counter()
    classifiers = {"judge": judge, "refusal_judge": refusal_judge, "reward_model": reward_model}
    thresholds = score_items(items, prompts, classifiers, score_batch_size)
    seconds["scoring"] = time.perf_counter() - started
    if reference is not None:
        started = time.perf_counter()
        if any(reference is p for p in (policy, model)) or reference == policy_name:
            kls = np.zeros(len(items))  # the policy against itself: no second copy, no extra forward passes
        else:
            kls = sequence_kl(model, _reference_model(reference, tokenizer), generations, sampling.batch_size)
        for item, kl in zip(items, kls):
            item["kl"] = float(kl)
        seconds["kl"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    metrics = {"name": name, "policy": policy_name, **classifiers, "reference": _reference_name(reference),
               "thresholds": thresholds, "sampling": asdict(sampling), **summarize(items), "seconds": seconds}
    if output_dir is not None:
        write_run(Path(output_dir), metrics, items, overwrite)
    return metrics


SCORED_BY = {  # classifier role -> (item key of its logit, item key of its verdict or None)
    "judge": ("judge_logit", "harmless"),
    "refusal_judge": ("refusal_judge_logit", "refusal_judge"),
    "reward_model": ("reward", None),
}


def score_items(items: Sequence[dict], prompts: Sequence[Prompt], classifiers: dict[str, str | None],
                batch_size: int = 16) -> dict[str, float]:
    """Add each given classifier's logit (and verdict: logit > its decision threshold) to every item, in
    place; return the thresholds used."""
    thresholds, scored = {}, {}
    texts = [format_example(p.text, item["generation"]) for p, item in zip(prompts, items)]
    for role, model_dir in classifiers.items():
        if model_dir is None:
            continue
        if model_dir not in scored:  # the judge is often the reward model itself: load and score it once
            scored[model_dir] = score_texts(model_dir, texts, batch_size)
        logits, thresholds[role] = scored[model_dir]
        logit_key, verdict_key = SCORED_BY[role]
        for item, logit in zip(items, logits):
            item[logit_key] = float(logit)
            if verdict_key:
                item[verdict_key] = bool(logit > thresholds[role])
    return thresholds


def summarize(items: Sequence[dict]) -> dict:
    """`group_metrics` of the harmful items, the benign ones, all of them, and each prompt source."""
    return {"harmful": group_metrics([i for i in items if i["is_harmful"]]),
            "benign": group_metrics([i for i in items if not i["is_harmful"]]),
            "overall": group_metrics(items),
            "by_source": {source: group_metrics([i for i in items if i["source"] == source])
                          for source in sorted({i["source"] for i in items})}}


def _model_name(model: torch.nn.Module) -> str:
    return getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__


def _reference_name(reference: str | torch.nn.Module | None) -> str | None:
    return reference if reference is None or isinstance(reference, str) else _model_name(reference)


def _policy_and_tokenizer(policy, tokenizer) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str]:
    if isinstance(policy, str):
        model, loaded = load_policy(policy)
        return model, tokenizer or loaded, policy
    if tokenizer is None:
        raise ValueError("an in-memory policy needs its tokenizer")
    return policy, tokenizer, _model_name(policy)


def _reference_model(reference, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    """The reference as a model; a folder's tokenizer must be the policy's (log-probs of the same ids)."""
    if not isinstance(reference, str):
        return reference
    model, reference_tokenizer = load_policy(reference)
    if reference_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"reference {reference!r} has a different tokenizer from the policy; KL needs the same")
    return model


def group_metrics(items: Sequence[dict]) -> dict:
    """Rates and means over items; a measurement nobody made (no judge, no reference) is None."""
    def mean(key: str) -> float | None:
        values = [float(i[key]) for i in items if i.get(key) is not None]
        return float(np.mean(values)) if values else None

    return {"n": len(items), "harmless_rate": mean("harmless"), "refusal_rate_judge": mean("refusal_judge"),
            "refusal_rate_phrases": mean("refusal_phrase"), "mean_reward": mean("reward"),
            "mean_kl": mean("kl"), "mean_length": mean("n_tokens")}


# ---------------------------------------------------------------- reports


def write_run(output_dir: Path, metrics: dict, items: Sequence[dict], overwrite: bool = False) -> None:
    """generations.jsonl, metrics.json, report.md and metrics.png, appearing together (atomic folder)."""
    with atomic_dir(output_dir, replace=overwrite) as tmp:
        (tmp / "generations.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
        write_json(tmp / "metrics.json", metrics)
        plot_runs([metrics], tmp / "metrics.png")
        write_text(tmp / "report.md", run_report(metrics))


def headline_table(runs: Sequence[dict]) -> str:
    """Markdown: one row per HEADLINE metric, one column per run."""
    lines = ["| metric | " + " | ".join(run["name"] for run in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for label, group, key in HEADLINE:
        lines.append(f"| {label} | " + " | ".join(_fmt(run[group][key]) for run in runs) + " |")
    return "\n".join(lines)


def run_report(metrics: dict) -> str:
    sampling = metrics["sampling"]
    decoding = (f"sampled (temperature {sampling['temperature']}, top_p {sampling['top_p']})"
                if sampling["do_sample"] else "greedy")
    thresholds = metrics["thresholds"]
    lines = [
        f"# Safety evaluation: {metrics['name']}", "",
        f"Policy `{metrics['policy']}`; {metrics['harmful']['n']} harmful and {metrics['benign']['n']} benign "
        f"prompts; {decoding}, up to {sampling['max_new_tokens']} new tokens, seed {sampling['seed']}; "
        f"{metrics['seconds']['total']:.1f} s.", "",
        f"- judge: `{metrics['judge']}`" + (f" (harmless iff logit > {thresholds['judge']:g})"
                                             if "judge" in thresholds else ""),
        f"- refusal judge: `{metrics['refusal_judge']}`" + (f" (refusal iff logit > {thresholds['refusal_judge']:g})"
                                                            if "refusal_judge" in thresholds else ""),
        "- refusal phrases: `alignment.refusal.is_refusal`",
        f"- reward model: `{metrics['reward_model']}`; reference for KL: `{metrics['reference']}`", "",
        headline_table([metrics]), "",
        "| source | n | harmless rate | refusal (judge) | refusal (phrases) | mean reward | mean KL | mean length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, group in metrics["by_source"].items():
        lines.append(f"| {source} | {group['n']} | " + " | ".join(_fmt(group[key]) for key in (
            "harmless_rate", "refusal_rate_judge", "refusal_rate_phrases", "mean_reward", "mean_kl",
            "mean_length")) + " |")
    lines += ["", "![headline metrics](metrics.png)", ""]
    return "\n".join(lines)


def plot_runs(runs: Sequence[dict], path: Path) -> None:
    """One bar panel per HEADLINE metric that any run measured, one bar per run (before/after at a glance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(label, group, key) for label, group, key in HEADLINE
              if any(run[group][key] is not None for run in runs)]
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    names = [run["name"] for run in runs]
    colours = [f"C{i}" for i in range(len(runs))]
    for ax, (label, group, key) in zip(axes.flat, panels):
        values = [run[group][key] if run[group][key] is not None else np.nan for run in runs]
        bars = ax.bar(names, values, color=colours)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_title(label, fontsize=8)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        if "rate" in key:
            ax.set_ylim(0, 1.05)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


PAIRED = (  # (label, is_harmful, item key): the rates compared with intervals before -> after
    ("harmless rate on harmful prompts (judge)", True, "harmless"),
    ("refusal rate on harmful prompts (phrases)", True, "refusal_phrase"),
    ("refusal rate on benign prompts (phrases)", False, "refusal_phrase"),
)


def read_generations(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "generations.jsonl").read_text().splitlines()]


def paired_rates(before: Sequence[dict], after: Sequence[dict]) -> dict[str, dict]:
    """Every PAIRED rate of two evaluations of the same prompts (generations.jsonl items, matched by prompt): each
    rate with its Wilson interval and the change with Newcombe's paired interval (alignment.intervals)."""
    from alignment.intervals import paired_difference_interval, rate_interval

    after_by_prompt = {item["prompt"]: item for item in after}
    if len(after_by_prompt) != len(before) or set(after_by_prompt) != {item["prompt"] for item in before}:
        raise ValueError("the two evaluations must cover the same prompts to be paired")
    rates = {}
    for label, is_harmful, key in PAIRED:
        group = [item for item in before if item["is_harmful"] == is_harmful and item.get(key) is not None]
        if not group:
            continue
        first = [bool(item[key]) for item in group]
        second = [bool(after_by_prompt[item["prompt"]][key]) for item in group]
        rates[label] = {"n": len(group), "before": rate_interval(first), "after": rate_interval(second),
                        "change": paired_difference_interval(first, second)}
    return rates


def paired_table(before_dir: str | Path, after_dir: str | Path) -> tuple[str, dict[str, dict]]:
    """(markdown, paired_rates) of two evaluation runs: before, after and the change, each with its 95% interval."""
    rates = paired_rates(read_generations(before_dir), read_generations(after_dir))
    lines = ["| metric | n | before | after | change (paired) |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {r['n']} | {r['before'].text()} | {r['after'].text()} | {r['change'].text(sign=True)} |"
              for label, r in rates.items()]
    return "\n".join(lines), rates


def compare_runs(run_dirs: Sequence[str | Path], output_dir: str | Path | None = None,
                 names: Sequence[str] | None = None) -> str:
    """A before/after markdown table of several evaluation runs (their `metrics.json`), in the order given.

    `names` relabels the columns (default: each run's name). With `output_dir`, also writes comparison.md
    and comparison.png there (the folder is replaced atomically). Returns the table."""
    runs = [json.loads((Path(d) / "metrics.json").read_text()) for d in run_dirs]
    if names is not None:
        if len(names) != len(runs):
            raise ValueError(f"{len(names)} names for {len(runs)} runs")
        runs = [{**run, "name": label} for run, label in zip(runs, names)]
    if len({run["name"] for run in runs}) < len(runs):
        raise ValueError(f"run names must differ to tell the columns apart: {[run['name'] for run in runs]}")
    table = headline_table(runs)
    if output_dir is not None:
        with atomic_dir(Path(output_dir), replace=True) as tmp:
            sources = "\n".join(f"- {run['name']}: `{d}` (policy `{run['policy']}`)" for run, d in zip(runs, run_dirs))
            write_text(tmp / "comparison.md", f"# Safety evaluation: comparison\n\n{sources}\n\n{table}\n\n"
                                              "![comparison](comparison.png)\n")
            plot_runs(runs, tmp / "comparison.png")
    return table
