"""The TensorFlow adapter's functional API: values and gradients against
tf.nn (n = 1..3, float64) and pytconv.reference (n >= 4, dilated transposed
convolution, groups, padding modes), bitwise against pytconv's NumPy API on
random problems, second-order gradients against TensorFlow's own, tf.function
graph mode with static shapes and unknown sizes, and bad inputs and
unsupported contexts (XLA, SavedModel, GPU)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

import pytconv
from pytconv import _args, reference

from core_cases import assert_close, conv_cases, crops_below_one, transposed_cases
from frameworks import require

EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tf():
    return require("tensorflow")


@pytest.fixture(scope="module")
def ptf(tf):
    return pytconv.adapter("tensorflow")


def _rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def _value_and_grads(tf, fn, x, w, g):
    """fn(x, w) and the gradients of <fn(x, w), g> with respect to x and w (NumPy)."""
    x, w, g = (tf.constant(a) for a in (x, w, g))
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = fn(x, w)
    dx, dw = tape.gradient(y, [x, w], output_gradients=g)
    return y.numpy(), dx.numpy(), dw.numpy()


def _check_against(tf, ours, theirs, x, w, g, what):
    """ours and theirs agree on the value and both gradients, to float64 rounding
    of the terms summed (their absolute values, computed by theirs)."""
    got = _value_and_grads(tf, ours, x, w, g)
    ref = _value_and_grads(tf, theirs, x, w, g)
    scale = _value_and_grads(tf, theirs, np.abs(x), np.abs(w), np.abs(g))
    for name, a, r, s in zip(("value", "input gradient", "filters gradient"), got, ref, scale):
        assert_close(a, r, s, np.float64, f"{what}: {name}")


# ---- against tf.nn, n = 1..3 -------------------------------------------------

_TF_FORMAT = {1: "NWC", 2: "NHWC", 3: "NDHWC"}

# (input shape channels last, filters shape, strides, padding, dilations, groups); TensorFlow has
# no gradients of grouped convolutions on the CPU: groups are checked against the reference.
CONV_CASES = [
    ((2, 11, 3), (3, 3, 4), 2, "SAME", 1, 1),
    ((2, 12, 4), (3, 4, 5), 1, "VALID", 2, 1),
    ((2, 9, 8, 4), (3, 2, 4, 6), (2, 1), "SAME", 1, 1),
    ((2, 9, 8, 4), (3, 3, 4, 6), 1, [[0, 0], [1, 2], [2, 0], [0, 0]], 1, 1),
    ((1, 10, 9, 4), (3, 3, 4, 6), 2, "VALID", 1, 1),
    ((1, 7, 6, 8, 3), (3, 2, 3, 3, 4), 2, "SAME", 1, 1),
    ((1, 8, 7, 6, 2), (2, 3, 2, 2, 3), 1, "VALID", (2, 1, 2), 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{len(c[0]) - 2}d")
@pytest.mark.parametrize("data_format", ["last", "first"])
def test_conv_matches_tf_nn(tf, ptf, case, data_format):
    x_shape, w_shape, strides, padding, dilations, groups = case
    n = len(x_shape) - 2
    rng = np.random.default_rng(len(x_shape) * 7 + sum(w_shape))
    x, w = _rand(rng, x_shape), _rand(rng, w_shape)

    def theirs(x, w):
        if isinstance(padding, list):  # only tf.nn.conv2d takes explicit padding
            return tf.nn.conv2d(x, w, strides, padding, data_format="NHWC")
        # tf.nn.convolution: the dilated kernels' gradients work on the CPU.
        return tf.nn.convolution(x, w, strides, padding, data_format=_TF_FORMAT[n], dilations=dilations)

    g = _rand(rng, theirs(tf.constant(x), tf.constant(w)).shape)

    if data_format == "last":
        def ours(x, w):
            return ptf.conv(x, w, strides, padding, dilations=dilations, groups=groups)
    else:
        # TensorFlow has no channels-first convolution on the CPU: transpose around ours.
        first_padding = [padding[0], padding[-1]] + padding[1:-1] if isinstance(padding, list) else padding

        def ours(x, w):
            y = ptf.conv(_channels_first_tensor(tf, x), w, strides, first_padding, data_format="NC...",
                         dilations=dilations, groups=groups)
            return _channels_last_tensor(tf, y)

    _check_against(tf, ours, theirs, x, w, g, f"conv {case}")


def _channels_first_tensor(tf, t):
    n = t.shape.rank - 2
    return tf.transpose(t, [0, n + 1] + list(range(1, n + 1)))


def _channels_last_tensor(tf, t):
    n = t.shape.rank - 2
    return tf.transpose(t, [0] + list(range(2, n + 2)) + [1])


_TF_CONV_T = {1: "conv1d_transpose", 2: "conv2d_transpose", 3: "conv3d_transpose"}

# (input shape channels last, filters (*k, out, in), output spatial, strides, padding)
TRANSPOSED_CASES = [
    ((2, 7, 3), (3, 4, 3), (14,), 2, "SAME"),
    ((2, 6, 5, 3), (3, 3, 4, 3), (11, 10), 2, "SAME"),
    ((2, 4, 5, 3), (2, 3, 4, 3), (13, 16), 3, "VALID"),
    ((1, 5, 4, 3), (3, 3, 2, 3), (6, 5), 1, [[0, 0], [1, 0], [0, 1], [0, 0]]),
    ((1, 3, 4, 3, 2), (3, 2, 3, 3, 2), (6, 8, 6), 2, "SAME"),
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=lambda c: f"{len(c[0]) - 2}d")
def test_conv_transpose_matches_tf_nn(tf, ptf, case):
    x_shape, w_shape, out_spatial, strides, padding = case
    n = len(x_shape) - 2
    rng = np.random.default_rng(sum(x_shape) + 3 * sum(w_shape))
    x, w = _rand(rng, x_shape), _rand(rng, w_shape)
    out_shape = (x_shape[0],) + out_spatial + (w_shape[-2],)
    g = _rand(rng, out_shape)
    tf_conv_t = getattr(tf.nn, _TF_CONV_T[n])

    def theirs(x, w):
        return tf_conv_t(x, w, out_shape, strides, padding, data_format=_TF_FORMAT[n])

    def ours(x, w):
        return ptf.conv_transpose(x, w, out_shape, strides, padding)

    _check_against(tf, ours, theirs, x, w, g, f"conv_transpose {case}")


def test_conv_transpose_channels_first_and_spatial_output_shape(tf, ptf):
    rng = np.random.default_rng(5)
    x, w = _rand(rng, (2, 6, 5, 3)), _rand(rng, (3, 3, 4, 3))
    g = _rand(rng, (2, 11, 10, 4))

    def theirs(x, w):
        return tf.nn.conv2d_transpose(x, w, (2, 11, 10, 4), 2, "SAME", data_format="NHWC")

    def ours(x, w):
        y = ptf.conv_transpose(_channels_first_tensor(tf, x), w, (11, 10), [1, 1, 2, 2], "SAME",
                               data_format="NCHW")
        return _channels_last_tensor(tf, y)

    _check_against(tf, ours, theirs, x, w, g, "conv_transpose NCHW")


# ---- against pytconv.reference where TensorFlow has no kernel ----------------


def _reference_conv(problem, x, w, g):
    """Value, input and weight gradients of conv in pytconv's layout (float64)."""
    return (
        reference.forward(problem, x, w),
        reference.backward_data(problem, g, w),
        reference.backward_filter(problem, x, g),
    )


