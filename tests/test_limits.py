"""Size limits: element counts and byte sizes are computed in 64-bit with
overflow checks; requests that cannot be met fail with ValueError or
MemoryError before any work starts; and arrays of more than 2**31 elements are
indexed correctly (where this machine has the memory to show it).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import pytconv

psutil = pytest.importorskip("psutil")

HUGE = 2**40  # elements: 4 TiB of float32, far beyond any test machine

# ---- shape helpers: sizes computed exactly, rejected when not addressable ------


@pytest.mark.parametrize(
    "input_shape, weight_shape",
    [
        ((1, 1, 2**64), (1, 1, 1)),  # a size beyond int64
        ((2**32, 2**32, 4), (1, 2**32, 1)),  # a product beyond int64
        ((1, 1) + (2**31,) * 2, (1, 1, 1, 1)),  # 2**62 elements: 2**65 bytes
        ((1, 1) + (2,) * 62, (1, 1) + (1,) * 62),  # 62 dims of 2: 2**62 elements
        ((1, 2**62, 2), (2**62, 1, 1)),  # channels alone overflow the byte count
        ((1, 1, 8), (2**31, 1, 2**31)),  # a weight of 2**62 elements
    ],
)
def test_shape_helpers_reject_unaddressable_sizes(input_shape, weight_shape):
    # Python ints never overflow, so the check is exact; the C core would
    # overflow on these.
    with pytest.raises(ValueError, match="conv_output_shape"):
        pytconv.conv_output_shape(input_shape, weight_shape)
    transposed_weight = (weight_shape[1], weight_shape[0]) + tuple(weight_shape[2:])
    if input_shape[1] == transposed_weight[0]:
        with pytest.raises(ValueError, match="conv_transpose_output_shape"):
            pytconv.conv_transpose_output_shape(input_shape, transposed_weight)


def test_shape_helpers_accept_large_addressable_sizes():
    # 2**58 elements (2**61 bytes of float64) is addressable, if not allocatable.
    assert pytconv.conv_output_shape((2**20, 1, 2**38), (1, 1, 3)) == (2**20, 1, 2**38 - 2)
    assert pytconv.conv_transpose_output_shape((1, 1, 2**40), (1, 1, 3), stride=2**10) == (
        1, 1, (2**40 - 1) * 2**10 + 3)


def test_transposed_output_overflowing_int64_is_a_value_error():
    # (in - 1) * stride overflows int64 long before memory is considered.
    with pytest.raises(ValueError, match="conv_transpose_output_shape"):
        pytconv.conv_transpose_output_shape((1, 1, 2**33), (1, 1, 1), stride=2**33)


# ---- allocation failures are clean and early ----------------------------------------


def _quick(call, expected):
    """Runs call, which must raise `expected` within a second (no work done)."""
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with pytest.raises(expected) as info:
        call()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"took {elapsed:.2f} s to fail: work started before the size was refused"
    grown = psutil.Process().memory_info().rss - rss
    assert grown < 256 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB before failing"
    return info.value


def test_huge_input_from_a_zero_stride_view():
    # A broadcast view costs nothing, but the core needs it contiguous: that
    # copy (4 TiB) is refused before any arithmetic.
    x = np.broadcast_to(np.float32(1), (1, 1, HUGE))
    w = np.ones((1, 1, 3), np.float32)
    _quick(lambda: pytconv.conv(x, w), MemoryError)


def test_output_too_large_to_allocate():
    # Small inputs, an output of 2**47 bytes: more than any address space
    # allows, whatever the overcommit policy.
    x = np.ones((1, 1, 2**10), np.float32)
    w = np.ones((1, 1, 1), np.float32)
    stride = 2**36
    assert pytconv.conv_transpose_output_shape(x.shape, w.shape, stride=stride)[2] * 4 > 2**47
    _quick(lambda: pytconv.conv_transpose(x, w, stride=stride), MemoryError)


def test_input_grad_too_large_to_allocate():
    # The input gradient of a conv whose input would be 2**48 bytes (its
    # output, with stride 2**46, is a single element).
    w = np.ones((1, 1, 1), np.float32)
    g = np.ones((1, 1, 1), np.float32)
    _quick(lambda: pytconv.conv_input_grad((1, 1, 2**46), w, g, stride=2**46), MemoryError)


def test_working_buffer_too_large_is_a_memory_error():
    # Replicate padding pads an explicit copy of the input: 2**46 + 8 padded
    # elements (2**48 bytes) with an output of 2 elements. The core's own
    # allocation fails and reports it.
    x = np.ones((1, 1, 8), np.float32)
    w = np.ones((1, 1, 1), np.float32)
    pad = 2**45
    err = _quick(lambda: pytconv.conv(x, w, padding=pad, padding_mode="replicate", stride=pad), MemoryError)
    assert str(err)


def test_zero_padding_far_larger_than_the_input():
    # Zero padding is never materialised: 2**40 zeros on each side with a
    # stride that visits a few positions is cheap, and exact.
    x = np.arange(1, 9, dtype=np.float64).reshape(1, 1, 8)
    w = np.array([[[1.0, 10.0]]])
    pad, stride = 2**40, 2**40 + 3
    y = pytconv.conv(x, w, padding=pad, stride=stride)
    # Padded length 8 + 2 * pad; window o starts at o * stride - pad in input coordinates.
    expected = []
    for o in range(y.shape[2]):
        start = o * stride - pad
        expected.append(sum(w[0, 0, k] * x[0, 0, start + k] for k in range(2) if 0 <= start + k < 8))
    np.testing.assert_array_equal(y[0, 0], expected)
    assert y.shape == (1, 1, (8 + 2 * pad - 2) // stride + 1)


def test_zero_padding_far_larger_than_the_input_with_long_and_depthwise_kernels():
    # The paths that build a padded row or plane (long 1-d kernels, depthwise)
    # must leave such paddings to the ones that do not build them.
    rng = np.random.default_rng(3)
    cases = ((1, (2, 3, 64), 48, 2**22), (3, (3, 1, 5), 2**40 + 1, 2**40))
    for groups, w_shape, stride, pad in cases:
        x = rng.standard_normal((2, 3, 80))
        w = rng.standard_normal(w_shape)
        kw = dict(padding=pad, stride=stride, groups=groups)
        y = pytconv.conv(x, w, **kw)
        k, cin_g, cout_g = w_shape[2], w_shape[1], w_shape[0] // groups
        assert y.shape[2] == (80 + 2 * pad - k) // stride + 1
        reach = range(max(0, (pad - k) // stride), min(y.shape[2], (pad + 80) // stride + 2))
        for o in reach:  # the outputs whose windows reach the input; the rest are 0
            start = o * stride - pad
            ks = [j for j in range(k) if 0 <= start + j < 80]
            for co in range(y.shape[1]):
                grp = co // cout_g
                want = sum(w[co, c, j] * x[:, grp * cin_g + c, start + j] for c in range(cin_g) for j in ks)
                np.testing.assert_allclose(y[:, co, o], want + np.zeros(2), rtol=1e-12, atol=1e-12)
        assert not y[:, :, [o for o in range(y.shape[2]) if o not in reach][:1000]].any()
        g = rng.standard_normal(y.shape)
        dx = pytconv.conv_input_grad(x.shape, w, g, **kw)
        dw = pytconv.conv_weight_grad(x, w.shape, g, **kw)
        # the adjoint identities <conv(x), g> == <x, dx> == <w, dw>
        assert np.isclose(np.vdot(y, g), np.vdot(x, dx), rtol=1e-12)
        assert np.isclose(np.vdot(y, g), np.vdot(w, dw), rtol=1e-12)


@pytest.mark.parametrize("fn", [pytconv.conv, pytconv.conv_transpose])
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [2**63, 2**64, 2**200])
def test_int64_overflowing_arguments_are_value_errors(fn, name, value):
    # Sizes that leave the output small but cannot reach the C core as int64.
    x = np.ones((1, 1, 4), np.float32)
    w = np.ones((1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=f"{fn.__name__}: {name}"):
        fn(x, w, **{name: value})


@pytest.mark.parametrize("fn", [pytconv.conv, pytconv.conv_transpose])
def test_core_overflow_errors_name_the_function(fn):
    x = np.ones((1, 1, 4), np.float32)
    w = np.ones((1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=f"{fn.__name__}.*dilation"):
        fn(x, w, dilation=2**61)


# ---- more than 2**31 elements ------------------------------------------------------------

# Values i % 1021 - 510 at flat index i: exact in float32, as are the sums of
# three of them times small powers of two, so results compare exactly.
_PERIOD = 1021
_TAPS = np.array([1.0, 2.0, 4.0], np.float32)


def _need_memory(nbytes):
    available = psutil.virtual_memory().available
    if available < nbytes + 3 * 2**30:
        pytest.skip(
            f"needs {nbytes / 2**30:.1f} GiB (+3 GiB margin), {available / 2**30:.1f} GiB available"
        )


def _pattern(n):
    """A float32 array of n elements holding i % 1021 - 510."""
    x = np.empty(n, np.float32)
    period = (np.arange(_PERIOD) - _PERIOD // 2).astype(np.float32)
    whole = n - n % _PERIOD
    x[:whole].reshape(-1, _PERIOD)[:] = period
    x[whole:] = period[: n - whole]
    return x


def _value(i):
    return np.float32(np.asarray(i) % _PERIOD - _PERIOD // 2)


def _chunks(n, size=2**24):
    for start in range(0, n, size):
        yield start, min(start + size, n)


@pytest.mark.slow
def test_conv_input_of_more_than_2_31_elements():
    # x: 2**31 + 37 samples (8 GiB); y = conv(x, taps, stride 2, padding 1):
    # y[o] = sum_k taps[k] * x[2 o + k - 1], read across the 2**31 boundary.
    n = 2**31 + 37
    out = (n + 2 - 3) // 2 + 1
    _need_memory(4 * (n + out))
    x = _pattern(n).reshape(1, 1, n)
    y = pytconv.conv(x, _TAPS.reshape(1, 1, 3), stride=2, padding=1)
    assert y.shape == (1, 1, out)
    y = y.reshape(-1)
    # Spot checks at the start, around input index 2**31 and at the end ...
    for o in (0, 1, 2**30 - 1, 2**30, 2**30 + 1, out - 1):
        expected = sum(_TAPS[k] * _value(2 * o + k - 1) for k in range(3) if 0 <= 2 * o + k - 1 < n)
        assert y[o] == expected, (o, y[o], expected)
    # ... then every element, chunk by chunk: outputs lo..hi read the padded
    # input 2 lo .. 2 hi (padded index = input index + 1).
    flat = x.reshape(-1)
    for lo, hi in _chunks(out):
        window = np.zeros(2 * (hi - lo) + 1, np.float32)
        first = 2 * lo - 1
        src_lo, src_hi = max(first, 0), min(2 * hi, n)
        window[src_lo - first: src_hi - first] = flat[src_lo:src_hi]
        expected = _TAPS[0] * window[0:-1:2] + _TAPS[1] * window[1::2] + _TAPS[2] * window[2::2]
        np.testing.assert_array_equal(y[lo:hi], expected, err_msg=f"outputs {lo}..{hi}")


@pytest.mark.slow
def test_conv_transpose_output_of_more_than_2_31_elements():
    # x: 2**30 + 11 samples; conv_transpose with stride 2 writes 2**31 + 23
    # outputs (8 GiB): out[2 j + k] += taps[k] * x[j], across the 2**31 boundary.
    m = 2**30 + 11
    n = (m - 1) * 2 + 3
    _need_memory(4 * (n + m))
    x = _pattern(m).reshape(1, 1, m)
    y = pytconv.conv_transpose(x, _TAPS.reshape(1, 1, 3), stride=2)
    assert y.shape == (1, 1, n) and n > 2**31
    y = y.reshape(-1)
    for i in (0, 1, 2, 2**31 - 1, 2**31, 2**31 + 1, n - 1):
        expected = sum(_TAPS[k] * _value((i - k) // 2) for k in range(3)
                       if (i - k) % 2 == 0 and 0 <= (i - k) // 2 < m)
        assert y[i] == expected, (i, y[i], expected)
    # Every element: inputs lo..hi scatter into outputs 2 lo .. 2 hi (+1 spill
    # carried into the next chunk).
    flat = x.reshape(-1)
    carry = np.float32(0)
    for lo, hi in _chunks(m):
        xs = flat[lo:hi]
        window = np.zeros(2 * (hi - lo) + 1, np.float32)
        window[0:-1:2] += _TAPS[0] * xs
        window[1::2] += _TAPS[1] * xs
        window[2::2] += _TAPS[2] * xs
        window[0] += carry
        carry = window[-1]
        np.testing.assert_array_equal(y[2 * lo: 2 * hi], window[:-1], err_msg=f"outputs {2 * lo}..{2 * hi}")
    assert y[n - 1] == carry
