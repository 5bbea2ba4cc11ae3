"""The merge arithmetic and the safetensors I/O of merge-bai, as plain functions.

The reference for `linear_pair` is mergekit's own kernel (merge_methods/linear.py) run with torch, copied below
op for op, so these tests hold rtool to mergekit's rounding without mergekit installed.
"""

import math

import numpy as np
import pytest

from rtool.errors import UserError
from rtool.merge.bai import check_weight, parse_sweep
from rtool.merge.arithmetic import Scratch, _fma32_exact, bai, linear_pair, task_arithmetic_pair
from rtool.io.tensors import ShardWriter, fp32_to, list_tensors, plan_shards, Reader


def mergekit_linear(tensors, weights):
    """mergekit's linear_merge (normalize: true) on one output, in torch, as mergekit 0.1.5 writes it."""
    import torch

    batch = [torch.from_numpy(np.ascontiguousarray(t))[None] for t in tensors]
    first = batch[0]
    weight = torch.tensor([weights], dtype=torch.float64).to(torch.float32)
    shape = (first.shape[0],) + (1,) * (first.ndim - 1)
    denominator = weight.sum(dim=1).reshape(shape)
    result = torch.zeros_like(first, dtype=torch.float32)
    for tensor, coefficient in zip(batch, weight.unbind(1)):
        result.addcmul_(tensor, coefficient.reshape(shape))
    result.div_(denominator)
    return result[0].numpy()


def mergekit_task_arithmetic(base, models, weights):
    """mergekit's task_arithmetic (normalize: false, lambda 1) in torch, as merge_group computes it."""
    import torch

    base_t = torch.from_numpy(base)
    deltas = base_t.new_empty((len(models), *base_t.shape))
    for k, model in enumerate(models):
        deltas[k] = torch.from_numpy(model) - base_t
    w = torch.tensor(weights, dtype=deltas.dtype)
    while deltas.dim() > w.dim():
        w.unsqueeze_(-1)
    deltas.mul_(w)
    return (base_t + deltas.sum(dim=0)).numpy()


def bits(x):
    return np.ascontiguousarray(x).view(np.uint32)


def random_pair(n, seed, spread=(1.0,)):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n).astype(np.float32)
    b = (rng.standard_normal(n) * rng.choice(spread, n)).astype(np.float32)
    return a, b


@pytest.mark.parametrize("wa", [0.5, 0.3, 0.123, 0.9, 1.0, 0.0, 0.001, 1e-9, 0.7000000000000001])
def test_linear_pair_equals_mergekit_bit_for_bit(wa):
    a, b = random_pair(200_003, seed=1, spread=(1.0, 1e-3, 1e3, 1e-20, 1e20))
    # Signed zeros and subnormals, where a fused and an unfused add differ in sign or rounding.
    a[:6] = [-0.0, 0.0, -1e-45, 1e-45, -3e-39, -0.0]
    b[:6] = [-0.0, -0.0, -0.0, -1e-45, 2e-39, 1.0]
    out = linear_pair(a, wa, b, 1.0 - wa, np.empty_like(a))
    assert np.array_equal(bits(out), bits(mergekit_linear([a, b], [wa, 1.0 - wa])))


def test_linear_pair_weights_not_summing_to_one_divide_like_mergekit():
    a, b = random_pair(10_000, seed=2)
    out = linear_pair(a, 0.5, b, 0.3, np.empty_like(a))
    assert np.array_equal(bits(out), bits(mergekit_linear([a, b], [0.5, 0.3])))


def double_rounding_case():
    """b, wb with b·wb just above half an fp32 ulp of 1024: fl64(1024 + b·wb) is an fp32 halfway point."""
    rng = np.random.default_rng(0)
    while True:
        wb = np.float32(rng.uniform(0.25, 1.0))
        b0 = np.float32(2.0**-14 / float(wb))
        for b in (b0, np.nextafter(b0, np.float32(1)), np.nextafter(b0, np.float32(0))):
            if 0 < float(b) * float(wb) - 2.0**-14 < 2.0**-43:
                return b, wb


