"""Answer extraction and grading: pull the final answer out of a completion, check it against a gold answer.

    pred, correct = grade(gold, completion)     # ("\\frac{1}{2}", True); correct is None if gold can't be graded
    for pred, correct in grade_many(pairs, workers=4): ...   # (gold, completion) pairs, in order, flat memory

Extraction (`extract_answer`): the last `\\boxed{...}`, else GSM8K's `#### x`, else a trailing "the answer is x" /
"Answer: x", reduced to a bare letter for multiple choice ("answer is (C)" -> "C").
Equivalence (`verify`) is math-verify's, gold first: `math_verify.verify(parse(gold), parse(pred))` is asymmetric
(gold `1<x<2` accepts pred `(1,2)`, not the other way round). Two fast paths skip math-verify (~5 ms a parse):
answers with equal `answer_key`s are equal, and two plain numbers (`12`, `0.5`, `\\frac{3}{4}`) compare exactly.
Parses and verdicts are cached, since a gold answer meets n samples and wrong answers recur among them.

math-verify (and so sympy) is imported on first use, not at import time: `import rtool.answers` stays cheap.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
# GSM8K's final line `#### 18`. The value must start like a number or formula, so that a Markdown heading
# (`#### Step 2: ...`) in a completion is not taken for an answer.
_GSM8K_RE = re.compile(r"####[ \t]*([-+$\\.(\d][^\n]*)")
# "The (final) answer is: x", "Answer: x", "**Final Answer:** x". The value runs to the end of its line or to a
# sentence end (a period followed by a space), so "answer is 3.5." gives "3.5" and "answer is 7. So ..." gives "7".
_ANSWER_IS_RE = re.compile(
    r"(?:\banswer\s+is|\banswer\**\s*:)[\s*:]*(.+?)(?:\.\s|\.?\s*$)", re.IGNORECASE | re.MULTILINE
)
# A multiple-choice letter: "(C)", "(C) 12", "C) 12", "\\text{(C)}" or a lone "C"; never the "A" of "A total of 9".
_LETTER_RE = re.compile(r"^(?:\\text(?:bf)?\{)?\s*(?:\(([A-J])\)|([A-J])\)|([A-J])\s*\}?$)")
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\{([^{}]*)\}")
_PLAIN_NUMBER_COMMAS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_TRAILING_ZEROS_RE = re.compile(r"^(-?\d+)\.0+$")
# A plain number as answer_key spells it: 12, -0.5, .5, 3/4, \frac{3}{4}, -\frac{3}{4}.
_NUMBER_RE = re.compile(r"^(-?)(?:(\d+(?:\.\d*)?|\.\d+)|(\d+)/(\d+)|\\frac\{(\d+)\}\{(\d+)\})$")
_LONE_LETTER_RE = re.compile(r"^\(([A-J])\)$")


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` (nested braces kept), or of the bare form `\\boxed 5`.

    None if there is none, or if the last one is never closed: a completion cut off inside its answer has no answer.
    """
    if not text:
        return None
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    i = starts[-1]
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        j = i
        while j < len(text):
            c = text[j]
            if c == "\\":
                j += 2  # an escaped brace `\{` or `\}` belongs to the answer, it does not open or close a group
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j].strip()
            j += 1
        return None
    if i == starts[-1]:
        return None  # `\boxed\frac12`-style input: not a form models write
    # `\boxed 5` (no braces): the answer is the next token.
    token = re.match(r"[^\s$]*", text[i:]).group(0).rstrip(".,")
    return token or None


