"""A small OpenAI-compatible stand-in server on 127.0.0.1 for the error paths of served models (429, 5xx, timeouts,
bad JSON, refused keys, a server dying mid-run) and for counting what is fetched; tests/test_integration.py has the
real server (llama.cpp's). It "knows" one thing: the team a ticket names is the right answer, so a prompt naming
`billing` gives the answer `billing` log-probability -0.1 and every other answer -3 per word; asked as a judge (a
reference answer and an answer to grade), it says yes when the graded answer holds the reference."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import TEAMS


class StandIn:
    """The server and what it is told to do: `fail` (statuses answered before succeeding, in order), `die_after`
    (requests answered before every later one is a 503), `echo` (False: no prompt log-probabilities, as chat-only
    APIs), `shifted` (each prompt token's top token is the next one, as llama-cpp-python's one-off log-probabilities
    read), `delay` (seconds before each answer), `bad_json`, `key` (the Bearer token it takes)."""

    def __init__(self, model: str = "stand-in", key: str | None = None):
        self.model, self.key = model, key
        self.fail: list[int] = []
        self.die_after: int | None = None
        self.echo, self.delay, self.bad_json, self.shifted = True, 0.0, False, False
        self.answered = 0
        self.seen: list[str] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"stand_in": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _team(text: str) -> str | None:
    named = [(text.rfind(team), team) for team in TEAMS if team in text]
    return max(named)[1] if named else None


def _tokens(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in re.finditer(r"\S+|\s+", text)]


class _Handler(BaseHTTPRequestHandler):
    stand_in: StandIn

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, data, headers: dict[str, str] | None = None) -> None:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refused(self) -> bool:
        server = self.stand_in
        if server.key and self.headers.get("Authorization") != f"Bearer {server.key}":
            self._answer(401, {"error": {"message": "invalid api key"}})
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self._refused():
            return
        self._answer(200, {"object": "list", "data": [{"id": self.stand_in.model, "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        server = self.stand_in
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if self._refused():
            return
        with server.lock:
            server.seen.append(self.path)
            failing = server.fail.pop(0) if server.fail else None
            dead = server.die_after is not None and server.answered >= server.die_after
            if not failing and not dead:
                server.answered += 1
        time.sleep(server.delay)
        if failing or dead:
            self._answer(failing or 503, {"error": {"message": "busy"}}, {"Retry-After": "0"})
            return
        if server.bad_json:
            self._answer(200, b"<html>proxy error</html>")
            return
        if body.get("model") != server.model:
            self._answer(404, {"error": {"message": f"model {body.get('model')} not found"}})
            return
        if self.path.endswith("/chat/completions"):
            last = body["messages"][-1]["content"]
            reply = f"{_team(last) or 'unsure'}."
            if "Reference answer:\n" in last:  # asked as a judge: yes when the graded answer holds the reference
                gold = last.split("Reference answer:\n")[1].split("\n")[0]
                graded = last.split("Answer to grade:\n")[1].split("\n\n")[0]
                reply = "Yes." if gold.lower() in graded.lower() else "No, it does not."
            self._answer(
                200,
                {
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": len(_tokens(last)), "completion_tokens": 2},
                },
            )
            return
        prompt = body["prompt"]
        tokens = _tokens(prompt)
        if server.echo:
            # the team named before "Answer:" is likely after it; other words unlikely
            asked = _team(prompt[: prompt.rfind("\n") + 1]) if "\n" in prompt else None
            logprobs = [None] + [-0.1 if word.strip() == asked else -3.0 for _, word in tokens[1:]]
            words = [word for _, word in tokens] + [" x"]
            tops = [
                {(words[n + 1] if server.shifted and n + 1 < len(words) else word): -0.1}
                for n, word in enumerate(words)
            ]
            found = {
                "tokens": words,
                "text_offset": [at for at, _ in tokens] + [len(prompt)],
                "token_logprobs": logprobs + [-1.0],
                "top_logprobs": [None] + tops[1:],
            }
        else:
            found = None
        self._answer(
            200,
            {
                "choices": [{"index": 0, "text": prompt + " x" if server.echo else " x", "logprobs": found}],
                "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1},
            },
        )