def _reference_transposed(problem, x, w, g):
    """Value, input and weight gradients of conv_transpose (x has the conv's output shape)."""
    return (
        reference.backward_data(problem, x, w),
        reference.forward(problem, g, w),
        reference.backward_filter(problem, g, x),
    )


def _tf_filters(w):
    """pytconv's weight (a, b, *k) -> TensorFlow's filters (*k, b, a)."""
    n = w.ndim - 2
    return np.ascontiguousarray(np.transpose(w, tuple(range(2, n + 2)) + (1, 0)))


def _pytconv_weight(f):
    n = f.ndim - 2
    return np.transpose(f, (n + 1, n) + tuple(range(n)))


def _check_reference(tf, ours, ref_fn, x_cf, w_pt, g_cf, what):
    """ours (channels-first tensors, TF filters) against the reference in pytconv's layout."""
    got = _value_and_grads(tf, ours, x_cf, _tf_filters(w_pt), g_cf)
    ref = ref_fn(x_cf, w_pt, g_cf)
    scale = ref_fn(np.abs(x_cf), np.abs(w_pt), np.abs(g_cf))
    got = (got[0], got[1], _pytconv_weight(got[2]))
    for name, a, r, s in zip(("value", "input gradient", "filters gradient"), got, ref, scale):
        assert_close(np.ascontiguousarray(a), r, s, np.float64, f"{what}: {name}")


