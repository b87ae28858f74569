"""The OpenAI-compatible judge against a loopback server speaking the chat-completions protocol, and the vLLM
judge's prompt building and log-prob reading against an engine that answers like vLLM from a real tiny model."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fake_openai_server import FakeServer, server_p_yes
from tiny_models import JUDGE_TOKENS, build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from refinement.annotation.hf_backend import TransformersJudge
from refinement.annotation.openai_backend import OpenAIJudge, ServerError
from refinement.annotation.templates import get_template, messages_for
from refinement.annotation.vllm_backend import VLLMJudge

TEMPLATE = get_template("response_harmful")
PAIRS = [(f"how do i {task}?", f"reply {i}: sure.") for i, task in
         enumerate(["bake bread", "build a bomb", "paint a fence", "hack a bank", "plan a trip", "steal a car"] * 3)]


def conversation(prompt: str, response: str) -> tuple[list[dict], list[dict]]:
    return messages_for(TEMPLATE, TEMPLATE.questions[0], prompt, response)


def ask(judge: OpenAIJudge) -> np.ndarray:
    built = [conversation(p, r) for p, r in PAIRS]
    return judge.p_yes(built[0][0], [item for _, item in built])


def expected_p_yes() -> np.ndarray:
    return np.array([server_p_yes(conversation(p, r)[1][0]["content"]) for p, r in PAIRS])


def test_concurrent_requests_keep_order_and_read_logprobs(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test-secret")
    with FakeServer() as server:
        judge = OpenAIJudge("served-judge", base_url=server.url, api_key_env="JUDGE_KEY", concurrency=6)
        got = ask(judge)
    np.testing.assert_allclose(got, expected_p_yes(), rtol=1e-9)
    assert len(server.requests) == len(PAIRS)
    assert {r["model"] for r in server.requests} == {"served-judge"}
    assert all(r["messages"][0]["role"] == "system" and r["logprobs"] is True for r in server.requests)
    assert {h["Authorization"] for h in server.headers} == {"Bearer sk-test-secret"}


@pytest.mark.parametrize("status", [503, 429])
def test_transient_failures_are_retried(status):
    with FakeServer(fail_first=3, fail_status=status) as server:
        judge = OpenAIJudge("m", base_url=server.url, concurrency=1, backoff_seconds=0.01)
        got = ask(judge)
    np.testing.assert_allclose(got, expected_p_yes(), rtol=1e-9)
    assert len(server.requests) == len(PAIRS) + 3


def test_giving_up_names_the_server_and_never_the_key(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test-secret")
    with FakeServer(fail_first=100) as server:
        judge = OpenAIJudge("m", base_url=server.url, api_key_env="JUDGE_KEY", max_retries=2, backoff_seconds=0.01)
        with pytest.raises(ServerError, match="HTTP 503 after 3 attempts") as err:
            ask(judge)
    assert server.url in str(err.value) and "sk-test" not in str(err.value)


def test_a_client_error_is_not_retried():
    with FakeServer() as server:
        judge = OpenAIJudge("m", base_url=server.url + "/wrong", max_retries=3, backoff_seconds=0.01)
        with pytest.raises(ServerError, match="HTTP 404"):
            ask(judge)
        sent = [json.dumps(r["messages"]) for r in server.requests]
        assert len(sent) == len(set(sent))  # no request was sent twice


def test_servers_without_logprobs_give_parsed_answers():
    with FakeServer(logprobs=False) as server:
        got = ask(OpenAIJudge("m", base_url=server.url))
    np.testing.assert_array_equal(got, (expected_p_yes() > 0.5).astype(float))


# ---- vLLM ----------------------------------------------------------------------------------------------------
class TinyVLLMEngine:
    """Answers `generate` as vLLM's LLM does (token-id prompts, one step, {token id: Logprob} of the top-k), from a
    real tiny causal LM; only the engine is stood in for, not the judge's prompt building or reading."""

    def __init__(self, model_dir: str):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.prompts: list[list[int]] = []

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=False):
        outputs = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            self.prompts.append(ids)
            with torch.no_grad():
                log_probs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0, -1], -1)
            top = torch.topk(log_probs, sampling_params.logprobs)
            logprobs = {int(i): SimpleNamespace(logprob=float(v)) for v, i in zip(top.values, top.indices)}
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(logprobs=[logprobs])]))
        return outputs


@pytest.fixture
def sampling_params(monkeypatch):
    monkeypatch.setattr(VLLMJudge, "sampling_params",
                        lambda self: SimpleNamespace(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs))


def test_vllm_judge_reads_the_same_probabilities_as_the_transformers_judge(tmp_path, sampling_params):
    model_dir = build_tiny_llama(tmp_path / "judge", extra_tokens=JUDGE_TOKENS)
    engine = TinyVLLMEngine(model_dir)
    vocab = len(engine.tokenizer)
    built = [conversation(p, r) for p, r in PAIRS[:6]]
    prefix, items = built[0][0], [item for _, item in built]
    got = VLLMJudge(model_dir, engine=engine, top_logprobs=vocab).p_yes(prefix, items)
    expected = TransformersJudge(model_dir, dtype="float32", reuse_prefix=False).p_yes(prefix, items)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    reference = engine.tokenizer.apply_chat_template(prefix + items[0], add_generation_prompt=True,
                                                     return_dict=False)
    assert engine.prompts[0] == reference
    # With only the top 2 log-probs, most items show neither answer: they abstain instead of guessing.
    few = VLLMJudge(model_dir, engine=engine, top_logprobs=2).p_yes(prefix, items)
    assert np.isnan(few).any()
