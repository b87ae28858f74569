"""The relevance task reward: cosine of request and reply under the embedded sentence encoder, and its wiring."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignment.rl_rewards import task_rewards
from reward.relevance import PromptRelevance, mean_pool, request_text
from reward.task import non_refusal

REQUESTS = ["How do I bake chocolate chip cookies?", "What is a good way to learn Python programming?",
            "How should I water a cactus?"]
ANSWERS = ["Cream butter and sugar, add eggs, flour and chocolate chips, then bake the cookies at 180C for 10 minutes.",
           "Start with the official Python tutorial, write small programs every day and read other people's code.",
           "Water a cactus sparingly: soak the soil every two to three weeks in summer and let it dry out fully."]


@pytest.fixture(scope="module")
def relevance():
    return PromptRelevance("embedded:minilm")


def test_mean_pool_ignores_padding_and_normalises():
    states = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, -100.0]]])  # the last token is padding
    mask = torch.tensor([[1, 1, 0]])
    expected = torch.tensor([[2.0, 2.0]]) / np.sqrt(8.0)
    torch.testing.assert_close(mean_pool(states, mask), expected)


def test_request_is_the_last_user_message():
    chat = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"}, {"role": "user", "content": [{"type": "text", "text": "last"}]}]
    assert request_text(chat) == "last"
    assert request_text("plain prompt") == "plain prompt"
    with pytest.raises(ValueError, match=r"prompts\[3\]: a conversational prompt without a user message"):
        request_text([{"role": "system", "content": "x"}], "prompts[3]")


def test_each_answer_is_closest_to_its_own_request(relevance):
    """The 3×3 matrix of every request against every answer: each answer scores highest on its own request."""
    matrix = np.array([relevance(prompts=[r] * len(ANSWERS), completions=ANSWERS) for r in REQUESTS])
    assert (matrix.argmax(axis=1) == np.arange(len(REQUESTS))).all(), matrix


def test_an_answer_outscores_a_refusal_a_deflection_and_a_loop_in_any_words(relevance):
    request = REQUESTS[0]
    replies = [ANSWERS[0], "I'm sorry, but I can't help with that.", "I'm not equipped to assist with this.",
               "I'm Hugging Face, a helpful AI assistant, here to support you with whatever you're going through.",
               "I'm afraid of the unknown. I'm afraid of the unknown. I'm afraid of the unknown."]
    scores = relevance(prompts=[request] * len(replies), completions=replies)
    assert scores[0] > max(scores[1:]) + 0.2, scores
    # non_refusal pays the second wording of a decline, and the loop, as much as the answer; relevance does not
    assert non_refusal(prompts=[request] * 5, completions=replies) == [1.0, 0.0, 1.0, 1.0, 1.0]


def test_plain_and_conversational_inputs_score_alike_and_the_reward_pickles(relevance):
    plain = relevance(prompts=REQUESTS, completions=ANSWERS)
    chat = relevance(prompts=[[{"role": "user", "content": r}] for r in REQUESTS],
                     completions=[[{"role": "assistant", "content": a}] for a in ANSWERS])
    np.testing.assert_allclose(plain, chat, atol=1e-6)
    # a batch as GRPO sends it (each request repeated, interleaved) scores every pair as one pair alone would
    requests, answers = [REQUESTS[i] for i in (2, 0, 2, 1, 0)], [ANSWERS[i] for i in (0, 0, 2, 1, 2)]
    alone = [relevance(prompts=[r], completions=[a])[0] for r, a in zip(requests, answers)]
    np.testing.assert_allclose(relevance(prompts=requests, completions=answers), alone, atol=1e-5)
    copy = pickle.loads(pickle.dumps(relevance))
    assert copy._encoder is None and copy(prompts=REQUESTS[:1], completions=ANSWERS[:1]) == pytest.approx(plain[:1])
    with pytest.raises(ValueError, match="3 prompts but 2 completions"):
        relevance(prompts=REQUESTS, completions=ANSWERS[:2])


def test_the_lagrangian_task_reward_is_chosen_by_name():
    args = SimpleNamespace(lagrangian_task_reward="relevance", relevance_model="embedded:minilm", reward_batch_size=8)
    (task,) = task_rewards(args)
    assert isinstance(task, PromptRelevance) and task.model_name_or_path == "embedded:minilm"
    assert task_rewards(SimpleNamespace(**(vars(args) | {"lagrangian_task_reward": "non_refusal"}))) == [non_refusal]
    assert task_rewards(SimpleNamespace(**(vars(args) | {"lagrangian_task_reward": "none"}))) == []
