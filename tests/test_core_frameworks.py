"""The NumPy API against PyTorch (values, padding modes, autograd, NaN and Inf)
and TensorFlow (the "SAME"/"VALID" rules of convolution and transposed
convolution, output_shape included). Skipped locally when a framework is
missing, failed in CI (tests/frameworks.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytconv

from core_cases import (
    PADDING_MODES,
    adjoint_kwargs,
    assert_close,
    conv_cases,
    transposed_cases,
    transposed_size,
)
from frameworks import require

EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
F64 = (np.float64,)


# ---- PyTorch -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return require("torch")


def _t(torch, a, grad=False):
    return None if a is None else torch.tensor(np.asarray(a), requires_grad=grad)


def _torch_padding(case):
    """(padding for torch's conv, explicit F.pad widths or None)."""
    if case.padding == "valid":
        return "valid", None
    if case.padding == "same" and all(s == 1 for s in case.strides):
        return "same", None  # torch's own "same" (stride 1 only) is TensorFlow's rule
    if all(lo == hi for lo, hi in case.pads):
        return tuple(lo for lo, _ in case.pads), None
    widths = []
    for lo, hi in reversed(case.pads):  # F.pad takes the last dimension first
        widths += [lo, hi]
    return 0, widths


def _torch_conv(torch, case, x, w, b):
    F = torch.nn.functional
    conv = getattr(F, f"conv{case.ndim}d")
    padding, widths = _torch_padding(case)
    if widths is not None:
        x = F.pad(x, widths)
    with warnings.catch_warnings():  # torch's note that "same" may copy the input
        warnings.simplefilter("ignore", UserWarning)
        return conv(x, w, b, stride=case.strides, padding=padding, dilation=case.dilations,
                    groups=case.groups)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_matches_torch(torch, ndim):
    @EXAMPLES
    @given(st.one_of(
        conv_cases(ndims=(ndim,), modes=("zeros",), paddings=("int", "per_dim", "pairs", "valid")),
        conv_cases(ndims=(ndim,), modes=("zeros",), paddings=("same",), max_stride=1),
        conv_cases(ndims=(ndim,), modes=("zeros",), wide=True, batch=(3,)),
    ))
    def check(case):
        x, w, b, _ = case.arrays()
        got = pytconv.conv(x, w, b, **case.kwargs())
        ref = _torch_conv(torch, case, *(_t(torch, a) for a in (x.astype(np.float64), w.astype(np.float64),
                                                                 None if b is None else b.astype(np.float64))))
        scale = _torch_conv(torch, case, *(_t(torch, None if a is None else np.abs(a.astype(np.float64)))
                                           for a in (x, w, b)))
        assert_close(got, ref.numpy(), scale.numpy(), case.dtype, f"conv vs torch {case}")

    check()


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_match_torch_layers(torch, ndim, mode):
    """torch.nn.Conv{n}d(padding_mode=...) with symmetric padding."""

    @settings(max_examples=15, deadline=None)
    @given(conv_cases(ndims=(ndim,), modes=(mode,), paddings=("int", "per_dim"), dtypes=F64))
    def check(case):
        x, w, b, _ = case.arrays()
        layer = getattr(torch.nn, f"Conv{ndim}d")(
            case.cin, case.cout, case.kernel, stride=case.strides, padding=tuple(lo for lo, _ in case.pads),
            dilation=case.dilations, groups=case.groups, bias=b is not None, padding_mode=mode,
            dtype=torch.float64,
        )
        with torch.no_grad():
            layer.weight.copy_(_t(torch, w))
            if b is not None:
                layer.bias.copy_(_t(torch, b))
            ref = layer(_t(torch, x)).numpy()
            layer.weight.copy_(_t(torch, np.abs(w)))
            if b is not None:
                layer.bias.copy_(_t(torch, np.abs(b)))
            scale = layer(_t(torch, np.abs(x))).numpy()
        assert_close(pytconv.conv(x, w, b, **case.kwargs()), ref, scale, np.float64, f"{mode} conv vs torch")

    check()


def _torch_output_padding(tcase):
    c = tcase.conv
    return tuple(
        size - transposed_size(o, k, s, d, lo, hi, 0)
        for size, o, k, s, d, (lo, hi) in zip(tcase.out_size, c.out_size, c.kernel, c.strides, c.dilations,
                                              tcase.pads)
    )


def _torch_conv_transpose(torch, tcase, t, w, b):
    c = tcase.conv
    fn = getattr(torch.nn.functional, f"conv_transpose{c.ndim}d")
    return fn(t, w, b, stride=c.strides, padding=tuple(lo for lo, _ in tcase.pads),
              output_padding=_torch_output_padding(tcase), groups=c.groups, dilation=c.dilations)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_transpose_matches_torch(torch, ndim):
    @EXAMPLES
    @given(st.one_of(
        transposed_cases(ndims=(ndim,), modes=("zeros",), paddings=("int", "per_dim", "valid")),
        transposed_cases(ndims=(ndim,), modes=("zeros",), paddings=("int",), wide=True, batch=(3,)),
    ))
    def check(tcase):
        t, w, b, _ = tcase.arrays()
        if any(op >= max(s, d) or op < 0 for op, s, d in zip(_torch_output_padding(tcase), tcase.conv.strides,
                                                             tcase.conv.dilations)):
            return  # an output_shape torch cannot express (it needs op < max(stride, dilation) as we do)
        got = pytconv.conv_transpose(t, w, b, **tcase.kwargs())
        f64 = [None if a is None else a.astype(np.float64) for a in (t, w, b)]
        ref = _torch_conv_transpose(torch, tcase, *(_t(torch, a) for a in f64))
        scale = _torch_conv_transpose(torch, tcase, *(_t(torch, None if a is None else np.abs(a)) for a in f64))
        assert_close(got, ref.numpy(), scale.numpy(), tcase.conv.dtype, f"conv_transpose vs torch {tcase}")

    check()


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_conv_gradients_match_torch_autograd(torch, ndim, mode):
    """conv_input_grad / conv_weight_grad / bias_grad against torch.autograd of
    torch.nn.Conv{n}d with the padding mode (so conv_transpose with that mode,
    conv's adjoint, is checked against PyTorch as well)."""

    @settings(max_examples=10, deadline=None)
    @given(conv_cases(ndims=(ndim,), modes=(mode,), paddings=("int", "per_dim", "valid"), dtypes=F64))
    def check(case):
        x, w, b, dy = case.arrays()
        b = np.zeros(case.cout) if b is None else b
        layer = getattr(torch.nn, f"Conv{ndim}d")(
            case.cin, case.cout, case.kernel, stride=case.strides, padding=tuple(lo for lo, _ in case.pads),
            dilation=case.dilations, groups=case.groups, padding_mode=mode, dtype=torch.float64,
        )
        with torch.no_grad():
            layer.weight.copy_(_t(torch, w))
            layer.bias.copy_(_t(torch, b))
        tx = _t(torch, x, grad=True)
        (layer(tx) * _t(torch, dy)).sum().backward()
        kw = case.kwargs()
        scale_x = pytconv.conv_input_grad(x.shape, np.abs(w), np.abs(dy), **kw)
        assert_close(pytconv.conv_input_grad(x.shape, w, dy, **kw), tx.grad.numpy(), scale_x, np.float64,
                     "conv_input_grad vs torch")
        assert_close(pytconv.conv_transpose(dy, w, **kw, **adjoint_kwargs(case, "output_shape")), tx.grad.numpy(), scale_x,
                     np.float64, "conv_transpose (the adjoint) vs torch")
        scale_w = pytconv.conv_weight_grad(np.abs(x), w.shape, np.abs(dy), **kw)
        assert_close(pytconv.conv_weight_grad(x, w.shape, dy, **kw), layer.weight.grad.numpy(), scale_w,
                     np.float64, "conv_weight_grad vs torch")
        assert_close(pytconv.bias_grad(dy), layer.bias.grad.numpy(), pytconv.bias_grad(np.abs(dy)), np.float64,
                     "bias_grad vs torch")

    check()


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_transpose_gradients_match_torch_autograd(torch, ndim):
    @settings(max_examples=15, deadline=None)
    @given(transposed_cases(ndims=(ndim,), modes=("zeros",), paddings=("int", "per_dim", "valid"), dtypes=F64))
    def check(tcase):
        t, w, b, dout = tcase.arrays()
        if any(op >= max(s, d) or op < 0 for op, s, d in zip(_torch_output_padding(tcase), tcase.conv.strides,
                                                             tcase.conv.dilations)):
            return
        if any(size - op < 1 for size, op in zip(tcase.out_size, _torch_output_padding(tcase))):
            return  # test_core_errors.py::test_output_shape_reachable_by_output_padding
        tt, tw, tb = _t(torch, t, True), _t(torch, w, True), _t(torch, b, True)
        (_torch_conv_transpose(torch, tcase, tt, tw, tb) * _t(torch, dout)).sum().backward()
        gkw = tcase.grad_kwargs()
        assert_close(pytconv.conv_transpose_input_grad(t.shape, w, dout, **gkw), tt.grad.numpy(),
                     pytconv.conv_transpose_input_grad(t.shape, np.abs(w), np.abs(dout), **gkw), np.float64,
                     "conv_transpose_input_grad vs torch")
        assert_close(pytconv.conv_transpose_weight_grad(t, w.shape, dout, **gkw), tw.grad.numpy(),
                     pytconv.conv_transpose_weight_grad(np.abs(t), w.shape, np.abs(dout), **gkw), np.float64,
                     "conv_transpose_weight_grad vs torch")
        if b is not None:
            assert_close(pytconv.bias_grad(dout), tb.grad.numpy(), pytconv.bias_grad(np.abs(dout)), np.float64,
                         "bias_grad vs torch")

    check()


def _special_values(rng, shape, dtype, fraction=0.05):
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    picks = rng.choice(flat.size, size=max(1, int(fraction * flat.size)), replace=False)
    flat[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype), size=picks.size)
    return a


