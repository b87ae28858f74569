"""Shared fixtures: offline environment, a session feature cache, and small BeaverTails files with simulated noise.

The data is real (BeaverTails rows annotated in ../shared/data); only the round-0 pseudo-labels are simulated:
a fixed-seed class-conditional flip of the gold label (70% of harmful items called harmless, 10% of harmless
items called harmful), so delta = theta_p - theta_n is clearly positive and UU learning has signal.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
# Set at import time too: transformers / huggingface_hub read some of these when they are first imported.
os.environ.update(OFFLINE_ENV)

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ANNOTATIONS = DATA / "annotations" / "beavertails_smollm2.jsonl"
SIZES = {"train": 240, "val": 60, "test": 80}
HARMFUL_AS_HARMLESS, HARMLESS_AS_HARMFUL = 0.7, 0.1


@pytest.fixture(scope="session", autouse=True)
def offline_env():
    """Every test runs offline (the embedded models need no Hub). RLAIF_UU_CACHE is deliberately left alone:
    the converted SmolLM2 folder lives in the default cache; features go to a session folder instead."""
    old = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def feature_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")


def _annotation_rows() -> list[dict]:
    with open(ANNOTATIONS) as handle:
        return [json.loads(line) for line in handle]


def make_rows(sizes: dict[str, int] = SIZES, seed: int = 0, harmful_as_harmless: float = HARMFUL_AS_HARMLESS,
              harmless_as_harmful: float = HARMLESS_AS_HARMFUL) -> list[dict]:
    """The first sizes[split] rows of each split, with simulated noisy pseudo-labels (fixed numpy seed)."""
    rows = _annotation_rows()
    chosen = []
    for split, count in sizes.items():
        chosen += [r for r in rows if r["split"] == split][:count]
    rng = np.random.default_rng(seed)
    out = []
    for r in chosen:
        u = rng.random()
        if r["label"] == 0:
            pseudo = 1 if u < harmful_as_harmless else 0
        else:
            pseudo = 0 if u < harmless_as_harmful else 1
        out.append({"prompt": r["prompt"], "response": r["response"], "label": int(r["label"]),
                    "split": r["split"], "pseudo_label": pseudo})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def noisy_rows() -> list[dict]:
    return make_rows()


@pytest.fixture(scope="session")
def noisy_data(tmp_path_factory, noisy_rows) -> Path:
    """240 train / 60 val / 80 test real rows with simulated noisy pseudo-labels."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "noisy.jsonl", noisy_rows)


@pytest.fixture(scope="session")
def make_config(feature_cache_dir):
    """RefineConfig factory with the fast defaults of these tests (frozen MiniLM, 64 tokens, 15 head epochs)."""
    from refinement.config import RefineConfig

    def factory(dataset_path, output_dir, **overrides) -> RefineConfig:
        kwargs = {"dataset_path": str(dataset_path), "output_dir": str(output_dir),
                  "model_name_or_path": "embedded:minilm", "mode": "frozen", "head": "linear", "max_length": 64,
                  "head_epochs": 15, "feature_cache_dir": str(feature_cache_dir), "seed": 42, "num_labeled": 50}
        kwargs.update(overrides)
        return RefineConfig(**kwargs)

    return factory


def import_script(name: str, path: Path):
    """A script as a module, under `name` (recipes/ and alignment/demo_data/ are not packages: scripts are
    launched by path)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look their module up by name
    spec.loader.exec_module(module)
    return module


def import_recipe(name: str):
    return import_script(name, REPO / "recipes" / f"{name}.py")


def demo_build():
    """alignment/demo_data/build.py, the demo corpus's generator."""
    return import_script("demo_build", REPO / "alignment" / "demo_data" / "build.py")


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (to prove folders were left byte-identical)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def round_folders(output_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(output_dir).glob("round_*") if p.is_dir())


def kill_once(command: list[str], ready, what: str, env: dict, timeout: float) -> None:
    """Start the command, SIGKILL it as soon as `ready()` is true (`what` is on disk)."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before {what}: {proc.stderr.read()!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} was not written in time")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
