"""The `openai` backend: any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM or SGLang servers, hosted APIs).

Standard library only (urllib + threads). The key comes from OPENAI_API_KEY and is sent as a Bearer token only when
set; it is never logged. Requests run `concurrency` at a time; 429, 5xx and connection errors are retried with
exponential backoff and jitter (a server's Retry-After is respected); other 4xx errors fail at once.

A reasoning model served with a reasoning parser returns its thinking in `reasoning_content` (vLLM, DeepSeek) or
`reasoning`; it is put back in front of the answer as `<think>...</think>`, which is what distillation trains on.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from rtool.errors import UserError
from rtool.generation import Backend, Completion, SamplingParams, sample_seed
from rtool.log import logger

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
BACKOFF_CAP_S = 30.0


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, connection: bool = False):
        super().__init__(reason)
        self.retry_after, self.connection = retry_after, connection


def normalize_base_url(url: str) -> str:
    """'http://host:8000' -> 'http://host:8000/v1'; a URL with a path (…/v1, …/openai) is kept as given."""
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/models"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url if urlparse(url).path not in ("", "/") else url + "/v1"


class OpenAIBackend(Backend):
    def __init__(self, base_url: str, *, model: str | None = None, concurrency: int = 16,
                 request_timeout: float = 60.0, max_retries: int = 5):
        self.base_url = normalize_base_url(base_url)
        self.request_timeout, self.max_retries = request_timeout, max_retries
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rtool-openai")
        self._local = threading.local()
        self.model = model or self._first_model()
        self.name = self.model

    def _first_model(self) -> str:
        data = self._request("GET", "/models")
        ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not ids:
            raise UserError(f"{self.base_url}/models lists no models", hint="pass --api-model NAME")
        logger.info("openai backend: using model %s from %s", ids[0], self.base_url)
        return ids[0]

    def generate(self, conversations, params):
        params.check()
        futures = [self._pool.submit(self._samples, i, conv, params) for i, conv in enumerate(conversations)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()  # don't keep sending requests for a call that has failed
            raise

    def _samples(self, index: int, conversation: list[dict], params: SamplingParams) -> list[Completion]:
        out: list[Completion] = []
        requests = 0
        while len(out) < params.n:
            # Some servers cap or ignore `n`: ask again for what is missing, with a fresh seed so it differs.
            if requests >= params.n + 2:
                raise UserError(f"{self.base_url} returned {len(out)} of {params.n} samples after {requests} "
                                f"requests")
            body = {"model": self.model, "messages": conversation, "n": params.n - len(out),
                    "temperature": params.temperature, "top_p": params.top_p,
                    "max_tokens": params.max_new_tokens, "seed": sample_seed(params.seed, index, requests)}
            out += _completions(self._request("POST", "/chat/completions", body))
            requests += 1
        return out[: params.n]

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            try:
                return self._send(method, url, body)
            except _Retryable as error:
                if attempt == self.max_retries:
                    raise UserError(f"{url} failed after {attempt + 1} attempts: {error}",
                                    hint="is the server up? check --base-url" if error.connection else None
                                    ) from None
                delay = _backoff(attempt, error)
                logger.warning("%s: %s; retry %d/%d in %.1fs", url, error, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, body: dict | None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            message = _error_message(error)
            if error.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {error.code} {message}", _retry_after(error.headers)) from None
            raise UserError(f"{url}: HTTP {error.code} {message}",
                            hint="check OPENAI_API_KEY" if error.code in (401, 403) else None) from None
        except urllib.error.URLError as error:
            raise _Retryable(f"cannot connect ({error.reason})", connection=True) from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no answer within {self.request_timeout:g}s (--request-timeout)") from None
        except (ConnectionError, http.client.HTTPException) as error:
            raise _Retryable(f"connection lost ({type(error).__name__})", connection=True) from None
        try:
            return json.loads(payload)
        except ValueError:
            raise _Retryable(f"answer is not JSON: {payload[:80]!r}") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _backoff(attempt: int, error: _Retryable) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, 60.0)
    # Connection refused comes back in microseconds: a short base keeps the total wait for a dead endpoint a few
    # seconds. Rate limits and server errors get a longer base. Full jitter spreads concurrent retries apart.
    base = 0.2 if error.connection else 1.0
    return random.uniform(0.5, 1.0) * min(BACKOFF_CAP_S, base * 2**attempt)


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare for APIs; fall back to exponential backoff


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(error.read() or b"{}")
        detail = data.get("error", data)
        message = detail.get("message", "") if isinstance(detail, dict) else str(detail)
    except (ValueError, OSError, AttributeError):
        message = ""
    return (message or error.reason or "").strip()[:300]


def _completions(data: dict) -> list[Completion]:
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise _Retryable(f"answer has no choices: {str(data)[:120]}")
    texts, reasons, counts = [], [], []
    for choice in choices:
        message = choice.get("message") or {}
        text = message.get("content") or ""
        thinking = message.get("reasoning_content") or message.get("reasoning")
        if thinking:
            text = f"<think>\n{thinking}\n</think>\n\n{text}"
        texts.append(text)
        reasons.append("length" if choice.get("finish_reason") == "length" else "stop")
        counts.append(choice.get("completion_tokens") or (choice.get("usage") or {}).get("completion_tokens"))
    total = (data.get("usage") or {}).get("completion_tokens")
    if any(c is None for c in counts):
        if total is not None and len(choices) == 1:
            counts = [total]
        elif total is not None:
            # usage counts all choices together: share it out by text length.
            chars = [max(1, len(t)) for t in texts]
            counts = [round(total * c / sum(chars)) for c in chars]
        else:
            counts = [max(1, round(len(t) / 4)) for t in texts]  # ~4 characters per token in English text
    return [Completion(t, r, int(c)) for t, r, c in zip(texts, reasons, counts)]
