"""Answer extraction and grading: pull the final answer out of a completion, check it against a gold answer.

    pred, correct = grade(gold, completion)     # ("\\frac{1}{2}", True); correct is None if gold can't be graded
    pred, correct = grade("C", completion, choices={"A": "...", "C": "Hypertension"})   # ("C", True) for "(C)"
    for pred, correct in grade_many(pairs, workers=4): ...   # (gold, completion[, choices]) in order, flat memory
    groups = AnswerGroups(); groups.add(pred, weight=1.0); groups.best()   # majority / weighted voting

Extraction (`extract_answer`): reasoning in `<think>...</think>` is a draft, so only the text after the last
`</think>` counts (an unclosed `<think>` states nothing). There, the last `\\boxed{...}` decides (a last box that
is never closed, a cut-off completion, states no answer); else GSM8K's `#### x`; else the last "the answer is x" /
"Answer: x" / "Final Answer: The final answer is $x$." / "the correct option is C", reduced to a bare letter for
multiple choice ("answer is (C)" -> "C"); else a completion that is only a letter ("(B)").
R1-Zero's `<answer>...</answer>` blocks (`--format-tags think,answer`) come first: when there is one, only the last
block's content counts, read by the same rules, else its bare content as the value of "the answer is" ("48 sheep"
-> "48"). A last block never closed was cut off and states no answer; an empty one states none.
Multiple choice (`grade(..., choices=...)`): pred and gold are mapped to an option letter, by letter or by the
option's text, and compared as letters.
Equivalence (`verify`) is math-verify's, gold first: `math_verify.verify(parse(gold), parse(pred))` is asymmetric
(gold `1<x<2` accepts pred `(1,2)`, not the other way round). Two fast paths skip math-verify (~5 ms a parse):
answers with equal `answer_key`s are equal, and two plain numbers (`12`, `0.5`, `\\frac{3}{4}`) compare exactly.
Everything else runs in a math-verify worker process with a hard deadline (`rtool.grade.verifier`): sympy can spend
minutes on an answer like `8^{8^{8^{8}}}`. A worker past the deadline is killed and replaced, and the answer is
graded False (see `verify`). Verdicts are cached, since a gold answer meets n samples and wrong answers recur.
Voting (`AnswerGroups`, `same_answer`) groups answers by the same equivalence, checked both ways, and its union
(one rule for eval's maj@n and bon, whatever the order of the samples). A single variable's assignment votes as
its value (`vote_value`: `x=2`, `y = 2` and `2` are one answer), as Qwen2.5-Math's evaluation strips `k = `;
grading (`verify`) reads the answer as written.

Neither math-verify nor sympy is imported into this process (the workers import them): `import rtool.grade.answers`
stays cheap.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

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
# "The correct option is C", "the best choice is (B)": only a letter counts, so that "another option is to ..."
# is never taken for an answer.
_OPTION_IS_RE = re.compile(r"\b(?i:option|choice)\s+(?i:is)[\s*:]*\(?([A-J])\)?(?![\w(])")
# "The answer is option C": the word before a letter.
_OPTION_WORD_RE = re.compile(r"^(?i:option|choice)\s+(?=\(?[A-J]\b)")
# A whole completion that is only a letter: "B", "(B)", "**B.**".
_ONLY_LETTER_RE = re.compile(r"^\(?([A-J])\)?$")


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` (nested braces kept), or of the bare form `\\boxed 5`.

    None if there is none, or if the last one is never closed: a completion cut off inside its answer has no answer.
    """
    return _last_box(text)[1]


def _last_box(text: str | None) -> tuple[bool, str | None]:
    """(whether `text` has a box at all, the content of its last box or None when that one is unreadable)."""
    if not text:
        return False, None
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return False, None
    return True, _box_content(text, starts[-1])


def _box_content(text: str, start: int) -> str | None:
    i = start  # just after `\\boxed`
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
    if i == start:
        return None  # `\boxed\frac12`-style input: not a form models write
    # `\boxed 5` (no braces): the answer is the next token.
    token = re.match(r"[^\s$]*", text[i:]).group(0).rstrip(".,")
    return token or None


def extract_answer(text: str | None) -> str | None:
    """The final answer a completion states, as a string, or None if it states none. See the module docstring."""
    text = _after_thinking(text)
    if not text:
        return None
    block = _last_answer_block(text)
    if block is not None:
        return _answer_in_block(block)
    return _stated_answer(text)


_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


