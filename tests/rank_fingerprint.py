"""Runs a recipe as `accelerate launch` would (`python tests/rank_fingerprint.py RECIPE ARGS...`) and prints, on
every rank, a fingerprint of what that rank ended with, so a multi-process test can compare the ranks' results
(only the main process writes files, so the other ranks' results are visible only here).

refine_classifier.py: the relabel logits every rank received from `refinement.finetune.predict_logits`.
safety_grpo.py: the trainable (LoRA) parameters of the policy each rank saves in `alignment.rl.RLRun.finish`.
The wrapped functions still run unchanged; this only reads what they return or receive.
"""
from __future__ import annotations

import hashlib
import runpy
import sys

import numpy as np


def main() -> None:
    from accelerate import PartialState

    import alignment.rl
    import refinement.finetune

    digest = hashlib.sha256()
    predict_logits, finish = refinement.finetune.predict_logits, alignment.rl.RLRun.finish

    def recorded_predict_logits(*args, **kwargs):
        logits = predict_logits(*args, **kwargs)
        digest.update(np.ascontiguousarray(logits, dtype=np.float32).tobytes())
        return logits

    def recorded_finish(self, trainer, policy):
        for name, parameter in policy.named_parameters():
            if parameter.requires_grad:
                digest.update(name.encode())
                digest.update(parameter.detach().float().cpu().numpy().tobytes())
        return finish(self, trainer, policy)

    refinement.finetune.predict_logits, alignment.rl.RLRun.finish = recorded_predict_logits, recorded_finish
    recipe, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(recipe, run_name="__main__")
    print(f"rank {PartialState().process_index} fingerprint {digest.hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
