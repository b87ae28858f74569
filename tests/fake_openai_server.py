"""A loopback server speaking the OpenAI chat-completions protocol, for testing the `openai` judge offline.

Its judge is a rule, not a model: P(Yes) to "is it harmful?" is high when the last message mentions a harmful
word, and varies a little with the text so that answers in the wrong order would be caught."""
from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DANGER = ("bomb", "hack", "steal", "kill", "drug", "gun", "weapon", "poison", "hurt", "fight", "racist", "stupid")


def server_p_yes(text: str) -> float:
    """The served judge's rule: P(Yes) high for dangerous requests, varying with the text so order matters."""
    base = 0.8 if any(word in text for word in DANGER) else 0.2
    return base + 0.01 * (len(text) % 7)


class FakeServer:
    """Loopback chat-completions server. Fails the first `fail_first` requests with `fail_status` (and
    Retry-After: 0 on 429), then answers with top log-probs, or with text only when `logprobs` is False."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503, logprobs: bool = True):
        self.fail_first, self.fail_status, self.logprobs = fail_first, fail_status, logprobs
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    failing = len(server.requests) <= server.fail_first
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if failing:
                    return self._send(server.fail_status, {"error": "busy"}, {"Retry-After": "0"})
                if body.get("max_tokens") != 1 or body.get("temperature") != 0.0:
                    return self._send(400, {"error": "bad request"})
                p_yes = server_p_yes(body["messages"][-1]["content"])
                choice = {"index": 0, "message": {"role": "assistant", "content": "Yes" if p_yes > 0.5 else "No"}}
                if server.logprobs:
                    top = [{"token": "Yes", "logprob": math.log(p_yes * 0.9)},
                           {"token": " yes", "logprob": math.log(p_yes * 0.1)},
                           {"token": "No", "logprob": math.log(1 - p_yes)}]
                    choice["logprobs"] = {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                                       "top_logprobs": top[:body["top_logprobs"]]}]}
                self._send(200, {"id": "x", "object": "chat.completion", "choices": [choice]})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
