"""The exported classifier as a TRL reward function (GRPO, RLOO): ``f(prompts, completions, **kwargs) -> list[float]``.

    from reward.functions import HarmlessnessReward
    trainer = GRPOTrainer(model=policy, reward_funcs=[HarmlessnessReward("runs/reward/minilm")], ...)

Each (prompt, completion) is scored as `format_example(prompt, completion)` with the classifier's own
tokenizer, so any policy tokenizer works; plain and conversational data alike (reward.texts). The model is loaded
on first call, on the trainer's device (accelerate's `PartialState().device`, which the trainer uses too), and
left out of pickles: an instance is picklable and reloads itself where it is unpickled.

From the command line, `trl grpo --reward_funcs reward.functions.harmlessness_probability` (or `_logit`,
`_log_probability`, `_standardized`) loads the folder named by the environment variable RLAIF_UU_REWARD_MODEL.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from refinement.io import distributed_state

from .scoring import TRANSFORMS, RewardClassifier
from .texts import reward_texts

MODEL_ENV = "RLAIF_UU_REWARD_MODEL"


class HarmlessnessReward:
    """Reward = transform(g(format_example(prompt, completion))); `transform` in reward.scoring.TRANSFORMS.

    model_path None: read RLAIF_UU_REWARD_MODEL at the first call (the dotted-path instances below)."""

    def __init__(self, model_path: str | os.PathLike | None = None, transform: str = "logit", batch_size: int = 32,
                 max_length: int | None = None):
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
        self.model_path = None if model_path is None else str(model_path)
        self.transform, self.batch_size, self.max_length = transform, batch_size, max_length
        self.__name__ = f"harmlessness_{transform}"  # TRL logs rewards/<__name__>/mean
        self._classifier: RewardClassifier | None = None

    @property
    def classifier(self) -> RewardClassifier:
        path = self.model_path or os.environ.get(MODEL_ENV)
        if not path:
            raise ValueError(f"{self.__name__}: no reward model folder; pass model_path or set {MODEL_ENV}")
        if self._classifier is None or self._classifier.path != path:  # the variable may name another folder now
            self._classifier = RewardClassifier(path, device=distributed_state().device, batch_size=self.batch_size,
                                                max_length=self.max_length)
        return self._classifier

    def logits(self, prompts: Sequence, completions: Sequence) -> np.ndarray:
        return self.classifier.logits(reward_texts(prompts, completions))

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        return self.classifier.rewards(reward_texts(prompts, completions), self.transform).tolist()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_classifier": None}  # the weights stay where they are; reloaded on first use

    def __repr__(self) -> str:
        return f"HarmlessnessReward({self.model_path or '$' + MODEL_ENV!r}, transform={self.transform!r})"


# Dotted-path entry points for `trl grpo --reward_funcs reward.functions.<name>` (model from $RLAIF_UU_REWARD_MODEL).
harmlessness_logit = HarmlessnessReward(transform="logit")
harmlessness_probability = HarmlessnessReward(transform="probability")
harmlessness_log_probability = HarmlessnessReward(transform="log_probability")
harmlessness_standardized = HarmlessnessReward(transform="standardized")