def test_linear_pair_fixes_double_rounding_like_a_fused_multiply_add():
    b, wb = double_rounding_case()
    a = np.array([2.0**11, -(2.0**11)], np.float32)
    bs = np.array([b, -b], np.float32)
    out = linear_pair(a, 0.5, bs, float(wb), np.empty_like(a))
    # The naive fp64 route lands on the halfway point 1024 + 2^-14 and rounds to even (1024): wrong.
    naive = np.float32(np.float64(1024.0) + np.float64(b) * np.float64(wb))
    fused = np.float32(1024.0 + 2.0**-13)
    assert naive == 1024.0
    assert np.array_equal(bits(out), bits(mergekit_linear([a, bs], [0.5, float(wb)])))
    denominator = np.float32(np.float32(0.5) + wb)
    assert out[0] == np.float32(fused) / denominator != naive / denominator


@pytest.mark.parametrize("case", ["halfway", "random", "tiny", "inf"])
def test_fma32_exact_is_correctly_rounded(case):
    rng = np.random.default_rng(3)
    if case == "halfway":
        b, w = double_rounding_case()
        bs, cs = np.array([b, -b], np.float32), np.array([1024.0, -1024.0], np.float32)
    elif case == "random":
        w = np.float32(0.3)
        bs, cs = random_pair(10_000, seed=4, spread=(1.0, 1e-6, 1e6))
    elif case == "tiny":
        w = np.float32(1e-9)
        bs, cs = (rng.standard_normal(10_000) * 1e-30).astype(np.float32), np.full(10_000, 1e-38, np.float32)
    else:
        w = np.float32(0.5)
        bs, cs = np.array([np.inf, -np.inf, 1.0, np.nan], np.float32), np.array([1.0, 1.0, np.inf, 1.0], np.float32)
    got = _fma32_exact(bs, w, cs)
    for k in range(min(len(bs), 2000)):
        if not math.isfinite(float(bs[k])) or not math.isfinite(float(cs[k])):
            expect = np.float32(float(bs[k]) * float(w) + float(cs[k]))
        else:
            from fractions import Fraction

            exact = Fraction(float(bs[k])) * Fraction(float(w)) + Fraction(float(cs[k]))
            expect = _round_to_fp32(exact)
        assert bits(np.array([got[k]]))[0] == bits(np.array([expect]))[0] or (np.isnan(got[k]) and np.isnan(expect))


def _round_to_fp32(exact):
    """Round a Fraction to the nearest fp32, ties to even (reference implementation, slow)."""
    if exact == 0:
        return np.float32(0.0)
    lo = np.float32(float(exact))  # within an ulp of the answer; search the neighbours exactly
    from fractions import Fraction

    candidates = [np.nextafter(lo, np.float32(-np.inf)), lo, np.nextafter(lo, np.float32(np.inf))]
    best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(bits(np.array([c]))[0]) & 1))
    return best


def test_task_arithmetic_pair_equals_mergekit():
    rng = np.random.default_rng(5)
    base, x, y = (rng.standard_normal(50_000).astype(np.float32) for _ in range(3))
    out = task_arithmetic_pair(base, x, 0.3, y, 0.7, np.empty_like(base))
    assert np.array_equal(out, mergekit_task_arithmetic(base, [x, y], [0.3, 0.7]))
    one = task_arithmetic_pair(base, x, 0.6, None, 0.0, np.empty_like(base))
    assert np.array_equal(one, mergekit_task_arithmetic(base, [x], [0.6]))


@pytest.mark.parametrize("method", ["linear", "task-arithmetic"])
def test_bai_is_the_two_stage_formula(method):
    rng = np.random.default_rng(6)
    r, i, p = (rng.standard_normal(1000).astype(np.float32) for _ in range(3))
    got = bai(method, r, i, p, 0.3, 0.6)
    expect = 0.6 * (0.3 * r.astype(np.float64) + 0.7 * i) + 0.4 * p
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("w,v,expect", [(0.5, 0.5, (0.25, 0.25, 0.5)), (1.0, 1.0, (1, 0, 0)), (0.0, 1.0, (0, 1, 0)),
                                        (0.3, 0.0, (0, 0, 1))])
def test_bai_coefficients_table(w, v, expect):
    r, i, p = (np.full(4, x, np.float32) for x in (1.0, 10.0, 100.0))
    got = bai("linear", r, i, p, w, v, Scratch())
    assert got[0] == pytest.approx(expect[0] * 1 + expect[1] * 10 + expect[2] * 100, rel=1e-6)


