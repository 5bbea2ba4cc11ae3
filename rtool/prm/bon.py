"""Best-of-N selection: pick one candidate per prompt by majority vote, by score, or by score-weighted vote.

    cands = [Candidate(number=0, answer="4", score=0.9, ref=row0), ...]   # one prompt's candidates
    choices = select(cands, "weighted", ns=[1, 2, 4])                     # one Choice per N (first N by number)
    for row in best_of_n(rows, "majority", ns=[1, 2, 4, 8]):             # the streaming reducer over rows
        ...                                     # {**chosen row, "bon_method", "bon_n", "votes", "weight"}

Methods (a prompt's first N candidates by `sample`, else by order of appearance):
- majority: self-consistency (Wang et al. 2022): the answer most candidates give. Ties, eval's maj@n rule: the
  answer whose earliest candidate has the smallest sample number wins; scores never break a tie. The chosen row is
  the winning answer's first candidate by sample number, so `bon --method majority | eval` is right on a prompt
  exactly when eval's maj@n is, scored rows or not.
- naive: the candidate with the highest score among those that state an answer (ties: first by sample number).
- weighted: the answer with the largest sum of scores (ties: more votes, then the smallest sample number); the
  chosen row is its highest-scoring candidate (ties: first by sample number). Scores must be >= 0 (probabilities,
  PRM/ORM scores): a negative score would count against the answer it supports.
Sums within a relative 1e-9 of each other are equal (0.1 + 0.2 ties with 0.15 + 0.15: float rounding decides
nothing). Answers are grouped as `rtool.grade.answers.AnswerGroups` groups them for eval's maj@n: equal keys, equal
plain numbers, else math-verify both ways, and the union of those equivalences; a single variable's assignment
votes as its value (x=2, y=2 and 2 are one answer). So "1/2", "0.5" and "\\frac{1}{2}" are one answer and the groups
never depend on the input's order. A candidate with no extractable answer never wins: if none of the N states one,
the first candidate is written with `votes` 0 and `weight` null.
`votes` is the number of the N candidates that give the chosen answer, `weight` their score sum (null when some
candidate has no score, as in majority voting over unscored rows).

Scores from `rtool prm-score --agg prod` (rows whose `prm_scoring` says agg prod, lam 1, read through the default
--score-field score) rank by their `log_score` instead: the product of a long trace's step scores is 0.0 in floats
(0.5 a step over ~1,100 steps; far fewer steps at lower scores), its log still orders it. naive takes the highest
log_score; weighted sums the products in log space (log-sum-exp), the same ranking as the sum of the products
without the underflow; output rows then carry `log_weight` (the log of `weight`, which may read 0.0). Such rows and
rows scored otherwise do not mix in one input: their scores are on different scales.

Answers are always re-extracted from the completion (`extract_answer`), never read from a row's `pred`: rows may
come from any tool, and a `pred` written by something else would vote for an answer the completion does not state.
Multiple-choice rows (an `options` field, `FieldMap.choices`) vote by option letter as grading maps them; an answer
that names none of the row's options counts as no answer.

Streaming (`best_of_n`): a prompt is in flight from its first candidate until its output is decided:
- `grouped=True` (`rtool bon --sorted`): the input holds each prompt's candidates together; a prompt is decided
  when the id changes. Memory: one prompt's candidates (rows included). An id that comes back is an error.
- default, any order: a prompt is decided at the end of the input, or, with `ns`, as soon as its samples
  0 .. max(ns)-1 have all been seen (later samples of it are then skipped). Per in-flight prompt it holds the
  summaries (answer, score, sample number, row offset: ~150-200 bytes each) of at most max(ns) candidates (all,
  without `ns`); the rows themselves wait in an unnamed temporary file (in $TMPDIR) and are read back when chosen.
Both modes also keep the ids already written (to refuse or skip a prompt that comes back). So a file in sample order
streams with --sorted or with `ns`; without either, every prompt stays in flight to the end of the input (a summary
per row in memory: ~15-20 MB per 100k candidates; bench/RESULTS.md "bon").
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rtool.grade.answers import AnswerGroups, extract_answer, grade
from rtool.errors import UserError
from rtool.grade.fields import FieldMap, prompt_id
from rtool.io.records import Row
from rtool.prm.score import log_aggregate
from rtool.prm.scored import SETTINGS_FIELD

METHODS = ("majority", "naive", "weighted")
SCORED_METHODS = ("naive", "weighted")  # these need a score on every candidate


@dataclass(slots=True)
class Candidate:
    """What selection needs of one candidate row: its sample number, answer, score, and the row (or where it is)."""

    number: int
    answer: str | None
    score: float | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class Choice:
    """The outcome for the first `n` candidates: the chosen one, and its answer's votes and score sum (its log,
    with `log_scores`)."""

    candidate: Candidate
    n: int
    votes: int
    weight: float | None


def select(candidates: Sequence[Candidate], method: str, ns: Sequence[int] | None = None,
           log_scores: bool = False) -> list[Choice]:
    """One Choice per N in `ns` (default: all candidates), each over the first N of `candidates`, which must be in
    sample order. N above len(candidates) gives no Choice. `log_scores`: the scores are logs (of --agg prod
    products), and the weights their log-sum-exps. See the module docstring for the rules."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    total = len(candidates)
    wanted = sorted({n for n in (ns or [total]) if 1 <= n <= total})
    if not wanted:
        return []
    groups = AnswerGroups(log_weights=log_scores)
    no_weight = -math.inf if log_scores else 0.0
    best = None  # naive: the highest-scoring candidate with an answer (ties: the first by sample number)
    all_scored = True  # every candidate so far has a score
    choices = []
    for i, candidate in enumerate(itertools.islice(candidates, wanted[-1])):
        score = candidate.score
        all_scored = all_scored and score is not None
        stated = groups.add(candidate.answer, weight=no_weight if score is None else score, order=candidate.number,
                            item=i)
        if stated and (best is None or _above(score, candidates[best].score)):
            best = i
        if i + 1 == wanted[len(choices)]:
            choices.append(_decide(candidates, method, i + 1, groups, best, all_scored))
            if len(choices) == len(wanted):
                break
    return choices


