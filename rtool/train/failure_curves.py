"""BAI's two failure curves of RL on a reasoning actor, watched over a run's logged steps (arXiv 2509.00309).

    watch = CurveWatch(collapse_fraction=0.5, drop_fraction=0.3, window=3)
    events = watch.events(rows)        # rows: step, reward, reward_std, completions/mean_length, completions
    [e.name for e in events]           # ["sequence_length_collapse", "reward_hockey_stick"]
    event_marks(events)                # rtool.train.curves.Mark's for OUT/curves.png

- Sequence Length Collapse: the mean completion length falls below `collapse_fraction` (default 50%) of its first
  logged step's. Reasoning shrinks to guesses; the reward may still look fine.
- Reward Hockey Stick: the mean reward drops well below its first steps' mean, then climbs back (at least half way
  from the trough to that mean): the actor unlearns before RL pays off. While the reward is down and has not
  climbed back the event is a `reward_drop`; a drop that recovers becomes a `reward_hockey_stick` spanning drop to
  recovery.

rtool's definitions (BAI names the shapes, not thresholds). Every logged value is a batch mean, so every comparison
is a test: a change counts only when it is both large (the fractions above) and beyond `z` (4) standard errors of
batch noise. Checked at every logged step, a fixed 0.3-of-scale drop (about 2 standard errors at 32 completions a
step) flagged 22% of simulated flat healthy runs at 32 completions a step and 41% at 16; this rule flags 0-0.3% at
16-64 (tests/test_failure_curves.py: 300 runs of 200 steps a setting, 0/1 rewards flat or rising).

- A step's standard error is its within-batch std over the square root of the completions it averages
  (`reward_std` and `completion_length_std` over `completions`: rtool grpo logs all three; a TRL trainer_state.json
  gives `train_batch_size`). The series' own noise counts too, once `window` + 1 step-to-step changes are logged:
  sqrt(pi)/2 x their mean absolute size (a normal step's sigma), raised by 1 + 1/sqrt(changes) while they are few.
  It sees what the std misses: prompts of different difficulty from batch to batch, a std or count not logged.
  For the reward the larger of the two holds; for the length the step's own where logged (its noise estimate
  would count the collapse itself).
- Reward: the start is the mean of the first `window` logged steps, the current value the mean of the last `window`
  (a trailing window); the drop is `start - now` > `drop_fraction` x scale, scale the largest of |start|, the start's
  mean `reward_std` and `min_scale` (0.1: rtool's rewards are 0-1 a function, so a run whose first rewards are all 0
  cannot flag a 0.002 dip). The recovery must also be beyond `z` standard errors of the trough.
- Length: the start is the first logged step alone (a collapse that begins inside the first window is still
  measured from where it began), taken one standard error lower (one step high by chance does not turn a drift into
  a collapse); the current value is the mean of up to `window` later steps.

Pure functions of the rows: the same events live (the trainer's warnings and each row's `flags`) and afterwards
(curves.png, `rtool plot --check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

COLLAPSE = "sequence_length_collapse"
HOCKEY_STICK = "reward_hockey_stick"
DROP = "reward_drop"
# The mean completion length under TRL's name, as rtool grpo and TRL's GRPOTrainer both log it.
MEAN_LENGTH = "completions/mean_length"

# E|x - y| = 2 sigma / sqrt(pi) for two independent normal steps.
_MEAN_CHANGE_TO_SIGMA = math.sqrt(math.pi) / 2


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
    """One logged step of a series: its value (a batch mean) and that mean's standard error (None: not logged)."""

    step: float
    value: float
    se: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class CurveWatch:
    """The thresholds (`rtool grpo --collapse-fraction --drop-fraction --watch-window`), the z of batch noise a
    change must exceed, and the reward scale's floor."""

    collapse_fraction: float = 0.5
    drop_fraction: float = 0.3
    window: int = 3
    z: float = 4.0
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
        found = [self.length_collapse(points(rows, MEAN_LENGTH, "completion_length_std", completions)),
                 self.reward_hockey_stick(points(rows, "reward", "reward_std", completions))]
        return sorted((event for event in found if event is not None), key=lambda e: e.step)

    def length_collapse(self, lengths: Sequence[Point]) -> CurveEvent | None:
        """The first step where the trailing mean completion length is below collapse_fraction x the first logged
        step's, significantly, or None."""
        if len(lengths) < 2:
            return None
        start, noise = lengths[0], _Noise(self.window)
        noise.add(start.value)
        for i in range(1, len(lengths)):
            noise.add(lengths[i].value)
            recent = lengths[max(1, i - self.window + 1):i + 1]
            now = _mean(p.value for p in recent)
            start_se = _window_se([start], noise.sigma, own_first=True)
            se = math.hypot(start_se, _window_se(recent, noise.sigma, own_first=True))
            # The start one standard error lower: one step high by chance does not turn a drift into a collapse.
            if now < self.collapse_fraction * (start.value - start_se) and start.value - now > self.z * se:
                return CurveEvent(COLLAPSE, lengths[i].step, f"sequence length collapse: mean completion length "
                                  f"{now:.1f} tokens, below {self.collapse_fraction:.0%} of its first step's "
                                  f"{start.value:.1f} (BAI's first failure curve: reasoning shrinks to guesses)")
        return None

    def reward_hockey_stick(self, rewards: Sequence[Point]) -> CurveEvent | None:
        """A reward_hockey_stick (dropped, then climbed back), a reward_drop (dropped, not yet back), or None."""
        w = self.window
        if len(rewards) <= w:
            return None
        first = rewards[:w]
        start = _mean(p.value for p in first)
        stds = [p.std for p in first if p.std is not None]
        scale = max(abs(start), _mean(stds) if stds else 0.0, self.min_scale)
        noise = _Noise(w)
        for p in first:
            noise.add(p.value)
        dropped = trough = None  # indices of the trailing window's last step
        for i in range(w, len(rewards)):
            noise.add(rewards[i].value)
            recent = rewards[i - w + 1:i + 1]
            now = _mean(p.value for p in recent)
            if dropped is None:
                se = math.hypot(_window_se(first, noise.sigma), _window_se(recent, noise.sigma))
                if self._beyond(start - now, self.drop_fraction * scale, se):
                    dropped = trough = i
                continue
            low = rewards[trough - w + 1:trough + 1]
            low_mean = _mean(p.value for p in low)
            if now < low_mean:
                trough = i
                continue
            se = math.hypot(_window_se(low, noise.sigma), _window_se(recent, noise.sigma))
            if self._beyond(now - low_mean, 0.5 * (start - low_mean), se):
                return CurveEvent(HOCKEY_STICK, rewards[dropped].step, f"reward hockey stick: the mean reward fell "
                                  f"from {start:.3f} to {low_mean:.3f} (step {rewards[trough].step:g}), then climbed "
                                  f"back to {now:.3f} (BAI's second failure curve)", end=rewards[i].step)
        if dropped is None:
            return None
        fell_to = _mean(p.value for p in rewards[dropped - w + 1:dropped + 1])
        return CurveEvent(DROP, rewards[dropped].step, f"reward drop: the mean reward fell from {start:.3f} to "
                          f"{fell_to:.3f} (more than {self.drop_fraction:.0%} of its scale {scale:.3f} and "
                          f"{self.z:g} standard errors); the first half of a hockey stick unless it climbs back")


    def _beyond(self, change: float, threshold: float, se: float) -> bool:
        """`change` is past `threshold` and past z standard errors: large, and not batch noise."""
        return change > max(threshold, self.z * se)


