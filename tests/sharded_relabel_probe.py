"""Launched by tests/test_distributed.py in several processes: relabels texts with `predict_logits` (an exported
folder) and computes their frozen features, recording which texts this rank itself encoded. Writes
OUT/rank<R>.json: {"scored": texts its tokenizer saw, "logits": what it received, "encoded": texts its featurizer
encoded, "features": what it received}. Only the recorded texts are observed; the functions run unchanged.

    accelerate launch ... tests/sharded_relabel_probe.py MODEL_DIR TEXTS_JSON FEATURE_CACHE OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import refinement.finetune
from refinement.features import FrozenFeaturizer
from refinement.io import distributed_state


def main(model_dir: str, texts_path: str, cache_dir: str, out: str) -> None:
    texts = json.loads(Path(texts_path).read_text())
    scored, encoded = [], []
    load_tokenizer = refinement.finetune.load_tokenizer

    def recording_tokenizer(path):
        tokenizer = load_tokenizer(path)
        call = tokenizer.__call__

        class Recording(type(tokenizer)):
            def __call__(self, batch, *args, **kwargs):
                scored.extend(batch)
                return call(batch, *args, **kwargs)

        tokenizer.__class__ = Recording
        return tokenizer

    refinement.finetune.load_tokenizer = recording_tokenizer
    logits = refinement.finetune.predict_logits(model_dir, texts, batch_size=4, max_length=64)

    featurizer = FrozenFeaturizer(model_dir, head="linear", max_length=64, batch_size=4, cache_dir=cache_dir)
    encode = featurizer._encode
    featurizer._encode = lambda batch: (encoded.extend(batch), encode(batch))[1]
    features = featurizer(texts)

    rank = distributed_state().process_index
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "scored": scored, "logits": logits.tolist(), "encoded": encoded, "features": features.tolist()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
