"""math-verify with a hard deadline: each comparison runs in a worker process that is killed past the deadline.

    verdicts = shared_pool().verdicts([(gold, pred), ...])   # True / False / None (gold unparseable), in order
    math_verify_here(gold, pred)                             # the same verdict in this process, no deadline

sympy can spend minutes on an answer like `8^{8^{8^{8}}}`, and math-verify's own timeout (signal.alarm) works only
in a main thread and only between Python bytecodes, so one adversarial answer could freeze a reward loop. A worker
is a fresh interpreter (`python -c`, so a caller's script needs no `__main__` guard) that answers one verdict per
pair; a pair with no verdict within VERIFY_DEADLINE_S seconds is graded False, the worker killed and replaced.
Workers stay warm between calls: one per thread verifying at once, at most 4 (each holds sympy, ~60 MB), more
inside `VerifierPool.at_least(n)` (grade_many's workers). `rtool.grade.answers` calls this only for pairs its fast paths
(equal keys, plain numbers) cannot settle.
"""

from __future__ import annotations

import contextlib
import functools
import threading


@functools.lru_cache(maxsize=65536)
def math_verify_here(gold: str, pred: str) -> bool | None:
    """math-verify's verdict in this process, with no deadline of its own: what a worker runs (tests and
    bench/grading.py call it directly)."""
    import math_verify

    timeout = _timeout()
    gold_parsed = _parse(gold, timeout)
    if not gold_parsed:
        return None
    pred_parsed = _parse(pred, timeout)
    if not pred_parsed:
        return False
    return bool(math_verify.verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))


def _timeout() -> int | None:
    # math-verify bounds its work with signal.alarm, which only a main thread may set; elsewhere it would raise.
    return _WORKER_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=8192)
def _parse(answer: str, timeout: int | None) -> tuple:
    """math-verify's parse of one answer string; cached, since a gold answer is graded against n samples."""
    import math_verify
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    config = (LatexExtractionConfig(), ExprExtractionConfig())
    # A bare answer such as `\left( 3, \frac{\pi}{2} \right)` or `10\%` is not found by math-verify's extractors
    # (they look for $...$, \boxed{} or anchors), so wrap it; `$...$` is the fallback for unbalanced braces.
    candidates = [answer] if "\\boxed" in answer else [f"\\boxed{{{answer}}}", f"${answer}$", answer]
    for text in candidates:
        parsed = math_verify.parse(text, config, parsing_timeout=timeout)
        if parsed:
            return tuple(parsed)
    return ()


# The hard limit on one (gold, pred) comparison, in seconds of wall-clock time once the worker has it. Real answers
# take milliseconds (MATH-500's slowest, against gold or wrong answers: 0.16 s), far below this even on a busy
# machine.
VERIFY_DEADLINE_S = 3.0
# math-verify's own timeout inside a worker, whole seconds (signal.alarm). Below the deadline, so that most slow
# comparisons end cleanly and the worker lives on; the deadline catches the ones it cannot interrupt.
_WORKER_TIMEOUT_S = 2
# Starting a worker (Python, then sympy and math-verify: ~1 s idle) is not counted against any pair's deadline,
# but a worker that cannot start at all must not hang its caller either.
_WORKER_START_S = 120.0
_OVERRUN = object()
_WORKER_CODE = "import sys; sys.path.insert(0, {root!r}); from rtool.grade.verifier import worker_main; worker_main()"


class _Worker:
    """One math-verify process. It is a fresh interpreter (as multiprocessing's spawn, but without re-running the
    caller's `__main__`, so a script needs no `if __name__ == "__main__":` guard), started with `python -c`. It is
    sent lists of (gold, pred) and replies one verdict per pair as it finds it, so each pair is timed on its own."""

    def __init__(self) -> None:
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the dir holding rtool/
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        try:
            self._process = subprocess.Popen([sys.executable, "-c", _WORKER_CODE.format(root=root)],
                                             stdin=child_in, stdout=child_out, close_fds=True)
        except BaseException:
            for fd in (parent_out, parent_in):
                os.close(fd)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        self._requests = Connection(parent_out, readable=False)
        self._replies = Connection(parent_in, writable=False)
        self._ready = False

    def send(self, pairs: list[tuple[str, str]]) -> None:
        if not self._ready:
            if not self._replies.poll(_WORKER_START_S):
                self.kill()
                raise RuntimeError(f"the math-verify worker did not start within {_WORKER_START_S:.0f} s")
            try:
                self._replies.recv()
            except EOFError:
                self.kill()
                raise RuntimeError("the math-verify worker exited while starting (its error is above)") from None
            self._ready = True
        self._requests.send(pairs)

    def receive(self, deadline: float):
        """The next verdict, or _OVERRUN if none came within `deadline` seconds or the worker died on the pair."""
        if self._replies.poll(deadline):
            try:
                return self._replies.recv()
            except EOFError:  # it died on this pair (out of memory, a crash in native code)
                pass
        return _OVERRUN

    def kill(self) -> None:
        for connection in (self._requests, self._replies):
            connection.close()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()


