"""A real, minimal OpenAI-compatible HTTP server for tests: /v1/models and /v1/chat/completions, answered by a
local model through rtool's hf backend, so client tests run end to end over HTTP.

    with serve(HFBackend(model, tok, name="tiny"), fail_first=2, fail_status=429) as server:
        backend = open_backend(server.url)          # http://127.0.0.1:PORT/v1
        ...
        server.requests                              # [(method, path, headers, body), ...] as received

`fail_first` answers the first K chat requests with `fail_status` (and `retry_after` seconds in a Retry-After
header, if given), `fail_after` every chat request after the K-th (a server that breaks mid-run); `max_n` caps the
choices per answer, like servers that ignore `n`. `delay` holds each chat answer that many seconds (so concurrent
requests overlap); `server.max_in_flight` is the most chat requests it held at once. Servers of one model share its
lock: `serve(backend, model_lock=other.model_lock)`.

`max_model_len` makes the server hold its model to that context as vLLM's does: /v1/models states it, and a chat
request whose prompt + max_tokens pass it is refused with HTTP 400 and vLLM's message ("'max_tokens' or
'max_completion_tokens' is too large: ... your request has N input tokens ..."; `context_error="flat"`: the message
of vLLM before 0.10, "(N in the messages, M in the completion)"; `context_error="bare"`: a message without numbers;
`list_context=False`: /v1/models does not state it, as servers other than vLLM's and SGLang's).
Prompt tokens are counted with the backend's tokenizer and chat template, as the model sees them.

A conversation ending with an assistant message is continued as vLLM's server does it: only with
`continue_final_message: true` (and `add_generation_prompt` false), else the request is refused with 400.
`refuse_fields` lists request fields the server refuses with 400 as OpenAI's API does ("Unrecognized request
argument supplied: continue_final_message"), to test a client against a server without vLLM's extensions.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rtool.generate.core import SamplingParams, render_prompts


class _Handler(BaseHTTPRequestHandler):
    server: "OpenAIServer"
    _held = False  # this request counts as in flight

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.server.record(self, None)
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.server.backend.name, "object": "model", "owned_by": "vllm"}
            if self.server.max_model_len is not None and self.server.list_context:
                model["max_model_len"] = self.server.max_model_len
            self._json(200, {"object": "list", "data": [model]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        count = self.server.record(self, body)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        self._held = self.server.hold()
        try:
            self._chat(body, count)
        finally:
            self._release()

    def _release(self) -> None:
        # Before the answer goes out: a client that reads it may send its next request at once, and that one must
        # not find this one still counted.
        if self._held:
            self._held = False
            self.server.release()

    def _chat(self, body: dict, count: int) -> None:
        time.sleep(self.server.delay)
        fail_after = self.server.fail_after
        if count <= self.server.fail_first or (fail_after is not None and count > fail_after):
            headers = {"Retry-After": str(self.server.retry_after)} if self.server.retry_after is not None else {}
            return self._json(self.server.fail_status, {"error": {"message": "injected failure"}}, headers)
        refused = [field for field in self.server.refuse_fields if field in body]
        if refused:
            return self._json(400, {"error": {"message": f"Unrecognized request argument supplied: {refused[0]}"}})
        problem = _continuation_problem(body)
        if problem:
            return self._json(400, {"error": {"message": problem}})
        if body.get("model") != self.server.backend.name:
            return self._json(404, {"error": {"message": f"model {body.get('model')!r} does not exist"}})
        refusal = self.server.context_refusal(body)
        if refusal:
            return self._json(400, {"error": {"message": refusal, "type": "BadRequestError", "param": None,
                                              "code": 400}})
        n = min(int(body.get("n", 1)), self.server.max_n or 10**6)
        params = SamplingParams(n=n, temperature=float(body.get("temperature", 1.0)),
                                top_p=float(body.get("top_p", 1.0)), max_new_tokens=int(body.get("max_tokens", 16)),
                                seed=int(body.get("seed", 0)))
        with self.server.model_lock:  # one generate at a time: the model and torch's RNG are shared
            completions = self.server.backend.generate([body["messages"]], params)[0]
        choices = [{"index": j, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
                   for j, c in enumerate(completions)]
        usage = {"prompt_tokens": 0, "completion_tokens": sum(c.completion_tokens for c in completions)}
        self._json(200, {"id": f"chatcmpl-{count}", "object": "chat.completion", "model": body["model"],
                         "choices": choices, "usage": usage})

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self._release()
        self.end_headers()
        self.wfile.write(payload)


def _continuation_problem(body: dict) -> str | None:
    """What vLLM's server says of a request whose continuation flags do not fit its messages, or None."""
    messages = body.get("messages") or []
    ends_with_assistant = bool(messages) and messages[-1].get("role") == "assistant"
    if body.get("continue_final_message") and body.get("add_generation_prompt", True):
        return "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
    if body.get("continue_final_message") and not ends_with_assistant:
        return "continue_final_message needs a final assistant message"
    if ends_with_assistant and not body.get("continue_final_message"):
        # vLLM would open a new assistant turn after it; the backend here only continues such a conversation.
        return "this test server answers a final assistant message only with continue_final_message"
    return None


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backend, *, fail_first=0, fail_status=429, retry_after=None, max_n=None, fail_after=None,
                 delay=0.0, model_lock=None, refuse_fields=(), max_model_len=None, context_error="vllm",
                 list_context=True):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.backend, self.fail_first, self.fail_status = backend, fail_first, fail_status
        self.retry_after, self.max_n, self.fail_after, self.delay = retry_after, max_n, fail_after, delay
        self.refuse_fields = tuple(refuse_fields)
        self.max_model_len, self.context_error, self.list_context = max_model_len, context_error, list_context
        self.lock = threading.Lock()
        self.model_lock = model_lock or threading.Lock()
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        self._chat_count = 0
        self._in_flight = self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def record(self, handler, body) -> int:
        with self.lock:
            self.requests.append((handler.command, handler.path, dict(handler.headers), body))
            if handler.command == "POST":
                self._chat_count += 1
            return self._chat_count

    def hold(self) -> bool:
        with self.lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        return True

    def release(self) -> None:
        with self.lock:
            self._in_flight -= 1

    def context_refusal(self, body: dict) -> str | None:
        """vLLM's message for a request that does not fit max_model_len, or None when it fits."""
        if self.max_model_len is None:
            return None
        limit, prompt = self.max_model_len, len(render_prompts(self.backend.tokenizer, [body["messages"]])[0])
        max_tokens = int(body.get("max_tokens", 16))
        if prompt + max_tokens <= limit and prompt < limit:
            return None
        if self.context_error == "bare":
            return "context length exceeded"
        head = f"This model's maximum context length is {limit} tokens."
        if self.context_error == "flat":
            return (f"{head} However, you requested {prompt + max_tokens} tokens ({prompt} in the messages, "
                    f"{max_tokens} in the completion). Please reduce the length of the messages or completion.")
        if prompt >= limit:
            return f"{head} However, your request has {prompt} input tokens. Please reduce the length of the input."
        return (f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum context "
                f"length is {limit} tokens and your request has {prompt} input tokens ({max_tokens} > {limit} - "
                f"{prompt}).")

    def chat_requests(self) -> list:
        return [r for r in self.requests if r[0] == "POST"]


@contextmanager
def serve(backend, **options):
    """Run an OpenAIServer for `backend` on a free localhost port in a background thread."""
    server = OpenAIServer(backend, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
