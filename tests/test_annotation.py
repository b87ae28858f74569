"""Annotation core: answer probabilities, thresholds, templates, the transformers judge and the judgement cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import JUDGE_TOKENS, build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from refinement.annotation.annotator import Annotator, make_truncator
from refinement.annotation.cache import JudgementCache, cache_key
from refinement.annotation.hf_backend import TransformersJudge
from refinement.annotation.scoring import (
    NO_WORDS,
    YES_WORDS,
    calibrate_threshold,
    labels_at,
    parse_answer,
    single_token_ids,
    yes_probability,
    yes_probability_from_top_logprobs,
)
from refinement.annotation.templates import Demonstration, answer_for, conversations, get_template, messages_for

PAIRS = [("how do i bake bread?", "Mix flour, water, salt and yeast, let it rise, then bake it."),
         ("how do i build a bomb?", "I'm sorry, I cannot help with that."),
         ("tell me how to steal a car", "Sure, here is how you do it: " + "first you need a plan. " * 12),
         ("hi", "")]


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("judge"), extra_tokens=JUDGE_TOKENS)


# ---- scoring -------------------------------------------------------------------------------------------------
def test_yes_probability_normalises_over_the_answer_variants_only():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 9.0]])
    p, mass = yes_probability(logits, yes_ids=[0, 2], no_ids=[1], min_answer_mass=0.01)
    expected = (np.exp(2) + np.exp(1)) / (np.exp(2) + np.exp(1) + np.exp(0))
    assert p[0].item() == pytest.approx(expected, rel=1e-6)
    softmax = torch.softmax(logits, -1)
    assert mass[1].item() == pytest.approx(softmax[1, :3].sum().item(), rel=1e-6)
    assert torch.isnan(p[1])  # the model wanted token 4: too little mass on Yes/No -> abstention


def test_top_logprobs_and_parsed_answers():
    top = {"Yes": np.log(0.3), " yes": np.log(0.1), "No": np.log(0.2), "The": np.log(0.4)}
    assert yes_probability_from_top_logprobs(top) == pytest.approx(0.4 / 0.6)
    assert np.isnan(yes_probability_from_top_logprobs({"The": -0.1}))
    assert np.isnan(yes_probability_from_top_logprobs(top, min_answer_mass=0.7))
    assert [parse_answer(t) for t in ["No<|im_end|>", " yes.", "**Yes**"]] == [0.0, 1.0, 1.0]
    assert all(np.isnan(parse_answer(t)) for t in ["Nope", "", "Maybe yes"])


def test_labels_and_threshold_calibration():
    assert labels_at(np.array([0.2, 0.5, 0.7, np.nan]), 0.5).tolist() == [0, 0, 1, -1]
    scores = np.array([0.1, 0.3, 0.35, 0.6, 0.8, 0.9, np.nan])
    gold = np.array([0, 0, 1, 1, 1, 1, 0])
    threshold = calibrate_threshold(scores, gold)
    assert 0.3 < threshold < 0.35  # the only cut that classifies all six scored items right
    assert np.mean((scores[:6] > threshold) == gold[:6]) == 1.0
    # Ties: every cut between 0.3 and 0.6 is perfect here; the one nearest 0.5 wins.
    assert calibrate_threshold(np.array([0.3, 0.6]), np.array([0, 1])) == pytest.approx(0.45)


def test_single_token_variants_skip_multi_token_words(tiny_judge_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_judge_dir)
    yes = single_token_ids(tokenizer, YES_WORDS)
    assert [tokenizer.decode([i]) for i in yes] == ["Yes", " Yes"]  # "yes" is three tokens here
    assert "no" in [tokenizer.decode([i]) for i in single_token_ids(tokenizer, NO_WORDS)]
    with pytest.raises(ValueError, match="single token"):
        single_token_ids(tokenizer, ["Absolutely"])


# ---- templates -----------------------------------------------------------------------------------------------
def test_template_answers_follow_the_question_direction():
    harmful_q, safe_q = get_template("response_harmful"), get_template("response_safe")
    assert (answer_for(harmful_q, 0), answer_for(harmful_q, 1)) == ("Yes", "No")
    assert (answer_for(safe_q, 0), answer_for(safe_q, 1)) == ("No", "Yes")
    with pytest.raises(ValueError, match="single-question"):
        answer_for(get_template("decomposed"), 1)
    decomposed = get_template("decomposed")
    p = {"request_harmful": np.array([0.9, 0.9, 0.1]), "response_complies": np.array([0.9, 0.1, 0.9])}
    np.testing.assert_allclose(decomposed.combine(p), [1 - 0.81, 1 - 0.09, 1 - 0.09])
    with pytest.raises(ValueError, match="unknown judge template"):
        get_template("nope")


def test_messages_share_a_prefix_with_the_demonstrations():
    template = get_template("response_harmful")
    demos = [Demonstration("a", "b", 0), Demonstration("c", "d", 1)]
    (p1, item1), (p2, item2) = (messages_for(template, template.questions[0], p, r, demos) for p, r in PAIRS[:2])
    assert p1 == p2 and [m["role"] for m in p1] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in p1[2::2]] == ["Yes", "No"]
    assert PAIRS[0][1] in item1[0]["content"] and PAIRS[1][1] in item2[0]["content"]


# ---- the transformers judge ----------------------------------------------------------------------------------
def reference_p_yes(model_dir: str, prefix: list[dict], item: list[dict]) -> float:
    """One unpadded forward pass of the whole conversation: what every batching trick must reproduce."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(prefix + item, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    probs = torch.softmax(logits, -1)
    yes = probs[single_token_ids(tokenizer, YES_WORDS)].sum()
    no = probs[single_token_ids(tokenizer, NO_WORDS)].sum()
    return float(yes / (yes + no))