def worker_main() -> None:
    """A math-verify worker's loop: verdicts for lists of (gold, pred) read from stdin, sent on the pipe that was
    stdout, until stdin closes."""
    import logging
    import os
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then closes the pipe
    parent = os.getppid()
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a library that prints must not write into the replies
    requests = Connection(0, writable=False)
    # An idle worker sees its parent go as the end of its input; a busy one (deep in sympy) would spin on alone.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    # math-verify logs each of its own timeouts; here they are verdicts (False), and the parent logs overruns.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    import math_verify  # noqa: F401  (paid before "ready", so that no pair's deadline includes it)

    replies.send("ready")
    while True:
        try:
            pairs = requests.recv()
        except EOFError:
            return
        for gold, pred in pairs:
            try:
                verdict = math_verify_here(gold, pred)
            except Exception:  # noqa: BLE001 - math-verify's own rule: a comparison that fails is False
                verdict = False
            replies.send(verdict)


def _exit_with_parent(parent: int) -> None:
    import os
    import time

    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


class VerifierPool:
    """Up to `size` math-verify workers, started on demand and kept between calls; each caller (thread) takes one
    for its list of pairs, waiting while all are busy. A worker that overruns a pair's deadline is killed; the rest
    of the list goes to a fresh one. `at_least(n)` raises the size while a block runs (grade_many's workers)."""

    def __init__(self, size: int) -> None:
        import os

        self.size = self._base_size = size
        self._wanted: list[int] = []  # sizes asked for by at_least blocks running now
        self._idle: list[_Worker] = []
        self._started = 0
        self._closed = False
        self._lock = threading.Condition()
        self._pid = os.getpid()

    def verdicts(self, pairs: list[tuple[str, str]]) -> list[bool | None]:
        results: list = [False] * len(pairs)
        todo = [i for i, pair in enumerate(pairs) if pair not in OVERRUNS]
        worker = self._take()
        try:
            while todo:
                fresh = worker is None
                if fresh:
                    worker = _Worker()
                try:
                    worker.send([pairs[i] for i in todo])
                except OSError:
                    if fresh:
                        raise
                    worker.kill()  # an idle worker that died (killed from outside): start another
                    worker = None
                    continue
                for n, i in enumerate(todo):
                    verdict = worker.receive(VERIFY_DEADLINE_S)
                    if verdict is _OVERRUN:
                        worker.kill()
                        worker = None
                        _overran(*pairs[i])
                        todo = todo[n + 1:]
                        break
                    results[i] = verdict
                else:
                    todo = []
        except BaseException:
            if worker is not None:
                worker.kill()  # its replies may be out of step with what this caller asked
                worker = None
            raise
        finally:
            self._give_back(worker)
        return results

    def _take(self) -> _Worker | None:
        """An idle worker, or None when the caller may start one (a free place in the pool)."""
        import os

        with self._lock:
            if self._pid != os.getpid():  # a forked child: the workers and their pipes are the parent's
                self._idle, self._started, self._wanted, self._pid = [], 0, [], os.getpid()
                self.size = self._base_size
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._started < self.size:
                    self._started += 1
                    return None
                self._lock.wait()

    def _give_back(self, worker: _Worker | None) -> None:
        with self._lock:
            if worker is not None and not self._closed and self._started <= self.size:
                self._idle.append(worker)
            else:
                if worker is not None:
                    worker.kill()
                self._started -= 1
            self._lock.notify()

    @contextlib.contextmanager
    def at_least(self, size: int):
        """Room for `size` workers during the block; the ones above the usual size are stopped after it."""
        with self._lock:
            self._wanted.append(size)
            self._resize()
        try:
            yield self
        finally:
            with self._lock:
                self._wanted.remove(size)
                self._resize()

    def _resize(self) -> None:
        self.size = max([self._base_size, *self._wanted])
        while self._started > self.size and self._idle:
            self._idle.pop().kill()
            self._started -= 1
        self._lock.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.kill()


# Pairs that overran the deadline, answered False without another try (a few hundred bytes each, last 1,024 kept).
OVERRUNS: dict = {}
_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def _overran(gold: str, pred: str) -> None:
    import logging

    with _POOL_LOCK:
        OVERRUNS[(gold, pred)] = True
        while len(OVERRUNS) > 1024:
            del OVERRUNS[next(iter(OVERRUNS))]
    logging.getLogger("rtool").warning("math-verify gave no verdict within %g s on answer %r (gold %r): graded False",
                                       VERIFY_DEADLINE_S, _shorten(pred), _shorten(gold))


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def shared_pool() -> VerifierPool:
    """The pool `verify` and `grade_many` use: one worker per thread that verifies at once, at most 4 (each holds
    sympy, ~60 MB) outside grade_many(workers=N)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            import atexit
            import os

            _POOL = VerifierPool(max(1, min(4, os.cpu_count() or 1)))
            atexit.register(_POOL.close)
        return _POOL
