"""Property-based fuzzing of the public NumPy API, valid and invalid arguments mixed.

Each example draws the arguments of one public function: shapes, dtypes and
memory layouts of the arrays, and every keyword in each of its spellings (an
int, per-dimension ints, (low, high) pairs, "same"/"valid", NumPy integers...).
Now and then one argument is replaced by a wrong one from a known class (see
``INVALID_CLASSES``). Whether the call must succeed is decided by an oracle
written here from the semantic contract ("Conventions in brief" in README.md and
the docstrings of pytconv), independently of pytconv._args:

* a valid call must return the shape the oracle computes and values that agree
  with the float64 reference (pytconv.reference) or, for the gradients, with
  the adjoint identity <op(a), g> == <a, grad(g)> evaluated with the reference;
* an invalid call must raise TypeError (types, dtypes) or ValueError (shapes,
  sizes, values) whose message names the function.

Tolerances are bounds, not guesses: each comparison scales with the same
computation done on absolute values (the sum of |terms|), times 1e-12 (float64)
or 1e-5 (float32).

The number of examples: PYTCONV_FUZZ_EXAMPLES (default 10000 in total, shared
out between the functions by fixed weights). Maintainers run a long search with

    PYTCONV_FUZZ_EXAMPLES=200000 pytest tests/test_fuzz.py -q -p no:cacheprovider
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pytconv
from pytconv import reference

TOTAL_EXAMPLES = int(os.environ.get("PYTCONV_FUZZ_EXAMPLES", "10000"))

# Share of the total each test gets.
_WEIGHTS = {
    "conv": 0.24,
    "conv_transpose": 0.24,
    "conv_input_grad": 0.07,
    "conv_weight_grad": 0.07,
    "conv_transpose_input_grad": 0.07,
    "conv_transpose_weight_grad": 0.07,
    "bias_grad": 0.04,
    "conv_output_shape": 0.10,
    "conv_transpose_output_shape": 0.10,
}


def _settings(name):
    return settings(
        max_examples=max(10, int(TOTAL_EXAMPLES * _WEIGHTS[name])),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


MODES = ("zeros", "reflect", "replicate", "circular")

#: The kinds of wrong argument the fuzzer mixes in, and the error each must give.
INVALID_CLASSES = {
    "dtype": "TypeError: integer, float16, complex or bool arrays",
    "mixed dtypes": "TypeError: float32 with float64 among input, weight, bias",
    "rank": "ValueError: input/weight of different rank, or fewer than 3 dimensions",
    "channels": "ValueError: channel counts that do not match the weight and groups",
    "empty": "ValueError: an empty spatial or weight dimension",
    "groups": "ValueError for groups < 1, TypeError for non-int groups",
    "stride/dilation": "ValueError for values < 1 or the wrong count, TypeError for non-ints",
    "padding": "ValueError for negative pads, wrong counts, unknown strings; TypeError for non-ints",
    "padding_mode": "ValueError for unknown names, TypeError for non-strings",
    "kernel too large": "ValueError: the dilated kernel does not fit the padded input",
    "mode padding": "ValueError: reflect pad >= size, circular pad > size",
    "bias": "ValueError: bias of the wrong shape",
    "output_padding": "ValueError: output_padding >= max(stride, dilation) or < 0, or given with output_shape "
    "or with padding='same'",
    "output_shape": "ValueError: an output shape the transposed convolution cannot reach",
    "grad_output": "ValueError: grad_output of a shape the operation does not produce",
    "shape argument": "ValueError for negative sizes or too few dims, TypeError for non-int sizes",
}


class Expect(Exception):
    """Raised by the oracle: the call must fail with `exc`."""

    def __init__(self, exc, why):
        super().__init__(why)
        self.exc = exc


# ---- argument strategies --------------------------------------------------------


class Args:
    """Drawn arguments, and the errors the drawing made certain."""

    def __init__(self, data, invalid_rate):
        self.data = data
        self.invalid_rate = invalid_rate
        self.type_errors = []  # reasons a TypeError is certain
        self.value_errors = []  # reasons a ValueError is certain (checked by the oracle too)

    def draw(self, strategy, label=None):
        return self.data.draw(strategy, label=label)

    def spoil(self):
        """Whether to make the next argument wrong, with probability about
        invalid_rate. (Not a float compared with the rate: hypothesis draws
        0.0 far more often than uniformly. Shrinking leads to 0: not spoiled.)"""
        if self.invalid_rate <= 0:
            return False
        k = max(2, round(1 / self.invalid_rate))
        return self.draw(st.integers(0, k - 1)) == k // 2

    def int_value(self, value):
        """An int in one of its accepted spellings."""
        kind = self.draw(st.sampled_from(["int", "int", "np.int64", "np.int32"]))
        return {"int": int, "np.int64": np.int64, "np.int32": np.int32}[kind](value)


def per_dim_arg(args: Args, name, n, lo, hi, minimum):
    """(argument, normalised tuple) for stride/dilation-like arguments. The
    normalised tuple may hold values < minimum (the oracle rejects them).
    An argument of a wrong type comes with the value it stands in for, so the
    oracle can still tell whether the call is wrong in other ways too."""
    if args.spoil():
        kind = args.draw(st.sampled_from(["float", "bool", "str", "none", "count", "value", "float item"]))
        if kind == "float":
            args.type_errors.append(f"{name} is a float")
            return 1.0, (1,) * n
        if kind == "bool":
            args.type_errors.append(f"{name} is a bool")
            return True, (1,) * n
        if kind == "str":
            args.type_errors.append(f"{name} is a str")
            return "1", (1,) * n
        if kind == "none":
            args.type_errors.append(f"{name} is None")
            return None, (1,) * n
        if kind == "float item":
            args.type_errors.append(f"{name} holds a float")
            return (1.5,) * n, (1,) * n
        if kind == "count":
            count = args.draw(st.sampled_from([c for c in (0, 2, 3, 4) if c != n and c != 1]))
            args.value_errors.append(f"{name} has {count} values for {n} dimensions")
            return (1,) * count, None
        values = tuple(args.draw(st.integers(lo, hi)) for _ in range(n))
        d = args.draw(st.integers(0, n - 1))
        values = values[:d] + (args.draw(st.integers(minimum - 3, minimum - 1)),) + values[d + 1:]
        return (values[0] if n == 1 and args.draw(st.booleans()) else values), values
    values = tuple(args.draw(st.integers(lo, hi)) for _ in range(n))
    form = args.draw(st.sampled_from(["scalar", "tuple", "list"]))
    if form == "scalar" or len(set(values)) == 1 and form != "list":
        return args.int_value(values[0]), (values[0],) * n
    seq = [args.int_value(v) for v in values]
    return (tuple(seq) if form == "tuple" else seq), values


def padding_arg(args: Args, n, max_pad=3):
    """(argument, normalised spec): spec is "same", "valid" or a tuple of
    (low, high) pairs (possibly negative: the oracle rejects them)."""
    if args.spoil():
        kind = args.draw(st.sampled_from(["negative", "string", "float", "none", "count", "pair", "float pair"]))
        if kind == "negative":
            if args.draw(st.booleans()):
                return -2, ((-2, -2),) * n
            d = args.draw(st.integers(0, n - 1))
            pairs = [(1, 1)] * n
            pairs[d] = (args.draw(st.integers(-3, -1)), 1) if args.draw(st.booleans()) else (1, -1)
            return tuple(pairs), tuple(pairs)
        if kind == "string":
            args.value_errors.append("padding is an unknown string")
            return args.draw(st.sampled_from(["full", "", "causal", "zeros"])), None
        if kind == "float":
            args.type_errors.append("padding is a float")
            return 1.0, ((1, 1),) * n
        if kind == "none":
            args.type_errors.append("padding is None")
            return None, ((0, 0),) * n
        if kind == "count":
            count = args.draw(st.sampled_from([c for c in (0, 2, 3, 4) if c != n and c != 1]))
            args.value_errors.append(f"padding has {count} entries for {n} dimensions")
            return (0,) * count, None
        if kind == "pair":
            args.value_errors.append("a padding pair of 3 values")
            return ((0, 0, 0),) * n, None
        args.type_errors.append("a padding pair holds a float")
        return ((0, 1.0),) * n, ((0, 1),) * n
    form = args.draw(st.sampled_from(["int", "ints", "pairs", "pair lists", "same", "valid"]))
    if form in ("same", "valid"):
        return form, form
    if form == "int":
        p = args.draw(st.integers(0, max_pad))
        return args.int_value(p), ((p, p),) * n
    if form == "ints":
        ps = tuple(args.draw(st.integers(0, max_pad)) for _ in range(n))
        return tuple(args.int_value(p) for p in ps), tuple((p, p) for p in ps)
    pairs = tuple((args.draw(st.integers(0, max_pad)), args.draw(st.integers(0, max_pad))) for _ in range(n))
    seq = tuple((args.int_value(lo), args.int_value(hi)) for lo, hi in pairs)
    return (seq if form == "pairs" else [list(p) for p in seq]), pairs


def groups_arg(args: Args, groups):
    if args.spoil():
        kind = args.draw(st.sampled_from(["zero", "negative", "float", "bool"]))
        if kind == "float":
            args.type_errors.append("groups is a float")
            return float(groups), groups
        if kind == "bool":
            args.type_errors.append("groups is a bool")
            return True, 1
        return (0 if kind == "zero" else -groups), (0 if kind == "zero" else -groups)
    return args.int_value(groups), groups


def mode_arg(args: Args):
    if args.spoil():
        kind = args.draw(st.sampled_from(["unknown", "int", "none"]))
        if kind == "unknown":
            args.value_errors.append("unknown padding_mode")
            return args.draw(st.sampled_from(["constant", "zero", "wrap", "symmetric", ""])), None
        args.type_errors.append("padding_mode is not a string")
        return (0 if kind == "int" else None), "zeros"
    mode = args.draw(st.sampled_from(MODES))
    return mode, mode


def random_array(args: Args, shape, dtype, name, allow_broadcast=True):
    """An array of the shape and dtype in a random memory layout, with values
    exactly representable in float32."""
    seed = args.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = (rng.integers(-2**20, 2**20, size=shape) / 2.0**20).astype(dtype)
    layout = args.draw(st.sampled_from(["C", "C", "F", "reversed", "strided", "broadcast", "list"]))
    if layout == "F":
        return np.asfortranarray(values)
    if layout == "reversed" and values.ndim:
        return np.flip(np.flip(values).copy())
    if layout == "strided":
        big = np.zeros(tuple(2 * s for s in shape), dtype)
        view = big[tuple(slice(None, None, 2) for _ in shape)]
        view[...] = values
        return view
    if layout == "broadcast" and allow_broadcast and len(shape) >= 1 and shape[0] > 0:
        return np.broadcast_to(values[:1], shape)
    if layout == "list" and dtype == np.float64 and 0 < values.size <= 64:
        return values.tolist()
    return values


def float_dtype(args: Args):
    return args.draw(st.sampled_from([np.float32, np.float64]))


def bad_dtype(args: Args):
    return args.draw(st.sampled_from([np.int32, np.int64, np.float16, np.complex128, np.bool_, np.uint8]))


# ---- the oracle: the contract's formulas ------------------------------------------


def _span(k, d):
    return d * (k - 1) + 1


def _same_pads(size, k, s, d):
    """TensorFlow's SAME: output ceil(size / s), total padding split low-first."""
    out = -(-size // s)
    total = max((out - 1) * s + _span(k, d) - size, 0)
    return total // 2, total - total // 2


def _check_common(x_shape, w_shape, stride, dilation, groups, mode):
    if len(w_shape) < 3 or len(x_shape) < 3:
        raise Expect(ValueError, "fewer than 3 dimensions")
    if len(x_shape) != len(w_shape):
        raise Expect(ValueError, "input and weight differ in rank")
    if groups < 1:
        raise Expect(ValueError, "groups < 1")
    if min(w_shape) < 1:
        raise Expect(ValueError, "empty weight dimension")
    if min(x_shape[2:]) < 1:
        raise Expect(ValueError, "empty spatial dimension")
    if min(stride) < 1 or min(dilation) < 1:
        raise Expect(ValueError, "stride or dilation < 1")


def _check_volumes(*shapes):
    """Every array (and the padded input) must be addressable in bytes with
    64-bit offsets: elements * 8 <= 2**63 - 1."""
    for shape in shapes:
        if math.prod(shape) * 8 > 2**63 - 1:
            raise Expect(ValueError, f"an array of shape {shape} is too large to address")


def _check_mode_pads(mode, sizes, pairs):
    for size, (lo, hi) in zip(sizes, pairs):
        if mode == "reflect" and max(lo, hi) >= size:
            raise Expect(ValueError, "reflect padding >= size")
        if mode == "circular" and max(lo, hi) > size:
            raise Expect(ValueError, "circular padding > size")


def conv_oracle(x_shape, w_shape, stride, spec, dilation, groups, mode):
    """(output shape, pads) of conv, or Expect."""
    _check_common(x_shape, w_shape, stride, dilation, groups, mode)
    n = len(w_shape) - 2
    batch, cin = x_shape[:2]
    cout, cin_g = w_shape[:2]
    kernel, in_size = w_shape[2:], x_shape[2:]
    if cout % groups or cin != cin_g * groups:
        raise Expect(ValueError, "channels do not match groups")
    if spec == "valid":
        pairs = ((0, 0),) * n
    elif spec == "same":
        pairs = tuple(_same_pads(i, k, s, d) for i, k, s, d in zip(in_size, kernel, stride, dilation))
    else:
        pairs = spec
        if min(min(p) for p in pairs) < 0:
            raise Expect(ValueError, "negative padding")
    if mode != "zeros":
        _check_mode_pads(mode, in_size, pairs)
    out = []
    for i, k, s, d, (lo, hi) in zip(in_size, kernel, stride, dilation, pairs):
        if i + lo + hi < _span(k, d):
            raise Expect(ValueError, "kernel larger than the padded input")
        out.append((i + lo + hi - _span(k, d)) // s + 1)
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(in_size, pairs))
    _check_volumes(x_shape, w_shape, (batch, cout) + tuple(out), (batch, cin) + padded)
    return (batch, cout) + tuple(out), pairs


def transpose_oracle(x_shape, w_shape, stride, spec, output_padding, groups, dilation, output_shape, mode):
    """(output shape, pads, output padding) of conv_transpose, or Expect. With
    output_shape given, output_padding must be None (the default)."""
    _check_common(x_shape, w_shape, stride, dilation, groups, mode)
    n = len(w_shape) - 2
    batch, cin = x_shape[:2]
    kernel, in_size = w_shape[2:], x_shape[2:]
    if w_shape[0] != cin or cin % groups:
        raise Expect(ValueError, "channels do not match weight / groups")
    cout = w_shape[1] * groups
    if spec not in ("same", "valid") and min(min(p) for p in spec) < 0:
        raise Expect(ValueError, "negative padding")
    if output_shape is not None and min(output_shape) < 1:
        raise Expect(ValueError, "output_shape < 1")
    if output_padding is not None and min(output_padding) < 0:
        raise Expect(ValueError, "negative output_padding")
    if spec == "same" and output_padding is not None and max(output_padding) > 0:
        # "same" fixes the size to in * stride (output_shape chooses another).
        raise Expect(ValueError, "output_padding with padding='same'")
    sizes, pairs, ops = [], [], []
    for d in range(n):
        i, k, s, dl = in_size[d], kernel[d], stride[d], dilation[d]
        if spec == "same":
            o = output_shape[d] if output_shape is not None else i * s
            if -(-o // s) != i:
                raise Expect(ValueError, "output_shape not reachable with 'same'")
            lo, hi = _same_pads(o, k, s, dl)
        elif spec == "valid":
            lo, hi = 0, 0
        else:
            lo, hi = spec[d]
        smallest = (i - 1) * s - lo - hi + _span(k, dl)
        if output_shape is not None:
            op = output_shape[d] - smallest
        elif spec == "same":
            op = i * s - smallest
        else:
            op = output_padding[d]
        if not 0 <= op < max(s, dl):
            raise Expect(ValueError, "output padding out of range")
        if smallest + op < 1:
            raise Expect(ValueError, "the padding removes the whole output")
        sizes.append(smallest + op)
        pairs.append((lo, hi))
        ops.append(op)
    if mode != "zeros":
        _check_mode_pads(mode, sizes, pairs)
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(sizes, pairs))
    _check_volumes(x_shape, w_shape, (batch, cout) + tuple(sizes), (batch, cout) + padded)
    return (batch, cout) + tuple(sizes), tuple(pairs), tuple(ops)


# ---- checking calls ---------------------------------------------------------------------


def expect_failure(fn_name, call, exc, why):
    event("invalid: " + ("TypeError or ValueError" if isinstance(exc, tuple) else exc.__name__))
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    names = "/".join(e.__name__ for e in exc) if isinstance(exc, tuple) else exc.__name__
    assert isinstance(info.value, exc), (
        f"{fn_name}: expected {names} ({why}), got {type(info.value).__name__}: {info.value}"
    )
    message = str(info.value)
    assert fn_name in message, f"{fn_name}: the message does not name the function: {message!r}"
    assert len(message) > len(fn_name) + 10, f"{fn_name}: message too short: {message!r}"


def decided(args: Args, oracle):
    """The oracle's verdict combined with the errors the drawing made certain:
    ("ok", result) or ("fail", exception class or tuple, reasons). A call wrong
    in a type and in a value may raise either error (the contract does not
    order the checks); a call wrong in one way only must raise its error."""
    reasons = args.type_errors + args.value_errors
    if not args.value_errors:
        try:
            result = oracle()
        except Expect as e:
            reasons.append(str(e))
            return "fail", (TypeError, ValueError) if args.type_errors else ValueError, reasons
        if not args.type_errors:
            event("valid")
            return "ok", result
        return "fail", TypeError, reasons
    return "fail", (TypeError, ValueError) if args.type_errors else ValueError, reasons


def tolerance(dtype):
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def assert_close(fn_name, got, expected, abs_bound, dtype):
    got = np.asarray(got, np.float64)
    err = np.abs(got - expected)
    bound = tolerance(dtype) * abs_bound + 1e-300
    assert got.shape == expected.shape
    worst = np.argmax(err - bound) if err.size else None
    assert np.all(err <= bound), (
        f"{fn_name}: error {err.flat[worst]:.3g} > bound {bound.flat[worst]:.3g} at flat index {worst}"
    )


def _f64(a):
    return np.asarray(a, np.float64)


def dot(a, b):
    return float(np.sum(_f64(a) * _f64(b)))


def abs_dot(a, b):
    return float(np.sum(np.abs(_f64(a)) * np.abs(_f64(b))))


# ---- conv and conv_transpose ----------------------------------------------------------


def draw_geometry(args: Args, transposed):
    """Shapes of a small problem: n, batch, groups, per-group channels, sizes.
    Mostly 1-3 spatial dimensions, sometimes 4 (tiny)."""
    n = args.draw(st.sampled_from([1, 1, 2, 2, 3, 4]), label="n")
    max_size = {1: 9, 2: 5, 3: 3, 4: 3}[n]
    batch = args.draw(st.sampled_from([0, 1, 1, 2]))
    groups = args.draw(st.integers(1, 3))
    cin_g = args.draw(st.integers(1, 2))
    cout_g = args.draw(st.integers(1, 2))
    in_size = tuple(args.draw(st.integers(1, max_size)) for _ in range(n))
    kernel = tuple(args.draw(st.integers(1, 3 if n < 4 else 2)) for _ in range(n))
    return n, batch, groups, cin_g, cout_g, in_size, kernel


def spoil_shapes(args: Args, x_shape, w_shape):
    """Maybe make the shapes inconsistent (the oracle then rejects them)."""
    if not args.spoil():
        return x_shape, w_shape
    kind = args.draw(st.sampled_from(["rank", "short", "channels", "empty spatial", "empty weight"]))
    if kind == "rank":
        return x_shape + (2,), w_shape
    if kind == "short":
        return x_shape[:2], w_shape[:2]
    if kind == "channels":
        return (x_shape[0], x_shape[1] + args.draw(st.integers(1, 2))) + x_shape[2:], w_shape
    if kind == "empty spatial":
        d = args.draw(st.integers(2, len(x_shape) - 1))
        return x_shape[:d] + (0,) + x_shape[d + 1:], w_shape
    d = args.draw(st.integers(0, len(w_shape) - 1))
    return x_shape, w_shape[:d] + (0,) + w_shape[d + 1:]


def draw_arrays(args: Args, named_shapes):
    """Arrays of one float dtype (or, when spoiled, a bad or mixed dtype)."""
    dtype = float_dtype(args)
    dtypes = {name: dtype for name in named_shapes}
    if args.spoil():
        name = args.draw(st.sampled_from(sorted(named_shapes)))
        if args.draw(st.booleans()):
            dtypes[name] = bad_dtype(args)
            args.type_errors.append(f"{name} has dtype {np.dtype(dtypes[name])}")
        elif len(named_shapes) > 1:
            dtypes[name] = np.float64 if dtype == np.float32 else np.float32
            args.type_errors.append(f"{name} has a different dtype")
    arrays = {name: random_array(args, shape, dtypes[name], name) for name, shape in named_shapes.items()}
    return arrays, dtype


@_settings("conv")
@given(st.data())
def test_fuzz_conv(data):
    args = Args(data, invalid_rate=0.05)
    n, batch, groups, cin_g, cout_g, in_size, kernel = draw_geometry(args, False)
    x_shape = (batch, cin_g * groups) + in_size
    w_shape = (cout_g * groups, cin_g) + kernel
    x_shape, w_shape = spoil_shapes(args, x_shape, w_shape)
    nd = max(len(w_shape) - 2, 1)
    stride, stride_n = per_dim_arg(args, "stride", nd, 1, 3, 1)
    dilation, dilation_n = per_dim_arg(args, "dilation", nd, 1, 2, 1)
    padding, spec = padding_arg(args, nd)
    groups_value, groups_n = groups_arg(args, groups)
    mode, mode_n = mode_arg(args)
    with_bias = args.draw(st.booleans())
    bias_len = cout_g * groups
    if with_bias and args.spoil():
        bias_len += args.draw(st.sampled_from([-1, 1]))
        args.value_errors.append("bias of the wrong length")
    shapes = {"input": x_shape, "weight": w_shape}
    if with_bias:
        shapes["bias"] = (bias_len,)
    arrays, dtype = draw_arrays(args, shapes)
    x, w, b = arrays["input"], arrays["weight"], arrays.get("bias")

    def call():
        return pytconv.conv(x, w, b, stride=stride, padding=padding, dilation=dilation,
                            groups=groups_value, padding_mode=mode)

    verdict = decided(args, lambda: conv_oracle(x_shape, w_shape, stride_n, spec, dilation_n, groups_n, mode_n))
    if verdict[0] == "fail":
        expect_failure("conv", call, verdict[1], verdict[2])
        return
    out_shape, _ = verdict[1]
    y = call()
    assert isinstance(y, np.ndarray) and y.flags.c_contiguous
    assert y.dtype == dtype and y.shape == out_shape, (y.dtype, y.shape, dtype, out_shape)
    kw = dict(stride=stride_n, padding=spec if isinstance(spec, str) else spec, dilation=dilation_n,
              groups=groups_n, padding_mode=mode_n)
    expected = reference.conv(_f64(x), _f64(w), None if b is None else _f64(b), **kw)
    bound = reference.conv(np.abs(_f64(x)), np.abs(_f64(w)), None if b is None else np.abs(_f64(b)), **kw)
    assert_close("conv", y, expected, bound, dtype)


@_settings("conv_transpose")
@given(st.data())
def test_fuzz_conv_transpose(data):
    args = Args(data, invalid_rate=0.05)
    n, batch, groups, cin_g, cout_g, in_size, kernel = draw_geometry(args, True)
    x_shape = (batch, cin_g * groups) + in_size
    w_shape = (cin_g * groups, cout_g) + kernel
    x_shape, w_shape = spoil_shapes(args, x_shape, w_shape)
    nd = max(len(w_shape) - 2, 1)
    stride, stride_n = per_dim_arg(args, "stride", nd, 1, 3, 1)
    dilation, dilation_n = per_dim_arg(args, "dilation", nd, 1, 2, 1)
    padding, spec = padding_arg(args, nd)
    groups_value, groups_n = groups_arg(args, groups)
    mode, mode_n = mode_arg(args)
    # The output size: by output_padding (default 0), or by output_shape.
    output_padding, op_n, output_shape, oshape_n = 0, (0,) * nd, None, None
    how = args.draw(st.sampled_from(["default", "output_padding", "output_shape"]))
    if how == "output_padding":
        output_padding, op_n = per_dim_arg(args, "output_padding", nd, 0, 2, 0)
    elif how == "output_shape":
        # Near the sizes a transposed convolution reaches, so that many are.
        strides = stride_n if stride_n is not None else (1,) * nd
        base = [(i - 1) * s + k for i, s, k in zip(x_shape[2:], strides, w_shape[2:])] or [1] * nd
        output_shape = tuple(max(1, b + args.draw(st.integers(-3, 3))) for b in base)
        if len(output_shape) != nd:
            output_shape = (1,) * nd
        oshape_n, op_n = output_shape, None
        if args.draw(st.integers(0, 9)) == 0:
            output_padding = (1,) * nd
            args.value_errors.append("output_padding given with output_shape")
    with_bias = args.draw(st.booleans())
    bias_len = cout_g * groups
    if with_bias and args.spoil():
        bias_len += args.draw(st.sampled_from([-1, 1]))
        args.value_errors.append("bias of the wrong length")
    shapes = {"input": x_shape, "weight": w_shape}
    if with_bias:
        shapes["bias"] = (bias_len,)
    arrays, dtype = draw_arrays(args, shapes)
    x, w, b = arrays["input"], arrays["weight"], arrays.get("bias")

    def call():
        return pytconv.conv_transpose(x, w, b, stride=stride, padding=padding, output_padding=output_padding,
                                      groups=groups_value, dilation=dilation, output_shape=output_shape,
                                      padding_mode=mode)

    verdict = decided(args, lambda: transpose_oracle(x_shape, w_shape, stride_n, spec, op_n, groups_n,
                                                     dilation_n, oshape_n, mode_n))
    if verdict[0] == "fail":
        expect_failure("conv_transpose", call, verdict[1], verdict[2])
        return
    out_shape, pairs, ops = verdict[1]
    y = call()
    assert isinstance(y, np.ndarray) and y.flags.c_contiguous
    assert y.dtype == dtype and y.shape == out_shape, (y.dtype, y.shape, dtype, out_shape)
    kw = dict(stride=stride_n, padding=pairs, output_padding=ops, groups=groups_n, dilation=dilation_n,
              padding_mode=mode_n)
    expected = reference.conv_transpose(_f64(x), _f64(w), None if b is None else _f64(b), **kw)
    bound = reference.conv_transpose(np.abs(_f64(x)), np.abs(_f64(w)),
                                     None if b is None else np.abs(_f64(b)), **kw)
    assert_close("conv_transpose", y, expected, bound, dtype)
    # The adjoint of conv with the same arguments, where that conv maps the
    # output's shape back onto the input's (output padding below the stride).
    if b is None and all(op < s for op, s in zip(ops, stride_n)) and y.size and np.size(x):
        probe = np.random.default_rng(7).standard_normal(out_shape)
        conv_kw = dict(stride=stride_n, padding=pairs, dilation=dilation_n, groups=groups_n, padding_mode=mode_n)
        forward = reference.conv(probe, _f64(w), **conv_kw)
        assert forward.shape == np.shape(x)
        lhs, rhs = dot(y, probe), dot(forward, x)
        bound = abs_dot(reference.conv(np.abs(probe), np.abs(_f64(w)), **conv_kw), x)
        assert abs(lhs - rhs) <= tolerance(dtype) * bound + 1e-300, (lhs, rhs)


# ---- gradients: the adjoint identity ---------------------------------------------------


def draw_valid_conv(args: Args, transposed):
    """A valid problem for the gradient tests: shapes, normalised keywords
    and the spellings passed to pytconv."""
    while True:
        n, batch, groups, cin_g, cout_g, in_size, kernel = draw_geometry(args, transposed)
        stride_n = tuple(args.draw(st.integers(1, 3)) for _ in range(n))
        dilation_n = tuple(args.draw(st.integers(1, 2)) for _ in range(n))
        padding, spec = padding_arg(Args(args.data, 0), n)
        mode = args.draw(st.sampled_from(MODES))
        if not transposed:
            x_shape = (batch, cin_g * groups) + in_size
            w_shape = (cout_g * groups, cin_g) + kernel
            try:
                out_shape, pairs = conv_oracle(x_shape, w_shape, stride_n, spec, dilation_n, groups, mode)
            except Expect:
                continue
            return dict(x_shape=x_shape, w_shape=w_shape, out_shape=out_shape, pairs=pairs, padding=padding,
                        stride=stride_n, dilation=dilation_n, groups=groups, mode=mode, ops=None)
        x_shape = (batch, cin_g * groups) + in_size
        w_shape = (cin_g * groups, cout_g) + kernel
        ops_n = tuple(args.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride_n, dilation_n))
        try:
            out_shape, pairs, ops = transpose_oracle(x_shape, w_shape, stride_n, spec,
                                                     None if spec == "same" else ops_n, groups,
                                                     dilation_n, None, mode)
        except Expect:
            continue
        return dict(x_shape=x_shape, w_shape=w_shape, out_shape=out_shape, pairs=pairs, padding=padding,
                    stride=stride_n, dilation=dilation_n, groups=groups, mode=mode, ops=ops)