# (input shape channels first, pytconv weight shape, stride, padding (tf form for NC...), dilation, groups, mode)
REFERENCE_CONV_CASES = [
    ((1, 2, 5, 4, 6, 5), (3, 2, 3, 2, 3, 2), 1, "SAME", 1, 1, "zeros"),
    ((2, 4, 6, 5, 4, 4), (4, 2, 2, 3, 2, 2), (2, 1, 1, 2), "VALID", (1, 2, 1, 1), 2, "zeros"),
    ((2, 3, 9, 8), (4, 3, 3, 3), 1, [[0, 0], [0, 0], [2, 1], [1, 2]], (1, 2), 1, "reflect"),
    ((1, 4, 7), (6, 2, 3), 1, "SAME", 2, 2, "circular"),
]


@pytest.mark.parametrize("case", REFERENCE_CONV_CASES, ids=lambda c: f"{len(c[0]) - 2}d-{c[6]}")
def test_conv_matches_reference(tf, ptf, case):
    x_shape, w_shape, stride, padding, dilation, groups, mode = case
    n = len(x_shape) - 2
    rng = np.random.default_rng(len(x_shape) + sum(w_shape))
    x, w = _rand(rng, x_shape), _rand(rng, w_shape)
    spec = padding.lower() if isinstance(padding, str) else [tuple(p) for p in padding[2:]]
    problem = _args.conv_problem("test", x_shape, w_shape, stride, spec, dilation, groups, mode)
    g = _rand(rng, problem.y_shape)

    def ours(x, f):
        return ptf.conv(x, f, stride, padding, data_format="NC...", dilations=dilation, groups=groups,
                        padding_mode=mode)

    _check_reference(tf, ours, lambda x, w, g: _reference_conv(problem, x, w, g), x, w, g,
                     f"{n}-d conv {case}")


# (input shape channels first, pytconv weight (in, out/g, *k), output spatial, stride, padding, dilation, groups)
REFERENCE_TRANSPOSED_CASES = [
    ((2, 3, 5, 4), (3, 2, 3, 3), (9, 8), 1, "VALID", 2, 1),  # dilated: TensorFlow's CPU kernel refuses
    ((1, 2, 4, 3), (2, 3, 2, 3), (4, 3), 1, "SAME", (2, 1), 1),
    ((2, 4, 5), (4, 3, 3), (10,), 2, "SAME", 1, 2),
    ((1, 4, 3, 4, 3, 2), (4, 2, 2, 3, 2, 2), (7, 9, 6, 3), (2, 2, 2, 1), "VALID", 1, 2),
]


@pytest.mark.parametrize("case", REFERENCE_TRANSPOSED_CASES, ids=lambda c: f"{len(c[0]) - 2}d")
def test_conv_transpose_matches_reference(tf, ptf, case):
    x_shape, w_shape, out_spatial, stride, padding, dilation, groups = case
    rng = np.random.default_rng(len(x_shape) + 2 * sum(w_shape))
    x, w = _rand(rng, x_shape), _rand(rng, w_shape)
    problem = _args.transposed_problem("test", x_shape, w_shape, stride, padding.lower(), 0, groups, dilation,
                                       out_spatial)
    g = _rand(rng, problem.x_shape)

    def ours(x, f):
        out_shape = (x_shape[0], w_shape[1] * groups) + out_spatial
        return ptf.conv_transpose(x, f, out_shape, stride, padding, data_format="NC...", dilations=dilation,
                                  groups=groups)

    _check_reference(tf, ours, lambda x, w, g: _reference_transposed(problem, x, w, g), x, w, g,
                     f"conv_transpose {case}")


def test_bitwise_equal_to_numpy_api(tf, ptf):
    """The adapter computes with pytconv's core: same bits as the NumPy API."""
    rng = np.random.default_rng(11)
    x, w = _rand(rng, (2, 3, 9, 7), np.float32), _rand(rng, (5, 3, 3, 3), np.float32)
    y = ptf.conv(x, _tf_filters(w), 2, "SAME", data_format="NCHW").numpy()
    np.testing.assert_array_equal(y, pytconv.conv(x, w, stride=2, padding="same"))
    t = ptf.conv_transpose(y, _tf_filters(w), None, 2, "SAME", data_format="NCHW").numpy()
    np.testing.assert_array_equal(t, pytconv.conv_transpose(y, w, stride=2, padding="same"))


