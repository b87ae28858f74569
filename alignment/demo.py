"""Paths of the demo corpus shipped inside the package (alignment/demo_data/, see its README.md)."""
from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"
DEMO_FILES = {
    "pairs": "pairs.jsonl",
    "harmful_prompts": "harmful_prompts.jsonl",
    "benign_prompts": "benign_prompts.jsonl",
}


def demo_path(name: str) -> str:
    """The path of one demo file: "pairs" (prompt, response, label, split, ...), "harmful_prompts" or
    "benign_prompts" (prompt, category, split)."""
    if name not in DEMO_FILES:
        raise KeyError(f"unknown demo file {name!r}; choose one of {sorted(DEMO_FILES)}")
    path = DEMO_DIR / DEMO_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the package or run alignment/demo_data/build.py")
    return str(path)
