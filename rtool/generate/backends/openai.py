"""The `openai` backend: any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM or SGLang servers, hosted APIs).

Standard library only (urllib + threads). The key comes from OPENAI_API_KEY and is sent as a Bearer token only when
set; it is never logged. Each sample is one request (n=1) carrying its own seed and every sampling setting, top_k,
min_p and repetition_penalty included (vLLM and SGLang servers would otherwise apply the checkpoint's defaults); a
server that refuses those fields while they are neutral is asked without them, with one warning. Requests run
`concurrency` at a time; 429, 5xx, connection errors and 200 answers without choices are retried with exponential
backoff and jitter (a server's Retry-After is respected); other 4xx errors fail at once. A request still failing
after its retries raises EndpointDown, which `rtool.generate.backends.fleet` catches to send the request to another endpoint.

A conversation ending with an assistant message is continued (rtool.generate.core): the request adds
`continue_final_message: true, add_generation_prompt: false`, vLLM's and SGLang's extension; a server that refuses
those fields is a UserError (a server that silently ignores them would answer anew: use vLLM or SGLang).

A reasoning model served with a reasoning parser returns its thinking in `reasoning_content` (vLLM, DeepSeek) or
`reasoning`; it is put back in front of the answer as `<think>...</think>`, which is what distillation trains on.
"""

from __future__ import annotations

import http.client
import json
import logging
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
from rtool.generate.core import Backend, Completion, SamplingParams, continues, request_seeds
from rtool.log import logger

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
BACKOFF_CAP_S = 30.0


class EndpointDown(UserError):
    """An endpoint still failing a request after its retries (connection errors, timeouts, 429/5xx): the server's
    trouble, not the request's. A single endpoint's run stops with it; a fleet moves the request elsewhere."""

    def __init__(self, url: str, reason: str, attempts: int, *, hint: str | None = None):
        self.url, self.reason = url, reason
        super().__init__(f"{url} failed after {attempts} attempts: {reason}", hint=hint)