def grad_output_arg(args: Args, shape, dtype, stride, dilation):
    """grad_output of `shape`, or (spoiled) of another shape: one more batch or
    channel, or max(stride, dilation) more along a spatial axis (beyond what
    an output padding can reach)."""
    if args.spoil():
        d = args.draw(st.integers(0, len(shape) - 1))
        bump = 1 if d < 2 else max(stride[d - 2], dilation[d - 2])
        bad = shape[:d] + (shape[d] + bump,) + shape[d + 1:]
        args.value_errors.append(f"grad_output of shape {bad}, expected {shape}")
        return random_array(args, bad, dtype, "grad_output")
    return random_array(args, shape, dtype, "grad_output")


def shape_arg(args: Args, shape):
    """A shape argument: tuple, list, or NumPy ints; spoiled: negative, float, too short."""
    if args.spoil():
        kind = args.draw(st.sampled_from(["negative", "float", "short"]))
        if kind == "negative":
            args.value_errors.append("a negative size")
            return (shape[0], -1) + tuple(shape[2:])
        if kind == "float":
            args.type_errors.append("a float size")
            return (float(shape[0]),) + tuple(shape[1:])  # the oracle sees `shape`
        args.value_errors.append("a shape of 2 dimensions")
        return tuple(shape[:2])
    form = args.draw(st.sampled_from(["tuple", "list", "np"]))
    if form == "np":
        return tuple(np.int64(s) for s in shape)
    return list(shape) if form == "list" else tuple(shape)