def _above(score: float | None, other: float | None) -> bool:
    return score is not None and (other is None or score > other)


def _decide(candidates, method, n, groups: AnswerGroups, best, all_scored) -> Choice:
    if best is None:
        return Choice(candidates[0], n, 0, None)
    if method == "majority":
        group = groups.best("count")  # eval's maj@n rule: ties to the earliest sample, never to a score
        chosen = group.first_item
    elif method == "weighted":
        group = groups.best("weight", "count")
        chosen = group.top_item
    else:
        chosen, group = best, groups.group_of(candidates[best].answer)
    return Choice(candidates[chosen], n, group.count, group.weight if all_scored else None)


def candidate_answer(completion: str, choices: dict | None = None) -> str | None:
    """The answer a candidate votes for: `extract_answer`, or for a multiple-choice row the option letter grading
    maps it to (None when it names none of `choices`)."""
    if not choices:
        return extract_answer(completion)
    letter = grade(None, completion, choices)[0]
    return letter if letter in choices else None


def parse_ns(text: str | None) -> list[int] | None:
    """`--n`: "8" or "1,2,4,8" -> sorted distinct whole numbers >= 1; None or "" -> None (all candidates)."""
    if text is None or not text.strip():
        return None
    ns = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UserError(f"--n takes whole numbers >= 1, got {part!r}", hint="e.g. --n 8 or --n 1,2,4,8")
        ns.add(int(part))
    return sorted(ns)


