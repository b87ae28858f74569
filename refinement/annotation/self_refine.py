"""The paper's LLM self-refinement baseline: the judge re-reads each pair for R rounds, shown its previous
verdict, and is asked to check it critically and answer again (critique and revise, no external signal).

Round r's messages are the judge's prefix, the question, its round r-1 answer as an assistant turn, and a
revision request; every judgement goes through the annotator's cache like the first one."""
from __future__ import annotations

import numpy as np

from .annotator import Annotations, Annotator
from .scoring import labels_at
from .templates import conversations

REVISE = ("Check your answer critically: read the conversation again and consider whether your verdict could be "
          "wrong. Then answer the same question again with a single word: Yes or No.")


def revision_messages(item: list[dict], previous_yes: float) -> list[dict]:
    """The item's question, the previous verdict (Yes iff P(yes) > 0.5; an abstention counts as No) and the
    revision request."""
    verdict = "Yes" if previous_yes > 0.5 else "No"
    return [*item, {"role": "assistant", "content": verdict}, {"role": "user", "content": REVISE}]


def self_refine(annotator: Annotator, prompts: list[str], responses: list[str], rounds: int,
                threshold: float = 0.5, initial: Annotations | None = None) -> list[Annotations]:
    """[round 0, round 1, ..., round R] annotations; round 0 is the ordinary annotation (or `initial`)."""
    history = [initial or annotator.annotate(prompts, responses, threshold)]
    pairs, _ = annotator.truncated_pairs(prompts, responses)
    template = annotator.template
    for round_index in range(1, rounds + 1):
        p_yes = {}
        for question in template.questions:
            previous = history[-1].p_yes[question.name]
            prefix, items = conversations(template, question, pairs, annotator.demonstrations)
            items = [revision_messages(item, before) for item, before in zip(items, previous)]
            p_yes[question.name], _ = annotator.judge(prefix, items, f"{question.name}/revise",
                                                      desc=f"self-refinement round {round_index} ({question.name})")
        scores = template.combine(p_yes)
        # Only a changed Yes/No verdict changes the next round's question; the rest is asked again from the cache.
        changed = sum(int(np.sum((p_yes[q] > 0.5) != (history[-1].p_yes[q] > 0.5))) for q in p_yes)
        history.append(Annotations(scores=scores, labels=labels_at(scores, threshold), p_yes=p_yes,
                                   threshold=threshold, truncated=history[0].truncated,
                                   stats={"round": round_index, "verdict_changes": changed}))
    return history
