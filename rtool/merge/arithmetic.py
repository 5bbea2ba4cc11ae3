"""The per-tensor arithmetic of merge-bai (BAI, arXiv 2509.00309), as plain numpy functions on fp32 arrays.

    stage 1:  θ_mid = w · θ_reasoning + (1 − w) · θ_instruct
    stage 2:  θ_bai = v · θ_mid + (1 − v) · θ_pretrained

    merged = bai("linear", reasoning, instruct, pretrained, w=0.5, v=0.5)      # whole arrays
    bai_stage1(method, r, i, p, w, out, scratch); bai_stage2(method, mid, p, v, out, scratch)  # per chunk

Both methods in METHODS equal mergekit's, bit for bit in fp32: `linear_pair` (mergekit `linear`, normalize: true,
FMA rounding reproduced exactly) and `task_arithmetic_pair` (mergekit `task_arithmetic`). A `Scratch` holds one
thread's reusable buffers. No I/O, no error handling: rtool.merge.bai checks weights and streams tensors through here.
"""

from __future__ import annotations

import math

import numpy as np

_INT64_MIN = np.iinfo(np.int64).min


class Scratch:
    """Reusable buffers of one thread, so a merge allocates per thread, not per chunk."""

    def __init__(self):
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, key: str, n: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.nbytes < n * dtype.itemsize:
            buffer = np.empty(n * dtype.itemsize, dtype=np.uint8)
            self._buffers[key] = buffer
        return buffer[: n * dtype.itemsize].view(dtype)


def linear_pair(a: np.ndarray, wa: float, b: np.ndarray, wb: float, out: np.ndarray,
                scratch: Scratch | None = None) -> np.ndarray:
    """out = (wa·a + wb·b) / (wa + wb) on fp32 arrays, rounded exactly like mergekit's `linear` (normalize: true).

    mergekit (merge_methods/linear.py) computes, in fp32: result = zeros; result.addcmul_(a, wa);
    result.addcmul_(b, wb); result.div_(wa + wb). torch's addcmul is a fused multiply-add on CPUs with FMA and on
    GPUs, so per element: t = fma(a, wa, +0); out = fma(b, wb, t) / fl32(wa + wb). numpy has no FMA. When wb is a
    power of two (w = 0.5, the default) b·wb is exact in fp32 and a plain fp32 add is the fused result. Otherwise
    b·wb is exact in fp64 (24 + 24 bits), so fl32(fl64(b·wb + t)) is the fused result except where the fp64 sum
    was rounded onto an fp32 halfway point (double rounding); those elements are found by their bit pattern and
    recomputed exactly (`_fma32_exact`). `out` must not alias `a` or `b`.
    """
    scratch = scratch or Scratch()
    wa32, wb32 = np.float32(wa), np.float32(wb)
    t = scratch.get("linear.t", a.size, np.float32).reshape(a.shape)
    if wa32 == 0:
        np.multiply(a, wa32, out=t)
        np.add(t, np.float32(0), out=t)
    elif _has_negative_zero(a):
        # fma(a, wa, +0) equals (a + 0) · wa: adding +0 first turns -0 into +0 as the fused add would, and an
        # underflowing negative product keeps its sign in both.
        np.add(a, np.float32(0), out=t)
        np.multiply(t, wa32, out=t)
    else:
        np.multiply(a, wa32, out=t)  # without -0 in `a`, a · wa already equals fma(a, wa, +0)
    if _is_power_of_two(wb32) and _exact_product(b, wb32, out):
        # b·wb is exact in fp32 here, so one fp32 add rounds b·wb + t once, as the FMA does: no fp64 needed.
        np.add(out, t, out=out)
    elif _product_grid_ok(wb32):
        s = scratch.get("linear.s", a.size, np.float64).reshape(a.shape)
        np.multiply(b, np.float64(wb32), out=s)
        np.add(s, t, out=s)
        np.copyto(out, s, casting="same_kind")
        if not _is_power_of_two(wb32):
            # An fp32 halfway point in the normal range has fp64 fraction bits 28..0 equal to 1000...0. Shifting
            # them to the top leaves exactly INT64_MIN there, and a min() finds it faster than a compare would.
            # Exact sums that land there are rounded right already; _fma32_exact redoes them all the same.
            bits = s.view(np.uint64)
            np.left_shift(bits, np.uint64(35), out=bits)
            if bits.view(np.int64).min() == _INT64_MIN:
                flat = np.flatnonzero(bits.view(np.int64).ravel() == _INT64_MIN)
                out.ravel()[flat] = _fma32_exact(b.ravel()[flat], wb32, t.ravel()[flat])
    else:
        np.copyto(out, _fma32_exact(b, wb32, t))
    denominator = np.float32(wa32 + wb32)
    if denominator != 1:
        np.divide(out, denominator, out=out)
    return out


def _exact_product(b: np.ndarray, w32: np.float32, out: np.ndarray) -> bool:
    """out = b·w in fp32; True if every product is exact. For w a power of two only an underflow (a product
    below the normal range losing bits) can round, and the hardware flags exactly that."""
    try:
        with np.errstate(under="raise"):
            np.multiply(b, w32, out=out)
    except FloatingPointError:
        return False
    return True


