"""Chat generation behind one interface: local transformers (`hf`), vLLM (`vllm`), or any OpenAI-compatible server.

    from rtool.generate.backends import open_backend                              # the backends are chosen there
    backend = open_backend("runs/sft")                                   # auto: hf on CPU, vllm with a GPU
    backend = open_backend("http://localhost:8000/v1")                   # an OpenAI-compatible endpoint
    outs = backend.generate([[{"role": "user", "content": "1+1?"}]], SamplingParams(n=4, temperature=0.6))
    outs[0][0].text, outs[0][0].finish_reason, outs[0][0].completion_tokens
    backend.close()

`generate` returns, for each conversation in input order, `n` Completions (or one per seed when `seeds` is given:
`seeds[i]` lists conversation i's sample seeds, see `sample_seed`). finish_reason is "stop" (end of turn) or
"length" (hit max_new_tokens); completion_tokens counts generated tokens including the end-of-turn token (None when
an endpoint does not report it). Temperature 0 is greedy. Every sampling setting is rtool's (SamplingParams), sent
explicitly to each backend; the same seed, settings and inputs give the same sample within one backend.

A conversation whose last message is the assistant's is CONTINUED, not answered anew (`continues`): the backend
writes on from the end of that partial message, and a Completion holds only the new text (prm-label rolls out a
trace from each of its step prefixes this way). hf renders the conversation before it with the generation prompt
and appends the partial text, which is what the model saw while it wrote that text (a template's own rendering of
an assistant message may drop or rewrite parts of it, such as a `<think>` block); vllm passes
`continue_final_message` to `LLM.chat`, and an endpoint is sent `continue_final_message: true,
add_generation_prompt: false` (vLLM's and SGLang's servers; an endpoint that refuses them is a UserError).
"""

from __future__ import annotations

from dataclasses import dataclass

from rtool.errors import UserError
from rtool.log import logger