def _grad_test(data, fn_name, transposed, wrt):
    args = Args(data, invalid_rate=0.12)
    pb = draw_valid_conv(args, transposed)
    dtype = float_dtype(args)
    a_shape, w_shape, out_shape = pb["x_shape"], pb["w_shape"], pb["out_shape"]
    a = random_array(args, a_shape, dtype, "input")
    w = random_array(args, w_shape, dtype, "weight")
    g = grad_output_arg(args, out_shape, dtype, pb["stride"], pb["dilation"])
    if args.spoil():
        bad = bad_dtype(args)
        g = np.asarray(g).astype(bad)
        args.type_errors.append(f"grad_output has dtype {np.dtype(bad)}")
    kw = dict(stride=pb["stride"], padding=pb["padding"], dilation=pb["dilation"], groups=pb["groups"],
              padding_mode=pb["mode"])
    fn = getattr(pytconv, fn_name)
    if wrt == "input":
        shape_value = shape_arg(args, a_shape)
        call = lambda: fn(shape_value, w, g, **kw)  # noqa: E731
    else:
        shape_value = shape_arg(args, w_shape)
        call = lambda: fn(a, shape_value, g, **kw)  # noqa: E731
    verdict = decided(args, lambda: None)
    if verdict[0] == "fail":
        expect_failure(fn_name, call, verdict[1], verdict[2])
        return
    grad = call()
    assert isinstance(grad, np.ndarray) and grad.dtype == dtype
    assert grad.shape == (a_shape if wrt == "input" else w_shape)
    # <op(a, w), g> == <a, grad_a(g)> == <w, grad_w(g)>, with op from the reference.
    ref_kw = dict(stride=pb["stride"], padding=pb["pairs"], dilation=pb["dilation"], groups=pb["groups"],
                  padding_mode=pb["mode"])
    if transposed:
        ref_kw["output_padding"] = pb["ops"]
        op = reference.conv_transpose
    else:
        op = reference.conv
    forward = op(_f64(a), _f64(w), **ref_kw)
    lhs = dot(forward, g)
    rhs = dot(a, grad) if wrt == "input" else dot(w, grad)
    bound = abs_dot(op(np.abs(_f64(a)), np.abs(_f64(w)), **ref_kw), g)
    assert abs(lhs - rhs) <= tolerance(dtype) * bound + 1e-300, (fn_name, lhs, rhs, bound)


