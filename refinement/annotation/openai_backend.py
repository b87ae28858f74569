"""A judge behind any OpenAI-compatible chat endpoint (`vllm serve`, TGI, hosted APIs).

Each item is one POST to `{base_url}/chat/completions` asking for a single answer token with its top log-probs;
P(yes) comes from those log-probs when the server returns them, else from the parsed answer (1.0 / 0.0).
Requests run concurrently; connection errors, 429 and 5xx are retried with exponential backoff (honouring
Retry-After). The API key is read from the environment and never logged."""
from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

from .scoring import parse_answer, yes_probability_from_top_logprobs

logger = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class ServerError(RuntimeError):
    """The server refused a request for good, or kept failing after every retry."""


class OpenAIJudge:
    def __init__(self, model: str, base_url: str = "http://localhost:8000/v1", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 5, backoff_seconds: float = 1.0, timeout_seconds: float = 60,
                 top_logprobs: int = 20, min_answer_mass: float = 0.0, max_tokens: int = 1):
        self.model_id, self.url = model, base_url.rstrip("/") + "/chat/completions"
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff_seconds, self.timeout_seconds = backoff_seconds, timeout_seconds
        self.top_logprobs, self.min_answer_mass, self.max_tokens = top_logprobs, min_answer_mass, max_tokens
        self.tokenizer = None  # truncation falls back to characters
        self.settings = f"openai-compatible {base_url} min_answer_mass={min_answer_mass}"
        api_key = os.environ.get(api_key_env)
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session = requests.Session()

    def request_body(self, messages: list[dict]) -> dict:
        return {"model": self.model_id, "messages": messages, "max_tokens": self.max_tokens, "temperature": 0.0,
                "logprobs": True, "top_logprobs": self.top_logprobs}

    def answer_probability(self, response: dict) -> float:
        """P(yes) from one chat-completion response: the first token's top log-probs, else the answer text."""
        try:
            choice = response["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.url}: a response without choices: {str(response)[:200]}") from None
        content = ((choice.get("logprobs") or {}).get("content") or [])
        if content and content[0].get("top_logprobs"):
            top = {entry["token"]: entry["logprob"] for entry in content[0]["top_logprobs"]}
            return yes_probability_from_top_logprobs(top, self.min_answer_mass)
        return parse_answer((choice.get("message") or {}).get("content") or "")

    def _post(self, body: dict) -> dict:
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._session.post(self.url, json=body, headers=self._headers, timeout=self.timeout_seconds)
            except (requests.ConnectionError, requests.Timeout) as err:
                problem, wait = f"{type(err).__name__}", None
            else:
                if reply.status_code == 200:
                    return reply.json()
                if reply.status_code not in RETRY_STATUS:
                    raise ServerError(f"{self.url}: HTTP {reply.status_code}: {reply.text[:300]}")
                problem, wait = f"HTTP {reply.status_code}", reply.headers.get("Retry-After")
            if attempt == self.max_retries:
                raise ServerError(f"{self.url}: {problem} after {self.max_retries + 1} attempts")
            delay = float(wait) if wait and wait.replace(".", "", 1).isdigit() else \
                self.backoff_seconds * 2 ** attempt * (0.5 + random.random())
            logger.warning("%s: %s; retrying in %.1f s", self.url, problem, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def p_yes(self, prefix: list[dict], items: Sequence[list[dict]]) -> np.ndarray:
        bodies = [self.request_body(prefix + item) for item in items]
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            responses = list(pool.map(self._post, bodies))  # map keeps input order
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a fatal error: stop sending the rest
            raise
        pool.shutdown()
        return np.array([self.answer_probability(r) for r in responses], dtype=float)
