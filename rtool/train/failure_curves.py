"""BAI's two failure curves of RL on a reasoning actor, watched over a run's logged steps (arXiv 2509.00309).

    watch = CurveWatch(collapse_fraction=0.5, drop_fraction=0.3, window=5)
    events = watch.events(rows)        # rows: step, reward, reward_std, completions/mean_length, completions
    [e.name for e in events]           # ["sequence_length_collapse", "reward_hockey_stick"]
    event_marks(events)                # rtool.train.curves.Mark's for OUT/curves.png

- Sequence Length Collapse: the mean completion length falls below `collapse_fraction` (default 50%) of its first
  logged step's. Reasoning shrinks to guesses; the reward may still look fine.
- Reward Hockey Stick: the mean reward drops well below its first steps' mean, then climbs back (at least half way
  from the trough to that mean): the actor unlearns before RL pays off. While the reward is down and has not
  climbed back the event is a `reward_drop`; a drop that recovers becomes a `reward_hockey_stick` spanning drop to
  recovery.

rtool's definitions (BAI names the shapes, not thresholds). Windows count steps, not logged rows (a TRL log every
10 steps is one row a window, not 3 rows = 30 steps). Every logged value is a batch mean, so every comparison is a
two-sample z test of two windows' means:
- Reward: the start is the mean of the first 2 x `window` steps, the current value the mean of the last `window`
  (after the start). A drop counts when `start - now` is past `drop_fraction` x scale (scale: the largest of
  |start|, the start's mean `reward_std` and `min_scale`, 0.1: a run whose first rewards are all 0 cannot flag a
  0.002 dip) and past half of that by `z` (3) standard errors: a healthy plateau may wander by half the threshold,
  batch noise adds the rest. The recovery likewise, half way back up from the trough's window.
- Length: the start is the first logged row alone (BAI measure from step 0: a collapse by step 3 is measured from
  where it began); the current value is the mean of the last `window` steps after it. A collapse counts when it is
  below `collapse_fraction` x the start and the fall is past `z` standard errors, in log(1 + length) (a batch's
  spread, and so its noise, scales with its length).
- Standard errors: the variance of one completion is the logged std squared (`reward_std`, `completion_length_std`;
  the larger of the two windows'), over the completions each window averages (`completions`; a TRL
  trainer_state.json gives `train_batch_size` x the steps a row spans). The series' own noise replaces it where
  significantly larger (prompts of different difficulty make batch means vary more than their std says) or where
  nothing is logged: the median row-to-row change, scaled to one completion, once 2 x `window` changes are logged
  (the median ignores the few changes a failure makes). TRL logs no length std: its shortest and longest completion
  give one (their log range over the expected range of that many normal draws), else the spread is taken as at
  most the mean.

Measured (tests/test_failure_curves.py, bench/failure_curves.py; 200 steps, 0/1 rewards, 16-64 completions a step,
200 runs a setting, from metrics.jsonl and trainer_state.json every step or every 10 steps): 0-0.5% of healthy runs
flagged; 96-100% of hockey sticks (0.5 -> 0.1 -> 0.7), reward collapses and length collapses (800 -> 330 by step
3) flagged within 10 steps of their start (a log every 10 steps: by its first row 10 steps after). The rule before
(a fixed 3-row window, z 4 over a mean-change noise estimate) flagged 45% of those hockey sticks at 16 completions a
step and 1-5% from a TRL log every 10 steps, 30 steps late.

Pure functions of the rows: the same events live (the trainer's warnings and each row's `flags`) and afterwards
(curves.png, `rtool plot --check`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from itertools import accumulate
from statistics import NormalDist
from typing import Callable, Iterable, Sequence

COLLAPSE = "sequence_length_collapse"
HOCKEY_STICK = "reward_hockey_stick"
DROP = "reward_drop"
# The mean completion length under TRL's name, as rtool grpo and TRL's GRPOTrainer both log it.
MEAN_LENGTH = "completions/mean_length"
# The shortest and longest completion of a row (TRL's names): a spread where the std is not logged.
MIN_LENGTH, MAX_LENGTH = "completions/min_length", "completions/max_length"


@dataclass(frozen=True)
class CurveEvent:
    """A failure curve seen in a run: its name, the logged step where it showed (`end`: where a hockey stick's
    reward recovered), and a one-line explanation."""

    name: str
    step: float
    message: str
    end: float | None = None

    def as_dict(self) -> dict:
        """{"name", "step", ("end",) "message"}: a JSON flag (`rtool plot --check`)."""
        out: dict = {"name": self.name, "step": self.step}
        if self.end is not None:
            out["end"] = self.end
        return {**out, "message": self.message}


@dataclass(frozen=True)
class Point:
    """One logged row of a series: its value (a batch mean over the `span` steps since the previous row), the
    within-batch `std` and the `count` of completions it averages (None: not logged)."""

    step: float
    value: float
    std: float | None = None
    count: float | None = None
    span: float = 1.0

    @property
    def se(self) -> float | None:
        """The logged standard error of the value: std / sqrt(count)."""
        return self.std / math.sqrt(self.count) if self.std is not None and self.count else None


@dataclass(frozen=True)
class CurveWatch:
    """The thresholds (`rtool grpo --collapse-fraction --drop-fraction --watch-window`), the z of batch noise a
    change must exceed, and the reward scale's floor. `window` counts steps, not logged rows."""

    collapse_fraction: float = 0.5
    drop_fraction: float = 0.3
    window: int = 5
    z: float = 3.0
    min_scale: float = 0.1

    def check(self) -> None:
        from rtool.errors import UserError

        if not 0 < self.collapse_fraction < 1:
            raise UserError(f"--collapse-fraction must be in (0, 1), got {self.collapse_fraction}")
        if not 0 < self.drop_fraction <= 1:
            raise UserError(f"--drop-fraction must be in (0, 1], got {self.drop_fraction}")
        if self.window < 1:
            raise UserError(f"--watch-window must be at least 1, got {self.window}")

    def events(self, rows: Iterable[dict], completions: float | None = None) -> list[CurveEvent]:
        """The failure curves in metrics `rows` (in step order), at most one of each kind, in the order they showed.
        `completions`: per row, where a row has no `completions` of its own (None: only the series' own noise)."""
        rows = list(rows)
        found = [self.length_collapse(points(rows, MEAN_LENGTH, "completion_length_std", completions,
                                             extremes=(MIN_LENGTH, MAX_LENGTH))),
                 self.reward_hockey_stick(points(rows, "reward", "reward_std", completions))]
        return sorted((event for event in found if event is not None), key=lambda e: e.step)

    def length_collapse(self, lengths: Sequence[Point]) -> CurveEvent | None:
        """The first logged step where the mean length of the last `window` steps is below collapse_fraction x the
        first logged row's, beyond z standard errors, or None."""
        if len(lengths) < 2:
            return None
        series = _Series(lengths, self.window, log=True)
        series.add(0)
        start = lengths[0]
        for i in range(1, len(lengths)):
            series.add(i)
            recent = series.trailing(1, i)
            now = series.mean(recent)
            if now >= self.collapse_fraction * start.value:
                continue
            se = series.se_between(range(1), recent)
            # In log lengths: a batch's spread (and so its noise) scales with its mean length.
            if se is None or math.log1p(start.value) - math.log1p(now) > self.z * se:
                return CurveEvent(COLLAPSE, lengths[i].step, f"sequence length collapse: mean completion length "
                                  f"{now:.1f} tokens, below {self.collapse_fraction:.0%} of its first step's "
                                  f"{start.value:.1f} (BAI's first failure curve: reasoning shrinks to guesses)")
        return None

    def reward_hockey_stick(self, rewards: Sequence[Point]) -> CurveEvent | None:
        """A reward_hockey_stick (dropped, then climbed back), a reward_drop (dropped, not yet back), or None."""
        series = _Series(rewards, self.window, log=False)
        first = series.leading(2 * self.window)
        if len(rewards) <= len(first):
            return None
        stds = [rewards[j].std for j in first if rewards[j].std is not None]
        start = series.mean(first)
        scale = max(abs(start), _mean(stds) if stds else 0.0, self.min_scale)
        for j in first:
            series.add(j)
        dropped = trough = None  # the trailing windows (row indices) where it dropped and where it was lowest
        for i in range(len(first), len(rewards)):
            series.add(i)
            recent = series.trailing(len(first), i)
            now = series.mean(recent)
            if dropped is None:
                if self._beyond(start - now, self.drop_fraction * scale, lambda: series.se_between(first, recent)):
                    dropped = trough = recent
                continue
            low = series.mean(trough)
            if now < low:
                trough = recent
                continue
            if self._beyond(now - low, 0.5 * (start - low), lambda: series.se_between(trough, recent)):
                return CurveEvent(HOCKEY_STICK, rewards[dropped[-1]].step, f"reward hockey stick: the mean reward "
                                  f"fell from {start:.3f} to {low:.3f} (step {rewards[trough[-1]].step:g}), then "
                                  f"climbed back to {now:.3f} (BAI's second failure curve)", end=rewards[i].step)
        if dropped is None:
            return None
        fell_to = series.mean(dropped)
        return CurveEvent(DROP, rewards[dropped[-1]].step, f"reward drop: the mean reward fell from {start:.3f} to "
                          f"{fell_to:.3f} (more than {self.drop_fraction:.0%} of its scale {scale:.3f} and "
                          f"{self.z:g} standard errors); the first half of a hockey stick unless it climbs back")

    def _beyond(self, change: float, threshold: float, se: Callable[[], float | None]) -> bool:
        """`change` is past `threshold`, and past half of it by z standard errors (`se()`, asked only then): large,
        and more than a healthy run's wander (up to half the threshold) plus batch noise. Never while the noise is
        unknown."""
        if change <= threshold:
            return False
        error = se()
        return error is not None and change - threshold / 2 > self.z * error