@dataclass
class SamplingParams:
    """Every setting that decides what a backend samples. Each is sent explicitly to every backend, so a result
    never depends on a checkpoint's generation_config or a server's defaults (Qwen2.5-Instruct ships top_k=20 and
    repetition_penalty=1.05; transformers adds top_k=50 when nothing says otherwise).

    Neutral values switch a filter off: top_k 0, min_p 0, repetition_penalty 1. Order, as vLLM and transformers
    apply them: repetition penalty, temperature, top-k, top-p, min-p.
    """

    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def check(self) -> "SamplingParams":
        """Raise UserError (naming the flag) for settings that cannot work; called before any model loads."""
        if self.n < 1:
            raise UserError(f"-n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0 (0: off), got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise UserError(f"--min-p must be in [0, 1), got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise UserError(f"--repetition-penalty must be > 0 (1: off), got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def record(self) -> dict:
        """The settings as distill writes them in each row's `sampling` (n is not one: it is per prompt)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p,
                "repetition_penalty": self.repetition_penalty, "max_new_tokens": self.max_new_tokens,
                "seed": self.seed}


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int | None  # None: an endpoint that reports no usage (never estimated)
    endpoint: str | None = None  # the endpoint URL that drew it, set by a fleet of several (rtool.generate.backends.fleet)


class Backend:
    """A teacher or policy that completes chats. `name` is what `distill` records as the row's `teacher`;
    `kind` is the backend's name (hf, vllm, openai)."""

    name: str = "?"
    kind: str = "?"
    # How many servers answer at once (a fleet of endpoints: several); callers widen their chunks of prompts by
    # this much, so that every server stays busy.
    servers: int = 1

    def generate(self, conversations: list[list[dict]], params: SamplingParams,
                 seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        """Complete each conversation once per seed in `seeds[i]` (default: params.n seeds made from params.seed
        and the conversation's position). The same (inputs, settings, seed) gives the same sample whatever else
        is in the call, so a resumed run draws what an uninterrupted one would. A conversation ending with an
        assistant message is continued from the end of that message (`continues`); the Completion is the new text."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sample_seed(seed: int, key, sample: int) -> int:
    """The seed of one sample: a stable hash of (run seed, prompt key, sample index), in [0, 2**31 - 1) as OpenAI
    servers accept. Seeding each sample on its own (not a chunk of prompts at once) makes a sample independent of
    which prompts share its batch or chunk, and of where a resumed run starts."""
    import hashlib

    digest = hashlib.sha256(f"{seed}\x00{key}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


def request_seeds(conversations: list, params: SamplingParams, seeds: list[list[int]] | None) -> list[list[int]]:
    """`seeds` checked against `conversations`, or the default: params.n per conversation, keyed by position."""
    if seeds is None:
        return [[sample_seed(params.seed, index, k) for k in range(params.n)] for index in range(len(conversations))]
    if len(seeds) != len(conversations):
        raise ValueError(f"{len(seeds)} seed lists for {len(conversations)} conversations")
    return seeds


def continues(conversation: list[dict]) -> bool:
    """True when `conversation` ends with a (partial) assistant message, which a backend continues."""
    return bool(conversation) and conversation[-1].get("role") == "assistant"


def require_chat_template(tokenizer) -> None:
    """UserError when the tokenizer cannot render a conversation: a base model ships no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model's tokenizer has no chat template",
                        hint="use an instruct/chat model, or pass --chat-template FILE (a Jinja chat template)")


def render_prompts(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    """Token ids of each conversation through the chat template, ending with the open assistant turn; a
    conversation that `continues` ends with its partial assistant message instead, its text appended as is to the
    open turn (no end of turn after it)."""
    require_chat_template(tokenizer)
    texts = []
    for conv in conversations:
        partial = conv[-1]["content"] if continues(conv) else ""
        head = conv[:-1] if continues(conv) else conv
        # The generation prompt, then the partial text: exactly what the model had when it was writing that text
        # (apply_chat_template's continue_final_message renders the message through the template, which may rewrite
        # it: Qwen3's and DeepSeek-R1's templates move or drop <think> blocks of assistant messages).
        prompt = tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True)
        texts.append(prompt + _without_open_think(prompt, partial))
    # The template already writes any bos token it wants; don't add a second one.
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


THINK_OPEN = "<think>"
# An assistant turn whose rendering shows whether a template keeps a reasoning block as written, and where its end of
# turn starts (after the answer part, which every template keeps).
_PROBE_ANSWER = "rtool-probe-answer"
_PROBE = f"{THINK_OPEN}\nrtool-probe-reasoning\n</think>\n\n{_PROBE_ANSWER}"
_REWRITING_TEMPLATES: set[str] = set()  # templates already reported as rewriting assistant turns


def render_turn(tokenizer, messages: list[dict], completion: str) -> tuple[str, str, str]:
    """The texts of one answered turn as the model reads and writes them: (the generation prompt, rendered as
    `render_prompts` does; the completion as written; the template's end of turn).

    Not `apply_chat_template(messages + [assistant])`: DeepSeek-R1-Distill's and QwQ's templates keep only the text
    after the last `</think>` of an assistant message, Qwen3's reformats it, so that rendering would cut the
    reasoning out of what a student trains on. The completion loses an opening `<think>` the generation prompt
    already wrote (R1-Distill's newer template and QwQ's end with "<think>\\n"; a completion recorded from an
    endpoint's reasoning field starts with one). The end of turn is what the template writes after an assistant
    message (e.g. "<|im_end|>\\n"), or the eos token when it cannot be found.
    """
    require_chat_template(tokenizer)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt, _without_open_think(prompt, completion), _end_of_turn(tokenizer, messages)


def rewrites_assistant_turns(tokenizer, messages: list[dict]) -> bool:
    """Whether the chat template drops or moves a reasoning block written in an assistant message after `messages`
    (DeepSeek-R1-Distill's and QwQ's keep only the text after the last `</think>`; Qwen3's reformats it): rendering
    such a turn through the template (what TRL's conversational formats do) loses the reasoning."""
    require_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": _PROBE}], tokenize=False)
    return _PROBE not in text


def _without_open_think(prompt: str, completion: str) -> str:
    head = prompt.rstrip()
    body = completion.lstrip()
    if not head.endswith(THINK_OPEN) or not body.startswith(THINK_OPEN):
        return completion
    body = body[len(THINK_OPEN):]
    gap = prompt[len(head):]  # what the prompt writes after its <think> ("\n"): not a second time
    return body[len(gap):] if gap and body.startswith(gap) else body


def _end_of_turn(tokenizer, messages: list[dict]) -> str:
    text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": _PROBE}], tokenize=False)
    template = str(tokenizer.chat_template)
    if _PROBE not in text and template not in _REWRITING_TEMPLATES:
        _REWRITING_TEMPLATES.add(template)
        logger.info("the chat template rewrites assistant turns (it drops or moves a <think> block): the completion "
                    "is taken as written, after the generation prompt, as the model writes it")
    at = text.rfind(_PROBE_ANSWER)
    end = text[at + len(_PROBE_ANSWER):] if at >= 0 else ""
    return end or tokenizer.eos_token or ""