def _has_negative_zero(a: np.ndarray) -> bool:
    # -0.0 is 0x80000000, the smallest int32: one fast min() instead of a pass that writes.
    if not a.flags.c_contiguous:
        return True
    return bool(a.reshape(-1).view(np.int32).min() == np.iinfo(np.int32).min)


def _is_power_of_two(w32: np.float32) -> bool:
    """True for 0 and powers of two (0.5, 0.25, 1): then b·w has b's 24 bits, and an fp64 sum b·w + t that is
    rounded at all lies far from any fp32 halfway point (its smaller term is below 2^-29 of the larger), so no
    double rounding can happen and the check is skipped. Sums of so few bits often land exactly on halfway
    points, which would otherwise all go the slow way."""
    return w32 == 0 or math.frexp(float(w32))[0] == 0.5


def _product_grid_ok(w32: np.float32) -> bool:
    """True when w is a multiple of 2^-30: then b·w + t is a multiple of 2^-179 and every result below the fp32
    normal range (2^-126) is exact in fp64, so the halfway-point check above needs to cover only normal numbers.
    Weights from 2^-7 to 1 always are; smaller ones take the exact path."""
    return w32 == 0 or float(w32) * 2.0**30 == math.floor(float(w32) * 2.0**30)


def _fma32_exact(b: np.ndarray, w32: np.float32, c: np.ndarray) -> np.ndarray:
    """fl32(b·w + c) rounded once, for fp32 arrays b, c: fp64 sum with round-to-odd, then round to fp32.

    Rounding to odd in a format with at least 2p + 2 bits, then to nearest in p bits, is correctly rounded
    (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd",
    IEEE TC 2008); 53 >= 2·24 + 2. The fp64 rounding error comes from Knuth's TwoSum.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        p = b.astype(np.float64) * np.float64(w32)
        c64 = c.astype(np.float64)
        s = p + c64
        bb = s - p
        error = (p - (s - bb)) + (c64 - bb)
        even = (s.view(np.uint64) & np.uint64(1)) == 0
        fix = (error != 0) & even & np.isfinite(s)
    s[fix] = np.nextafter(s[fix], np.where(error[fix] > 0, np.inf, -np.inf))
    return s.astype(np.float32)


def task_arithmetic_pair(base: np.ndarray, x: np.ndarray, wx: float, y: np.ndarray | None, wy: float,
                         out: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """out = base + (wx·(x − base) + wy·(y − base)) in fp32, as mergekit's `task_arithmetic` (normalize: false,
    lambda 1) rounds it: each delta is computed, scaled and summed as separate fp32 operations. `y=None` merges
    one model: out = base + wx·(x − base). `out` must not alias the inputs."""
    scratch = scratch or Scratch()
    np.subtract(x, base, out=out)
    np.multiply(out, np.float32(wx), out=out)
    if y is not None:
        d = scratch.get("task.d", base.size, np.float32).reshape(base.shape)
        np.subtract(y, base, out=d)
        np.multiply(d, np.float32(wy), out=d)
        np.add(out, d, out=out)
    np.add(base, out, out=out)
    return out


# The methods bai_stage1 and bai_stage2 implement; rtool.merge.bai runs the others through mergekit.
METHODS = ("linear", "task-arithmetic")


def bai_stage1(method: str, reasoning: np.ndarray, instruct: np.ndarray, pretrained: np.ndarray, w: float,
               out: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """θ_mid = w·θ_reasoning + (1 − w)·θ_instruct (task-arithmetic: as deltas from θ_pretrained)."""
    if method == "linear":
        return linear_pair(reasoning, w, instruct, 1.0 - w, out, scratch)
    return task_arithmetic_pair(pretrained, reasoning, w, instruct, 1.0 - w, out, scratch)


def bai_stage2(method: str, mid: np.ndarray, pretrained: np.ndarray, v: float, out: np.ndarray,
               scratch: Scratch | None = None) -> np.ndarray:
    """θ_bai = v·θ_mid + (1 − v)·θ_pretrained (task-arithmetic: θ_P + v·(θ_mid − θ_P))."""
    if method == "linear":
        return linear_pair(mid, v, pretrained, 1.0 - v, out, scratch)
    return task_arithmetic_pair(pretrained, mid, v, None, 0.0, out, scratch)


def bai(method: str, reasoning: np.ndarray, instruct: np.ndarray, pretrained: np.ndarray, w: float, v: float,
        scratch: Scratch | None = None) -> np.ndarray:
    """Both stages on whole fp32 arrays; returns θ_bai. The streaming merge calls the stages chunk by chunk."""
    scratch = scratch or Scratch()
    mid = bai_stage1(method, reasoning, instruct, pretrained, w, np.empty_like(reasoning), scratch)
    return bai_stage2(method, mid, pretrained, v, np.empty_like(reasoning), scratch)