def _last_answer_block(text: str) -> str | None:
    """The content of the last `<answer>...</answer>` block (R1-Zero's format), "" when that block is cut off (never
    closed: it states nothing), None when the text has no answer block. Of nested blocks, the innermost."""
    start = text.rfind(_ANSWER_OPEN)
    if start < 0:
        return None
    start += len(_ANSWER_OPEN)
    end = text.find(_ANSWER_CLOSE, start)
    return "" if end < 0 else text[start:end]


def _answer_in_block(block: str) -> str | None:
    """An answer block's answer: what it states as a completion would (a box, "the answer is ..."), else its
    whole content read as the value of "the answer is" ("$12$." -> "12", "48 sheep" -> "48", "(B)" -> "B")."""
    stated = _stated_answer(block)
    if stated is not None:
        return stated
    value = _clean(block)
    return _answer_value(value) if value else None


def _stated_answer(text: str) -> str | None:
    """The answer `text` (a completion after its reasoning, or an answer block) states: box, ####, "the answer
    is", a lone letter; None if none."""
    has_box, boxed = _last_box(text)
    if has_box:
        # The last box is the answer: empty or cut off, it states none, and an earlier "the answer is 5" was a
        # step on the way, not what the model settled on.
        return boxed or None
    gsm = _GSM8K_RE.findall(text)
    if gsm:
        return _clean(gsm[-1]) or None
    said = [(m.start(), m.group(1), False) for m in _ANSWER_IS_RE.finditer(text)]
    said += [(m.start(), m.group(1), True) for m in _OPTION_IS_RE.finditer(text)]
    if said:
        _, value, is_letter = max(said)
        if is_letter:
            return value
        return _answer_value(_clean(value))
    only = _ONLY_LETTER_RE.match(_clean(text))
    return only.group(1) if only else None


def _answer_value(value: str) -> str | None:
    """The answer in the (cleaned) value of an "answer is ..." statement."""
    # "Final Answer: The final answer is $18$. I hope it is correct." (Minerva / lm-eval, as Llama-3 writes it)
    # and "**Final Answer:** The answer is 12" state the answer inside the statement: take the innermost.
    while (inner := _ANSWER_IS_RE.findall(value)) and _clean(inner[-1]) != value:
        value = _clean(inner[-1])
    letter = _LETTER_RE.match(_OPTION_WORD_RE.sub("", value, count=1))
    if letter:
        return next(g for g in letter.groups() if g)
    return _prose_answer(value) or None


def _after_thinking(text: str | None) -> str | None:
    """The part of a completion outside its reasoning: after the last `</think>` (R1-style templates may open the
    block in the prompt, so a completion can start inside it), cut before a `<think>` that never closes."""
    if not text:
        return text
    close = text.rfind("</think>")
    if close >= 0:
        text = text[close + len("</think>"):]
    open_ = text.find("<think>")
    return text[:open_] if open_ >= 0 else text


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


