"""BAI's failure curves (rtool.train.failure_curves) on synthetic runs: a healthy one, a length collapse, a hockey stick."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtool.errors import UserError
from rtool.train.failure_curves import COLLAPSE, DROP, HOCKEY_STICK, CurveWatch, event_marks


def rows(rewards, lengths, reward_std=0.3, completions=32):
    return [{"step": i + 1, "reward": r, "reward_std": reward_std, "completions/mean_length": n,
             "completions": completions} for i, (r, n) in enumerate(zip(rewards, lengths))]


def healthy_runs(completions, *, rising, runs=300, steps=200, group=8, varied_prompts=False, seed=0):
    """Simulated healthy GRPO runs as rtool grpo logs them: 0/1 rewards with a success rate flat or rising by 0.1-0.4
    over the run (per prompt drawn around it with `varied_prompts`: Beta with concentration 2, prompts from always
    to never solved, so batches differ by more than their std says), completion lengths log-normal with a
    coefficient of variation of 0.5, their mean drifting by -33% to +30%."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, steps)[None, :, None]
    p0 = rng.uniform(0.05, 0.9, (runs, 1, 1))
    p = p0 + (np.minimum(0.95, p0 + rng.uniform(0.1, 0.4, (runs, 1, 1))) - p0) * t if rising else p0 + 0 * t
    if varied_prompts:
        p = np.repeat(rng.beta(2 * p[..., :1].repeat(completions // group, 2),
                               2 * (1 - p[..., :1]).repeat(completions // group, 2)), group, axis=2)
    rewards = (rng.random((runs, steps, completions)) < p).astype(float)
    mean_length = rng.uniform(100, 800, (runs, 1, 1)) * (1 + rng.uniform(-0.33, 0.3, (runs, 1, 1)) * t)
    sigma2 = math.log(1 + 0.5 ** 2)
    lengths = rng.lognormal(np.log(mean_length) - sigma2 / 2, math.sqrt(sigma2), (runs, steps, completions))
    columns = (rewards.mean(2), rewards.std(2, ddof=1), lengths.mean(2), lengths.std(2, ddof=1))
    return [[{"step": s + 1, "reward": r, "reward_std": rs, "completions/mean_length": n, "completion_length_std": ns,
              "completions": completions} for s, (r, rs, n, ns) in enumerate(zip(*(c[run].tolist() for c in columns)))]
            for run in range(runs)]


@pytest.mark.parametrize("completions", [16, 32, 64])
@pytest.mark.parametrize("rising", [False, True], ids=["flat", "rising"])
def test_at_most_one_healthy_run_in_a_hundred_is_flagged(completions, rising):
    """300 runs of 200 steps a setting; the old 0.3-of-scale rule flagged 18-71% of the flat ones."""
    flagged = [run for run in healthy_runs(completions, rising=rising) if CurveWatch().events(run)]
    assert len(flagged) <= 3, [CurveWatch().events(run)[0].message for run in flagged]


def test_prompts_of_different_difficulty_are_batch_noise_too():
    # Each batch's few prompts decide its mean more than its std says: the series' own noise covers that.
    flagged = [run for run in healthy_runs(32, rising=False, varied_prompts=True) if CurveWatch().events(run)]
    assert len(flagged) <= 3, [CurveWatch().events(run)[0].message for run in flagged]


def test_sequence_length_collapse_is_found_where_the_length_halves():
    lengths = [300.0] * 10 + [300 - 25 * k for k in range(1, 11)] + [50.0] * 10  # 275, 250, ... 50
    events = CurveWatch(window=3).events(rows([0.5] * 30, lengths))
    assert [e.name for e in events] == [COLLAPSE]
    # The 3-step mean first goes below 150 at step 18 (lengths 150, 125, 100 -> 125; step 17: 175, 150, 125 -> 150).
    assert events[0].step == 18
    assert "below 50% of its first step's 300.0" in events[0].message
    # A stricter fraction fires later, a looser one earlier.
    assert CurveWatch(collapse_fraction=0.25, window=3).events(rows([0.5] * 30, lengths))[0].step == 21
    assert CurveWatch(collapse_fraction=0.9, window=3).events(rows([0.5] * 30, lengths))[0].step < 18


def test_a_collapse_inside_the_first_window_is_measured_from_the_first_step():
    lengths = [800.0, 560.0, 330.0] + [330.0] * 17
    # A logged std (half the mean: long-tailed lengths) over 32 completions: the 3-step mean of 560, 330, 330 is not
    # yet below 400; the next step's is.
    with_std = [{**row, "completion_length_std": row["completions/mean_length"] / 2}
                for row in rows([0.5] * 20, lengths)]
    assert [(e.name, e.step) for e in CurveWatch().events(with_std)] == [(COLLAPSE, 5)]
    # No std (a TRL trainer_state.json): the series' own noise, inflated by the fall itself at first, holds it 2
    # steps longer.
    assert [(e.name, e.step) for e in CurveWatch().events(rows([0.5] * 20, lengths))] == [(COLLAPSE, 7)]


def test_a_drift_from_a_first_step_high_by_chance_is_no_collapse():
    # One step of 16 completions is +-12% (std half the mean); a third lower later is learning to be brief.
    lengths = [260.0] + [200.0, 190.0, 210.0] * 5 + [125.0] * 10
    run = [{**row, "completion_length_std": row["completions/mean_length"] / 2}
           for row in rows([0.5] * len(lengths), lengths, completions=16)]
    assert CurveWatch().events(run) == []
    assert [e.name for e in CurveWatch().events([{**row, "completions": 1000} for row in run])] == [COLLAPSE]


@pytest.mark.parametrize("completions, drop, back", [(64, 15, 38), (16, 18, 40)])
def test_reward_hockey_stick_is_a_span_from_drop_to_recovery(completions, drop, back):
    # Start at 0.5, fall to 0.1 by step 20, flat until 30, climb back to 0.7 by step 50.
    rewards = [0.5] * 10 + [0.5 - 0.04 * k for k in range(1, 11)] + [0.1] * 10 + [0.1 + 0.03 * k for k in range(1, 21)]
    events = CurveWatch(drop_fraction=0.3, window=3).events(rows(rewards, [200] * len(rewards),
                                                                 completions=completions))
    assert [e.name for e in events] == [HOCKEY_STICK]
    stick = events[0]
    # Drop: 3-step mean more than 0.3 x 0.5 = 0.15 below 0.5, i.e. below 0.35: rewards 0.38, 0.34, 0.30 at steps
    # 13-15, when 0.15 is more than 4 standard errors (64 completions: 0.3 / 8 a step, 0.031 for the difference of
    # two 3-step means). With 16 the noise is twice that: 0.245 below, at step 18 (.26, .22, .18).
    assert stick.step == drop
    # Recovery: half way back from the trough 0.1 to 0.5, i.e. >= 0.3: rewards .28, .31, .34 at steps 36-38 (with 16
    # completions also 4 standard errors, 0.245, above the trough: steps 38-40).
    assert stick.end == back
    marks = event_marks(events)
    assert marks[0].metric == "reward" and marks[0].label == "reward hockey stick" and marks[0].end == back


def test_a_drop_without_recovery_is_a_reward_drop():
    rewards = [0.5] * 10 + [0.1] * 20
    events = CurveWatch().events(rows(rewards, [200] * 30))
    assert [(e.name, e.step, e.end) for e in events] == [(DROP, 12, None)]
    assert "first half of a hockey stick" in events[0].message


def test_sparse_reward_noise_near_zero_is_not_a_drop():
    # A 0/1 accuracy reward near 0.05 whose batch mean wanders between 0 and 0.1: its std (0.2) sets the scale.
    rewards = [0.05, 0.1, 0.0, 0.05, 0.0, 0.0, 0.0, 0.05, 0.1, 0.0, 0.0, 0.0, 0.0, 0.1]
    assert CurveWatch().events(rows(rewards, [100] * len(rewards), reward_std=0.2)) == []
    # Without the std or the count, the series' own step-to-step noise stands in.
    assert CurveWatch().events(rows(rewards, [100] * len(rewards), reward_std=None, completions=None)) == []


def test_a_first_window_of_zeros_does_not_make_a_tiny_dip_a_drop():
    # A length penalty at 0 (std 0) for 3 steps, then one completion in 32 a little too long.
    rewards = [0.0, 0.0, 0.0] + [-0.002] * 5 + [0.0] * 10
    stds = [0.0] * 3 + [0.011] * 5 + [0.0] * 10
    run = [{**row, "reward_std": std} for row, std in zip(rows(rewards, [100] * 18), stds)]
    assert CurveWatch().events(run) == []
    # A real fall from 0 (scale floored at 0.1: more than 0.03 down, and beyond the noise) is one.
    run = [{**row, "reward": -0.2, "reward_std": 0.3} if row["step"] > 3 else row for row in run]
    assert [(e.name, e.step) for e in CurveWatch().events(run)] == [(DROP, 6)]


def test_both_curves_in_one_run_in_the_order_they_showed():
    rewards = [0.6] * 5 + [0.2] * 10 + [0.6] * 10
    lengths = [400] * 12 + [100] * 13
    events = CurveWatch().events(rows(rewards, lengths))
    # Each a step after the first window that shows it: the series' own noise, inflated by the fall itself, holds it.
    assert [(e.name, e.step) for e in events] == [(HOCKEY_STICK, 8), (COLLAPSE, 15)]
    assert [m.metric for m in event_marks(events)] == ["reward", "completions/mean_length"]


def test_short_runs_and_missing_series_raise_nothing():
    assert CurveWatch(window=3).events(rows([0.5, 0.0, 0.0], [100, 100, 100])) == []  # no step after the start
    assert CurveWatch(window=3).events(rows([0.5], [100])) == []
    assert CurveWatch().events([{"step": 1, "loss": 1.0}, {"step": 2, "loss": math.nan}]) == []


@pytest.mark.parametrize("kwargs, flag", [({"collapse_fraction": 1.0}, "--collapse-fraction"),
                                          ({"drop_fraction": 0.0}, "--drop-fraction"),
                                          ({"window": 0}, "--watch-window")])
def test_thresholds_are_checked(kwargs, flag):
    with pytest.raises(UserError, match=flag):
        CurveWatch(**kwargs).check()
