"""pass@k, maj@k and the eval tally, checked against hand-computed values."""

import math

import pytest

from rtool.grade.metrics import EvalTally, k_values, pass_at_k


@pytest.mark.parametrize("n, c, k", [(4, 0, 1), (4, 1, 1), (4, 1, 2), (4, 2, 2), (10, 3, 4), (16, 15, 8), (5, 5, 5)])
def test_pass_at_k_matches_the_binomial_formula(n, c, k):
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_k_values():
    assert k_values(1) == [1]
    assert k_values(4) == [1, 2, 4]
    assert k_values(6) == [1, 2, 4, 6]


def test_tally_summary():
    tally = EvalTally()
    # prompt a: 1 of 4 correct; majority answer "5" is wrong
    for key, correct in [("5", False), ("5", False), ("6", True), ("7", False)]:
        tally.add("a", key, correct, 10, "stop")
    # prompt b: 3 of 4 correct, one truncated
    for key, correct, reason in [("2", True, "stop"), ("2", True, "stop"), ("3", False, "length"), ("2", True, "stop")]:
        tally.add("b", key, correct, 20, reason)
    summary = tally.summary()
    assert summary["prompts"] == 2 and summary["samples_per_prompt"] == 4
    assert summary["pass@1"] == pytest.approx((0.25 + 0.75) / 2)
    assert summary["pass@4"] == pytest.approx(1.0)
    assert summary["maj@4"] == pytest.approx(0.5)
    assert summary["mean_tokens"] == 15 and summary["median_tokens"] == 15
    assert summary["truncated_share"] == pytest.approx(1 / 8)
    assert summary["ungradable"] == 0


def test_majority_tie_goes_to_first_seen_and_ungradable_counts():
    tally = EvalTally()
    tally.add("a", "1", True, None, None)
    tally.add("a", "2", False, None, None)
    tally.add("u", None, None, None, None)
    summary = tally.summary()
    assert summary["samples_per_prompt"] == {"1": 1, "2": 1}
    assert summary["maj@2"] == 1.0  # the tie between "1" and "2" goes to "1", seen first; "u" is ungradable
    assert summary["pass@1"] == 0.5
    assert summary["ungradable"] == 1
    assert tally.prompts["a"].majority_correct() is True
