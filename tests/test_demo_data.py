"""The committed demo corpus (alignment/demo_data): sizes, coverage, labels, splits, and that build.py
regenerates it byte for byte."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, demo_build, import_recipe

from alignment.demo import DEMO_DIR, DEMO_FILES, demo_path
from alignment.refusal import is_refusal
from refinement.annotation import Annotator, AnnotatorConfig
from refinement.annotation.stage import demonstrations, make_judge
from refinement.annotation.templates import get_template
from refinement.data import load_rows, split_by_prompt

HARM_CATEGORIES = {"violence", "weapons", "drugs", "cybercrime", "fraud", "self_harm", "hate_harassment", "privacy"}
GROWN_HARM_CATEGORIES = {"theft", "extortion", "animal_cruelty", "misinformation", "property_damage", "stalking"}
KIND_OF_PAIR = {"refusal": (True, 1), "compliance": (True, 0), "helpful": (False, 1), "over_refusal": (False, 1),
                "deflection": (True, 1)}  # kind -> (prompt is harmful, gold label)


def read(name: str) -> list[dict]:
    with open(demo_path(name)) as handle:
        return [json.loads(line) for line in handle]


PAIRS = read("pairs")
HARMFUL = read("harmful_prompts")
BENIGN = read("benign_prompts")


def test_sizes_and_coverage():
    assert len(PAIRS) >= 2500 and len(HARMFUL) >= 800 and len(BENIGN) >= 800
    harmful_categories = {r["category"] for r in PAIRS if r["prompt_is_harmful"]}
    assert harmful_categories == HARM_CATEGORIES | GROWN_HARM_CATEGORIES
    benign_categories = {r["category"] for r in PAIRS if not r["prompt_is_harmful"]}
    assert len(benign_categories) >= 12 and not benign_categories & harmful_categories
    kinds = Counter((r["category"], r["kind"]) for r in PAIRS)
    for category in harmful_categories:  # every harm category has a refusal, a compliant answer and a deflection
        assert min(kinds[(category, kind)] for kind in ("refusal", "compliance", "deflection")) > 0, category
    assert sum(n for (_, kind), n in kinds.items() if kind == "over_refusal") >= 100
    assert len({r["prompt"] for r in PAIRS}) >= 1500  # distinct wordings, not one prompt answered many times


def test_labels_follow_the_kind_of_pair():
    for row in PAIRS:
        assert (row["prompt_is_harmful"], row["label"]) == KIND_OF_PAIR[row["kind"]], row
        assert row["refusal"] == int(row["kind"] in ("refusal", "over_refusal")), row
    share_harmless = sum(r["label"] for r in PAIRS) / len(PAIRS)
    assert 0.25 <= share_harmless <= 0.75


def test_refusal_detector_agrees_with_every_pair():
    disagreements = [r["response"] for r in PAIRS if is_refusal(r["response"]) != bool(r["refusal"])]
    assert disagreements == []


def test_deflections_neither_help_nor_restate_the_request():
    deflections = [r for r in PAIRS if r["kind"] == "deflection"]
    assert len({r["response"] for r in deflections}) >= 20
    for row in deflections:
        words = set(re.findall(r"[a-z']+", row["response"].lower()))
        request = set(re.findall(r"[a-z']+", row["prompt"].lower())) - {"a", "i", "to", "the", "how", "do", "my",
                                                                          "you", "of", "what", "is", "it", "that"}
        assert len(words & request) <= 2, row


def test_compliant_answers_hold_no_specifics():
    compliant = [r["response"] for r in PAIRS if r["kind"] == "compliance"]
    unnumbered = [re.sub(r"^\d+\. ", "", text, flags=re.M) for text in compliant]
    assert not [text for text in unnumbered if re.search(r"\d|\b(?:grams?|ml|mg|kg)\b", text, re.I)]
    assert max(len(text.split()) for text in compliant) <= 80  # room for the request and platitudes, no recipe


def test_no_prompt_in_two_splits():
    splits: dict[str, set[str]] = {}
    for row in PAIRS:
        splits.setdefault(row["prompt"], set()).add(row["split"])
    assert all(len(values) == 1 for values in splits.values())
    for kind, rows in (("harmful", HARMFUL), ("benign", BENIGN)):
        by_split = {s: {r["prompt"] for r in rows if r["split"] == s} for s in ("train", "test", "heldout")}
        assert all(by_split.values()), kind
        assert not by_split["train"] & by_split["test"], kind
        assert not by_split["heldout"] & (by_split["train"] | by_split["test"]), kind
        assert sum(map(len, by_split.values())) == len(rows), f"{kind}: duplicated prompts or another split"
        pair_test = {r["prompt"] for r in PAIRS
                     if r["split"] == "test" and r["prompt_is_harmful"] == (kind == "harmful")}
        assert by_split["test"] == pair_test, kind


def test_prompt_files_are_the_pairs_prompts_plus_heldout_ones():
    for is_harmful, rows in ((True, HARMFUL), (False, BENIGN)):
        in_pairs = {r["prompt"] for r in rows if r["split"] != "heldout"}
        assert in_pairs == {r["prompt"] for r in PAIRS if r["prompt_is_harmful"] == is_harmful}


def test_heldout_prompts_share_no_action_with_the_pairs():
    """The evaluation's prompts: at least 64 of each kind, every harm category, and no action or task of any pair
    (so no reward model or judge trained on the pairs saw them or a rewording of them)."""
    build = demo_build()
    pair_texts = " ".join(r["prompt"].lower() for r in PAIRS)
    for groups, rows in ((build.HELDOUT_HARMFUL_ACTIONS, HARMFUL), (build.HELDOUT_BENIGN_TASKS, BENIGN)):
        heldout = [r for r in rows if r["split"] == "heldout"]
        assert len(heldout) >= 64
        assert not [a for actions in groups.values() for a in actions if a.lower() in pair_texts]
        for category, actions in groups.items():
            assert sum(r["category"] == category for r in heldout) == len(actions) * build.WORDINGS_PER_GROUP
    assert set(build.HELDOUT_HARMFUL_ACTIONS) == HARM_CATEGORIES


def test_judge_split_is_disjoint_from_the_reward_training_split():
    for row in PAIRS:
        assert row["judge_split"] == {"test": "train", "train": "test", "val": "val"}[row["split"]], row
    ds = load_rows(demo_path("pairs"))
    judge = split_by_prompt(ds, split_column="judge_split")
    reward = split_by_prompt(ds, split_column="split")
    assert set(judge["train"]["prompt"]) == set(reward["test"]["prompt"])
    assert not set(judge["train"]["prompt"]) & set(reward["train"]["prompt"])


def test_the_refinement_loop_reads_the_pairs():
    ds = load_rows(demo_path("pairs"))
    assert ds.num_rows == len(PAIRS) and ds["label"] == [r["label"] for r in PAIRS]
    splits = split_by_prompt(ds, split_column="split")
    assert {name: part.num_rows for name, part in splits.items()} == dict(Counter(r["split"] for r in PAIRS))


def test_build_regenerates_the_committed_files(tmp_path):
    build = demo_build()
    counts = build.build(tmp_path)
    for name in DEMO_FILES.values():
        assert (tmp_path / name).read_bytes() == (DEMO_DIR / name).read_bytes(), f"{name}: rerun build.py"
        assert counts[name] == len((DEMO_DIR / name).read_text().splitlines())
    assert build.second_person("keep my friends from finding out I'm hurting myself") == (
        "keep your friends from finding out you're hurting yourself")


def shipped_annotator_settings() -> AnnotatorConfig:
    """The annotator settings of recipes/configs/annotate/demo_smollm2.yaml, parsed by the recipe's own parser."""
    config = str(REPO / "recipes" / "configs" / "annotate" / "demo_smollm2.yaml")
    return import_recipe("annotate").make_parser().parse_args_and_config(["--config", config])[1]


