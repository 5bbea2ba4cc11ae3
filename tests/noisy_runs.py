"""Simulated noisy GRPO runs for the failure-curve detectors (tests/test_failure_curves.py, bench/failure_curves.py).

    runs = simulate("hockey_stick", completions=16, runs=200, seed=1)   # per-step batch statistics, numpy arrays
    write_metrics(run_dir, runs, 0)                                    # run 0 as rtool grpo's metrics.jsonl
    write_trainer_state(path, runs, 0, logging_steps=10)               # ... as TRL's trainer_state.json

Each step draws `completions` 0/1 rewards, Bernoulli with the run's success rate p(step) (with `spread`, in groups
of 8 completions of one prompt whose rate is drawn around p(step), Beta with concentration `spread`: prompts of
different difficulty, so a batch mean varies more than its std says), and as many completion lengths, log-normal
with a coefficient of variation of 0.2-0.5 around the run's mean-length curve. A row is what a trainer logs: the
batch's mean and std of each, and its size.

Healthy shapes (none may be flagged): a flat reward, a slow rise, a fast early rise (most of it in 5-20 steps), a
plateau that wanders (+-10% of its level, at most 0.05, over 40-100 steps); lengths drifting -33% to +30% over the
run or dipping up to 30% in the first 20 steps and growing back. Failures (each must be flagged soon after `start`,
the first step off the healthy curve): BAI's reward hockey stick (0.5 falling to 0.1 in 1-10 steps, 5-20 steps
there, back up to 0.7 over 50 steps), a reward collapse that stays down (0.4-0.8 falling to at most a quarter of it
in 1-10 steps), and the sequence length collapse (800 tokens to 330 by step 3, as in BAI's figure; or 300-1000
tokens to 20-42% of it in 1-5 steps, later).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEALTHY = "healthy"
HOCKEY_STICK = "hockey_stick"
REWARD_COLLAPSE = "reward_collapse"
EARLY_LENGTH_COLLAPSE = "early_length_collapse"
LENGTH_COLLAPSE = "length_collapse"
KINDS = (HEALTHY, HOCKEY_STICK, REWARD_COLLAPSE, EARLY_LENGTH_COLLAPSE, LENGTH_COLLAPSE)
GROUP = 8  # completions per prompt (GRPO's num_generations)


@dataclass
class Runs:
    """`runs` simulated runs of `steps` steps (step s is index s - 1): per-step batch means and stds."""

    completions: int
    reward: np.ndarray
    reward_std: np.ndarray
    length: np.ndarray
    length_std: np.ndarray
    length_min: np.ndarray
    length_max: np.ndarray
    start: np.ndarray  # the failure's first step (0: a healthy run)

    def __len__(self):
        return len(self.reward)


def simulate(kind: str, completions: int, runs: int = 200, steps: int = 200, seed: int = 0,
             first_start: int = 1, spread: float | None = None) -> Runs:
    """Runs of one kind; a failure starts at step `first_start` or later (a TRL log every 10 steps cannot show a
    collapse inside its first row)."""
    rng = np.random.default_rng([seed, completions, KINDS.index(kind)])
    t = np.arange(1, steps + 1)[None, :].astype(float)
    p, mean_length = _healthy_reward(rng, runs, t), _healthy_length(rng, runs, t)
    start = np.zeros(runs, dtype=int)
    if kind in (HOCKEY_STICK, REWARD_COLLAPSE):
        start = rng.integers(max(first_start, 11), 61, runs)  # after at least 10 steps at the starting level
        fall = rng.integers(1, 11, runs)[:, None]
        s = (t - start[:, None] + 1) / fall  # 1 at the fall's last step
        if kind == HOCKEY_STICK:
            stay = rng.integers(5, 21, runs)[:, None]
            climb = np.clip((t - start[:, None] - fall - stay + 1) / 50, 0, 1)
            p = np.where(t < start[:, None], 0.5, 0.5 - 0.4 * np.clip(s, 0, 1) + 0.6 * climb)
        else:
            high, low = rng.uniform(0.4, 0.8, (runs, 1)), rng.uniform(0, 0.25, (runs, 1))
            p = high * np.where(t < start[:, None], 1, 1 - (1 - low) * np.clip(s, 0, 1))
    elif kind == EARLY_LENGTH_COLLAPSE:
        start = np.ones(runs, dtype=int)
        mean_length = np.where(t >= 3, 330.0, 800 - 235 * (t - 1)).repeat(runs, 0)  # 800, 565, 330
    elif kind == LENGTH_COLLAPSE:
        start = rng.integers(max(first_start, 2), 61, runs)
        fall = rng.integers(1, 6, runs)[:, None]
        base = rng.uniform(300, 1000, (runs, 1))
        low = rng.uniform(0.2, 0.42, (runs, 1))
        mean_length = base * np.where(t < start[:, None], 1,
                                      1 - (1 - low) * np.clip((t - start[:, None] + 1) / fall, 0, 1))
    reward, reward_std = _rewards(rng, p, completions, spread)
    return Runs(completions, reward, reward_std, *_lengths(rng, mean_length, completions), start)


def _healthy_reward(rng, runs, t):
    steps = t.shape[1]
    shape = rng.integers(0, 4, (runs, 1))
    p0 = rng.uniform(0.05, 0.9, (runs, 1))
    gain = np.minimum(0.95 - p0, rng.uniform(0.1, 0.4, (runs, 1)))
    slow = p0 + gain * (t - 1) / (steps - 1)
    fast = p0 + gain * (1 - np.exp(-(t - 1) / rng.uniform(5, 20, (runs, 1))))
    # A plateau wandering by a tenth of its level (at most 0.05) each way: well inside a 30% drop.
    wave = np.sin(2 * np.pi * t / rng.uniform(40, 100, (runs, 1)) + rng.uniform(0, 2 * np.pi, (runs, 1)))
    wander = p0 + np.minimum(0.05, 0.1 * p0) * wave
    return np.choose(shape, [p0 + 0 * t, slow, fast, wander])


def _healthy_length(rng, runs, t):
    steps = t.shape[1]
    base = rng.uniform(100, 1000, (runs, 1))
    drift = base * (1 + rng.uniform(-0.33, 0.3, (runs, 1)) * (t - 1) / (steps - 1))
    dip = base * (1 - rng.uniform(0, 0.3, (runs, 1)) * np.sin(np.pi * np.clip((t - 1) / 40, 0, 1)))
    return np.where(rng.random((runs, 1)) < 0.5, drift, dip)


def _rewards(rng, p, completions, spread):
    """Each step's mean and std of 0/1 rewards (`spread`: completions / GROUP prompts, each solved at a rate drawn
    around p)."""
    p = np.clip(p, 0, 1)
    if spread is None:
        solved = rng.binomial(completions, p)
    else:
        p = np.clip(p, 1e-3, 1 - 1e-3)[..., None].repeat(completions // GROUP, -1)
        solved = rng.binomial(GROUP, rng.beta(spread * p, spread * (1 - p))).sum(-1)
    mean = solved / completions
    return mean, np.sqrt(solved * (completions - solved) / (completions * (completions - 1)))


def _lengths(rng, mean_length, completions):
    runs = mean_length.shape[0]
    cv = rng.uniform(0.2, 0.5, (runs, 1, 1))
    sigma2 = np.log(1 + cv ** 2)
    lengths = rng.lognormal(np.log(mean_length[..., None]) - sigma2 / 2, np.sqrt(sigma2),
                            mean_length.shape + (completions,))
    return lengths.mean(-1), lengths.std(-1, ddof=1), lengths.min(-1), lengths.max(-1)


def metrics_rows(runs: Runs, index: int) -> list[dict]:
    """Run `index` as rtool grpo logs it, a row a step."""
    columns = (runs.reward[index], runs.reward_std[index], runs.length[index], runs.length_std[index])
    return [{"step": step, "reward": r, "reward_std": rs, "completions/mean_length": n, "completion_length_std": ns,
             "completions": runs.completions}
            for step, (r, rs, n, ns) in enumerate(zip(*(c.tolist() for c in columns)), start=1)]


def write_metrics(run_dir: Path, runs: Runs, index: int) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in metrics_rows(runs, index)), encoding="utf-8")
    return path


def trainer_state(runs: Runs, index: int, logging_steps: int) -> dict:
    """Run `index` as TRL's GRPOTrainer leaves it in trainer_state.json: a row per `logging_steps` steps holding
    the mean of each step's metrics (reward_std the mean of the steps' stds; no length std, no count; the window's
    shortest and longest completion), and `train_batch_size`, the completions of a step."""
    steps = runs.reward.shape[1]
    history = []
    for end in range(logging_steps, steps + 1, logging_steps):
        window = slice(end - logging_steps, end)
        history.append({"loss": 0.01, "grad_norm": 0.5, "learning_rate": 1e-6,
                        "reward": float(runs.reward[index, window].mean()),
                        "reward_std": float(runs.reward_std[index, window].mean()),
                        "completions/mean_length": float(runs.length[index, window].mean()),
                        "completions/min_length": float(runs.length_min[index, window].min()),
                        "completions/max_length": float(runs.length_max[index, window].max()),
                        "frac_reward_zero_std": 0.1, "epoch": end / steps, "step": end})
    history.append({"train_runtime": 100.0, "train_loss": 0.01, "epoch": 1.0, "step": steps})
    return {"global_step": steps, "logging_steps": logging_steps, "train_batch_size": runs.completions,
            "log_history": history}


def write_trainer_state(path: Path, runs: Runs, index: int, logging_steps: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trainer_state(runs, index, logging_steps)), encoding="utf-8")
    return path


def in_time(events, start: int, logging_steps: int = 1, within: int = 10) -> bool:
    """A failure starting at `start` is caught: its first event falls no earlier than the logged row that first
    holds `start`, no later than the first logged step `within` steps after it."""
    if not events:
        return False
    first = min(event.step for event in events)
    earliest = -(-start // logging_steps) * logging_steps
    deadline = -(-(start + within) // logging_steps) * logging_steps
    return earliest <= first <= deadline


# How a run is logged: rtool's metrics.jsonl, or TRL's trainer_state.json with logging_steps 1 or 10.
LOGS = {"metrics.jsonl": 1, "trainer_state every step": 1, "trainer_state every 10 steps": 10}


def logged_events(directory: Path, runs: Runs, log: str) -> list:
    """Each run written as `log` says, read back by rtool's reader (as `rtool plot --check` does), and its events."""
    from rtool.train.curves import read_metrics
    from rtool.train.failure_curves import CurveWatch

    found = []
    for index in range(len(runs)):
        if log == "metrics.jsonl":
            path = write_metrics(directory / f"run{index}", runs, index)
        else:
            path = write_trainer_state(directory / f"run{index}" / "trainer_state.json", runs, index, LOGS[log])
        found.append(CurveWatch().events(read_metrics(path)))
    return found
