"""The one configuration of a refinement run: flat dataclass fields, so `TrlParser` reads them from a YAML file
and the command line alike (CLI overrides YAML, unknown keys fail)."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from .cli import unset
from .data import load_rows
from .losses import LOSSES

MODES = ("frozen", "lora", "qlora", "full")
ROUND_SELECTIONS = ("labeled", "last")
EPOCH_SELECTIONS = ("robust_uu", "own_loss")
RELABEL_THRESHOLDS = ("zero", "prior")
PRIOR_GUARDS = ("interval", "point")
VIEW_TRAININGS = ("annotator", "cotrain")


@dataclass
class DatasetArguments:
    """Where the (prompt, response) pairs come from: shared by the refinement and annotation recipes."""
    dataset_path: str = field(default=None, metadata={"help": "Local .jsonl/.json/.csv/.parquet file or Hub dataset name."})
    dataset_adapter: str = field(default="auto", metadata={"help": "auto | beavertails | hh_rlhf | none"})
    dataset_split: str = field(default="train", metadata={"help": "Split to read when dataset_path is a Hub name."})
    prompt_column: str = "prompt"
    response_column: str = "response"

    def load_pairs(self):
        """The rows with the prompt and response columns named `prompt` and `response` (both required)."""
        renames = {c: t for c, t in ((self.prompt_column, "prompt"), (self.response_column, "response")) if c != t}
        return load_rows(self.dataset_path, column_map=renames, adapter=self.dataset_adapter,
                         split=self.dataset_split, require=("prompt", "response"))


@dataclass
class RefineConfig(DatasetArguments):
    # Data (and the DatasetArguments fields)
    label_column: str | None = field(default="label", metadata={"help": "Gold labels (evaluation and the labeled sample only)."})
    pseudo_label_column: str | None = field(default="pseudo_label", metadata={"help": "Round-0 pseudo-labels, if given."})
    score_column: str | None = field(default=None, metadata={"help": "Annotator P(harmless) to threshold at round 0."})
    score_threshold: float | None = None
    score_quantile: float | None = field(default=None, metadata={"help": "Threshold the scores at this quantile (0.5 = median)."})
    score_missing: str = field(default="error", metadata={"help": "Rows without a score: error | drop (the items the annotator did not label, e.g. its demonstrations, are left out of the run)"})
    annotator: dict | str | None = field(default=None, metadata={"help": "Judge the pairs with an LLM first: a "
                                        "YAML block (or JSON string) of refinement.annotation.AnnotatorConfig fields"})
    split_column: str | None = field(default="split", metadata={"help": "Use this column's train/val/test split if present."})
    max_train_items: int | None = field(default=None, metadata={"help": "Seeded subset of the training split (quick CPU runs)."})
    # Run
    output_dir: str = field(default=None, metadata={"help": "One folder per round is written here; rerun to resume."})
    seed: int = 42
    num_rounds: int = 5
    num_labeled: int = field(default=50, metadata={"help": "Size of the i.i.d. gold sample for the priors; 0 = oracle priors."})
    labeled_sample_path: str | None = field(default=None, metadata={
        "help": "Instead: the labelled sample a human wrote with recipes/label_sample.py (its items are found "
                "in the training split by text; num_labeled is then ignored)"})
    loss: str = field(default="robust_uu", metadata={"help": "robust_uu | uu | nnuu | pn | cleanlab"})
    lam: float = field(default=-0.001, metadata={"help": "Slope of the robust correction for a negative partial risk."})
    min_delta: float = field(default=0.02, metadata={"help": "Refuse to train when theta_p - theta_n is not above this."})
    prior_guard: str = field(default="interval", metadata={"help": "interval: refuse unless a one-sided bootstrap lower confidence bound of theta_p - theta_n is above min_delta (few-labeled; oracle priors have none) | point: the point estimate"})
    prior_guard_confidence: float = field(default=0.8, metadata={"help": "Confidence of that lower bound (0.8 refuses 78% of 50-item samples of chance-level labels and passes 80% of a skewed annotator's: bench/prior_guard_rate.py)"})
    epoch_selection: str = field(default="robust_uu", metadata={"help": "robust_uu: every loss picks its epoch by the robust UU risk on the pseudo-labeled val split, so early stopping alone is never mistaken for a UU gain | own_loss: by its own risk there (PN by the PN risk: vanilla RLAIF as its users train it)"})
    round_selection: str = field(default="labeled", metadata={"help": "labeled: ship the round (round 0 = the annotator's labels, shipped as a PN classifier of them) the labeled sample (or the oracle) rates best | last: the last trained round"})
    relabel_threshold: str = field(default="zero", metadata={"help": "zero: harmless iff g > 0 | prior: the "
                                   "threshold that labels a share pi of the training corpus harmless"})
    relabel_anchor_weight: float = field(default=0.5, metadata={"help": "Relabel by z(classifier) + w * z(annotator's round-0 score, or its labels when the data has no score); 0 = off. With relabel_ensemble, the measured best on frozen features (docs/results.md)"})
    relabel_ensemble: bool = field(default=True, metadata={"help": "Relabel by the mean standardized logit of every round so far (plus the anchor); false = this round's logit only"})
    relabel_crossfit_folds: int = field(default=0, metadata={"help": "relabel each training item with a head (frozen) or a fine-tuned model fitted on the other folds, never with one that saw it (K >= 2; 0 = off; fine-tuning: K more fine-tunes per round)"})
    relabel_view_model: str | None = field(default=None, metadata={"help": "frozen mode: a linear head on this second frozen backbone (e.g. embedded:minilm) scores the relabelling instead of the shipped head: the next labels are cut from z(view head) + w * z(annotator) (ensembled as set), never from the shipped head's own boundary; none = off"})
    relabel_view_feature_layer: int | None = field(default=None, metadata={"help": "Truncate the view backbone to its first N layers."})
    relabel_view_training: str = field(default="annotator", metadata={"help": "annotator: the view head learns once, in round 1, from the annotator's labels (whose noise does not depend on the shipped head's features) and scores every relabelling | cotrain: it learns every round from labels cut from the shipped head's scores (co-training)"})
    reinit_each_round: bool = field(default=True, metadata={"help": "lora/qlora/full: fine-tune the base model afresh every round (the paper's way); false continues from the previous round's model"})
    export_model: bool = field(default=True, metadata={"help": "Write the shipped classifier to model/ (false: rounds and metrics only, for sweeps)"})
    rating_folds: int = field(default=0, metadata={"help": "frozen mode: rate each trained round (and the vanilla PN head) by its training items' out-of-fold logits from K heads fitted without them, so round selection never rates a head on items it fitted (K >= 2; 0 = in-sample)"})
    patience: int = field(default=0, metadata={"help": "Stop after this many rounds without a better selection score (0 = never)."})
    cleanlab_folds: int = 5
    # Classifier
    model_name_or_path: str = field(default="embedded:minilm", metadata={"help": "embedded:minilm | embedded:smollm2 | local dir | Hub id"})
    mode: str = field(default="frozen", metadata={"help": "frozen | lora | qlora | full"})
    head: str = field(default="linear", metadata={"help": "frozen mode: linear | mlp (BERT-like backbones)"})
    feature_layer: int | None = field(default=None, metadata={"help": "Truncate the backbone to its first N layers."})
    max_length: int = 256
    feature_batch_size: int = 32
    feature_cache_dir: str | None = None
    head_epochs: int = 100
    head_batch_size: int = 128
    head_learning_rate: float = 1e-3
    head_weight_decay: float = 1e-4
    # Fine-tuning (lora / qlora / full), as in the paper
    learning_rate: float = 1e-4
    num_train_epochs: int = 3
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None

    def __post_init__(self):
        choices = {"loss": (*LOSSES, "cleanlab"), "mode": MODES, "round_selection": ROUND_SELECTIONS,
                   "epoch_selection": EPOCH_SELECTIONS, "relabel_threshold": RELABEL_THRESHOLDS,
                   "prior_guard": PRIOR_GUARDS, "relabel_view_training": VIEW_TRAININGS,
                   "score_missing": ("error", "drop")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.annotator is not None:
            from .annotation.config import AnnotatorConfig
            self.annotator = dataclasses.asdict(AnnotatorConfig.from_block(self.annotator))  # validated, resolved
        if self.num_rounds < 1 or self.num_labeled < 0:
            raise ValueError("num_rounds must be >= 1 and num_labeled >= 0 (0 = oracle priors)")
        if self.loss == "cleanlab" and self.mode != "frozen":
            raise ValueError("loss=cleanlab needs cross-validated probabilities, which this toolkit computes on "
                             "frozen features only: use mode=frozen")
        if unset(self.relabel_view_model):  # the command line and YAML spell off as none
            self.relabel_view_model = None
        for name in ("relabel_crossfit_folds", "rating_folds"):
            if getattr(self, name) == 1 or getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: use 0 (off) or K >= 2")
        frozen_only = {"rating_folds": self.rating_folds, "relabel_view_model": self.relabel_view_model}
        for name, value in frozen_only.items():
            if value and (self.mode != "frozen" or self.loss == "cleanlab"):
                raise ValueError(f"{name}={value!r} trains heads on cached features: it needs mode=frozen and a "
                                 "loss other than cleanlab")
        if self.relabel_crossfit_folds and self.loss == "cleanlab":
            raise ValueError(f"relabel_crossfit_folds={self.relabel_crossfit_folds} needs a loss other than "
                             "cleanlab (which cross-validates on its own)")
        if not 0.5 <= self.prior_guard_confidence < 1:
            raise ValueError(f"prior_guard_confidence={self.prior_guard_confidence} must be in [0.5, 1)")
        if self.relabel_anchor_weight < 0:
            raise ValueError(f"relabel_anchor_weight={self.relabel_anchor_weight} must be >= 0")

    @property
    def combined_relabel(self) -> bool:
        """Whether the next round's labels come from a combined score rather than the classifier's own labels."""
        return bool(self.relabel_anchor_weight or self.relabel_ensemble or self.relabel_crossfit_folds
                    or self.relabel_view_model)

    def to_dict(self) -> dict:
        return asdict(self)