def extract_answer(text: str | None) -> str | None:
    """The final answer a completion states, as a string, or None if it states none. See the module docstring."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed or None  # an empty box states no answer
    gsm = _GSM8K_RE.findall(text)
    if gsm:
        return _clean(gsm[-1]) or None
    said = _ANSWER_IS_RE.findall(text)
    if said:
        value = _clean(said[-1])
        letter = _LETTER_RE.match(value)
        if letter:
            return next(g for g in letter.groups() if g)
        return _prose_answer(value) or None
    return None


# A number followed by a unit or other words: "48 sheep", "$18 per day", "1,200 dollars".
_PLAIN_NUMBER_RE = re.compile(r"^\\?\$?\s*(-?\d[\d,]*(?:\.\d+)?)$")
_NUMBER_THEN_WORDS_RE = re.compile(r"^\\?\$?\s*(-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z][A-Za-z\s'-]*$")


def _prose_answer(value: str) -> str:
    """An "answer is ..." value written in prose, cut to its number: "48 sheep" -> "48", "120 - 64 = 48 sheep" ->
    "48". Anything else (an equation such as "y = 2x + 3", LaTeX) is left whole for math-verify."""
    tail = value.rsplit("=", 1)[1].strip() if "=" in value else value
    number = _NUMBER_THEN_WORDS_RE.match(tail) or _PLAIN_NUMBER_RE.match(tail)
    return number.group(1) if number else value


def _clean(value: str) -> str:
    value = value.strip().strip("*").strip()
    if value.endswith("."):
        value = value[:-1].rstrip()
    if len(value) >= 2 and value.startswith("$") and value.endswith("$") and not value.endswith("\\$"):
        value = value.strip("$").strip()
    return value


def gold_from_gsm8k(answer_text: str) -> str:
    """The gold answer of a GSM8K `answer` field: the text after its last `####`, commas in numbers removed."""
    tail = answer_text.rsplit("####", 1)[-1].strip()
    return re.sub(r"(?<=\d),(?=\d)", "", tail)


def answer_key(pred: str | None) -> str | None:
    """A normalised spelling of an answer, for grouping equivalent answers (majority voting) and string equality.

    Drops spaces, `$`, `\\left`/`\\right`, thin spaces, text wrappers (`\\text{...}`), thousands separators and a
    trailing `.0`; `\\dfrac`/`\\tfrac` become `\\frac`. It does no mathematics: `1/2` and `0.5` keep distinct keys.
    """
    if pred is None:
        return None
    key = pred.strip()
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""),
                     ("\\$", ""), ("$", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", "")):
        key = key.replace(old, new)
    prev = None
    while prev != key:  # unwrap nested wrappers: \text{\textbf{x}}
        prev, key = key, _TEXT_WRAPPER_RE.sub(r"\1", key)
    key = "".join(key.split()).rstrip(".")
    if _PLAIN_NUMBER_COMMAS_RE.match(key):
        key = key.replace(",", "")
    key = _TRAILING_ZEROS_RE.sub(r"\1", key)
    return _LONE_LETTER_RE.sub(r"\1", key)


def verify(gold: str | None, pred: str | None) -> bool | None:
    """Whether `pred` is mathematically equivalent to `gold` (both answer strings, e.g. from `extract_answer`).

    None when gold is missing or math-verify cannot parse it (the answer cannot be graded); False when pred is None.
    A number (GSM8K's gold is often an int in JSON) counts as its decimal string.
    Safe to call from any thread: off the main thread math-verify's signal-based timeouts are turned off.
    """
    gold, pred = _text(gold), _text(pred)
    quick = _quick_verdict(gold, pred)
    return _math_verify(gold, pred) if quick is _UNDECIDED else quick


_UNDECIDED = object()


def _text(value) -> str | None:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _quick_verdict(gold: str | None, pred: str | None):
    """verify's verdict where it needs no math-verify (~5 ms a parse), else _UNDECIDED.

    Equal keys are equal. Two plain numbers (`12`, `-0.5`, `3/4`, `\\frac{3}{4}`) compare exactly, as math-verify
    compares integers and fractions; with a decimal involved math-verify rounds to 6 places, so numbers closer
    than 1e-5 that are not exactly equal are left to it.
    """
    if gold is None or not gold.strip():
        return None
    if pred is None:
        return False
    gold_key, pred_key = answer_key(gold), answer_key(pred)
    if gold_key == pred_key:
        return True
    a, b = _plain_number(gold_key), _plain_number(pred_key)
    if a is None or b is None:
        return _UNDECIDED
    if a == b:
        return True
    if "." not in gold_key and "." not in pred_key:
        return False
    return False if abs(a - b) > 1e-5 else _UNDECIDED


def _plain_number(key: str):
    m = _NUMBER_RE.match(key)
    if m is None:
        return None
    from fractions import Fraction

    sign, number, num, den = m.group(1), m.group(2), m.group(3) or m.group(5), m.group(4) or m.group(6)
    value = Fraction(number) if number is not None else (Fraction(int(num), int(den)) if int(den) else None)
    if value is None:
        return None
    return -value if sign else value


@functools.lru_cache(maxsize=65536)
def _math_verify(gold: str, pred: str) -> bool | None:
    # Cached: among n samples of one prompt the same wrong answer recurs, and a sympy comparison costs milliseconds.
    import math_verify

    timeout = _timeout()
    gold_parsed = _parse(gold, timeout)
    if not gold_parsed:
        return None
    pred_parsed = _parse(pred, timeout)
    if not pred_parsed:
        return False
    return bool(math_verify.verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))


def _timeout() -> int | None:
    # math-verify bounds its work with signal.alarm, which only the main thread may set; elsewhere it would raise.
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=8192)
def _parse(answer: str, timeout: int | None) -> tuple:
    """math-verify's parse of one answer string; cached, since a gold answer is graded against n samples."""
    import math_verify
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    config = (LatexExtractionConfig(), ExprExtractionConfig())
    # A bare answer such as `\left( 3, \frac{\pi}{2} \right)` or `10\%` is not found by math-verify's extractors
    # (they look for $...$, \boxed{} or anchors), so wrap it; `$...$` is the fallback for unbalanced braces.
    candidates = [answer] if "\\boxed" in answer else [f"\\boxed{{{answer}}}", f"${answer}$", answer]
    for text in candidates:
        parsed = math_verify.parse(text, config, parsing_timeout=timeout)
        if parsed:
            return tuple(parsed)
    return ()


def grade(gold: str | None, completion: str | None) -> tuple[str | None, bool | None]:
    """(pred, correct) for one completion: `extract_answer(completion)` and `verify(gold, pred)`."""
    pred = extract_answer(completion)
    return pred, verify(gold, pred)


def grade_many(pairs: Iterable[tuple[str | None, str | None]], workers: int = 1,
               chunk_size: int = 256) -> Iterator[tuple[str | None, bool | None]]:
    """Grade (gold, completion) pairs lazily, yielding (pred, correct) in input order.

    With workers > 1, math-verify runs in a process pool (its alarm timeouts work there, in each worker's main
    thread). Extraction and the string and number fast paths stay in this process, so only the short answer
    strings that need math-verify travel. At most 2 chunks per worker are in flight and the input is read as they
    finish: memory stays flat however long the input is. Workers are spawned (~1 s to start and import sympy), so a
    script that calls this with workers > 1 needs the `if __name__ == "__main__":` guard.
    """
    if workers <= 1:
        for gold, completion in pairs:
            yield grade(gold, completion)
        return

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may hold threads (torch, tokenizers) that a forked child would inherit broken.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        in_flight: deque = deque()
        pairs_iter = iter(pairs)
        chunks = iter(lambda: list(itertools.islice(pairs_iter, chunk_size)), [])
        for chunk in chunks:
            in_flight.append(_submit_chunk(pool, chunk))
            if len(in_flight) >= 2 * workers:
                yield from _finish_chunk(*in_flight.popleft())
        while in_flight:
            yield from _finish_chunk(*in_flight.popleft())


def _submit_chunk(pool, chunk: list) -> tuple:
    preds, results, todo = [], [], []
    for i, (gold, completion) in enumerate(chunk):
        gold, pred = _text(gold), extract_answer(completion)
        preds.append(pred)
        results.append(_quick_verdict(gold, pred))
        if results[-1] is _UNDECIDED:
            todo.append((i, gold, pred))
    future = pool.submit(_math_verify_batch, [(g, p) for _, g, p in todo]) if todo else None
    return preds, results, todo, future


def _finish_chunk(preds: list, results: list, todo: list, future) -> Iterator[tuple[str | None, bool | None]]:
    if future is not None:
        for (i, _, _), correct in zip(todo, future.result()):
            results[i] = correct
    yield from zip(preds, results)


def _math_verify_batch(pairs: list[tuple[str, str]]) -> list[bool | None]:
    return [_math_verify(gold, pred) for gold, pred in pairs]
