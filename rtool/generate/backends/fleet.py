"""A fleet: several OpenAI-compatible endpoints (vLLM servers of one model) served as one backend.

    backend = open_backend("http://gpu1:8000/v1,http://gpu2:8000/v1", batch_size=16)  # 16 in flight per endpoint

Each sample is one request (rtool.generate.backends.openai), sent to the next endpoint in turn that has a free slot: at most
`concurrency` requests are in flight per endpoint. A request that an endpoint still fails after its retries
(EndpointDown: connection refused or lost, timeouts, 429/5xx) goes to another endpoint with the same seed, so a
retry draws the sample the first endpoint would have. The failing endpoint leaves the rotation for COOLDOWN_S
(one warning), then takes one trial request: a success brings it back, a failure doubles its time out (up to
MAX_COOLDOWN_S). When no endpoint is left in rotation, or a request has failed on every endpoint, the call fails
with one line naming each endpoint's last error. Other errors (a 4xx such as an unknown model) fail at once.

Each endpoint may serve the model under its own name: it is asked /v1/models unless `model` is given. The fleet's
`name` (what distill records as `teacher`) is that name when they agree, else the names joined by commas; each
Completion carries the `endpoint` that drew it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rtool.generate.backends.openai import EndpointDown, OpenAIBackend, normalize_base_url, run_samples
from rtool.errors import UserError
from rtool.generate.core import Backend, Completion, SamplingParams, request_seeds
from rtool.log import logger

COOLDOWN_S = 30.0
MAX_COOLDOWN_S = 300.0


def parse_fleet(spec: str) -> list[str] | None:
    """The endpoint URLs of a comma-separated spec, normalized; None when no part is an http(s) URL (a local model
    path may hold a comma). An empty part, a part that is not a URL, or a URL listed twice is a UserError."""
    parts = [part.strip() for part in spec.split(",")]
    is_url = [part.startswith(("http://", "https://")) for part in parts]
    if len(parts) < 2 or not any(is_url):
        return None
    if "" in parts:
        raise UserError(f"empty item {parts.index('') + 1} in the endpoint list {spec!r}",
                        hint="separate endpoint URLs with single commas: http://a:8000/v1,http://b:8000/v1")
    bad = next((part for part, url in zip(parts, is_url) if not url), None)
    if bad is not None:
        raise UserError(f"{bad!r} in the endpoint list {spec!r} is not an http(s) URL",
                        hint="list only endpoint URLs; the model name goes in --api-model")
    urls = [normalize_base_url(part) for part in parts]
    twice = next((url for i, url in enumerate(urls) if url in urls[:i]), None)
    if twice is not None:
        raise UserError(f"{twice} is listed twice in the endpoint list",
                        hint="raise --batch-size for more requests in flight per endpoint")
    return urls


@dataclasses.dataclass(eq=False)
class _Endpoint:
    url: str
    client: OpenAIBackend | None = None  # made (and its model name asked) on first use
    in_flight: int = 0
    down_until: float = 0.0  # time.monotonic(); out of rotation until then
    cooldown: float = COOLDOWN_S
    on_trial: bool = False  # back from a cooldown: one request at a time until one succeeds
    last_error: str = ""


class FleetBackend(Backend):
    kind = "openai"  # what a row's sampling records: the same requests as one endpoint's, so --resume mixes them

    def __init__(self, urls: list[str], *, model: str | None = None, concurrency: int = 16,
                 request_timeout: float = 60.0, max_retries: int = 5, chat_template: str | None = None):
        self.urls, self.model, self.concurrency = urls, model, concurrency
        self.servers = len(urls)
        # `said`: the endpoints share one set of warnings given, so a budget past the context is warned once.
        self._client_options = {"request_timeout": request_timeout, "max_retries": max_retries, "in_fleet": True,
                                "chat_template": chat_template, "said": set()}
        self._endpoints = [_Endpoint(url) for url in urls]
        self._turn = 0  # round-robin position
        self._changed = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=concurrency * len(urls), thread_name_prefix="rtool-fleet")
        if model is not None:
            for endpoint in self._endpoints:
                self._client(endpoint)  # nothing to ask: the first request tells whether it is up
        self.name = model or self._model_names()
        logger.info("fleet of %d endpoints serving %s, up to %d requests in flight each",
                    len(urls), self.name, concurrency)

    def _model_names(self) -> str:
        """Ask every endpoint for its model (in parallel); an endpoint that is down now leaves the rotation."""
        def connect(endpoint):
            try:
                self._client(endpoint)
            except EndpointDown as error:
                self._failed(endpoint, error)

        list(self._pool.map(connect, self._endpoints))
        self._check_some_up()
        names = [e.client.model for e in self._endpoints if e.client is not None]
        return ",".join(dict.fromkeys(names))

    def _client(self, endpoint: _Endpoint) -> OpenAIBackend:
        if endpoint.client is None:  # one thread per endpoint gets here: at start, or as its one trial request
            endpoint.client = OpenAIBackend(endpoint.url, model=self.model, concurrency=1, **self._client_options)
        return endpoint.client

    def generate(self, conversations, params, seeds=None):
        params.check()
        seeds = request_seeds(conversations, params, seeds)
        return run_samples(self._pool, self._sample, conversations, params, seeds)

    def _sample(self, conversation: list[dict], params: SamplingParams, seed: int) -> Completion:
        tried: list[_Endpoint] = []
        while True:
            endpoint = self._take(tried)
            try:
                completion = self._client(endpoint).sample(conversation, params, seed)
            except EndpointDown as error:
                self._release(endpoint, False, error)
                tried.append(endpoint)
                continue  # the same seed on another endpoint: the same sample
            except BaseException:
                self._release(endpoint, False)
                raise
            self._release(endpoint, True)
            return dataclasses.replace(completion, endpoint=endpoint.url)

    def _take(self, tried: list[_Endpoint]) -> _Endpoint:
        """The next endpoint in turn that is in rotation, has a free slot and has not failed this request; waits
        while all such are busy."""
        with self._changed:
            while True:
                now = time.monotonic()
                self._check_some_up(now)
                live = [e for e in self._endpoints if e.down_until <= now and e not in tried]
                if not live:
                    raise self._all_failed("a request failed on every endpoint in rotation")
                count = len(self._endpoints)
                for step in range(count):
                    endpoint = self._endpoints[(self._turn + step) % count]
                    if endpoint in live and endpoint.in_flight < (1 if endpoint.on_trial else self.concurrency):
                        self._turn = (self._turn + step + 1) % count
                        endpoint.in_flight += 1
                        return endpoint
                self._changed.wait(timeout=1.0)  # a slot frees, an endpoint fails, or a cooldown ends

    def _release(self, endpoint: _Endpoint, succeeded: bool, error: EndpointDown | None = None) -> None:
        """A request on `endpoint` is over: `error` when the endpoint failed it."""
        with self._changed:
            endpoint.in_flight -= 1
            if error is not None:
                self._failed(endpoint, error)
            elif succeeded and endpoint.on_trial:
                endpoint.on_trial, endpoint.cooldown = False, COOLDOWN_S
                logger.info("%s answers again: back in rotation", endpoint.url)
            self._changed.notify_all()

    def _failed(self, endpoint: _Endpoint, error: EndpointDown) -> None:
        with self._changed:  # reentrant: _release holds it already
            endpoint.last_error = error.reason
            now = time.monotonic()
            if endpoint.down_until <= now:  # not already out (its other requests in flight fail too)
                endpoint.down_until, endpoint.on_trial = now + endpoint.cooldown, True
                left = sum(e.down_until <= now for e in self._endpoints)
                logger.warning("%s is failing (%s): out of rotation for %.0fs (%d of %d endpoints left)",
                               endpoint.url, error.reason, endpoint.cooldown, left, len(self._endpoints))
                endpoint.cooldown = min(endpoint.cooldown * 2, MAX_COOLDOWN_S)
            self._changed.notify_all()

    def _check_some_up(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if all(e.down_until > now for e in self._endpoints):
            raise self._all_failed(f"all {len(self._endpoints)} endpoints are down")

    def _all_failed(self, what: str) -> UserError:
        errors = "; ".join(f"{e.url}: {e.last_error or 'ok'}" for e in self._endpoints)
        return UserError(f"{what} ({errors})", hint="are the servers up? --resume continues from the rows written")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for endpoint in self._endpoints:
            if endpoint.client is not None:
                endpoint.client.close()
