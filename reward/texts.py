"""What a reward model reads: TRL's prompts and completions (plain or conversational) in the one classifier format.

The refined classifier was trained on `refinement.data.format_example(prompt, response)`; every reward path of
this package (GRPO/RLOO callables, the PPO adapter, evaluation) turns its inputs into that text here, so scoring
can never disagree with training on the format. A conversational prompt becomes the HH-RLHF-style history the
data layer builds from HH dialogues (``"q1\\n\\nAssistant: a1\\n\\nHuman: q2"``); system messages are dropped.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from refinement.data import format_example

_ROLES = {"user": "Human", "assistant": "Assistant"}


def message_text(message: Any, where: str) -> str:
    """The text of one chat message: a string, or the text parts of a list of content parts."""
    if not isinstance(message, dict) or "content" not in message:
        raise TypeError(f"{where}: expected a chat message {{'role': ..., 'content': ...}}, got {message!r:.80}")
    content = message["content"]
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise TypeError(f"{where}: message content must be a string or a list of parts, got {content!r:.80}")


def prompt_text(prompt: str | Sequence[dict], where: str = "prompt") -> str:
    """A plain prompt unchanged; a list of messages as the dialogue history before the reply."""
    if isinstance(prompt, str):
        return prompt
    turns = []
    for i, message in enumerate(prompt):
        text = message_text(message, f"{where}[{i}]")
        role = message.get("role")
        if role == "system":
            continue
        if role not in _ROLES:
            raise ValueError(f"{where}[{i}]: unknown role {role!r}; expected system, user or assistant")
        turns.append(text if not turns else f"{_ROLES[role]}: {text}")
    return "\n\n".join(turns)


def completion_text(completion: str | Sequence[dict], where: str = "completion") -> str:
    """A plain completion unchanged; a conversational one (TRL: ``[{"role": "assistant", ...}]``) joined."""
    if isinstance(completion, str):
        return completion
    return "\n\n".join(message_text(m, f"{where}[{i}]") for i, m in enumerate(completion))


def reward_texts(prompts: Sequence, completions: Sequence) -> list[str]:
    """``format_example(prompt, completion)`` for every pair, as the classifier saw its training data."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return [format_example(prompt_text(p, f"prompts[{i}]"), completion_text(c, f"completions[{i}]"))
            for i, (p, c) in enumerate(zip(prompts, completions))]