@_settings("conv_input_grad")
@given(st.data())
def test_fuzz_conv_input_grad(data):
    _grad_test(data, "conv_input_grad", False, "input")


@_settings("conv_weight_grad")
@given(st.data())
def test_fuzz_conv_weight_grad(data):
    _grad_test(data, "conv_weight_grad", False, "weight")


@_settings("conv_transpose_input_grad")
@given(st.data())
def test_fuzz_conv_transpose_input_grad(data):
    _grad_test(data, "conv_transpose_input_grad", True, "input")


@_settings("conv_transpose_weight_grad")
@given(st.data())
def test_fuzz_conv_transpose_weight_grad(data):
    _grad_test(data, "conv_transpose_weight_grad", True, "weight")


@_settings("bias_grad")
@given(st.data())
def test_fuzz_bias_grad(data):
    args = Args(data, invalid_rate=0.25)
    ndim = args.draw(st.integers(2, 5))
    shape = tuple(args.draw(st.integers(0, 4)) for d in range(ndim))
    dtype = float_dtype(args)
    if args.spoil():
        if args.draw(st.booleans()):
            shape = shape[:1]
            args.value_errors.append("grad_output of rank 1")
        else:
            dtype = bad_dtype(args)
            args.type_errors.append(f"grad_output of dtype {np.dtype(dtype)}")
    g = random_array(args, shape, dtype, "grad_output")
    verdict = decided(args, lambda: None)
    if verdict[0] == "fail":
        expect_failure("bias_grad", lambda: pytconv.bias_grad(g), verdict[1], verdict[2])
        return
    db = pytconv.bias_grad(g)
    assert db.dtype == dtype and db.shape == (shape[1],)
    axes = (0,) + tuple(range(2, ndim))
    expected = _f64(g).sum(axis=axes)
    bound = np.abs(_f64(g)).sum(axis=axes)
    assert_close("bias_grad", db, expected, bound, dtype)


