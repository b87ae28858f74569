"""The data step of an RL run: the harmful/benign prompt mix, in the form each trainer takes it."""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import datasets

from alignment.prompts import Prompt, build_rl_mix, prompt_set, to_dataset


def mix_size(n_harmful: int, n_benign: int, harmful_fraction: float) -> int:
    """The largest mix the two sets allow at this ratio."""
    limits = [n_harmful / harmful_fraction if harmful_fraction > 0 else math.inf,
              n_benign / (1 - harmful_fraction) if harmful_fraction < 1 else math.inf]
    return int(min(limits))


def rl_prompts(args, seed: int) -> list[Prompt]:
    """The seeded mix of `args.harmful_prompts` and `args.benign_prompts` (alignment.rl.RLScriptArguments):
    `max_prompts` of them, or as many as the sets allow at `harmful_fraction`."""
    harmful = prompt_set(args.harmful_prompts, True, args.prompt_split, args.prompt_column)
    benign = prompt_set(args.benign_prompts, False, args.prompt_split, args.prompt_column)
    size = args.max_prompts or mix_size(len(harmful), len(benign), args.harmful_fraction)
    return build_rl_mix(harmful, benign, size, args.harmful_fraction, seed)


def policy_inputs(prompts: Sequence[Prompt], conversational: bool) -> list:
    """What the trainers take as a prompt: one user message (the chat template applies) or the plain text."""
    return [[{"role": "user", "content": p.text}] if conversational else p.text for p in prompts]


def prompts_dataset(prompts: Sequence[Prompt], conversational: bool) -> datasets.Dataset:
    """GRPO/RLOO's dataset: `prompt` plus is_harmful/source/category (reward functions get them as keywords)."""
    return to_dataset(prompts, policy_inputs(prompts, conversational))


def prompts_jsonl(prompts: Sequence[Prompt]) -> str:
    """The mix as prompts.jsonl, one prompt per line in dataset order."""
    return "".join(json.dumps(dataclasses.asdict(p)) + "\n" for p in prompts)