@functools.lru_cache(maxsize=16384)  # a gold meets n samples, and voting compares each answer with several others
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
    Returns within about rtool.grade.verifier.VERIFY_DEADLINE_S, from any thread: math-verify runs in a worker process, killed when a
    comparison overruns. An overrun grades False, not None: the pred cannot be shown equal to the gold, and it is
    nearly always an absurd answer (`8^{8^{8^{8}}}`); None would leave it out of pass@k, and a reward loop could
    learn to write such answers. Each overrun is logged as a warning.
    """
    gold, pred = _text(gold), _text(pred)
    quick = _quick_verdict(gold, pred)
    return _verify_in_worker(gold, pred) if quick is _UNDECIDED else quick


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


@functools.lru_cache(maxsize=16384)
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
def _verify_in_worker(gold: str, pred: str) -> bool | None:
    # Cached here as well as in the worker: a repeated pair costs no round trip, and an answer that overran the
    # deadline costs it once, not once for every sample that repeats it.
    from rtool.grade.verifier import shared_pool

    return shared_pool().verdicts([(gold, pred)])[0]


def grade(gold: str | None, completion: str | None, choices=None) -> tuple[str | None, bool | None]:
    """(pred, correct) for one completion: `extract_answer(completion)` and `verify(gold, pred)`.

    `choices` are a multiple-choice row's options ({"A": text, ...}, or a list lettered A, B, ...; see
    `FieldMap.choices`). With them, gold and pred are each mapped to an option letter, by letter ("C", "(C)",
    "C. ...") or by the option's text (case, spacing and a final period aside; plain numbers by value, "0.5" names
    the option "1/2"), and compared as letters; pred is then the letter, so equal choices vote together. A pred that
    names no option is wrong. math-verify is not used on option texts: they are mostly prose, which it would read
    as products of symbols ("listen" = "silent"). A gold that names no option is graded as if there were no choices.
    """
    pred = extract_answer(completion)
    options = _as_choices(choices)
    if not options:
        return pred, verify(gold, pred)
    gold = _text(gold)
    letter = _choice_letter(pred, options)
    if letter is None and pred is None:
        # A completion that is only an option's text ("Hypertension.") states it without a statement to extract.
        rest = (_after_thinking(completion) or "").strip()
        letter = _choice_letter(rest, options) if 0 < len(rest) <= 300 else None
    if gold is None or not gold.strip():
        return letter or pred, None
    gold_letter = _choice_letter(gold, options)
    if gold_letter is None:
        return pred, verify(gold, pred)
    return letter or pred, letter == gold_letter


# An option named by its letter before its text: "C. Hypertension", "C: Hypertension", "(C) ...", "C) ...".
_CHOICE_PREFIX_RE = re.compile(r"^\(?([A-J])(?:\)|[.:](?:\s|$)|$)")


def _as_choices(choices) -> dict[str, str] | None:
    if not choices:
        return None
    if isinstance(choices, dict):
        return {str(letter).strip().upper(): str(text) for letter, text in choices.items()}
    return {chr(ord("A") + i): str(text) for i, text in enumerate(choices)}


def _choice_letter(answer: str | None, options: dict[str, str]) -> str | None:
    """The letter of the option `answer` names, or None."""
    if answer is None:
        return None
    value = _clean(answer)
    named = _LETTER_RE.match(value) or _CHOICE_PREFIX_RE.match(value)
    if named:
        letter = next(g for g in named.groups() if g)
        return letter if letter in options else None
    wanted = (answer_key(value) or "").lower()
    if not wanted:
        return None
    for letter, text in options.items():
        if (answer_key(text) or "").lower() == wanted or _quick_verdict(text, value) is True:
            return letter
    return None


# A single variable's assignment: "x=2", "k = 5", "a_1 = 3", "\\theta = \\frac{\\pi}{4}". Qwen2.5-Math's
# evaluation (evaluation/parser.py, strip_string) drops such a left side ("get rid of e.g. 'k = '"); here only one
# variable (a letter or a Greek letter, with or without a subscript) and one `=`: "x=2,y=3" is not one value.
_GREEK = ("alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|pi|rho|"
          "sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Pi|Sigma|Upsilon|Phi|Psi|Omega")
_ASSIGNMENT_RE = re.compile(rf"^\s*\$?\s*(?:[A-Za-z]|\\(?:{_GREEK})(?![A-Za-z]))(?:_(?:[A-Za-z0-9]|\{{[A-Za-z0-9]+\}}))?"
                            r"\s*=\s*([^=$]*[^=\s$])\s*\$?\s*$")


def vote_value(pred: str) -> str:
    """What an answer votes for: the value of a single variable's assignment ("x = 2" -> "2"), else the answer."""
    assignment = _ASSIGNMENT_RE.match(pred)
    return assignment.group(1) if assignment else pred


def vote_key(pred: str | None) -> str | None:
    """The `answer_key` of what `pred` votes for: "x=2", "y = 2" and "2" have one key."""
    pred = _text(pred)
    return None if pred is None else answer_key(vote_value(pred))


def same_answer(a: str | None, b: str | None) -> bool:
    """Whether two predicted answers are one answer, for voting: equal `vote_key`s or equal plain numbers, else
    math-verify accepting each as the gold of the other. Both ways, because verify is asymmetric and a vote must
    not depend on which answer came first. An assignment to a single variable is compared as its value
    (`vote_value`: "x=2" and "y=2" are one answer). Two different single letters (option letters) differ; None
    is no answer and equals nothing."""
    a, b = _text(a), _text(b)
    if a is None or b is None:
        return False
    a, b = vote_value(a), vote_value(b)
    key_a, key_b = answer_key(a), answer_key(b)
    if not key_a or not key_b:
        return False
    if key_a == key_b:
        return True
    if len(key_a) == 1 and len(key_b) == 1 and key_a.isalpha() and key_b.isalpha():
        return False
    quick = _quick_verdict(a, b)
    if quick is not _UNDECIDED:
        return quick is True
    return verify(a, b) is True and verify(b, a) is True