# ---- shape helpers ---------------------------------------------------------------------

# Mostly moderate sizes, sometimes large ones whose products pass the 64-bit
# limits (the oracle knows which).
_BATCH = st.one_of(st.integers(0, 64), st.integers(0, 10**6))
_SIZE = st.one_of(st.integers(1, 30), st.integers(1, 300), st.integers(1, 10**5))


@_settings("conv_output_shape")
@given(st.data())
def test_fuzz_conv_output_shape(data):
    args = Args(data, invalid_rate=0.04)
    n = args.draw(st.integers(1, 6))
    groups = args.draw(st.integers(1, 4))
    x_shape = (args.draw(_BATCH), groups * args.draw(st.integers(1, 50))) + tuple(
        args.draw(_SIZE) for _ in range(n))
    w_shape = (groups * args.draw(st.integers(1, 50)), x_shape[1] // groups) + tuple(
        args.draw(st.integers(1, 9)) for _ in range(n))
    x_shape, w_shape = spoil_shapes(args, x_shape, w_shape)
    nd = max(len(w_shape) - 2, 1)
    stride, stride_n = per_dim_arg(args, "stride", nd, 1, 9, 1)
    dilation, dilation_n = per_dim_arg(args, "dilation", nd, 1, 9, 1)
    padding, spec = padding_arg(args, nd, max_pad=20)
    groups_value, groups_n = groups_arg(args, groups)
    mode, mode_n = mode_arg(args)
    x_arg, w_arg = shape_arg(args, x_shape), shape_arg(args, w_shape)

    def call():
        return pytconv.conv_output_shape(x_arg, w_arg, stride, padding, dilation, groups_value, mode)

    verdict = decided(args, lambda: conv_oracle(x_shape, w_shape, stride_n, spec, dilation_n, groups_n, mode_n))
    if verdict[0] == "fail":
        expect_failure("conv_output_shape", call, verdict[1], verdict[2])
        return
    shape = call()
    assert tuple(shape) == verdict[1][0]
    assert all(type(s) is int for s in shape)