def points(rows: Sequence[dict], key: str, std_key: str, completions: float | None = None) -> list[Point]:
    """The logged values of `key` with their standard errors (`std_key` over the square root of the row's
    `completions`, else of `completions`)."""
    out = []
    for row in rows:
        value, std = _number(row.get(key)), _number(row.get(std_key))
        if value is None:
            continue
        count = _number(row.get("completions")) or completions
        se = std / math.sqrt(count) if std is not None and count else None
        out.append(Point(row["step"], value, se, std))
    return out


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


class _Noise:
    """A series' own step noise so far, from its mean absolute step-to-step change, raised by 1 + 1/sqrt(changes)
    (an upper bound while there are few: a handful of changes can understate it by half); 0 until `window` + 1
    changes."""

    def __init__(self, window: int):
        self._total = 0.0
        self._count = 0
        self._last: float | None = None
        self._needed = window + 1

    def add(self, value: float) -> None:
        if self._last is not None:
            self._total += abs(value - self._last)
            self._count += 1
        self._last = value

    @property
    def sigma(self) -> float:
        if self._count < self._needed:
            return 0.0
        return _MEAN_CHANGE_TO_SIGMA * self._total / self._count * (1 + 1 / math.sqrt(self._count))


def _window_se(window: Sequence[Point], noise: float, *, own_first: bool = False) -> float:
    """The standard error of a window's mean, its steps independent: each step's own or the series' noise, the
    larger; with `own_first` the series' noise only where a step logged no standard error."""
    if own_first:
        errors = [noise if p.se is None else p.se for p in window]
    else:
        errors = [max(p.se or 0.0, noise) for p in window]
    return math.sqrt(sum(e * e for e in errors)) / len(window)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)