@dataclass(slots=True)
class AnswerGroup:
    """Answers counted as one answer: how many, their weight sum, and two members, each as its `order` (sample
    number) and the `item` it was added with: `first` (the smallest order; `answer` is its answer) and `top` (the
    largest weight, ties: the smaller order). With `log_weights` the weights are logs and `weight` is the log of
    their exponentials' sum."""

    answer: str
    count: int
    weight: float
    first: int
    first_item: object
    top: int
    top_weight: float
    top_item: object
    log_weights: bool = False

    def merge(self, other: "AnswerGroup") -> None:
        self.count += other.count
        self.weight = _log_add(self.weight, other.weight) if self.log_weights else self.weight + other.weight
        if other.first < self.first:
            self.answer, self.first, self.first_item = other.answer, other.first, other.first_item
        if other.top_weight > self.top_weight or (other.top_weight == self.top_weight and other.top < self.top):
            self.top, self.top_weight, self.top_item = other.top, other.top_weight, other.top_item


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without leaving log space: the sum of two products far below the smallest float."""
    high, low = (a, b) if a >= b else (b, a)
    return high if low == -math.inf else high + math.log1p(math.exp(low - high))


# Weight sums this close are equal: 0.1 + 0.2 and 0.15 + 0.15 differ in the last bit only, by float rounding. In
# log space the same relative tolerance is an absolute one.
WEIGHT_REL_TOL = 1e-9


class AnswerGroups:
    """Predicted answers grouped for majority and weighted voting: the one rule of eval's maj@n and of bon.

        groups = AnswerGroups()
        for pred, score, sample in candidates:
            groups.add(pred, weight=score, order=sample, item=...)   # False for no answer
        best = groups.best("count")          # or best("weight", "count"): an AnswerGroup, None for no answer
        best.answer, best.count, best.weight, best.first_item, best.top_item
        AnswerGroups(log_weights=True)       # weights are logs (of --agg prod scores): sums are log-sum-exps

    Two answers are one answer when a chain of `same_answer` pairs joins them (the union of the equivalences:
    math-verify's is not transitive, `x=2,y=3` = `2,3` = `y=2,x=3` while `x=2,y=3` != `y=2,x=3`, so "equal to
    the group's first answer" would make the groups depend on the order the answers came in). Answers with one
    `vote_key` (`x=2`, `y = 2` and `2`) are one answer without mathematics, and each key is compared through its
    spelling with the smallest order, so the
    groups depend on the set of (answer, order) only, never on the order of `add` calls. Comparisons: at most one
    per pair of distinct keys (n <= 64 samples: at most ~2,000, most of them settled by the fast paths).
    Ties (`best`): a weight within a relative 1e-9 of another is equal to it; a tie on every criterion goes to the
    group holding the smallest order (the earliest sample), so majority voting (`best("count")`, eval's maj@n and
    bon's majority) breaks a tie by sample number alone, never by a score. Memory: per distinct key, one string
    and a few numbers.
    """

    __slots__ = ("_keys", "_added", "_groups", "_group_of_key", "log_weights")

    def __init__(self, log_weights: bool = False) -> None:
        self.log_weights = log_weights
        self._keys: dict[str, AnswerGroup] = {}  # vote_key -> the answers with that key
        self._added = 0
        self._groups: list[AnswerGroup] | None = None  # the groups, by first member; None after an add
        self._group_of_key: dict[str, AnswerGroup] = {}

    def add(self, pred: str | None, weight: float = 1.0, order: int | None = None, item=None) -> bool:
        """Count one answer (`order`: its sample number; default: the number of answers added before); False when
        `pred` is no answer (None or blank), which counts for nothing."""
        order = self._added if order is None else order
        self._added += 1
        pred = _text(pred)
        key = vote_key(pred)
        if not key:
            return False
        one = AnswerGroup(pred, 1, weight, order, item, order, weight, item, self.log_weights)
        if key in self._keys:
            self._keys[key].merge(one)
        else:
            self._keys[key] = one
        self._groups = None
        return True

    def groups(self) -> list[AnswerGroup]:
        """The groups (connected components of `same_answer` over the distinct keys), by their first member."""
        if self._groups is None:
            self._group_of_key = self._components()
            self._groups = sorted({id(g): g for g in self._group_of_key.values()}.values(), key=lambda g: g.first)
        return self._groups

    def _components(self) -> dict[str, AnswerGroup]:
        """vote_key -> its group: union-find over the keys, in order of their first members."""
        keys = sorted(self._keys, key=lambda k: (self._keys[k].first, k))
        keyed = [self._keys[k] for k in keys]
        parent = list(range(len(keyed)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for j in range(len(keyed)):
            for i in range(j):
                a, b = root(i), root(j)
                if a != b and same_answer(keyed[i].answer, keyed[j].answer):
                    parent[max(a, b)] = min(a, b)
        merged: dict[int, AnswerGroup] = {}
        for i, group in enumerate(keyed):
            r = root(i)
            if r in merged:
                merged[r].merge(group)
            else:
                merged[r] = replace(group)  # a copy: the key's own tally keeps counting later adds
        return {key: merged[root(i)] for i, key in enumerate(keys)}

    def best(self, *rank: str) -> AnswerGroup | None:
        """The winning group: the largest of `rank`'s first criterion ("count" or "weight"; default "count"),
        ties to the next criterion, then to the group with the smallest order. None when no answer was added."""
        winner = None
        for group in self.groups():  # by first member: a full tie keeps the earlier one
            if winner is None or _beats(group, winner, rank or ("count",)):
                winner = group
        return winner

    def group_of(self, pred: str | None) -> AnswerGroup | None:
        """The group `pred` (an answer added before) is in."""
        self.groups()
        return self._group_of_key.get(vote_key(pred) or "")

    def __len__(self) -> int:
        return len(self.groups())


def _beats(group: AnswerGroup, other: AnswerGroup, rank) -> bool:
    for name in rank:
        mine, theirs = getattr(group, name), getattr(other, name)
        if name == "weight" and (abs(mine - theirs) <= WEIGHT_REL_TOL if group.log_weights
                                 else math.isclose(mine, theirs, rel_tol=WEIGHT_REL_TOL)):
            continue
        if mine != theirs:
            return mine > theirs
    return False


def grade_many(pairs: Iterable[tuple], workers: int = 1,
               chunk_size: int = 256) -> Iterator[tuple[str | None, bool | None]]:
    """Grade (gold, completion) or (gold, completion, choices) tuples lazily, yielding (pred, correct) in order.

    With workers > 1, that many math-verify workers run at once (each fed by a thread here), with verify's
    deadline on every pair. Extraction, multiple choice and the string and number fast paths stay in this process,
    so only the short answer strings that need math-verify travel. At most 2 chunks per worker are in flight and
    the input is read as they finish: memory stays flat however long the input is. Starting a worker takes ~1 s
    (Python and sympy); those above verify's usual number are stopped when the generator finishes or is closed.
    """
    if workers <= 1:
        for gold, completion, *choices in pairs:
            yield grade(gold, completion, *choices)
        return

    from concurrent.futures import ThreadPoolExecutor

    # The shared pool, so that verify calls made meanwhile (eval's maj@n votes) use the same warm workers.
    from rtool.grade.verifier import shared_pool

    pool = shared_pool()
    with pool.at_least(workers):
        executor = ThreadPoolExecutor(workers, thread_name_prefix="rtool-verify")
        try:
            in_flight: deque = deque()
            pairs_iter = iter(pairs)
            chunks = iter(lambda: list(itertools.islice(pairs_iter, chunk_size)), [])
            for chunk in chunks:
                in_flight.append(_submit_chunk(executor, pool, chunk))
                if len(in_flight) >= 2 * workers:
                    yield from _finish_chunk(*in_flight.popleft())
            while in_flight:
                yield from _finish_chunk(*in_flight.popleft())
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def _submit_chunk(executor, pool, chunk: list) -> tuple:
    preds, results, todo = [], [], []
    for i, (gold, completion, *choices) in enumerate(chunk):
        if choices and choices[0]:
            pred, correct = grade(gold, completion, choices[0])  # option letters: settled here
        else:
            gold, pred = _text(gold), extract_answer(completion)
            correct = _quick_verdict(gold, pred)
            if correct is _UNDECIDED:
                todo.append((i, gold, pred))
        preds.append(pred)
        results.append(correct)
    future = executor.submit(pool.verdicts, [(g, p) for _, g, p in todo]) if todo else None
    return preds, results, todo, future


def _finish_chunk(preds: list, results: list, todo: list, future) -> Iterator[tuple[str | None, bool | None]]:
    if future is not None:
        for (i, _, _), correct in zip(todo, future.result()):
            results[i] = correct
    yield from zip(preds, results)