def test_every_pair_but_the_demonstrations_carries_a_judgement():
    demos = demonstrations(shipped_annotator_settings(), load_rows(demo_path("pairs")), "demo pairs")
    shown = {(d.prompt, d.response) for d in demos}
    for row in PAIRS:
        score = row["smollm2_12shot"]
        assert (score is None) == ((row["prompt"], row["response"]) in shown), row
        assert score is None or 0.0 <= score <= 1.0, row


@pytest.mark.slow
def test_shipped_judgements_are_what_the_annotate_recipe_gives():
    """The `smollm2_12shot` column is SmolLM2's own 12-shot judgement: re-judge one pair of each kind from each part
    of the corpus with the recipe's settings and compare."""
    cfg = shipped_annotator_settings()
    demos = demonstrations(cfg, load_rows(demo_path("pairs")), "demo pairs")
    picked = {}
    for row in PAIRS:
        if row["smollm2_12shot"] is not None:
            picked.setdefault((row["kind"], row["category"] in GROWN_HARM_CATEGORIES), row)
    annotator = Annotator(make_judge(cfg), get_template(cfg.template), demos, cfg.max_prompt_tokens,
                          cfg.max_response_tokens, show_progress=False)
    rows = list(picked.values())
    scores = annotator.annotate([r["prompt"] for r in rows], [r["response"] for r in rows]).scores
    np.testing.assert_allclose(scores, [r["smollm2_12shot"] for r in rows], atol=1e-3)


def test_imported_scores_follow_the_pair_text_and_a_stale_annotation_is_refused(tmp_path):
    build = demo_build()
    annotated = tmp_path / "annotated.jsonl"
    rows = [{**PAIRS[i], "annotator_score": 0.25 * i} for i in (2, 0)]
    annotated.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert build.import_scores(annotated, Path(demo_path("pairs")), tmp_path / "scores.jsonl") == 2
    scores = build.read_scores(tmp_path / "scores.jsonl")
    assert scores == {build.pair_key(PAIRS[0]["prompt"], PAIRS[0]["response"]): 0.0,
                      build.pair_key(PAIRS[2]["prompt"], PAIRS[2]["response"]): 0.5}
    assert [r["smollm2_12shot"] for r in build.with_scores(PAIRS[:3], scores)] == [0.0, None, 0.5]
    annotated.write_text(json.dumps({**rows[0], "response": "an answer the corpus no longer has"}) + "\n")
    with pytest.raises(SystemExit, match="1 annotated pairs are not in"):
        build.import_scores(annotated, Path(demo_path("pairs")), tmp_path / "scores.jsonl")


def test_unknown_demo_file():
    with pytest.raises(KeyError, match="unknown demo file 'prompts'"):
        demo_path("prompts")
