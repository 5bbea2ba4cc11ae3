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

The completion budget fits the model: its context is read from /v1/models where the server states it (vLLM's and
SGLang's `max_model_len`), and a request the server still refuses for its context (HTTP 400: "maximum context length
is 4096 tokens and your request has 2778 input tokens") is sent once more with the room left after that prompt
(remembered for the prompt's other samples), with one warning per run; a completion cut there ends "length". A
prompt that fills the context alone gets an empty completion ("length"), as on the hf backend; a refusal that states
no numbers is one error line naming --max-new-tokens.

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
from rtool.generate.backends.limits import ContextRefusal, listed_context
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


class _RefusedForContext(Exception):
    def __init__(self, refusal: ContextRefusal):
        super().__init__(refusal.message)
        self.refusal = refusal


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
                 chat_template: str | None = None, said: set | None = None):
        """`in_fleet`: one of several endpoints (rtool.generate.backends.fleet), whose caller runs `sample` from its own
        threads: a refused or lost connection gives up after one retry (another endpoint can take the request at
        once), and retries are logged at debug level (the fleet warns when an endpoint goes out of rotation).
        `chat_template` (a template's text) is sent with every request as `chat_template`, which vLLM's and
        SGLang's servers use in place of the model's; other servers may refuse or ignore it. `said`: the warnings
        already given, shared by a fleet's endpoints so that each is given once."""
        self.base_url = normalize_base_url(base_url)
        self.request_timeout, self.max_retries, self.in_fleet = request_timeout, max_retries, in_fleet
        self.chat_template = chat_template
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rtool-openai")
        self._lock = threading.Lock()
        self._send_extras = True  # top_k, min_p, repetition_penalty: until the server refuses them
        self._said = said if said is not None else set()
        self._closed = False  # requests still in flight then stop quietly: no retry lines after the run's error
        self.context: int | None = None  # the model's context in tokens, where the server states it
        self._completion_cap: int | None = None  # a server's cap on completion tokens alone (OpenAI's models)
        self._prompt_tokens: dict[str, int] = {}  # a prompt's tokens, as a context refusal stated them
        self._context_lock = threading.Lock()
        self._context_read = False
        self.model = model or self._first_model()
        self.name = self.model

    def _first_model(self) -> str:
        data = self._request("GET", "/models")
        ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not ids:
            raise UserError(f"{self.base_url}/models lists no models", hint="pass --api-model NAME")
        logger.log(logging.DEBUG if self.in_fleet else logging.INFO, "openai backend: using model %s from %s",
                   ids[0], self.base_url)
        self.context, self._context_read = listed_context(data, ids[0]), True
        return ids[0]

    def _read_context(self) -> None:
        """The model's context from /v1/models, asked once (a server without the route or the field: none)."""
        with self._context_lock:
            if self._context_read:
                return
            self._context_read = True
            try:
                self.context = listed_context(self._send("GET", self.base_url + "/models", None), self.model)
            except (UserError, _Retryable, _UnsupportedField, _RefusedForContext):
                return  # the chat requests report a server that is down; a context refusal states the context
        if self.context is not None:
            logger.debug("%s serves %s with a context of %d tokens", self.base_url, self.model, self.context)

    def generate(self, conversations, params, seeds=None):
        params.check()
        seeds = request_seeds(conversations, params, seeds)
        return run_samples(self._pool, self.sample, conversations, params, seeds)

    def sample(self, conversation: list[dict], params: SamplingParams, seed: int) -> Completion:
        """One completion of `conversation` with `seed`, in the calling thread (retries included)."""
        self._read_context()
        max_tokens = self._max_tokens(conversation, params.max_new_tokens)
        if max_tokens < 1:
            return Completion("", "length", 0)  # the prompt fills the context (_fitted warned)
        body = {"model": self.model, "messages": conversation, "n": 1, "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": max_tokens, "seed": seed}
        if self.chat_template is not None:
            body["chat_template"] = self.chat_template
        continued = continues(conversation)
        if continued:  # write on from the end of the partial assistant message (vLLM's and SGLang's extension)
            body.update(continue_final_message=True, add_generation_prompt=False)
        # vLLM and SGLang servers apply the checkpoint's generation_config to settings a request leaves out, so the
        # neutral values are sent too; a server that refuses them (hosted APIs) is asked again without them.
        extras = {"top_k": params.top_k, "min_p": params.min_p, "repetition_penalty": params.repetition_penalty}
        if self._send_extras:
            body.update(extras)
        parse = _first_continuation if continued else _first_completion
        refused_for_context = False
        while True:
            try:
                return self._request("POST", "/chat/completions", body, parse=parse)
            except _UnsupportedField as error:
                self._drop_extras(error, body, extras, params)
            except _RefusedForContext as error:
                if refused_for_context:  # the second refusal of a request sized by the first: not ours to guess
                    raise self._unfit(params.max_new_tokens, error.refusal) from None
                refused_for_context = True
                body["max_tokens"] = self._fitted(conversation, params.max_new_tokens, body["max_tokens"],
                                                  error.refusal)
                if body["max_tokens"] < 1:
                    return Completion("", "length", 0)

    def _drop_extras(self, error: _UnsupportedField, body: dict, extras: dict, params: SamplingParams) -> None:
        """Take the neutral extras out of `body` for a server that refuses them (one warning); a UserError for any
        other refused field."""
        if error.field == "chat_template":
            raise UserError(f"{self.base_url} does not accept a chat_template ({error.message})",
                            hint="serve the model with vLLM or SGLang, or drop --chat-template") from None
        if error.field in _CONTINUE_FIELDS:
            raise UserError(f"{self.base_url} cannot continue a partial assistant message: it does not accept "
                            f"{error.field} ({error.message})",
                            hint="serve the model with vLLM or SGLang (their servers accept "
                            "continue_final_message), or use a local model (--backend hf or vllm)") from None
        if error.field not in extras or not _neutral(params):
            raise UserError(f"{self.base_url} does not accept {error.field} ({error.message})",
                            hint="drop --top-k/--min-p/--repetition-penalty for this endpoint") from None
        with self._lock:
            if self._send_extras:
                logger.warning("%s does not accept %s: sending only temperature, top_p and seed; other "
                               "sampling settings are the server's", self.base_url, error.field)
            self._send_extras = False
        for key in extras:
            body.pop(key, None)

    def _max_tokens(self, conversation: list[dict], budget: int) -> int:
        """The budget, within what the server's context leaves after this prompt where that is known (its whole
        context where the prompt's length is not: a refusal then says it)."""
        with self._lock:
            context, cap = self.context, self._completion_cap
            prompt = self._prompt_tokens.get(_prompt_key(conversation)) if context is not None else None
        if cap is not None:
            budget = min(budget, cap)
        if context is None:
            return budget
        if budget >= context:
            self._warn_context(budget, context)
        return min(budget, context - (prompt or 0))

    def _fitted(self, conversation: list[dict], budget: int, sent: int, refusal: ContextRefusal) -> int:
        """The max_tokens a context refusal leaves room for (< 1: none, the prompt fills the context); a UserError
        when the refusal does not say."""
        if refusal.completion_cap is not None and refusal.completion_cap < sent:
            with self._lock:
                self._completion_cap = refusal.completion_cap
            self._once("cap", "%s serves %s with at most %d completion tokens: --max-new-tokens %d is cut to it",
                       self.base_url, self.model, refusal.completion_cap, budget)
            return refusal.completion_cap
        if refusal.context is None or refusal.prompt_tokens is None or refusal.context - refusal.prompt_tokens >= sent:
            raise self._unfit(budget, refusal)
        with self._lock:
            self.context = refusal.context
            self._prompt_tokens[_prompt_key(conversation)] = refusal.prompt_tokens
        room = refusal.context - refusal.prompt_tokens
        if room < 1:
            self._once("full", "%s: a prompt of %d tokens fills the context of %s (%d tokens) on its own: its "
                       "completions, and those of any other such prompt, are empty (finish_reason 'length')",
                       self.base_url, refusal.prompt_tokens, self.model, refusal.context)
        else:
            self._warn_context(budget, refusal.context)
        return room

    def _unfit(self, budget: int, refusal: ContextRefusal) -> UserError:
        context = refusal.context or self.context
        limit = f" ({context} tokens)" if context else ""
        return UserError(f"{self.base_url}: --max-new-tokens {budget} does not fit the context of {self.model}{limit}: "
                         f"{refusal.message}", hint="lower --max-new-tokens")

    def _warn_context(self, budget: int, context: int) -> None:
        self._once("context", "--max-new-tokens %d runs past the context of %s at %s (%d tokens of prompt and "
                   "completion): completions stop where they reach it (finish_reason 'length')", budget, self.model,
                   self.base_url, context)

    def _once(self, key: str, message: str, *args) -> None:
        with _ONCE:
            if key in self._said:
                return
            self._said.add(key)
        logger.warning(message, *args)

    def _request(self, method: str, path: str, body: dict | None = None, parse=None):
        """Send, retrying 429/5xx/connection errors and answers that `parse` rejects as _Retryable."""
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            try:
                data = self._send(method, url, body)
                return parse(data) if parse is not None else data
            except _Retryable as error:
                retries = min(self.max_retries, 1) if self.in_fleet and error.connection else self.max_retries
                if attempt >= retries or self._closed:
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
            refusal = ContextRefusal.parse(message) if error.code in (400, 413, 422) and body else None
            if refusal is not None:
                raise _RefusedForContext(refusal) from None
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
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)


_ONCE = threading.Lock()  # guards the sets of warnings given (a fleet's endpoints share one)


def _prompt_key(conversation: list[dict]) -> str:
    return json.dumps(conversation, sort_keys=True, ensure_ascii=False)


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
