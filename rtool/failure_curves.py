"""BAI's two failure curves of RL on a reasoning actor, watched over a run's logged steps (arXiv 2509.00309).

    watch = CurveWatch(collapse_fraction=0.5, drop_fraction=0.3, window=3)
    events = watch.events(rows)        # rows: metrics.jsonl rows with step, reward, reward_std, completion_length
    [e.name for e in events]           # ["sequence_length_collapse", "reward_hockey_stick"]
    event_marks(events)                # rtool.curves.Mark's for OUT/curves.png

- Sequence Length Collapse: the mean completion length falls below `collapse_fraction` (default 50%) of its first
  steps' mean, and stays there for the smoothing window. Reasoning shrinks to guesses; the reward may still look fine.
- Reward Hockey Stick: the mean reward drops well below its first steps' mean (by `drop_fraction` of its scale),
  then climbs back (at least half way from the trough to that mean): the actor unlearns before RL pays off. While
  the reward is down and has not climbed back the event is a `reward_drop`; a drop that recovers becomes a
  `reward_hockey_stick` spanning drop to recovery.

rtool's definitions (BAI names the shapes, not thresholds): "first steps' mean" is the mean of the first `window`
logged values, and the current value is the mean of the last `window` logged values (a trailing window smooths the
noise of small batches). A reward's scale is the larger of |first steps' mean| and its first steps' within-batch
standard deviation (`reward_std`), so a sparse 0/1 reward near 0 must fall by more than its noise. Pure functions of
the rows: the same events live (the trainer's warnings and each row's `flags`) and afterwards (curves.png).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

COLLAPSE = "sequence_length_collapse"
HOCKEY_STICK = "reward_hockey_stick"
DROP = "reward_drop"


@dataclass(frozen=True)
class CurveEvent:
    """A failure curve seen in a run: its name, the logged step where it showed (`end`: where a hockey stick's
    reward recovered), and a one-line explanation."""

    name: str
    step: float
    message: str
    end: float | None = None


@dataclass(frozen=True)
class CurveWatch:
    """The thresholds (`rtool grpo --collapse-fraction --drop-fraction --watch-window`)."""

    collapse_fraction: float = 0.5
    drop_fraction: float = 0.3
    window: int = 3

    def check(self) -> None:
        from rtool.errors import UserError

        if not 0 < self.collapse_fraction < 1:
            raise UserError(f"--collapse-fraction must be in (0, 1), got {self.collapse_fraction}")
        if not 0 < self.drop_fraction <= 1:
            raise UserError(f"--drop-fraction must be in (0, 1], got {self.drop_fraction}")
        if self.window < 1:
            raise UserError(f"--watch-window must be at least 1, got {self.window}")

    def events(self, rows: Iterable[dict]) -> list[CurveEvent]:
        """The failure curves in metrics `rows` (in step order), at most one of each kind, in the order they showed."""
        rows = list(rows)
        found = [self.length_collapse(*_series(rows, "completion_length")),
                 self.reward_hockey_stick(*_series(rows, "reward"), _series(rows, "reward_std")[1])]
        return sorted((event for event in found if event is not None), key=lambda e: e.step)

    def length_collapse(self, steps: Sequence[float], lengths: Sequence[float]) -> CurveEvent | None:
        """The first step where the smoothed completion length is below collapse_fraction x its start, or None."""
        w = self.window
        if len(lengths) <= w:
            return None
        start = _mean(lengths[:w])
        for i in range(w, len(lengths)):
            now = _mean(lengths[i - w + 1:i + 1])
            if start > 0 and now < self.collapse_fraction * start:
                return CurveEvent(COLLAPSE, steps[i], f"sequence length collapse: mean completion length "
                                  f"{now:.1f} tokens, below {self.collapse_fraction:.0%} of its first steps' "
                                  f"{start:.1f} (BAI's first failure curve: reasoning shrinks to guesses)")
        return None

    def reward_hockey_stick(self, steps: Sequence[float], rewards: Sequence[float],
                            reward_stds: Sequence[float] = ()) -> CurveEvent | None:
        """A reward_hockey_stick (dropped, then climbed back), a reward_drop (dropped, not yet back), or None."""
        w = self.window
        if len(rewards) <= w:
            return None
        start = _mean(rewards[:w])
        scale = max(abs(start), _mean(reward_stds[:w]) if len(reward_stds) >= w else 0.0)
        threshold = self.drop_fraction * scale
        smoothed = [_mean(rewards[i - w + 1:i + 1]) for i in range(w, len(rewards))]
        dropped = next((k for k, now in enumerate(smoothed) if start - now > threshold and now < start), None)
        if dropped is None:
            return None
        trough_k = dropped
        for k in range(dropped, len(smoothed)):
            if smoothed[k] < smoothed[trough_k]:
                trough_k = k
            trough = smoothed[trough_k]
            if k > trough_k and smoothed[k] >= trough + 0.5 * (start - trough):
                return CurveEvent(HOCKEY_STICK, steps[dropped + w], f"reward hockey stick: the mean reward fell "
                                  f"from {start:.3f} to {trough:.3f} (step {steps[trough_k + w]:g}), then climbed back "
                                  f"to {smoothed[k]:.3f} (BAI's second failure curve)", end=steps[k + w])
        return CurveEvent(DROP, steps[dropped + w], f"reward drop: the mean reward fell from {start:.3f} to "
                          f"{smoothed[dropped]:.3f} (more than {self.drop_fraction:.0%} of its scale {scale:.3f}); "
                          "the first half of a hockey stick unless it climbs back")


def event_marks(events: Iterable[CurveEvent]) -> list:
    """`rtool.curves.Mark`s for OUT/curves.png: a collapse on the length panel, a drop or hockey stick on the reward
    panel (the hockey stick as a span from drop to recovery)."""
    from rtool.curves import Mark

    marks = []
    for event in events:
        if event.name == COLLAPSE:
            marks.append(Mark(event.step, "sequence length collapse", metric="completion_length"))
        else:
            marks.append(Mark(event.step, event.name.replace("_", " "), metric="reward", end=event.end))
    return marks


def _series(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    pairs = [(row["step"], float(row[key])) for row in rows
             if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
