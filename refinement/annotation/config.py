"""The annotator's settings: the `annotator:` block of a refinement config, and the fields of recipes/annotate.py."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .templates import TEMPLATES

BACKENDS = ("transformers", "vllm", "openai")
ABSTAIN_POLICIES = ("drop", "harmful", "harmless")


@dataclass
class AnnotatorConfig:
    backend: str = field(default="transformers", metadata={"help": "transformers | vllm | openai"})
    model_name_or_path: str = field(default="embedded:smollm2", metadata={
        "help": "Judge model: embedded:smollm2, a local folder or Hub id (transformers, vllm), or the served "
                "model name (openai)"})
    template: str = field(default="response_harmful", metadata={"help": " | ".join(TEMPLATES)})
    num_demonstrations: int = field(default=0, metadata={
        "help": "Few-shot demonstrations drawn (balanced, seeded) from gold-labeled rows of the val split"})
    demonstrations_path: str | None = field(default=None, metadata={
        "help": "Or a .jsonl of prompt/response/label demonstrations"})
    max_prompt_tokens: int = 64
    max_response_tokens: int = 224
    batch_size: int = 16
    dtype: str = field(default="bfloat16", metadata={"help": "transformers/vllm weights: bfloat16 | float32 | float16"})
    reuse_prefix: bool = field(default=True, metadata={"help": "Encode the shared prefix once (transformers)"})
    min_answer_mass: float = field(default=0.0, metadata={
        "help": "Abstain when P(Yes) + P(No) of the next token is below this"})
    threshold: float = field(default=0.5, metadata={"help": "Harmless iff P(harmless) > threshold"})
    threshold_quantile: float | None = field(default=None, metadata={
        "help": "Instead: the threshold at this quantile of the scores (0.5 = median)"})
    calibrate_on_labeled: int = field(default=0, metadata={
        "help": "Instead: fit the threshold on this many gold labels of the val split (spends those labels)"})
    abstain: str = field(default="drop", metadata={"help": "Abstained pairs: drop | harmful | harmless"})
    self_refine_rounds: int = field(default=0, metadata={
        "help": "LLM self-refinement baseline: re-judge each pair this many times, shown its previous verdict"})
    base_url: str = "http://localhost:8000/v1"
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the key"})
    concurrency: int = 8
    max_retries: int = 5
    seed: int = 0

    def __post_init__(self):
        choices = {"backend": BACKENDS, "template": tuple(TEMPLATES), "abstain": ABSTAIN_POLICIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"annotator.{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        chosen = [self.threshold_quantile is not None, self.calibrate_on_labeled > 0]
        if sum(chosen) > 1:
            raise ValueError("annotator: give threshold_quantile or calibrate_on_labeled, not both")
        if self.num_demonstrations and self.demonstrations_path:
            raise ValueError("annotator: give num_demonstrations or demonstrations_path, not both")

    @classmethod
    def from_block(cls, block: dict | str, where: str = "annotator") -> AnnotatorConfig:
        """From a YAML block (dict) or a JSON string given on the command line; unknown keys fail."""
        if isinstance(block, str):
            try:
                block = json.loads(block)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not a JSON object: {err}") from None
        if not isinstance(block, dict):
            raise ValueError(f"{where}: expected a mapping of annotator settings, got {type(block).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**block)