@pytest.mark.parametrize("text,pairs", [("0.3:0.5", [(0.3, 0.5)]), ("0.3:0.5, 0.7:0.2", [(0.3, 0.5), (0.7, 0.2)]),
                                        ("0:1,1:0,", [(0.0, 1.0), (1.0, 0.0)])])
def test_parse_sweep(text, pairs):
    assert parse_sweep(text) == pairs


@pytest.mark.parametrize("text", ["", "0.3", "0.3:0.5:1", "a:b", "1.5:0.5", "0.5:-0.1", "0.3:0.5,0.3:0.5", "nan:0.5"])
def test_parse_sweep_rejects(text):
    with pytest.raises(UserError):
        parse_sweep(text)


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), float("inf")])
def test_check_weight_rejects_outside_unit_interval(value):
    with pytest.raises(UserError, match=r"w must be in \[0, 1\]"):
        check_weight("w", value)


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_fp32_to_rounds_like_torch(dtype):
    import torch

    rng = np.random.default_rng(7)
    x = (rng.standard_normal(100_000) * rng.choice([1e-6, 1.0, 1e4], 100_000)).astype(np.float32)
    x[:4] = [0.0, -0.0, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8]  # bf16 ties, to even
    got = fp32_to(dtype, x, np.empty(x.size * 2, np.uint8))
    torch_dtype = torch.bfloat16 if dtype == "BF16" else torch.float16
    expect = torch.from_numpy(x).to(torch_dtype).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(got, expect)


def test_shards_round_trip_through_safetensors(tmp_path):
    from safetensors.numpy import load_file

    rng = np.random.default_rng(8)
    tensors = {"b.weight": rng.standard_normal((5, 3)).astype(np.float32), "a.bias": np.arange(7, dtype=np.float32),
               "c.weight": rng.standard_normal((40, 10)).astype(np.float32)}
    shards = plan_shards([(n, "F32", t.shape) for n, t in tensors.items()], max_shard_size=1000)
    assert len(shards) == 2 and shards[0].filename == "model-00001-of-00002.safetensors"
    with ShardWriter(tmp_path, shards) as writer:
        for name, t in tensors.items():  # two halves, second first: order does not matter
            half = t.shape[0] // 2
            writer.write(name, half * t[0].nbytes if t.ndim > 1 else half * 4, t[half:])
            writer.write(name, 0, t[:half])
        writer.close(sync=True)
    from rtool.io.tensors import write_index

    write_index(tmp_path, shards)
    loaded = {}
    for shard in shards:
        loaded.update(load_file(tmp_path / shard.filename))
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert np.array_equal(loaded[name], t)
    entries = list_tensors(tmp_path)
    with Reader() as reader:
        rows = reader.rows_fp32(entries["c.weight"], 10, 5, np.empty(50, np.float32))
        assert np.array_equal(rows.reshape(5, 10), tensors["c.weight"][10:15])
        reader.release(entries["c.weight"], 10, 5)


def test_reader_widens_bf16_and_f16(tmp_path):
    import torch
    from safetensors.torch import save_file

    x = torch.randn(6, 4)
    save_file({"h": x.half(), "b": x.bfloat16()}, tmp_path / "model.safetensors")
    entries = list_tensors(tmp_path)
    with Reader() as reader:
        for name, expect in (("h", x.half().float()), ("b", x.bfloat16().float())):
            got = reader.rows_fp32(entries[name], 2, 3, np.empty(12, np.float32))
            assert np.array_equal(got.reshape(3, 4), expect[2:5].numpy())


@pytest.mark.parametrize("wa", [0.5, 0.75, 0.0, 1.0])
def test_power_of_two_weights_with_subnormals_and_signed_zeros(wa):
    """wb = 1 - wa a power of two takes the fp32 route; subnormal products must still round like the FMA."""
    rng = np.random.default_rng(9)
    n = 100_000
    a = (rng.standard_normal(n) * rng.choice([1.0, 1e-38, 1e-44], n)).astype(np.float32)
    b = (rng.standard_normal(n) * rng.choice([1.0, 1e-38, 1e-45], n)).astype(np.float32)
    a[:4], b[:4] = [-0.0, -0.0, 0.0, -1e-45], [-0.0, 0.0, -0.0, -1e-45]
    out = linear_pair(a, wa, b, 1.0 - wa, np.empty_like(a))
    assert np.array_equal(bits(out), bits(mergekit_linear([a, b], [wa, 1.0 - wa])))