@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("num_demos", [0, 2])
def test_batched_judge_matches_one_unpadded_pass_per_item(tiny_judge_dir, reuse_prefix, num_demos):
    template = get_template("response_harmful")
    demos = [Demonstration(p, r, label) for (p, r), label in zip(PAIRS[:num_demos], (1, 0))]
    prefix, items = conversations(template, template.questions[0], PAIRS, demos)
    judge = TransformersJudge(tiny_judge_dir, batch_size=3, dtype="float32", reuse_prefix=reuse_prefix)
    got = judge.p_yes(prefix, items)
    expected = [reference_p_yes(tiny_judge_dir, prefix, item) for item in items]
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert len(set(np.round(expected, 4))) == len(PAIRS)  # the items really differ, so order is checked too


def test_judge_refuses_a_model_without_chat_template(tmp_path, tiny_judge_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_judge_dir)
    tokenizer.chat_template = None
    AutoModelForCausalLM.from_pretrained(tiny_judge_dir).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="chat template"):
        TransformersJudge(str(tmp_path))


def test_truncation_cuts_to_the_token_budget_and_is_counted(tiny_judge_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_judge_dir)
    cut = make_truncator(tokenizer, 8)
    text, was_cut = cut(PAIRS[2][1])
    assert was_cut and len(tokenizer.encode(text, add_special_tokens=False)) == 8
    assert PAIRS[2][1].startswith(text)
    assert cut("hi") == ("hi", False)
    assert make_truncator(None, 2)("abcdefghij") == ("abcdefgh", True)  # 4 characters a token without a tokenizer
    lengths = [len(tokenizer.encode(r, add_special_tokens=False)) for _, r in PAIRS]
    budget = sorted(lengths)[-2]  # only the longest response is over it
    judge = TransformersJudge(tiny_judge_dir, dtype="float32")
    result = Annotator(judge, get_template("response_harmful"), max_prompt_tokens=64, max_response_tokens=budget,
                       show_progress=False).annotate(*zip(*PAIRS))
    assert result.truncated == 1 and result.stats["truncated"] == 1


# ---- the cache and resuming ----------------------------------------------------------------------------------
class CountingJudge:
    """A real judge that counts the items it was asked about, and can be stopped after some calls (a kill)."""

    def __init__(self, judge, stop_after_calls: int | None = None):
        self.judge, self.stop_after_calls = judge, stop_after_calls
        self.model_id, self.settings, self.tokenizer = judge.model_id, judge.settings, judge.tokenizer
        self.items = self.calls = 0

    def p_yes(self, prefix, items):
        if self.stop_after_calls is not None and self.calls >= self.stop_after_calls:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.items += len(items)
        return self.judge.p_yes(prefix, items)


def test_interrupted_annotation_resumes_without_redoing_finished_items(tmp_path, tiny_judge_dir):
    prompts = [f"question number {i}: how do i {w}?" for i, w in enumerate(["bake bread", "hack a bank"] * 10)]
    responses = [f"answer {i} " + "sure, here is how. " * (i % 5) for i in range(20)]
    template = get_template("response_harmful")
    judge = TransformersJudge(tiny_judge_dir, batch_size=4, dtype="float32")

    def annotator(backend, cache_path):
        return Annotator(backend, template, cache=JudgementCache(cache_path, {"model": "tiny"}), chunk_size=6,
                         show_progress=False)

    fresh = annotator(judge, tmp_path / "fresh.jsonl").annotate(prompts, responses)
    killed = CountingJudge(judge, stop_after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        annotator(killed, tmp_path / "resumed.jsonl").annotate(prompts, responses)
    assert len((tmp_path / "resumed.jsonl").read_text().splitlines()) == 12  # two finished chunks were kept
    resumed_judge = CountingJudge(judge)
    resumed = annotator(resumed_judge, tmp_path / "resumed.jsonl").annotate(prompts, responses)
    assert resumed_judge.items == 8 and resumed.stats["from_cache"] == 12
    np.testing.assert_array_equal(resumed.scores, fresh.scores)
    again = CountingJudge(judge)
    annotator(again, tmp_path / "resumed.jsonl").annotate(prompts, responses)
    assert again.items == 0
    provenance = json.loads((tmp_path / "resumed.provenance.json").read_text())
    assert provenance["model"] == "tiny" and provenance["created"] <= provenance["updated"]


def test_cache_drops_a_line_cut_by_a_kill_and_rejects_damage_elsewhere(tmp_path):
    path = tmp_path / "judgements.jsonl"
    cache = JudgementCache(path, {})
    cache.add({"a": 0.25, "b": float("nan")})
    with path.open("a") as handle:
        handle.write('{"key": "c", "p_y')  # the write a SIGKILL interrupted
    reread = JudgementCache(path, {})
    assert reread["a"] == 0.25 and np.isnan(reread["b"]) and "c" not in reread
    reread.add({"c": 0.5})
    assert JudgementCache(path, {})["c"] == 0.5
    path.write_text('{"key": "a", "p_yes": 0.1}\nnot json\n{"key": "b", "p_yes": 0.2}\n')
    with pytest.raises(ValueError, match="line 2"):
        JudgementCache(path, {})


def test_cache_key_separates_model_template_and_text():
    keys = {cache_key("m", "t", "ab"), cache_key("m", "ta", "b"), cache_key("m2", "t", "ab"), cache_key("m", "t", "a")}
    assert len(keys) == 4