def _tf_explicit_first(pads):
    """TensorFlow's explicit padding, channels first, from (lo, hi) pairs."""
    return [[0, 0], [0, 0]] + [list(p) for p in pads]


def _adapter_grads(tf, fn, x, w, g):
    """fn(x, w) on channels-first tensors with pytconv-layout weights given to the
    adapter in TensorFlow's layout; value and gradients back in pytconv's layouts."""
    y, dx, df = _value_and_grads(tf, lambda x, f: fn(x, f), x, _tf_filters(w), g)
    return y, dx, np.ascontiguousarray(_pytconv_weight(df))


@EXAMPLES
@given(case=conv_cases(ndims=(1, 2, 3, 4), dtypes=(np.float32, np.float64)))
def test_conv_bitwise_equal_to_numpy_api_random(tf, ptf, case):
    """Every stride, dilation, padding form and mode, groups, n = 1..4: the adapter's
    value and gradients are the NumPy API's, bit for bit."""
    x, w, _, dy = case.arrays()
    padding = case.padding.upper() if isinstance(case.padding, str) else _tf_explicit_first(case.pads)

    def ours(x, f):
        return ptf.conv(x, f, case.strides, padding, data_format="NC...", dilations=case.dilations,
                        groups=case.groups, padding_mode=case.padding_mode)

    got = _adapter_grads(tf, ours, x, w, dy)
    kw = case.kwargs()
    expected = (
        pytconv.conv(x, w, **kw),
        pytconv.conv_input_grad(x.shape, w, dy, **kw),
        pytconv.conv_weight_grad(x, w.shape, dy, **kw),
    )
    for name, a, b in zip(("value", "input gradient", "filters gradient"), got, expected):
        np.testing.assert_array_equal(a, b, err_msg=f"{case}: {name}")


@EXAMPLES
@given(case=transposed_cases(ndims=(1, 2, 3, 4), dtypes=(np.float32, np.float64)))
def test_conv_transpose_bitwise_equal_to_numpy_api_random(tf, ptf, case):
    assume(not crops_below_one(case))
    c = case.conv
    t, w, _, dout = case.arrays()
    padding = "SAME" if c.padding == "same" else _tf_explicit_first(case.pads)
    out_shape = (c.batch, c.cin) + case.out_size

    def ours(t, f):
        return ptf.conv_transpose(t, f, out_shape, c.strides, padding, data_format="NC...", dilations=c.dilations,
                                  groups=c.groups, padding_mode=c.padding_mode)

    got = _adapter_grads(tf, ours, t, w, dout)
    kw = case.grad_kwargs()
    expected = (
        pytconv.conv_transpose(t, w, **case.kwargs()),
        pytconv.conv_transpose_input_grad(t.shape, w, dout, **kw),
        pytconv.conv_transpose_weight_grad(t, w.shape, dout, **kw),
    )
    for name, a, b in zip(("value", "input gradient", "filters gradient"), got, expected):
        np.testing.assert_array_equal(a, b, err_msg=f"{case}: {name}")


# ---- second-order gradients ----------------------------------------------------


def _second_order(tf, fn, x, w):
    """Gradients of |d/dx L|^2 + |d/dw L|^2, L = sum(sin(fn(x, w))): every primitive's
    gradient is differentiated again."""
    x, w = tf.constant(x), tf.constant(w)
    with tf.GradientTape() as outer:
        outer.watch([x, w])
        with tf.GradientTape() as inner:
            inner.watch([x, w])
            loss = tf.reduce_sum(tf.sin(fn(x, w)))
        gx, gw = inner.gradient(loss, [x, w])
        total = tf.reduce_sum(gx * gx) + tf.reduce_sum(gw * gw)
    return [t.numpy() for t in outer.gradient(total, [x, w])]


# (op, input shape channels last, filters shape, output spatial for conv_transpose)
SECOND_ORDER_CASES = [
    ("conv", (2, 9, 3), (3, 3, 4), None),
    ("conv", (2, 7, 6, 3), (3, 2, 3, 4), None),
    ("conv", (1, 5, 4, 5, 2), (2, 3, 2, 2, 3), None),
    ("conv_transpose", (2, 5, 3), (3, 4, 3), (10,)),
    ("conv_transpose", (2, 7, 6, 3), (3, 2, 4, 3), (13, 12)),
    ("conv_transpose", (1, 3, 4, 3, 2), (2, 3, 2, 3, 2), (6, 7, 6)),
]


