"""verify's hard deadline: math-verify runs in worker processes, so one adversarial answer cannot stall a run."""

import logging
import subprocess
import sys
import threading
import time

import pytest

from rtool.grade import answers, verifier
from rtool.grade.answers import grade_many, verify

ADVERSARIAL = "8^{8^{8^{8}}}"  # sympy works on this for minutes; off the main thread math-verify had no timeout
DEADLINE_S = verifier.VERIFY_DEADLINE_S  # the real deadline, kept before a test lowers it
# The deadline, plus room for a replacement worker to start (Python and sympy, ~1 s idle) on a loaded machine.
LIMIT_S = DEADLINE_S + 5


@pytest.fixture
def fresh_verifier():
    """verify's shared workers and caches as a new process has them, so no verdict comes from a cache."""
    def reset():
        with verifier._POOL_LOCK:
            pool, verifier._POOL = verifier._POOL, None
        if pool is not None:
            pool.close()
        answers._verify_in_worker.cache_clear()
        verifier.OVERRUNS.clear()

    reset()
    assert verify("x^2 + 2x + 1", "(x+1)^2") is True  # starts a worker, so timings below exclude its start
    yield
    reset()


def test_verify_has_a_deadline_on_the_main_thread(fresh_verifier):
    start = time.monotonic()
    assert verify("5", ADVERSARIAL) is False
    assert time.monotonic() - start < LIMIT_S
    assert verify("5", "5.0") is True and verify("x^2", "x \\cdot x") is True   # and grading goes on


def test_verify_has_a_deadline_in_a_thread(fresh_verifier):
    # Before the worker process, math-verify ran with no timeout off the main thread: this thread hung > 25 s.
    results = []
    thread = threading.Thread(target=lambda: results.append(verify("5", ADVERSARIAL)), daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(LIMIT_S)
    assert not thread.is_alive(), f"verify still running after {LIMIT_S} s"
    assert results == [False] and time.monotonic() - start < LIMIT_S


def test_many_threads_verify_at_once(fresh_verifier):
    # The shared pool gives each thread a worker (up to its size) and the rest wait their turn.
    pairs = [(f"x^2 + {i}", f"{i} + x^2") for i in range(12)] + [("5", ADVERSARIAL)]
    results = {}

    def work(i, gold, pred):
        results[i] = verify(gold, pred)

    threads = [threading.Thread(target=work, args=(i, *pair), daemon=True) for i, pair in enumerate(pairs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIMIT_S * 2)
    assert [results.get(i) for i in range(len(pairs))] == [True] * 12 + [False]


def test_a_worker_past_the_deadline_is_killed_and_replaced(fresh_verifier, monkeypatch, caplog):
    # With a deadline below math-verify's own timeout, the worker is still busy when the deadline passes.
    monkeypatch.setattr(verifier, "VERIFY_DEADLINE_S", 0.5)
    pool = verifier.shared_pool()
    (worker,) = pool._idle
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rtool"):
        assert verify("7", ADVERSARIAL) is False
    assert time.monotonic() - start < 0.5 + 1.5
    assert worker._process.poll() is not None      # killed
    assert "math-verify gave no verdict within 0.5 s" in caplog.text and ADVERSARIAL in caplog.text
    start = time.monotonic()
    assert verify("7", ADVERSARIAL) is False        # remembered: no second wait
    assert time.monotonic() - start < 0.1
    # A new worker takes over. The usual deadline again: a fresh interpreter's first parse on a busy machine (tests
    # running in parallel) can take longer than the 0.5 s this test set to catch the hang.
    monkeypatch.setattr(verifier, "VERIFY_DEADLINE_S", DEADLINE_S)
    assert verify("x^2 - 1", "(x-1)(x+1)") is True


def test_a_hang_that_ignores_signals_is_cut_off(monkeypatch):
    # math-verify's own timeout is signal.alarm, which native code does not see. Stand in for such a hang with a
    # worker whose math-verify never returns for one answer, and check the deadline alone ends it.
    hang = ("import rtool.grade.verifier as v, time; real = v.math_verify_here\n"
            "v.math_verify_here = lambda g, p: (time.sleep(3600) if p == 'hang' else real(g, p))\n")
    monkeypatch.setattr(verifier, "_WORKER_CODE", hang + verifier._WORKER_CODE)
    monkeypatch.setattr(verifier, "VERIFY_DEADLINE_S", 1.0)
    monkeypatch.setattr(verifier, "OVERRUNS", {})
    pool = verifier.VerifierPool(1)
    try:
        start = time.monotonic()
        verdicts = pool.verdicts([("1", "x"), ("2", "hang"), ("x^2", "x*x"), ("2", "hang"), ("3", "3.0")])
        assert verdicts == [False, False, True, False, True]
        assert time.monotonic() - start < 1.0 + 20   # one overrun; the repeat is remembered; one restart
    finally:
        pool.close()


def test_grade_many_with_workers_keeps_the_deadline():
    pairs = [("x^2 + 1", "\\boxed{1 + x^2}"), ("5", f"\\boxed{{{ADVERSARIAL}}}"), ("\\frac{1}{2}", "\\boxed{0.5}"),
             ("x^2 - 1", "\\boxed{(x-1)(x+1)}")] * 3
    start = time.monotonic()
    results = list(grade_many(pairs, workers=2, chunk_size=2))
    assert [correct for _, correct in results] == [True, False, True, True] * 3
    assert time.monotonic() - start < 3 * LIMIT_S


def test_a_script_needs_no_main_guard(tmp_path):
    # Workers are fresh interpreters started with `python -c`, not multiprocessing's spawn, which would re-run
    # a script without `if __name__ == "__main__":` in every worker.
    script = tmp_path / "reward.py"
    script.write_text("from rtool.grade.answers import verify\nprint(verify('x^2 + 2x + 1', '(x+1)^2'))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "True\n"