@_settings("conv_transpose_output_shape")
@given(st.data())
def test_fuzz_conv_transpose_output_shape(data):
    args = Args(data, invalid_rate=0.04)
    n = args.draw(st.integers(1, 6))
    groups = args.draw(st.integers(1, 4))
    x_shape = (args.draw(_BATCH), groups * args.draw(st.integers(1, 50))) + tuple(
        args.draw(_SIZE) for _ in range(n))
    w_shape = (x_shape[1], args.draw(st.integers(1, 50))) + tuple(args.draw(st.integers(1, 9)) for _ in range(n))
    x_shape, w_shape = spoil_shapes(args, x_shape, w_shape)
    nd = max(len(w_shape) - 2, 1)
    stride, stride_n = per_dim_arg(args, "stride", nd, 1, 9, 1)
    dilation, dilation_n = per_dim_arg(args, "dilation", nd, 1, 9, 1)
    padding, spec = padding_arg(args, nd, max_pad=20)
    groups_value, groups_n = groups_arg(args, groups)
    mode, mode_n = mode_arg(args)
    output_padding, op_n, output_shape, oshape_n = 0, (0,) * nd, None, None
    how = args.draw(st.sampled_from(["default", "output_padding", "output_shape"]))
    if how == "output_padding":
        output_padding, op_n = per_dim_arg(args, "output_padding", nd, 0, 9, 0)
    elif how == "output_shape" and len(x_shape) >= 3:
        # Near the sizes the transposed convolution reaches, so some are valid.
        base = [(i - 1) * s + 1 for i, s in zip(x_shape[2:], stride_n or (1,) * nd)]
        output_shape = tuple(max(1, b + args.draw(st.integers(-12, 12))) for b in base)
        oshape_n, op_n = output_shape, None
    x_arg, w_arg = shape_arg(args, x_shape), shape_arg(args, w_shape)

    def call():
        return pytconv.conv_transpose_output_shape(x_arg, w_arg, stride, padding, output_padding, groups_value,
                                                   dilation, output_shape, mode)

    verdict = decided(args, lambda: transpose_oracle(x_shape, w_shape, stride_n, spec, op_n, groups_n,
                                                     dilation_n, oshape_n, mode_n))
    if verdict[0] == "fail":
        expect_failure("conv_transpose_output_shape", call, verdict[1], verdict[2])
        return
    shape = call()
    assert tuple(shape) == verdict[1][0]
    assert all(type(s) is int for s in shape)