def _same_specials(got, ref, what):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref), err_msg=f"{what}: +Inf positions differ")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref), err_msg=f"{what}: -Inf positions differ")
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding", [0, 1, "same"])
def test_nan_and_inf_in_the_input_propagate_like_torch(torch, dtype, padding):
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    for ndim in (1, 2, 3):
        x = _special_values(rng, (2, 4) + (7,) * ndim, dtype)
        w = rng.standard_normal((6, 2) + (3,) * ndim).astype(dtype)
        conv = getattr(F, f"conv{ndim}d")
        got = pytconv.conv(x, w, padding=padding, groups=2)
        _same_specials(got, conv(_t(torch, x), _t(torch, w), padding=padding, groups=2).numpy(), f"conv {ndim}d")
        if padding == "same":
            continue
        t = _special_values(rng, (2, 6) + (5,) * ndim, dtype)
        got = pytconv.conv_transpose(t, w, stride=2, padding=padding, output_padding=1, groups=2)
        ref = getattr(F, f"conv_transpose{ndim}d")(_t(torch, t), _t(torch, w), stride=2, padding=padding,
                                                   output_padding=1, groups=2).numpy()
        _same_specials(got, ref, f"conv_transpose {ndim}d")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_in_the_weight_propagate_like_torch(torch, dtype):
    """Without padding every weight tap meets real input values, so the
    result is fixed by IEEE arithmetic whatever the summation order."""
    F = torch.nn.functional
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    w = _special_values(rng, (4, 3, 3, 2), dtype, fraction=0.03)
    _same_specials(pytconv.conv(x, w, stride=(2, 1)), F.conv2d(_t(torch, x), _t(torch, w), stride=(2, 1)).numpy(),
                   "conv")
    t = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    w = _special_values(rng, (3, 2, 3, 2), dtype, fraction=0.05)
    _same_specials(pytconv.conv_transpose(t, w, stride=2),
                   F.conv_transpose2d(_t(torch, t), _t(torch, w), stride=2).numpy(), "conv_transpose")


