"""BAI's failure curves (rtool.failure_curves) on synthetic runs: a healthy one, a length collapse, a hockey stick."""

from __future__ import annotations

import math
import random

import pytest

from rtool.errors import UserError
from rtool.failure_curves import COLLAPSE, DROP, HOCKEY_STICK, CurveWatch, event_marks


def rows(rewards, lengths, reward_std=0.3):
    return [{"step": i + 1, "reward": r, "reward_std": reward_std, "completion_length": n}
            for i, (r, n) in enumerate(zip(rewards, lengths))]


def noisy(values, scale, seed=0):
    rng = random.Random(seed)
    return [v + rng.uniform(-scale, scale) for v in values]


def test_a_healthy_run_raises_no_flag():
    # Reward climbs with noise, length drifts down by a third: learning, not a failure.
    rewards = noisy([0.3 + 0.5 * i / 60 for i in range(60)], 0.08)
    lengths = noisy([300 - 100 * i / 60 for i in range(60)], 20)
    assert CurveWatch().events(rows(rewards, lengths)) == []


def test_sequence_length_collapse_is_found_where_the_length_halves():
    lengths = [300.0] * 10 + [300 - 25 * k for k in range(1, 11)] + [50.0] * 10  # 275, 250, ... 50
    events = CurveWatch(window=3).events(rows([0.5] * 30, lengths))
    assert [e.name for e in events] == [COLLAPSE]
    # The 3-step mean first goes below 150 at step 18 (lengths 150, 125, 100 -> 125; step 17: 175, 150, 125 -> 150).
    assert events[0].step == 18
    assert "below 50% of its first steps' 300.0" in events[0].message
    # A stricter fraction fires later, a looser one earlier.
    assert CurveWatch(collapse_fraction=0.25, window=3).events(rows([0.5] * 30, lengths))[0].step == 21
    assert CurveWatch(collapse_fraction=0.9, window=3).events(rows([0.5] * 30, lengths))[0].step < 18


def test_reward_hockey_stick_is_a_span_from_drop_to_recovery():
    # Start at 0.5, fall to 0.1 by step 20, flat until 30, climb back to 0.7 by step 50.
    rewards = [0.5] * 10 + [0.5 - 0.04 * k for k in range(1, 11)] + [0.1] * 10 + [0.1 + 0.03 * k for k in range(1, 21)]
    events = CurveWatch(drop_fraction=0.3, window=3).events(rows(rewards, [200] * len(rewards)))
    assert [e.name for e in events] == [HOCKEY_STICK]
    stick = events[0]
    # Drop: 3-step mean more than 0.3 x 0.5 = 0.15 below 0.5, i.e. below 0.35: rewards 0.38, 0.34, 0.30 at steps
    # 13-15.
    assert stick.step == 15
    # Recovery: half way back from the trough 0.1 to 0.5, i.e. >= 0.3: rewards .28, .31, .34 at steps 36-38.
    assert stick.end == 38
    marks = event_marks(events)
    assert marks[0].metric == "reward" and marks[0].label == "reward hockey stick" and marks[0].end == 38


def test_a_drop_without_recovery_is_a_reward_drop():
    rewards = [0.5] * 10 + [0.1] * 20
    events = CurveWatch().events(rows(rewards, [200] * 30))
    assert [e.name for e in events] == [DROP] and events[0].end is None
    assert "first half of a hockey stick" in events[0].message


def test_sparse_reward_noise_near_zero_is_not_a_drop():
    # A 0/1 accuracy reward near 0.05 whose batch mean wanders between 0 and 0.1: its std (0.2) sets the scale.
    rewards = [0.05, 0.1, 0.0, 0.05, 0.0, 0.0, 0.0, 0.05, 0.1, 0.0, 0.0, 0.0, 0.0, 0.1]
    assert CurveWatch().events(rows(rewards, [100] * len(rewards), reward_std=0.2)) == []
    # Without the std the scale is |start| alone, and the same wander passes for a hockey stick.
    assert [e.name for e in CurveWatch().events(rows(rewards, [100] * len(rewards), reward_std=None))] == \
        [HOCKEY_STICK]


def test_both_curves_in_one_run_in_the_order_they_showed():
    rewards = [0.6] * 5 + [0.2] * 10 + [0.6] * 10
    lengths = [400] * 12 + [100] * 13
    events = CurveWatch().events(rows(rewards, lengths))
    assert [e.name for e in events] == [HOCKEY_STICK, COLLAPSE]
    assert [m.metric for m in event_marks(events)] == ["reward", "completion_length"]


def test_short_runs_and_missing_series_raise_nothing():
    assert CurveWatch(window=3).events(rows([0.5, 0.0, 0.0], [100, 10, 10])) == []
    assert CurveWatch().events([{"step": 1, "loss": 1.0}, {"step": 2, "loss": math.nan}]) == []


@pytest.mark.parametrize("kwargs, flag", [({"collapse_fraction": 1.0}, "--collapse-fraction"),
                                          ({"drop_fraction": 0.0}, "--drop-fraction"),
                                          ({"window": 0}, "--watch-window")])
def test_thresholds_are_checked(kwargs, flag):
    with pytest.raises(UserError, match=flag):
        CurveWatch(**kwargs).check()
