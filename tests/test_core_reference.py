"""The NumPy API against the independent float64 reference (pytconv.reference),
for random problems in 1 to 5 spatial dimensions: every operation and
gradient, the output-size rules, the adjoint identity and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytconv
from pytconv import reference
from pytconv._args import conv_problem, transposed_problem

from core_cases import (
    PADDING_MODES,
    adjoint_kwargs,
    assert_close,
    conv_cases,
    conv_size,
    same_pads,
    transposed_cases,
    transposed_size,
)

# A bounded number of examples per property keeps this file to about a minute
# on two busy cores; the 4-d and 5-d properties draw fewer, smaller problems.
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# "wide": many channels and larger 1-d/2-d sizes, past the core's tiles.
NDIMS = pytest.mark.parametrize(
    "ndims,wide", [((1, 2), False), ((3,), False), ((4, 5), False), ((1, 2), True)],
    ids=["1d2d", "3d", "4d5d", "wide1d2d"],
)


def _abs(*arrays):
    return [None if a is None else np.abs(a.astype(np.float64)) for a in arrays]


def _conv_problem(case):
    return conv_problem("test", case.x_shape, case.w_shape, **case.kwargs())


def _transposed_problem(tcase):
    return transposed_problem("test", tcase.t_shape, tcase.conv.w_shape, **tcase.kwargs())


# ---- forward operations ------------------------------------------------------


@NDIMS
def test_conv_matches_reference(ndims, wide):
    @SOME
    @given(conv_cases(ndims=ndims, wide=wide))
    def check(case):
        x, w, b, _ = case.arrays()
        got = pytconv.conv(x, w, b, **case.kwargs())
        ref = reference.conv(x, w, b, **case.kwargs())
        assert ref.shape == case.y_shape  # the reference agrees with the size rule too
        scale = reference.conv(*_abs(x, w, b), **case.kwargs())
        assert_close(got, ref, scale, case.dtype, f"conv {case}")

    check()


@NDIMS
def test_conv_transpose_matches_reference(ndims, wide):
    @SOME
    @given(transposed_cases(ndims=ndims, wide=wide))
    def check(tcase):
        t, w, b, _ = tcase.arrays()
        got = pytconv.conv_transpose(t, w, b, **tcase.kwargs())
        ref = reference.conv_transpose(t, w, b, **tcase.kwargs())
        assert ref.shape == tcase.out_shape
        scale = reference.conv_transpose(*_abs(t, w, b), **tcase.kwargs())
        assert_close(got, ref, scale, tcase.conv.dtype, f"conv_transpose {tcase}")

    check()


def test_conv_transpose_positional_arguments_follow_torch():
    # conv_transpose(x, weight, bias, stride, padding, output_padding, groups, dilation)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(6)
    got = pytconv.conv_transpose(x, w, b, 2, 1, 1, 2, 1)
    ref = reference.conv_transpose(x, w, b, stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    assert got.shape == (2, 6, 10, 11)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


# ---- gradients ----------------------------------------------------------------


@NDIMS
def test_conv_gradients_match_reference(ndims, wide):
    @FEW
    @given(conv_cases(ndims=ndims, wide=wide))
    def check(case):
        x, w, _, dy = case.arrays()
        p = _conv_problem(case)
        kw = case.kwargs()
        ax, aw, ady = _abs(x, w, dy)

        dx = pytconv.conv_input_grad(x.shape, w, dy, **kw)
        assert_close(dx, reference.backward_data(p, dy, w), reference.backward_data(p, ady, aw),
                     case.dtype, f"conv_input_grad {case}")

        dw = pytconv.conv_weight_grad(x, w.shape, dy, **kw)
        assert_close(dw, reference.backward_filter(p, x, dy), reference.backward_filter(p, ax, ady),
                     case.dtype, f"conv_weight_grad {case}")

        db = pytconv.bias_grad(dy)
        axes = (0,) + tuple(range(2, dy.ndim))
        assert_close(db, dy.astype(np.float64).sum(axis=axes), ady.sum(axis=axes), case.dtype, "bias_grad")

    check()


@NDIMS
def test_conv_transpose_gradients_match_reference(ndims, wide):
    @FEW
    @given(transposed_cases(ndims=ndims, wide=wide))
    def check(tcase):
        t, w, _, dout = tcase.arrays()
        p = _transposed_problem(tcase)  # the convolution this is the transpose of
        kw = tcase.grad_kwargs()
        at, aw, adout = _abs(t, w, dout)
        dtype = tcase.conv.dtype

        dt = pytconv.conv_transpose_input_grad(t.shape, w, dout, **kw)
        assert_close(dt, reference.forward(p, dout, w), reference.forward(p, adout, aw),
                     dtype, f"conv_transpose_input_grad {tcase}")

        dw = pytconv.conv_transpose_weight_grad(t, w.shape, dout, **kw)
        assert_close(dw, reference.backward_filter(p, dout, t), reference.backward_filter(p, adout, at),
                     dtype, f"conv_transpose_weight_grad {tcase}")

    check()


def test_bias_grad_of_two_dimensional_grad_output():
    dy = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(pytconv.bias_grad(dy), dy.sum(axis=0))
    assert pytconv.bias_grad(np.zeros((0, 3, 4), np.float32)).tolist() == [0.0, 0.0, 0.0]


# ---- the adjoint identity ------------------------------------------------------


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_conv_transpose_is_the_adjoint_of_conv(mode):
    """<conv(x), y> == <x, conv_transpose(y)> with the same arguments, conv_transpose's
    output sized like x (output_shape, or output_padding where that reaches it)."""

    @SOME
    @given(conv_cases(ndims=(1, 2, 3, 4), modes=(mode,), dtypes=(np.float64,)),
           st.sampled_from(("output_shape", "output_padding")))
    def check(case, spelling):
        x, w, _, y = case.arrays()
        kw = case.kwargs()
        back = pytconv.conv_transpose(y, w, **adjoint_kwargs(case, spelling), **kw)
        assert back.shape == x.shape
        lhs = np.vdot(pytconv.conv(x, w, **kw), y)
        rhs = np.vdot(x, back)
        scale = np.vdot(np.abs(pytconv.conv(np.abs(x), np.abs(w), **kw)), np.abs(y))
        assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs, case)

    check()


def test_weight_gradient_is_the_adjoint_in_the_weight():
    """<conv(x, w), dy> == <w, conv_weight_grad(x, dy)> (conv is linear in w), and the
    same for the transposed convolution."""

    @SOME
    @given(transposed_cases(ndims=(1, 2, 3), dtypes=(np.float64,)))
    def check(tcase):
        case = tcase.conv
        x, w, _, dy = case.arrays()
        kw = case.kwargs()
        lhs = np.vdot(pytconv.conv(x, w, **kw), dy)
        rhs = np.vdot(w, pytconv.conv_weight_grad(x, w.shape, dy, **kw))
        assert abs(lhs - rhs) <= 1e-12 * np.vdot(np.abs(pytconv.conv(np.abs(x), np.abs(w), **kw)), np.abs(dy))

        t, w, _, dout = tcase.arrays()
        lhs = np.vdot(pytconv.conv_transpose(t, w, **tcase.kwargs()), dout)
        rhs = np.vdot(w, pytconv.conv_transpose_weight_grad(t, w.shape, dout, **tcase.grad_kwargs()))
        scale = np.vdot(np.abs(pytconv.conv_transpose(np.abs(t), np.abs(w), **tcase.kwargs())), np.abs(dout))
        assert abs(lhs - rhs) <= 1e-12 * scale

    check()


# ---- finite differences ----------------------------------------------------------


def _central_differences(loss, array, coords, h):
    grads = []
    for c in coords:
        saved = array[c]
        array[c] = saved + h
        up = loss()
        array[c] = saved - h
        down = loss()
        array[c] = saved
        grads.append((up - down) / (2 * h))
    return np.array(grads)


def _coords(rng, shape, count=6):
    flat = rng.choice(int(np.prod(shape)), size=min(count, int(np.prod(shape))), replace=False)
    return [tuple(int(i) for i in np.unravel_index(f, shape)) for f in flat]


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_conv_gradients_against_finite_differences(mode):
    """L = |conv(x, w) + b - target|^2 / 2 is quadratic, so central differences
    are exact up to rounding: the gradients must agree to ~1e-8."""

    @FEW
    @given(conv_cases(ndims=(1, 2, 3), modes=(mode,), dtypes=(np.float64,)))
    def check(case):
        x, w, b, target = case.arrays()
        b = np.zeros(case.cout) if b is None else b
        kw = case.kwargs()

        def loss():
            return 0.5 * np.sum((pytconv.conv(x, w, b, **kw) - target) ** 2)

        r = pytconv.conv(x, w, b, **kw) - target
        rng = case.rng(7)
        for array, grad in (
            (x, pytconv.conv_input_grad(x.shape, w, r, **kw)),
            (w, pytconv.conv_weight_grad(x, w.shape, r, **kw)),
            (b, pytconv.bias_grad(r)),
        ):
            coords = _coords(rng, array.shape)
            fd = _central_differences(loss, array, coords, 1e-3)
            analytic = np.array([grad[c] for c in coords])
            np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-8 * (1 + loss()))

    check()


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_conv_transpose_gradients_against_finite_differences(mode):
    @FEW
    @given(transposed_cases(ndims=(1, 2, 3), modes=(mode,), dtypes=(np.float64,)))
    def check(tcase):
        t, w, b, target = tcase.arrays()
        b = np.zeros(tcase.conv.cin) if b is None else b
        kw, gkw = tcase.kwargs(), tcase.grad_kwargs()

        def loss():
            return 0.5 * np.sum((pytconv.conv_transpose(t, w, b, **kw) - target) ** 2)

        r = pytconv.conv_transpose(t, w, b, **kw) - target
        rng = tcase.conv.rng(7)
        for array, grad in (
            (t, pytconv.conv_transpose_input_grad(t.shape, w, r, **gkw)),
            (w, pytconv.conv_transpose_weight_grad(t, w.shape, r, **gkw)),
            (b, pytconv.bias_grad(r)),
        ):
            coords = _coords(rng, array.shape)
            fd = _central_differences(loss, array, coords, 1e-3)
            analytic = np.array([grad[c] for c in coords])
            np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-8 * (1 + loss()))

    check()


# ---- output-size rules --------------------------------------------------------------


def test_shape_helpers_follow_the_size_rules():
    @SOME
    @given(transposed_cases(ndims=(1, 2, 3, 4, 5, 6)))
    def check(tcase):
        case = tcase.conv
        assert pytconv.conv_output_shape(case.x_shape, case.w_shape, **case.kwargs()) == case.y_shape
        assert pytconv.conv_transpose_output_shape(tcase.t_shape, case.w_shape, **tcase.kwargs()) == tcase.out_shape

    check()


@pytest.mark.parametrize("n_in", range(1, 12))
@pytest.mark.parametrize("k,s,d", [(1, 1, 1), (3, 1, 1), (3, 2, 1), (4, 3, 1), (3, 2, 2), (5, 4, 3), (2, 5, 1)])
def test_same_padding_sizes(n_in, k, s, d):
    """"same": conv gives ceil(in / stride); conv_transpose gives in * stride,
    and with output_shape any size whose ceil(size / stride) is the input's."""
    assert pytconv.conv_output_shape((1, 1, n_in), (1, 1, k), s, "same", d)[2] == -(-n_in // s)
    assert pytconv.conv_transpose_output_shape((1, 1, n_in), (1, 1, k), s, "same", dilation=d)[2] == n_in * s
    for size in range((n_in - 1) * s + 1, n_in * s + 1):
        got = pytconv.conv_transpose_output_shape((1, 1, n_in), (1, 1, k), s, "same", dilation=d,
                                                  output_shape=(size,))
        assert got[2] == size
    lo, hi = same_pads(n_in, k, s, d)
    assert hi - lo in (0, 1)  # the odd cell goes at the end
    assert conv_size(n_in, k, s, d, lo, hi) == -(-n_in // s)


@pytest.mark.parametrize("ndim", [1, 2, 3, 4, 5])
def test_upsampling_2x_with_same_padding_in_every_rank(ndim):
    """The worked example, in every rank: ones(2,..) upsampled by ones(3,..),
    stride 2, "same": each axis is the 1-d result [1, 1, 2, 1] (an outer product)."""
    x = np.ones((1, 1) + (2,) * ndim, np.float32)
    w = np.ones((1, 1) + (3,) * ndim, np.float32)
    got = pytconv.conv_transpose(x, w, stride=2, padding="same")
    expected = np.ones(())
    for _ in range(ndim):
        expected = np.multiply.outer(expected, np.array([1.0, 1.0, 2.0, 1.0]))
    np.testing.assert_array_equal(got[0, 0], expected)


def test_dilation_larger_than_stride_output_padding():
    """output_padding may go up to max(stride, dilation) - 1 (PyTorch's rule)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4))
    w = rng.standard_normal((2, 1, 3))
    for op in range(3):
        got = pytconv.conv_transpose(x, w, stride=1, dilation=3, output_padding=op)
        ref = reference.conv_transpose(x, w, stride=1, dilation=3, output_padding=op)
        assert got.shape == (1, 1, (4 - 1) * 1 + 3 * (3 - 1) + 1 + op)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