@pytest.mark.parametrize("case", SECOND_ORDER_CASES, ids=lambda c: f"{c[0]}-{len(c[1]) - 2}d")
def test_second_order_gradients_match_tf(tf, ptf, case):
    op, x_shape, w_shape, out_spatial = case
    n = len(x_shape) - 2
    rng = np.random.default_rng(3 + n)
    x, w = _rand(rng, x_shape), _rand(rng, w_shape)
    fmt = _TF_FORMAT[n]
    if op == "conv":
        tf_op = {1: tf.nn.conv1d, 2: tf.nn.conv2d, 3: tf.nn.conv3d}[n]

        def ours(x, w):
            return ptf.conv(x, w, 2, "SAME")

        def theirs(x, w):
            # An explicit data_format: TensorFlow's second-order gradient needs it.
            return tf_op(x, w, [1] + [2] * n + [1] if n == 3 else 2, "SAME", data_format=fmt)
    else:
        tf_op = getattr(tf.nn, _TF_CONV_T[n])
        out_shape = (x_shape[0],) + out_spatial + (w_shape[-2],)

        def ours(x, w):
            return ptf.conv_transpose(x, w, out_shape, 2, "SAME")

        def theirs(x, w):
            return tf_op(x, w, out_shape, 2, "SAME", data_format=fmt)

    got = _second_order(tf, ours, x, w)
    ref = _second_order(tf, theirs, x, w)
    for name, a, r in zip(("input", "filters"), got, ref):
        # The terms are products of three sums of products: bound by the reference's size.
        assert_close(a, r, np.abs(r).max() * 10, np.float64, f"{case}: second-order {name} gradient")


def test_second_order_in_graph_mode(tf, ptf):
    rng = np.random.default_rng(4)
    x, w = _rand(rng, (2, 9, 3)), _rand(rng, (3, 3, 2))

    def ours(x, w):
        return ptf.conv(x, w, 1, "SAME", dilations=2)

    eager = _second_order(tf, ours, x, w)
    graph = tf.function(lambda x, w: _second_order_tensors(tf, ours, x, w))(tf.constant(x), tf.constant(w))
    for a, b in zip(eager, graph):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-12, atol=1e-12 * np.abs(a).max())


def _second_order_tensors(tf, fn, x, w):
    with tf.GradientTape() as outer:
        outer.watch([x, w])
        with tf.GradientTape() as inner:
            inner.watch([x, w])
            loss = tf.reduce_sum(tf.sin(fn(x, w)))
        gx, gw = inner.gradient(loss, [x, w])
        total = tf.reduce_sum(gx * gx) + tf.reduce_sum(gw * gw)
    return outer.gradient(total, [x, w])


# ---- tf.function: static shapes, unknown sizes -----------------------------------


def test_graph_mode_static_shapes_and_unknown_batch(tf, ptf):
    rng = np.random.default_rng(6)
    w = tf.constant(_rand(rng, (3, 3, 4, 6)))
    wt = tf.constant(_rand(rng, (3, 3, 5, 4)))
    seen = {}

    @tf.function(input_signature=[tf.TensorSpec([None, 9, 8, 4], tf.float64)])
    def f(x):
        y = ptf.conv(x, w, 2, "SAME")
        z = ptf.conv_transpose(x, wt, tf.stack([tf.shape(x)[0], 17, 15, 5]), 2, "SAME")
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(ptf.conv(x, w, 1, "VALID") ** 2)
        dx = tape.gradient(loss, x)
        seen.update(y=y.shape.as_list(), z=z.shape.as_list(), dx=dx.shape.as_list())
        return y, z, dx

    for batch in (1, 3):
        x = tf.constant(_rand(rng, (batch, 9, 8, 4)))
        y, z, dx = f(x)
        np.testing.assert_array_equal(y.numpy(), ptf.conv(x, w, 2, "SAME").numpy())
        np.testing.assert_array_equal(z.numpy(), ptf.conv_transpose(x, wt, (None, 17, 15, 5), 2).numpy())
        assert dx.shape == x.shape
    assert seen == {"y": [None, 5, 4, 6], "z": [None, 17, 15, 5], "dx": [None, 9, 8, 4]}
    # The graph computes through pytconv's callbacks (forward, and the input gradient).
    ops = f.get_concrete_function().graph.get_operations()
    assert {"pytconv_forward", "pytconv_backward_data"} <= {op.name.split("/")[-1] for op in ops
                                                            if op.type.startswith("PyFunc")}