def points(rows: Sequence[dict], key: str, std_key: str, completions: float | None = None,
           extremes: tuple[str, str] | None = None) -> list[Point]:
    """The logged values of `key` with their within-batch std (`std_key`), the completions each averages (the row's
    `completions`, else `completions`) and the steps since the previous such row. Where no std is logged, the
    `extremes` (the row's smallest and largest completion, positive) give one: their log range over the expected
    range of that many normal draws, times the value (a log-normal's spread; TRL logs lengths so)."""
    out: list[Point] = []
    for row in rows:
        value = _number(row.get(key))
        if value is None:
            continue
        std, count = _number(row.get(std_key)), _number(row.get("completions")) or completions
        if std is None and extremes and count and count > 1:
            low, high = (_number(row.get(name)) for name in extremes)
            if low and high and 0 < low <= high:
                std = value * math.log(high / low) / _normal_range(count)
        step = row["step"]
        span = step - out[-1].step if out else step
        out.append(Point(step, value, std, count, span=max(span, 1)))
    return out


def _normal_range(count: float) -> float:
    """The expected range of `count` standard normal draws (Blom's approximation of the largest one's mean)."""
    return 2 * NormalDist().inv_cdf((count - 0.375) / (count + 0.25))


def event_marks(events: Iterable[CurveEvent]) -> list:
    """`rtool.train.curves.Mark`s for OUT/curves.png: a collapse on the length panel, a drop or hockey stick on the reward
    panel (the hockey stick as a span from drop to recovery)."""
    from rtool.train.curves import Mark

    marks = []
    for event in events:
        if event.name == COLLAPSE:
            marks.append(Mark(event.step, "sequence length collapse", metric=MEAN_LENGTH))
        else:
            marks.append(Mark(event.step, event.name.replace("_", " "), metric="reward", end=event.end))
    return marks