# ---- TensorFlow ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf():
    return require("tensorflow")


def _last(a):
    """(N, C, *s) -> (N, *s, C)."""
    return np.moveaxis(a, 1, -1)


def _first(a):
    return np.moveaxis(np.asarray(a), -1, 1)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_follows_tensorflow_padding_rules(tf, ndim, padding):
    """tf.nn.convolution, channels last, filters (*k, in / groups, out); TF takes
    stride > 1 or dilation > 1, not both."""

    @settings(max_examples=20, deadline=None)
    @given(conv_cases(ndims=(ndim,), modes=("zeros",), paddings=(padding,), max_stride=4, dtypes=F64),
           st.booleans())
    def check(case, dilated):
        if dilated and any(s > 1 for s in case.strides):
            return
        if not dilated and any(d > 1 for d in case.dilations):
            return
        if case.groups > 1 and ndim != 2:
            return  # TensorFlow's CPU kernels group 2-d convolutions only
        if ndim == 3 and padding == "same" and any(
            (-(-i // s) - 1) * s + d * (k - 1) + 1 - i <= -2
            for i, k, s, d in zip(case.in_size, case.kernel, case.strides, case.dilations)
        ):
            # TensorFlow's Conv3D does not clamp a negative "SAME" total padding at 0
            # (Conv2D does): size 3, kernel 1, stride 3 picks element 1, not 0.
            return
        x, w, b, _ = case.arrays()
        w_tf = np.moveaxis(w, (0, 1), (-1, -2))  # (*k, in / groups, out)
        ref = tf.nn.convolution(_last(x), w_tf, strides=case.strides, padding=padding.upper(),
                                dilations=case.dilations).numpy()
        scale = tf.nn.convolution(_last(np.abs(x)), np.abs(w_tf), strides=case.strides, padding=padding.upper(),
                                  dilations=case.dilations).numpy()
        got = pytconv.conv(x, w, stride=case.stride, padding=padding, dilation=case.dilation, groups=case.groups)
        assert_close(got, _first(ref), _first(scale), np.float64, f"conv vs tf {case}")

    check()


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv_transpose_follows_tensorflow(tf, ndim, padding):
    """tf.nn.conv{1,2,3}d_transpose, filters (*k, out, in), with every output
    size TF accepts for the stride and padding, and pytconv's default."""
    fn = {1: tf.nn.conv1d_transpose, 2: tf.nn.conv2d_transpose, 3: tf.nn.conv3d_transpose}[ndim]

    @settings(max_examples=20, deadline=None)
    @given(st.data())
    def check(data):
        n_in = tuple(data.draw(st.integers(1, 5)) for _ in range(ndim))
        k = tuple(data.draw(st.integers(1, 4)) for _ in range(ndim))
        s = tuple(data.draw(st.integers(1, 3)) for _ in range(ndim))
        cin, cout, batch = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 2))
        if padding == "SAME":
            choices = [range((i - 1) * st_ + 1, i * st_ + 1) for i, st_ in zip(n_in, s)]
        else:
            choices = [range((i - 1) * st_ + kk, (i - 1) * st_ + kk + st_) for i, kk, st_ in zip(n_in, k, s)]
        out = tuple(data.draw(st.sampled_from(list(c))) for c in choices)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        t = rng.standard_normal((batch, cin) + n_in)
        w = rng.standard_normal((cin, cout) + k)  # pytconv/torch: (in, out / groups, *k)
        w_tf = np.moveaxis(w, (0, 1), (-1, -2))  # (*k, out, in)
        ref = _first(fn(_last(t), w_tf, output_shape=(batch,) + out + (cout,), strides=s, padding=padding))
        scale = _first(fn(_last(np.abs(t)), np.abs(w_tf), output_shape=(batch,) + out + (cout,), strides=s,
                          padding=padding))
        got = pytconv.conv_transpose(t, w, stride=s, padding=padding.lower(), output_shape=out)
        assert_close(got, ref, scale, np.float64, f"conv_transpose vs tf {n_in} {k} {s} -> {out}")
        assert pytconv.conv_transpose_output_shape(t.shape, w.shape, s, padding.lower(), output_shape=out) == (
            (batch, cout) + out)
        if padding == "SAME":  # without output_shape: in * stride, as TF's Keras layers give
            default = tuple(i * st_ for i, st_ in zip(n_in, s))
            ref = _first(fn(_last(t), w_tf, output_shape=(batch,) + default + (cout,), strides=s, padding=padding))
            got = pytconv.conv_transpose(t, w, stride=s, padding="same")
            assert_close(got, ref, _first(fn(_last(np.abs(t)), np.abs(w_tf), output_shape=(batch,) + default + (cout,),
                                              strides=s, padding=padding)), np.float64, "conv_transpose same default")

    check()


def test_tensorflow_rejects_what_pytconv_rejects(tf):
    """An output_shape outside TF's range for "SAME" is refused by both."""
    t = np.ones((1, 2, 3, 1))  # NHWC: 2x3
    w = np.ones((3, 3, 1, 1))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        tf.nn.conv2d_transpose(t, w, output_shape=(1, 5, 6, 1), strides=2, padding="SAME")
    with pytest.raises(ValueError, match="cannot be reached|gives outputs of size"):
        pytconv.conv_transpose(_first(t), np.ones((1, 1, 3, 3)), stride=2, padding="same", output_shape=(5, 6))