def test_graph_mode_unknown_spatial_sizes(tf, ptf):
    rng = np.random.default_rng(7)
    w = tf.constant(_rand(rng, (3, 3, 2, 4)))
    wt = tf.constant(_rand(rng, (2, 2, 3, 2)))
    shapes = {}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2], tf.float64)])
    def f(x):
        y = ptf.conv(x, w, 2, "SAME")
        z = ptf.conv_transpose(x, wt, None, 2, "VALID")
        shapes.update(y=y.shape.as_list(), z=z.shape.as_list())
        return y, z

    for size in ((5, 7), (8, 4)):
        x = tf.constant(_rand(rng, (2,) + size + (2,)))
        y, z = f(x)
        np.testing.assert_array_equal(y.numpy(), ptf.conv(x, w, 2, "SAME").numpy())
        assert z.shape == (2, 2 * size[0], 2 * size[1], 3)
    assert shapes == {"y": [None, None, None, 4], "z": [None, None, None, 3]}


# ---- bad inputs and unsupported contexts ---------------------------------------------


def _x(tf, shape=(1, 8, 8, 3), dtype="float32"):
    return tf.zeros(shape, dtype)


def _w(tf, shape=(3, 3, 3, 4)):
    return tf.zeros(shape)


def _wt(tf):
    return tf.zeros((3, 3, 4, 3))


BAD_CALLS = [
    (TypeError, "supported dtypes", lambda tf, ptf: ptf.conv(_x(tf, dtype="int32"), _w(tf))),
    (TypeError, "share one dtype", lambda tf, ptf: ptf.conv(_x(tf, dtype="float64"), _w(tf))),
    (ValueError, "at least 3 dimensions", lambda tf, ptf: ptf.conv(_x(tf), tf.zeros((3, 3)))),
    (ValueError, "rank 4", lambda tf, ptf: ptf.conv(_x(tf, (8, 8, 3)), _w(tf))),
    (ValueError, "expect 3 input channels per group", lambda tf, ptf: ptf.conv(_x(tf, (1, 8, 8, 5)), _w(tf))),
    (ValueError, "data_format", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), data_format="NCDHW")),
    (ValueError, "padding must be", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), padding="FULL")),
    (ValueError, "[0, 0] for the batch and channel",
     lambda tf, ptf: ptf.conv(_x(tf), _w(tf), padding=[[1, 0], [1, 1], [1, 1], [0, 0]])),
    (ValueError, "needs 4 [before, after] pairs", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), padding=[[1, 1], [1, 1]])),
    (ValueError, "strides needs 1 or 2 values", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), strides=[1, 2, 3])),
    (ValueError, "strides must be >= 1", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), strides=0)),
    (ValueError, "1 for the batch and channel", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), strides=[2, 1, 1, 1])),
    (ValueError, "kernel is larger", lambda tf, ptf: ptf.conv(_x(tf, (1, 2, 2, 3)), _w(tf))),
    (ValueError, "not divisible by groups",
     lambda tf, ptf: ptf.conv(_x(tf, (1, 8, 8, 6)), _w(tf, (3, 3, 3, 5)), groups=2)),
    (ValueError, "groups must be >= 1", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), groups=0)),
    (ValueError, "padding_mode", lambda tf, ptf: ptf.conv(_x(tf), _w(tf), padding_mode="mirror")),
    (TypeError, "strides is required", lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 4)), _wt(tf), None, None)),
    (ValueError, "cannot be reached in dimension 1: reachable sizes are 9..10",
     lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 3)), _wt(tf), (1, 9, 8, 4), 2, "VALID")),
    (ValueError, "gives outputs of size 7..8",
     lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 3)), _wt(tf), (1, 9, 8, 4), 2)),
    (ValueError, "has 5 channels", lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 3)), _wt(tf), (1, 8, 8, 5), 2)),
    (ValueError, "has batch 2", lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 3)), _wt(tf), (2, 8, 8, 4), 2)),
    (ValueError, "must give every spatial size",
     lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 3)), _wt(tf), (1, None, 8, 4), 2)),
    (ValueError, "4 entries", lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 3)), _wt(tf), (1, 8, 8), 2)),
    (TypeError, "output_shape", lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 3)), _wt(tf), "8x8", 2)),
    (ValueError, "expect 3 input channels", lambda tf, ptf: ptf.conv_transpose(_x(tf, (1, 4, 4, 4)), _wt(tf), None, 2)),
]