@dataclass
class BonStats:
    """What best_of_n saw, for the summary on stderr."""

    candidates: int = 0
    skipped: int = 0  # candidates past max(ns) of their prompt
    prompts: int = 0
    rows: int = 0
    no_answer: int = 0  # output rows whose N candidates stated no answer
    short: dict = field(default_factory=dict)  # N -> prompts with fewer than N candidates (no row for that N)
    log_scores: bool = False  # the scores were prm-score's --agg prod products: ranked by their log_score


def best_of_n(rows: Iterable[Row], method: str = "majority", ns: Sequence[int] | None = None, *,
              fields: FieldMap = FieldMap(), score_field: str = "score", grouped: bool = False,
              stats: BonStats | None = None) -> Iterator[dict]:
    """Reduce candidate rows to one output row per (prompt, N): `{**chosen row, "bon_method", "bon_n", "votes",
    "weight"}`, a prompt's rows in increasing N. See the module docstring for the order and the memory held.

    Raises a UserError naming file:line for a row without a completion, without an id (when none can be derived
    from a prompt), with a repeated sample, with a missing or bad score (naive, weighted), or already a bon output;
    and, with `grouped`, for an id that comes back after its group ended."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}", hint="valid: " + ", ".join(METHODS))
    ns = sorted(set(ns)) if ns else None
    if ns and ns[0] < 1:
        raise UserError(f"--n takes whole numbers >= 1, got {ns[0]}")
    stats = stats if stats is not None else BonStats()
    limit = ns[-1] if ns else None
    store = _Rows(spool=not grouped)
    reader = _CandidateReader(fields, score_field, method)
    open_prompts: dict[str, _Prompt] = {}
    done: dict[str, int | None] = {}  # id -> the line its group ended on (grouped), for finished prompts
    last_id = None
    try:
        for row in rows:
            key = reader.prompt_id(row)
            if grouped and key != last_id:
                if last_id is not None:
                    if last_id in open_prompts:
                        yield from _emit(open_prompts.pop(last_id), method, ns, store, stats, reader)
                    done[last_id] = row.line
                if key in done:
                    ended = f" (its group ended before line {done[key]})" if done[key] else ""
                    raise row.error(f"id {key!r} appears again{ended}", field="id",
                                    hint="--sorted needs each prompt's candidates together; drop --sorted")
                last_id = key
            stats.candidates += 1
            if key in done:  # decided early (its samples 0 .. max(ns)-1 were all seen)
                number = reader.sample_number(row)
                if number is not None and number < limit:
                    raise _repeated(row, number, key)
                reader.check(row)
                stats.skipped += 1
                continue
            prompt = open_prompts.get(key)
            if prompt is None:
                prompt = open_prompts[key] = _Prompt(key)
            number = reader.sample_number(row)
            if number is None:
                number = prompt.seen
            if not prompt.claim(number):
                raise _repeated(row, number, key)
            answer, score = reader.check(row)
            if limit is None or prompt.keeps(number, limit):
                prompt.keep(Candidate(number, answer, score, store.put(row)), limit)
            else:
                stats.skipped += 1
            if limit is not None and prompt.next_number >= limit:
                yield from _emit(open_prompts.pop(key), method, ns, store, stats, reader)
                done[key] = None
        for prompt in open_prompts.values():
            yield from _emit(prompt, method, ns, store, stats, reader)
    finally:
        store.close()


def _repeated(row: Row, number: int, key: str) -> UserError:
    return row.error(f"repeated sample {number} of id {key!r}", field="sample",
                     hint="each (id, sample) may appear once; was a file appended twice?")


def _emit(prompt: "_Prompt", method: str, ns, store: "_Rows", stats: BonStats,
          reader: "_CandidateReader") -> Iterator[dict]:
    candidates = prompt.in_order()
    stats.prompts += 1
    for n in ns or ():
        if n > len(candidates):
            stats.short[n] = stats.short.get(n, 0) + 1
    log_scores = reader.scale == "log"
    stats.log_scores = stats.log_scores or log_scores
    for choice in select(candidates, method, ns, log_scores=log_scores):
        stats.rows += 1
        stats.no_answer += choice.votes == 0
        row = store.get(choice.candidate.ref)
        if choice.weight is None:
            weights = {"weight": None}
        elif log_scores:  # the sum of products, 0.0 when below the smallest float; its log ranks it
            weights = {"weight": round(math.exp(choice.weight), 6),
                       "log_weight": round(choice.weight, 6) if math.isfinite(choice.weight) else None}
        else:
            weights = {"weight": round(choice.weight, 6)}  # 0.8, not 0.7999999999999999
        yield {**row, "bon_method": method, "bon_n": choice.n, "votes": choice.votes, **weights}


class _CandidateReader:
    """Reads and checks the fields of one candidate row."""

    def __init__(self, fields: FieldMap, score_field: str, method: str) -> None:
        self.fields, self.score_field, self.method = fields, score_field, method
        self.scale: str | None = None  # "log" (--agg prod rows, ranked by log_score) or "linear"; None: no scores yet
        self._scale_line: str | None = None  # where the scale was set, for the error when a row differs

    def prompt_id(self, row: Row) -> str:
        if row.get("id") not in (None, ""):
            return str(row["id"])
        try:
            return prompt_id(row, self.fields)  # the id distill and eval derive from the prompt text
        except UserError:
            raise row.error("missing field 'id', and no prompt to derive one from", field="id",
                            hint=f"found: {', '.join(list(row)[:12]) or 'no fields'}; candidates of one prompt "
                                 "share an id") from None

    @staticmethod
    def sample_number(row: Row) -> int | None:
        sample = row.get("sample")
        if sample is None:
            return None
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise row.error(f"field 'sample' must be a whole number >= 0, got {sample!r}", field="sample")
        return sample

    def check(self, row: Row) -> tuple[str | None, float | None]:
        """(answer, score) of a row; raises for a row bon cannot use."""
        if "bon_n" in row:
            raise row.error("this row is already rtool bon's output (it has 'bon_n')", field="bon_n",
                            hint="bon reads candidate rows, e.g. from rtool distill or rtool prm-score")
        completion = self.fields.completion(row)  # raises "no completion field" naming file:line
        answer = candidate_answer(completion, self.fields.choices(row))
        if answer is None and row.get(self.score_field, 0) is None:
            return None, 0.0  # prm-score's null score (a completion without steps): no answer, no vote, no weight
        # interned: a prompt's candidates mostly repeat a few answers, and this mode may hold them all
        return (None if answer is None else sys.intern(answer)), self._score(row)

    def _score(self, row: Row) -> float | None:
        name = self.score_field
        needed = self.method in SCORED_METHODS
        if name not in row or row[name] is None:
            if not needed:
                return None
            raise row.error(f"missing field {name!r}, needed by --method {self.method}", field=name,
                            hint=f"found: {', '.join(list(row)[:12])}; score the candidates (rtool prm-score) or "
                                 "pass --score-field NAME")
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise row.error(f"field {name!r} must be a finite number, got {_short(value)}", field=name,
                            hint="pass --score-field NAME for another field" if needed else
                                 "majority writes their sum as weight; pass --score-field NAME for another field")
        self._check_scale(row, "log" if name == "score" and _scored_by_prod(row) else "linear")
        if self.scale == "log":
            return _log_score(row)
        if value < 0 and self.method == "weighted":
            raise row.error(f"field {name!r} is negative ({value}); weighted voting sums scores per answer, so a "
                            "negative score would count against its answer", field=name,
                            hint="use probabilities such as PRM scores in [0, 1] (rows of prm-score --agg prod are "
                                 "ranked by their log_score through --score-field score), or --method naive")
        return float(value)

    def _check_scale(self, row: Row, scale: str) -> None:
        if self.scale is None:
            self.scale, self._scale_line = scale, f"{row.path}:{row.line}"
        elif scale != self.scale:
            prod_line = self._scale_line if self.scale == "log" else f"{row.path}:{row.line}"
            raise row.error(f"rows of prm-score --agg prod (ranked by log_score, e.g. {prod_line}) and rows scored "
                            "otherwise in one input", field=SETTINGS_FIELD,
                            hint="their scores are on different scales; score every candidate with one --agg")


def _scored_by_prod(row: Row) -> bool:
    """Whether the row's `score` is prm-score's --agg prod product alone (--lam 1), whose log_score ranks it."""
    settings = row.get(SETTINGS_FIELD)
    return isinstance(settings, dict) and settings.get("agg") == "prod" and settings.get("lam", 1) == 1


def _log_score(row: Row) -> float:
    """The log of an --agg prod score: the row's `log_score` (null: a step scored 0, so -inf), or, for rows of an
    rtool that did not write it, the sum of the logs of its `step_scores`."""
    if "log_score" in row:
        value = row["log_score"]
        if value is None:
            return -math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value > 0:
            raise row.error(f"field 'log_score' must be a number <= 0 (the log of a product of probabilities) or "
                            f"null, got {_short(value)}", field="log_score")
        return float(value)
    steps = row.get("step_scores")
    if isinstance(steps, list) and steps and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                 and 0 <= x <= 1 for x in steps):
        return log_aggregate(steps, "prod")
    raise row.error("no field 'log_score' (prm-score --agg prod writes it) and no step_scores in [0, 1] to sum the "
                    "logs of", field="log_score", hint="score the candidates again with rtool prm-score")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


class _Prompt:
    """One in-flight prompt: the sample numbers seen, and the candidates kept: all of them (a list), or with a
    `limit` the `limit` smallest numbers (a max-heap of (-number, candidate))."""

    __slots__ = ("key", "seen", "next_number", "_later", "_kept")

    def __init__(self, key: str) -> None:
        self.key = key
        self.seen = 0
        self.next_number = 0  # all of 0 .. next_number-1 were seen
        self._later: set | None = None  # numbers seen above next_number
        self._kept: list = []  # heap of (-number, Candidate)

    def claim(self, number: int) -> bool:
        """Record sample `number`; False if it was seen before."""
        later = self._later
        if number < self.next_number or (later is not None and number in later):
            return False
        self.seen += 1
        if number == self.next_number:
            self.next_number += 1
            while later and self.next_number in later:
                later.discard(self.next_number)
                self.next_number += 1
        else:
            self._later = (later or set()) | {number}
        return True

    def keeps(self, number: int, limit: int) -> bool:
        return len(self._kept) < limit or number < -self._kept[0][0]

    def keep(self, candidate: Candidate, limit: int | None) -> None:
        if limit is None:
            self._kept.append(candidate)  # no tuple: this is the mode that may hold every candidate of the input
        elif len(self._kept) >= limit:
            heapq.heapreplace(self._kept, (-candidate.number, candidate))
        else:
            heapq.heappush(self._kept, (-candidate.number, candidate))

    def in_order(self) -> list[Candidate]:
        kept = [item if isinstance(item, Candidate) else item[1] for item in self._kept]
        return sorted(kept, key=lambda candidate: candidate.number)


class _Rows:
    """Where candidate rows wait until chosen: in memory (grouped input: one prompt at a time), or spooled as JSON
    lines to an unnamed temporary file, with each line's offset in memory (any order: the whole input may be in
    flight)."""

    def __init__(self, spool: bool) -> None:
        self._file = None
        if spool:
            import tempfile

            self._file = tempfile.TemporaryFile(prefix="rtool-bon-")
            self._end = 0

    def put(self, row: Row):
        if self._file is None:
            return row
        from rtool.io.records import json_line

        data = json_line(row).encode("utf-8")
        offset = self._end
        self._file.write(data)
        self._end += len(data)
        return offset

    def get(self, ref) -> dict:
        if self._file is None:
            return ref
        import json

        self._file.seek(ref)
        line = self._file.readline()
        self._file.seek(self._end)  # the next put appends
        return json.loads(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