# ---- fixed regressions of the classes above -------------------------------------------------


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda: pytconv.conv(np.zeros((1, 1, 4), np.int32), np.zeros((1, 1, 2), np.int32)), TypeError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2), np.float32)), TypeError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), stride=0), ValueError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), stride=1.0), TypeError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), padding="full"), ValueError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), padding=(1, 2, 3)), ValueError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), padding_mode="wrap"), ValueError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), padding=4, padding_mode="reflect"),
         ValueError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 9))), ValueError),
        (lambda: pytconv.conv(np.zeros((1, 2, 4)), np.zeros((1, 1, 2))), ValueError),
        (lambda: pytconv.conv(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), np.zeros(2)), ValueError),
        (lambda: pytconv.conv_transpose(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), output_padding=1), ValueError),
        (lambda: pytconv.conv_transpose(np.zeros((1, 1, 4)), np.zeros((1, 1, 2)), output_shape=(9,)), ValueError),
        (lambda: pytconv.conv_output_shape((1, 1, -4), (1, 1, 2)), ValueError),
        (lambda: pytconv.conv_output_shape((1, 1, 4.0), (1, 1, 2)), TypeError),
        (lambda: pytconv.bias_grad(np.zeros(3)), ValueError),
    ],
    ids=lambda v: "" if callable(v) else v.__name__,
)
def test_invalid_examples(call, exc):
    """One fixed member of several invalid classes (the fuzzer covers them at random)."""
    with pytest.raises(exc) as info:
        call()
    assert str(info.value)


@pytest.mark.parametrize("output_padding", [1, 7])
def test_same_padding_with_output_padding(output_padding):
    # With "same" the output size is in * stride; an output padding would
    # contradict it (output_shape is the way to choose another size).
    x = np.ones((1, 1, 4))
    w = np.ones((1, 1, 3))
    with pytest.raises(ValueError, match="conv_transpose"):
        pytconv.conv_transpose(x, w, stride=2, padding="same", output_padding=output_padding)


def test_invalid_classes_are_documented():
    """docs/TESTING.md lists the invalid-input classes this file draws."""
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "TESTING.md")
    text = open(path, encoding="utf-8").read()
    missing = [name for name in INVALID_CLASSES if name not in text]
    assert not missing, f"docs/TESTING.md does not list the invalid classes {missing}"