@pytest.mark.parametrize("error, words, call", BAD_CALLS, ids=[c[1] for c in BAD_CALLS])
def test_bad_arguments_raise_clear_errors(tf, ptf, error, words, call):
    with pytest.raises(error, match=re.escape(words)) as info:
        call(tf, ptf)
    assert str(info.value).startswith(("conv:", "conv_transpose:"))


def test_xla_fails_clearly(tf, ptf):
    w = tf.zeros((3, 3, 2))

    @tf.function(jit_compile=True)
    def f(x):
        return ptf.conv(x, w, 1, "SAME")

    with pytest.raises(RuntimeError, match="cannot be compiled with XLA"):
        f(tf.zeros((1, 5, 3)))


def test_saved_model_export_fails_clearly(tf, ptf, tmp_path):
    w = tf.zeros((3, 2, 2))

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 6, 2], tf.float32)])
        def __call__(self, x):
            return ptf.conv(x, w, 1, "SAME")

    module = Module()
    assert module(tf.ones((1, 6, 2))).shape == (1, 6, 2)
    with pytest.raises(RuntimeError, match="cannot be exported to a SavedModel"):
        tf.saved_model.save(module, str(tmp_path / "saved"))


class _TensorOn:
    """Stands for a tensor on a device (no GPU here)."""

    def __init__(self, device):
        self.device = device


def test_gpu_tensors_without_gpu_path_fail_clearly(ptf, monkeypatch):
    from pytconv_tensorflow import _ops

    ok, reason = ptf.gpu_status()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    monkeypatch.setattr(_ops, "gpu_status", lambda: (False, "CuPy is not installed"))
    gpu = _TensorOn("/job:localhost/replica:0/task:0/device:GPU:0")
    expected = r"conv \(forward\): the tensors are on .*GPU:0, and pytconv's GPU path is unavailable: CuPy is not"
    with pytest.raises(RuntimeError, match=expected):
        _ops._run_eagerly(None, "conv (forward)", gpu, gpu, None)
    cpu = _TensorOn("/job:localhost/replica:0/task:0/device:CPU:0")
    with pytest.raises(ValueError, match="different devices"):
        _ops._run_eagerly(None, "conv (forward)", gpu, cpu, None)


class _CapsuleHolder:
    """Lets NumPy read a DLPack capsule (as CuPy would read one from a GPU)."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, stream=None, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # CPU


class _NumPyAsCuPy:
    """The little of CuPy the GPU route uses, on NumPy arrays: checks the route's
    DLPack plumbing without a GPU (pytconv computes these arrays on the CPU)."""

    class cuda:
        @staticmethod
        def get_current_stream():
            class Stream:
                def synchronize(self):
                    pass

            return Stream()

    @staticmethod
    def from_dlpack(capsule):
        return np.from_dlpack(_CapsuleHolder(capsule))


def test_gpu_route_plumbing(tf, ptf, monkeypatch):
    import sys

    from pytconv_tensorflow import _ops

    monkeypatch.setattr(_ops, "gpu_status", lambda: (True, "ok"))
    monkeypatch.setitem(sys.modules, "cupy", _NumPyAsCuPy)
    rng = np.random.default_rng(12)
    x, w, dy = _rand(rng, (2, 3, 7, 6)), _rand(rng, (4, 3, 3, 2)), _rand(rng, (2, 4, 4, 3))
    op = _ops._Convolution("conv", (2, 2), "same", (1, 1), 1, "zeros")
    args = dict(shape=None, device="/job:localhost/replica:0/task:0/device:CPU:0")
    y = _ops._run_on_gpu(op.forward, "conv (forward)", tf.constant(x), tf.constant(w), **args)
    np.testing.assert_array_equal(y.numpy(), pytconv.conv(x, w, stride=2, padding="same"))
    args["shape"] = tf.constant(x.shape)
    dx = _ops._run_on_gpu(op.backward_data, "conv (backward data)", tf.constant(dy), tf.constant(w), **args)
    np.testing.assert_array_equal(dx.numpy(), pytconv.conv_input_grad(x.shape, w, dy, stride=2, padding="same"))
