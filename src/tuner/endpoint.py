"""A model behind an OpenAI-compatible server (`model.endpoint`): the evaluator's log-likelihoods and replies
asked over HTTP instead of computed from local weights.

- Log-likelihoods of answers (`choice`, `preference`): the completions API with `echo` and `logprobs`, which
  returns a log-probability for every prompt token (llama.cpp's Python server, vLLM); the answer's score is the sum
  over the tokens that start inside it.
- Replies (`generate`, and `choice` by generation where a server returns no prompt log-probabilities): the chat
  completions API with the row's messages, greedy, so the server applies its own chat template as it does for the
  users it serves.

Every request is bounded (`concurrency` at once, `timeout` each), tried again after a timeout, a 429 or a 5xx with
waits of 1, 2, 4... s (or the server's Retry-After), and its response kept in tuner's cache keyed by the request
(`cache`), so a rerun or a run resumed after a failure pays only for what is missing and reproduces exactly. A
refused key, a model the server does not serve and a server that does not answer are one paragraph each. The API
key is read from the environment variable the recipe names and sent as a header only: it is in no request body,
cache key or file.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import TunerError
from .files import cache_dir, write_json

# Statuses worth another try: the server is busy or failed for a moment.
RETRIED = {408, 409, 425, 429, 500, 502, 503, 504}
LONGEST_WAIT = 30.0


# A text whose every next token a language model predicts: the probe of how a server aligns prompt log-probabilities.
PROBE = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20"


def shifted(found: dict[str, Any]) -> bool:
    """Whether echoed log-probabilities are one token off: each position's most likely token (`top_logprobs`) is the
    token after it far more often than the token itself. Where the server gives no top tokens, or the model predicts
    neither, they are taken as aligned (the API's meaning)."""
    tokens, tops = found.get("tokens") or [], found.get("top_logprobs") or []
    best = [max(top, key=top.get) if isinstance(top, dict) and top else None for top in tops]
    aligned = sum(b is not None and b == t for b, t in zip(best, tokens))
    ahead = sum(b is not None and b == t for b, t in zip(best, tokens[1:]))
    return ahead >= 3 and ahead > 2 * aligned


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


class Endpoint:
    """One served model: `config` is the recipe's `model.endpoint`, `tokenizer` the one prompts are rendered with,
    `source` the recipe file (for messages). Counts every request it makes (`report`)."""

    def __init__(self, config, tokenizer, source: str = "<recipe>"):
        self.config, self.tokenizer, self.source = config, tokenizer, source
        self.key = None
        if config.api_key_env:
            self.key = os.environ.get(config.api_key_env)
            if not self.key:
                raise TunerError(
                    f"{source}: key `model.endpoint.api_key_env` names {config.api_key_env}, which is not set in "
                    f"this environment. Export the server's API key in it (`export {config.api_key_env}=...`), "
                    f"or remove the key for a server that needs none."
                )
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self._logprobs: bool | None = None

    # ---- transport ----

    def _where(self) -> str:
        return f"{self.source}: key `model.endpoint`"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers

    def _refused(self, url: str, error: urllib.error.HTTPError) -> TunerError:
        detail = error.read().decode("utf-8", "replace")[:300].strip()
        if error.code in (401, 403):
            held = f"the key in {self.config.api_key_env}" if self.config.api_key_env else "a request without a key"
            return TunerError(
                f"{self._where()}: {url} refused {held} (HTTP {error.code}). Check the key, or name the variable "
                f"that holds one in `model.endpoint.api_key_env`."
            )
        if error.code == 404:
            return TunerError(
                f"{self._where()}: {url} answered 404 ({detail or 'not found'}): the server has no such API or "
                f"does not serve model {self.config.model!r}. Check `base_url` (up to and including /v1) and "
                f"`model` (the server's /v1/models lists what it serves)."
            )
        return TunerError(
            f"{self._where()}: {url} refused the request (HTTP {error.code}: {detail or error.reason}). Check "
            f"`model.endpoint.model` and that the server offers this API."
        )

    def _send(self, path: str, body: dict[str, Any] | None) -> tuple[dict[str, Any], float]:
        """One request, tried again as the config allows; the JSON response and the seconds it took."""
        url = f"{self.config.base_url}{path}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        problem = ""
        for attempt in range(self.config.retries + 1):
            wait = min(LONGEST_WAIT, 2.0**attempt)
            start = time.perf_counter()
            try:
                request = urllib.request.Request(url, data=data, headers=self._headers())
                with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                    payload = response.read()
                seconds = time.perf_counter() - start
                try:
                    return json.loads(payload), seconds
                except ValueError:
                    problem = f"a response that is not JSON ({payload[:80]!r})"
            except urllib.error.HTTPError as error:
                if error.code not in RETRIED:
                    raise self._refused(url, error) from None
                problem = f"HTTP {error.code}"
                after = error.headers.get("Retry-After") if error.headers else None
                if after and after.strip().isdigit():
                    wait = min(LONGEST_WAIT, float(after))
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
                problem = str(getattr(error, "reason", None) or error) or type(error).__name__
            if attempt < self.config.retries:
                time.sleep(wait)
        raise TunerError(
            f"{self._where()}: {url} did not answer ({problem}) after {self.config.retries + 1} tries. Check that "
            f"the server is up and not overloaded (or raise `model.endpoint.retries`), or fix `base_url`; "
            f"responses already fetched are kept in tuner's cache, so running again pays only for the rest."
        )

    def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A POST to the server, answered from tuner's cache where the same request was answered before."""
        cached, file = None, None
        if self.config.cache:
            key = hashlib.sha256(
                json.dumps({"url": self.config.base_url + path, "body": body}, sort_keys=True).encode()
            ).hexdigest()
            file = cache_dir() / "endpoint" / key[:2] / f"{key}.json"
            try:
                cached = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cached = None
        if cached and isinstance(cached.get("response"), dict):
            response, seconds = cached["response"], float(cached.get("seconds") or 0.0)
        else:
            response, seconds = self._send(path, body)
            if file is not None:
                try:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    write_json(file, {"response": response, "seconds": seconds})
                except OSError:  # an unwritable cache costs the next run, not this one
                    pass
        usage = response.get("usage") or {}
        with self._lock:
            self.records.append(
                {
                    "seconds": seconds,
                    "cached": cached is not None,
                    "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                    "completion_tokens": int(usage.get("completion_tokens") or 0),
                }
            )
        return response

    def check(self) -> None:
        """Before any row: the server answers, takes the key and serves the model (where it lists its models)."""
        url = f"{self.config.base_url}/models"
        try:
            request = urllib.request.Request(url, headers=self._headers())
            with urllib.request.urlopen(request, timeout=min(self.config.timeout, 10.0)) as response:
                listed = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise self._refused(url, error) from None
            return  # a server without /models: the first request says what is wrong
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ValueError) as error:
            raise TunerError(
                f"{self._where()}: nothing answers at {self.config.base_url} "
                f"({getattr(error, 'reason', None) or error}). Start the server (e.g. `python -m llama_cpp.server "
                f"--model model.gguf --model_alias {self.config.model}`), or fix `base_url`."
            ) from None
        served = [str(one.get("id")) for one in (listed.get("data") or []) if isinstance(one, dict)]
        if served and self.config.model not in served:
            raise TunerError(
                f"{self._where()}: the server at {self.config.base_url} does not serve model "
                f"{self.config.model!r}; it serves {', '.join(served[:10])}. Set `model.endpoint.model` to one."
            )

    def _each(self, items: list[Any], ask: Callable[[Any], Any], on_done: Callable[[list[int]], None] | None):
        """`ask` for every item, `concurrency` at a time; results in the items' order. After a request fails for
        good, no further one starts (a dead server costs one request's tries, not every row's)."""
        results: list[Any] = [None] * len(items)
        failed = threading.Event()

        def one(number: int) -> None:
            if failed.is_set():
                return
            try:
                results[number] = ask(items[number])
            except BaseException:
                failed.set()
                raise
            if on_done is not None:
                with self._lock:
                    on_done([number])

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            futures = [pool.submit(one, n) for n in range(len(items))]
            for future in futures:
                future.result()
        return results

    # ---- what the evaluator asks ----

    def _echo(self, text: str) -> dict[str, Any]:
        body = {
            "model": self.config.model,
            "prompt": text,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        return self.request("/completions", body)["choices"][0].get("logprobs") or {}

    def returns_prompt_logprobs(self) -> bool:
        """Whether the server gives every prompt token its own log-probability (`choice_method`; auto asks once, on
        a counting text any language model continues: see `shifted`)."""
        if self._logprobs is None:
            if self.config.choice_method != "auto":
                self._logprobs = self.config.choice_method == "logprobs"
            else:
                found = self._echo(PROBE)
                values = [v for v in (found.get("token_logprobs") or []) if v is not None]
                given = len(values) >= 2 and len(found.get("text_offset") or []) == len(found.get("token_logprobs"))
                why = "returns no prompt log-probabilities" if not given else None
                if given and shifted(found):
                    why = (
                        "returns each prompt token's log-probability from the position after it (one token off, as "
                        "llama-cpp-python's server does: abetlen/llama-cpp-python#1983), which would score the "
                        "wrong tokens"
                    )
                self._logprobs = why is None
                if why:
                    print(f"tuner: {self.config.base_url} {why}; choices are scored by generation matched to them")
        return self._logprobs

    def _answer_logprob(self, pair: tuple[str, str]) -> float:
        context, answer = pair
        found = self._echo(context + answer)
        offsets, values = found.get("text_offset") or [], found.get("token_logprobs") or []
        start, end = len(context), len(context) + len(answer)
        inside = [v for o, v in zip(offsets, values) if start <= o < end]
        if not inside or any(v is None for v in inside) or len(offsets) != len(values):
            raise TunerError(
                f"{self._where()}: {self.config.base_url}/completions returned no log-probabilities for the "
                f"answer's tokens (echo with logprobs). Serve the model where the completions API returns them "
                f"(llama.cpp's Python server, vLLM), or set `model.endpoint.choice_method: generation`."
            )
        return float(sum(inside))

    def loglikelihoods(self, pairs: list[tuple[str, str]], on_scored=None) -> list[float]:
        """log P(answer | context) for each (context, answer) text pair, as `likelihood.loglikelihoods` gives them."""
        if not self.returns_prompt_logprobs():
            raise TunerError(
                f"{self._where()}: {self.config.base_url} returns no prompt log-probabilities, which "
                f"preference scoring needs (`choice_method` {self.config.choice_method}). Serve the model where "
                f"the completions API returns them (llama.cpp's Python server, vLLM)."
            )
        return self._each(pairs, self._answer_logprob, on_scored)

    def chat(
        self, conversations: list[list[dict[str, Any]]], max_tokens: int, on_done=None
    ) -> tuple[list[str], int, list[bool]]:
        """Greedy replies to each conversation through the chat completions API, the generated token count, and
        whether each reply stopped at `max_tokens`."""

        def ask(messages):
            body = {
                "model": self.config.model,
                "messages": [{"role": m["role"], "content": m.get("content") or ""} for m in messages],
                "max_tokens": max_tokens,
                "temperature": 0.0,
            }
            return self.request("/chat/completions", body)

        responses = self._each(conversations, ask, on_done)
        texts = [str((r["choices"][0].get("message") or {}).get("content") or "") for r in responses]
        truncated = [r["choices"][0].get("finish_reason") == "length" for r in responses]
        generated = sum(int((r.get("usage") or {}).get("completion_tokens") or 0) for r in responses)
        return texts, generated, truncated

    def report(self) -> dict[str, Any]:
        """What the requests cost and how long they took: counts (fetched, from the cache), tokens, price per request
        at the recipe's prices, latency p50/p95 of one request, and requests per second while fetching."""
        records = self.records
        fetched = [r for r in records if not r["cached"]]
        seconds = [r["seconds"] for r in records]
        prompt = sum(r["prompt_tokens"] for r in records)
        completion = sum(r["completion_tokens"] for r in records)
        price = (prompt * self.config.input_price_per_million + completion * self.config.output_price_per_million) / 1e6
        return {
            "base_url": self.config.base_url,
            "model": self.config.model,
            "requests": len(records),
            "fetched": len(fetched),
            "from_cache": len(records) - len(fetched),
            "concurrency": self.config.concurrency,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "price": round(price, 8),
            "latency_ms_p50": round(1000 * _percentile(seconds, 0.5), 2) if seconds else None,
            "latency_ms_p95": round(1000 * _percentile(seconds, 0.95), 2) if seconds else None,
            "latency_ms_mean": round(1000 * statistics.fmean(seconds), 2) if seconds else None,
        }