# Completion lengths whose std is not logged (a TRL trainer_state.json) are taken to spread by at most their mean
# (an exponential's spread) until the series' own noise is known.
_LENGTH_CV_BOUND = 1.0
# sigma = median |x| / 0.6745 for a normal x.
_MEDIAN_TO_SIGMA = 1 / 0.6745


class _Series:
    """A series' rows, its windows of steps (`range`s of row indices), and the standard error of the difference of
    two windows' means (a two-sample z test), from the rows `add`ed so far.

    The variance of one completion is the rows' logged std squared (the larger of the two windows': under "no
    change" both share one, and a drop to low rewards shrinks the std of 0/1 rewards), or the series' own noise
    where that is significantly larger or nothing is logged. The own noise is the median size of the row-to-row
    changes, each scaled to one completion (sqrt(1/count + 1/previous count)), as a normal sigma; it is known once
    there are 2 x `window` changes. It sees what the std misses (prompts of different difficulty from batch to
    batch, a std or count not logged), and the median ignores the few large changes a failure itself makes.
    `log`: in log(1 + value), where the noise of a mean length scales with the length."""

    def __init__(self, rows: Sequence[Point], window: int, *, log: bool):
        self.rows, self.window, self.log = rows, window, log
        self._y = [math.log1p(max(row.value, 0.0)) if log else row.value for row in rows]
        self._count = [row.count or 1.0 for row in rows]
        # Each row's logged variance of one completion (d log(1 + x) = dx / (1 + x)); None: not logged.
        self._variance = [None if row.std is None or not row.count else
                          (row.std / (1 + max(row.value, 0.0)) if log else row.std) ** 2 for row in rows]
        # Prefix sums (index i: rows before i) of the completions, their values, the logged variances, rows without.
        self._completions = [0.0, *accumulate(self._count)]
        self._totals = [0.0, *accumulate(c * row.value for c, row in zip(self._count, rows))]
        self._variances = [0.0, *accumulate(v or 0.0 for v in self._variance)]
        self._unlogged = [0, *accumulate(v is None for v in self._variance)]
        # The first row of the trailing window ending at each row: as few rows as cover `window` steps.
        self._window_start, begin, covered = [], 0, 0.0
        for last, row in enumerate(rows):
            covered += row.span
            while covered - rows[begin].span >= window:
                covered -= rows[begin].span
                begin += 1
            self._window_start.append(begin)
        self._changes: list[float] = []  # sorted sizes of the scaled row-to-row changes so far
        self._added = 0

    def add(self, i: int) -> None:
        assert i == self._added, "rows are added in order"
        self._added += 1
        if i > 0:
            per_row = math.sqrt(1 / self._count[i - 1] + 1 / self._count[i])
            bisect.insort(self._changes, abs(self._y[i] - self._y[i - 1]) / per_row)

    def leading(self, steps: float) -> range:
        """The first rows that cover `steps` steps (all rows, if fewer)."""
        covered, end = 0.0, 0
        while end < len(self.rows) and covered < steps:
            covered += self.rows[end].span
            end += 1
        return range(end)

    def trailing(self, first: int, last: int) -> range:
        """The rows up to `last` (none before `first`) that cover the last `window` steps."""
        return range(max(first, self._window_start[last]), last + 1)

    def mean(self, window: range) -> float:
        """The window's mean value, each row weighted by the completions it averages."""
        a, b = window.start, window.stop
        return (self._totals[b] - self._totals[a]) / (self._completions[b] - self._completions[a])

    def se_between(self, a: range, b: range) -> float | None:
        """The standard error of the difference of two windows' means (in log(1 + value) with `log`), or None while
        the noise is unknown."""
        count_a, count_b = (self._completions[w.stop] - self._completions[w.start] for w in (a, b))
        variance_a, variance_b = ((self._variances[w.stop] - self._variances[w.start]) / len(w) for w in (a, b))
        unlogged = any(self._unlogged[w.stop] > self._unlogged[w.start] for w in (a, b))
        changes = len(self._changes)
        own = None
        if changes >= 2 * self.window:
            middle = (self._changes[(changes - 1) // 2] + self._changes[changes // 2]) / 2
            own = (_MEDIAN_TO_SIGMA * middle) ** 2
        if not unlogged:
            variance = max(variance_a, variance_b)
            # Only beyond what a median of `changes` changes may exceed the true variance by chance.
            if own is not None and own > variance * (1 + 4 / math.sqrt(changes)):
                variance = own
        elif own is not None:
            variance = own * (1 + 1 / math.sqrt(changes)) ** 2  # few changes can understate it by half
        elif self.log and all(self.rows[i].count for i in (*a, *b)):
            variance = _LENGTH_CV_BOUND ** 2
        else:
            return None
        return math.sqrt(variance * (1 / count_a + 1 / count_b))


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)
