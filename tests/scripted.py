"""A model whose answers a test writes: served over HTTP by tests/openai_server.py, so `rtool distill` and `rtool
eval` can be run end to end against known text and their grades, counts and pass@k asserted exactly.

    script = {"What is 2 + 2?": ["\\boxed{4}", "\\boxed{5}"]}     # user message -> completions, served in order
    with scripted_endpoint(script) as server:                      # server.url: http://127.0.0.1:PORT/v1
        run_rtool("distill", "--teacher", server.url, "-n", 2, "--batch-size", 1, ...)

Each request is answered by its last user message alone: system prompt, seed, temperature, top_k and the other
sampling fields are ignored, and a request for n choices gets the next n completions of that prompt. Completions
are handed out in request order, from the start again when a prompt's list is used up; with `--batch-size 1` the
openai backend sends one request at a time, sample 0 first, so sample k gets the k-th completion. A completion is a
text (finish_reason "stop", `tokens(text)` completion tokens) or a Completion to set those too. A prompt the script
lacks is answered with a text saying so, and listed in `backend.unscripted`.

A conversation ending with a partial assistant message (a continuation, as prm-label sends) is answered by that
message's text instead: `{"Step 1: 2 + 2 = 4": [" so \\boxed{4}", ...]}` scripts what follows that prefix.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from openai_server import serve
from rtool.generate.core import Backend, Completion


def tokens(text: str) -> int:
    """The completion_tokens reported for a scripted text: its whitespace-separated words."""
    return len(text.split())


def as_completion(item) -> Completion:
    return item if isinstance(item, Completion) else Completion(item, "stop", tokens(item))


class ScriptedBackend(Backend):
    kind = "scripted"

    def __init__(self, script: dict[str, list], name: str = "scripted-teacher"):
        self.script = {prompt: [as_completion(item) for item in items] for prompt, items in script.items()}
        self.name = name
        self.unscripted: list[str] = []
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()

    def generate(self, conversations, params, seeds=None):
        counts = [len(row) for row in seeds] if seeds is not None else [params.n] * len(conversations)
        return [[self._next(conversation) for _ in range(count)] for conversation, count in zip(conversations, counts)]

    def _next(self, conversation) -> Completion:
        if conversation[-1]["role"] == "assistant":
            prompt = conversation[-1]["content"]  # a continuation: scripted by the partial message
        else:
            prompt = [m["content"] for m in conversation if m["role"] == "user"][-1]
        with self._lock:
            answers = self.script.get(prompt)
            if not answers:
                self.unscripted.append(prompt)
                return Completion(f"(no scripted answer for {prompt!r})", "stop", 1)
            index = self._served.get(prompt, 0)
            self._served[prompt] = index + 1
            return answers[index % len(answers)]


@contextmanager
def scripted_endpoint(script: dict[str, list], *, name: str = "scripted-teacher", **options):
    """Serve `script` (user message -> completions) as an OpenAI-compatible endpoint; yields the OpenAIServer, whose
    `backend` is the ScriptedBackend. `options` go to `serve` (fail_first, max_n, ...)."""
    with serve(ScriptedBackend(script, name=name), **options) as server:
        yield server