class _UnsupportedField(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


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
    kind = "openai"

    def __init__(self, base_url: str, *, model: str | None = None, concurrency: int = 16,
                 request_timeout: float = 60.0, max_retries: int = 5, in_fleet: bool = False,
                 chat_template: str | None = None):
        """`in_fleet`: one of several endpoints (rtool.generate.backends.fleet), whose caller runs `sample` from its own
        threads: a refused or lost connection gives up after one retry (another endpoint can take the request at
        once), and retries are logged at debug level (the fleet warns when an endpoint goes out of rotation).
        `chat_template` (a template's text) is sent with every request as `chat_template`, which vLLM's and
        SGLang's servers use in place of the model's; other servers may refuse or ignore it."""
        self.base_url = normalize_base_url(base_url)
        self.request_timeout, self.max_retries, self.in_fleet = request_timeout, max_retries, in_fleet
        self.chat_template = chat_template
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rtool-openai")
        self._lock = threading.Lock()
        self._send_extras = True  # top_k, min_p, repetition_penalty: until the server refuses them
        self.model = model or self._first_model()
        self.name = self.model

    def _first_model(self) -> str:
        data = self._request("GET", "/models")
        ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not ids:
            raise UserError(f"{self.base_url}/models lists no models", hint="pass --api-model NAME")
        logger.log(logging.DEBUG if self.in_fleet else logging.INFO, "openai backend: using model %s from %s",
                   ids[0], self.base_url)
        return ids[0]

    def generate(self, conversations, params, seeds=None):
        params.check()
        seeds = request_seeds(conversations, params, seeds)
        return run_samples(self._pool, self.sample, conversations, params, seeds)

    def sample(self, conversation: list[dict], params: SamplingParams, seed: int) -> Completion:
        """One completion of `conversation` with `seed`, in the calling thread (retries included)."""
        body = {"model": self.model, "messages": conversation, "n": 1, "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": params.max_new_tokens, "seed": seed}
        if self.chat_template is not None:
            body["chat_template"] = self.chat_template
        continued = continues(conversation)
        if continued:  # write on from the end of the partial assistant message (vLLM's and SGLang's extension)
            body.update(continue_final_message=True, add_generation_prompt=False)
        # vLLM and SGLang servers apply the checkpoint's generation_config to settings a request leaves out, so the
        # neutral values are sent too; a server that refuses them (hosted APIs) is asked again without them.
        extras = {"top_k": params.top_k, "min_p": params.min_p, "repetition_penalty": params.repetition_penalty}
        sent_extras = self._send_extras
        if sent_extras:
            body.update(extras)
        parse = _first_continuation if continued else _first_completion
        try:
            return self._request("POST", "/chat/completions", body, parse=parse)
        except _UnsupportedField as error:
            if error.field == "chat_template":
                raise UserError(f"{self.base_url} does not accept a chat_template ({error.message})",
                                hint="serve the model with vLLM or SGLang, or drop --chat-template") from None
            if error.field in _CONTINUE_FIELDS:
                raise UserError(f"{self.base_url} cannot continue a partial assistant message: it does not accept "
                                f"{error.field} ({error.message})",
                                hint="serve the model with vLLM or SGLang (their servers accept "
                                "continue_final_message), or use a local model (--backend hf or vllm)") from None
            if not sent_extras or not _neutral(params):
                raise UserError(f"{self.base_url} does not accept {error.field} ({error.message})",
                                hint="drop --top-k/--min-p/--repetition-penalty for this endpoint") from None
            with self._lock:
                if self._send_extras:
                    logger.warning("%s does not accept %s: sending only temperature, top_p and seed; other "
                                   "sampling settings are the server's", self.base_url, error.field)
                self._send_extras = False
            for key in extras:
                body.pop(key, None)
            return self._request("POST", "/chat/completions", body, parse=parse)

    def _request(self, method: str, path: str, body: dict | None = None, parse=None):
        """Send, retrying 429/5xx/connection errors and answers that `parse` rejects as _Retryable."""
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            try:
                data = self._send(method, url, body)
                return parse(data) if parse is not None else data
            except _Retryable as error:
                retries = min(self.max_retries, 1) if self.in_fleet and error.connection else self.max_retries
                if attempt >= retries:
                    raise EndpointDown(url, str(error), attempt + 1,
                                       hint="is the server up? check the URL" if error.connection else None
                                       ) from None
                delay = _backoff(attempt, error)
                logger.log(logging.DEBUG if self.in_fleet else logging.WARNING, "%s: %s; retry %d/%d in %.1fs",
                           url, error, attempt + 1, retries, delay)
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
            unsupported = _unsupported_field(error.code, message, body)
            if unsupported:
                raise _UnsupportedField(unsupported, message) from None
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


def run_samples(pool: ThreadPoolExecutor, sample, conversations: list, params: SamplingParams,
                seeds: list[list[int]]) -> list[list[Completion]]:
    """`sample(conversation, params, seed)` for every seed of every conversation on `pool`, in input order."""
    # One request per sample (n=1) with that sample's seed: a server seeds a request, not each of its n choices,
    # and some servers cap or ignore n. Concurrency comes from the pool.
    futures = [[pool.submit(sample, conversation, params, seed) for seed in row_seeds]
               for conversation, row_seeds in zip(conversations, seeds)]
    try:
        return [[f.result() for f in row] for row in futures]
    except BaseException:
        for row in futures:
            for f in row:
                f.cancel()  # don't keep sending requests for a call that has failed
        raise


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


_EXTRA_FIELDS = ("top_k", "min_p", "repetition_penalty")
_CONTINUE_FIELDS = ("continue_final_message", "add_generation_prompt")


def _neutral(params: SamplingParams) -> bool:
    return params.top_k == 0 and params.min_p == 0 and params.repetition_penalty == 1.0


def _unsupported_field(status: int, message: str, body: dict | None) -> str | None:
    """The sampling field a 400/422 answer complains about ("Unrecognized request argument supplied: top_k")."""
    if status not in (400, 422) or not body:
        return None
    return next((name for name in _CONTINUE_FIELDS + _EXTRA_FIELDS + ("chat_template",)
                 if name in body and name in message), None)


def _first_continuation(data: dict) -> Completion:
    """`_first_completion` of a continued message. A server's reasoning parser reads a continuation's text up to
    `</think>` as reasoning (the opening tag is in the partial message, or the text is all reasoning when no tag
    closes): the parts are joined back as the model wrote them, without a second opening tag."""
    return _first_completion(data, rejoin_thinking=False)


def _first_completion(data: dict, rejoin_thinking: bool = True) -> Completion:
    """The one choice of an n=1 answer. An answer without choices (a proxy's or overloaded server's 200) is
    retried like a 5xx. completion_tokens is the server's count, or None when it reports no usage: never a guess."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Retryable(f"answer has no choices: {str(data)[:120]}")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    thinking = message.get("reasoning_content") or message.get("reasoning")
    if thinking and rejoin_thinking:
        text = f"<think>\n{thinking}\n</think>\n\n{text}"
    elif thinking:  # a continuation: the partial message already opened the <think> block
        text = f"{thinking}\n</think>\n\n{text}" if text else thinking
    reason = "length" if choice.get("finish_reason") == "length" else "stop"
    count = (data.get("usage") or {}).get("completion_tokens")
    return Completion(text, reason, int(count) if isinstance(count, (int, float)) else None)
