"""Argument normalisation and validation: the one place where user arguments
become a `Problem`, the description of a convolution the C core (and the GPU
path) computes on.

Every public operation describes its work as the *convolution* it is or is
the transpose/gradient of::

    y = conv(x, w)    x: (batch, in_channels, *in_size)
                      w: (out_channels, in_channels // groups, *kernel)
                      y: (batch, out_channels, *out_size)

A transposed convolution of an input t with weight w is ``conv^T`` of the
convolution whose *output* has t's shape: its ``out_size`` is t's spatial shape
and its ``in_size`` the transposed output's.

All checks happen here, before any work, and raise ``ValueError`` (shapes,
sizes, values) or ``TypeError`` (types, dtypes) naming the function and the
argument.
"""

from __future__ import annotations

import functools
import numbers
import operator
from typing import NamedTuple

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Spatial dimensions the core accepts: NumPy's array rank less (batch, channels).
MAX_SPATIAL_DIMS = 62

# Element counts above this cannot be addressed with 64-bit byte offsets.
_MAX_ELEMENTS = (2**63 - 1) // 8
# Any single size, stride, dilation or padding: far beyond what memory holds,
# small enough that the core's 64-bit arithmetic on it cannot overflow (the C
# core refuses more than INT64_MAX / 8, as do these checks, by name).
_MAX_INT = (2**63 - 1) // 8


class Problem(NamedTuple):
    """A convolution, fully resolved: every field is an int or a tuple of ints
    (one per spatial dimension), except ``padding_mode`` (a name)."""

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple
    out_size: tuple
    kernel: tuple
    stride: tuple
    dilation: tuple
    pad_low: tuple
    pad_high: tuple
    padding_mode: str

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    @property
    def x_shape(self) -> tuple:
        return (self.batch, self.in_channels) + self.in_size

    @property
    def y_shape(self) -> tuple:
        return (self.batch, self.out_channels) + self.out_size

    @property
    def w_shape(self) -> tuple:
        return (self.out_channels, self.in_channels // self.groups) + self.kernel

    def flops(self) -> int:
        """Multiply-adds times two of the direct convolution."""
        return (
            2
            * self.batch
            * self.out_channels
            * (self.in_channels // self.groups)
            * _prod(self.kernel)
            * _prod(self.out_size)
        )


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result


# ---- scalars and per-dimension tuples ------------------------------------


def _int(fn: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if abs(value) > _MAX_INT:
        raise ValueError(f"{fn}: {name} is too large: {value} (at most 2**60 - 1)")
    return value


def per_dim(fn: str, name: str, value, n: int, minimum: int) -> tuple:
    """An int, or a sequence of n ints, as an n-tuple of ints >= minimum."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be an int or a sequence of {n} ints, got {value!r}")
    if isinstance(value, (numbers.Integral,)) and not isinstance(value, (bool, np.bool_)):
        values = (_int(fn, name, value),) * n
    else:
        try:
            seq = tuple(value)
        except TypeError:
            raise TypeError(
                f"{fn}: {name} must be an int or a sequence of {n} ints, "
                f"got {type(value).__name__} {value!r}"
            ) from None
        if len(seq) == 1 and n != 1:
            seq = seq * n
        if len(seq) != n:
            raise ValueError(
                f"{fn}: {name} needs 1 or {n} values for {n} spatial dimensions, "
                f"got {len(seq)}: {value!r}"
            )
        values = tuple(_int(fn, name, v) for v in seq)
    for v in values:
        if v < minimum:
            raise ValueError(f"{fn}: {name} must be >= {minimum} in every dimension, got {value!r}")
    return values


def padding_spec(fn: str, padding, n: int):
    """"same", "valid", or an n-tuple of (low, high) pairs of ints >= 0."""
    if isinstance(padding, str):
        name = padding.lower()
        if name not in ("same", "valid"):
            raise ValueError(
                f"{fn}: padding must be an int, per-dimension ints or (low, high) pairs, "
                f"'same' or 'valid', got {padding!r}"
            )
        return name
    if isinstance(padding, numbers.Integral) and not isinstance(padding, (bool, np.bool_)):
        p = _int(fn, "padding", padding)
        if p < 0:
            raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
        return ((p, p),) * n
    try:
        seq = tuple(padding)
    except TypeError:
        raise TypeError(
            f"{fn}: padding must be an int, a sequence, 'same' or 'valid', "
            f"got {type(padding).__name__} {padding!r}"
        ) from None
    if len(seq) == 1 and n != 1:
        seq = seq * n
    if len(seq) != n:
        raise ValueError(
            f"{fn}: padding needs 1 or {n} entries for {n} spatial dimensions, "
            f"got {len(seq)}: {padding!r}"
        )
    pairs = []
    for item in seq:
        if isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
            lo = hi = _int(fn, "padding", item)
        else:
            try:
                pair = tuple(item)
            except TypeError:
                raise TypeError(
                    f"{fn}: padding entries must be ints or (low, high) pairs, got {item!r}"
                ) from None
            if len(pair) != 2:
                raise ValueError(f"{fn}: padding pairs must be (low, high), got {item!r}")
            lo, hi = (_int(fn, "padding", v) for v in pair)
        if lo < 0 or hi < 0:
            raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
        pairs.append((lo, hi))
    return tuple(pairs)


def same_padding(in_size: int, k: int, stride: int, dilation: int) -> tuple:
    """TensorFlow's "SAME" rule: output ceil(in / stride), extra cell at the end."""
    out = -(-in_size // stride)
    total = max((out - 1) * stride + dilation * (k - 1) + 1 - in_size, 0)
    return total // 2, total - total // 2


def conv_out_size(in_size, k, stride, dilation, lo, hi) -> int:
    """floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1 (< 1: no fit)."""
    span = in_size + lo + hi - dilation * (k - 1) - 1
    return span // stride + 1 if span >= 0 else 0


def transposed_out_size(in_size, k, stride, dilation, lo, hi, output_padding) -> int:
    return (in_size - 1) * stride - lo - hi + dilation * (k - 1) + 1 + output_padding


def padding_mode_code(fn: str, padding_mode) -> str:
    if not isinstance(padding_mode, str):
        raise TypeError(f"{fn}: padding_mode must be a string, got {padding_mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"{fn}: padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, "
            f"got {padding_mode!r}"
        )
    return padding_mode


# ---- arrays ---------------------------------------------------------------


def as_array(fn: str, name: str, value, xp=np):
    """The array of a user argument, with a supported dtype (not copied)."""
    arr = value if isinstance(value, xp.ndarray) else xp.asarray(value)
    if arr.dtype not in DTYPES:
        raise TypeError(
            f"{fn}: {name} has dtype {arr.dtype}; supported dtypes are float32 and float64"
        )
    return arr


def common_dtype(fn: str, **arrays):
    """The one dtype every given array shares."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        given = ", ".join(f"{name} {dt}" for name, dt in dtypes.items())
        raise TypeError(
            f"{fn}: arrays must share one dtype (float32 or float64), got {given}"
        )
    return next(iter(dtypes.values()))


def _check_shape(fn: str, name: str, shape, min_ndim: int = 3) -> tuple:
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a sequence of ints, got {shape!r}") from None
    if len(shape) < min_ndim:
        raise ValueError(
            f"{fn}: {name} must have at least {min_ndim} dimensions "
            f"(batch or channels, channels, spatial...), got shape {shape}"
        )
    if len(shape) - 2 > MAX_SPATIAL_DIMS:
        raise ValueError(
            f"{fn}: {name} has {len(shape) - 2} spatial dimensions, at most "
            f"{MAX_SPATIAL_DIMS} are supported"
        )
    if any(s < 0 for s in shape):
        raise ValueError(f"{fn}: {name} has a negative size: {shape}")
    return shape


def _check_volume(fn: str, what: str, shape) -> None:
    if _prod(shape) > _MAX_ELEMENTS:
        raise ValueError(f"{fn}: {what} of shape {tuple(shape)} has too many elements to address")


def _check_mode_padding(fn, mode, size_name, sizes, lows, highs) -> None:
    """PyTorch's limits for non-zero padding modes, on the padded array."""
    for d, (size, lo, hi) in enumerate(zip(sizes, lows, highs)):
        if mode == "reflect" and (lo >= size or hi >= size):
            raise ValueError(
                f"{fn}: padding_mode='reflect' needs padding < the {size_name} size in each "
                f"dimension; dimension {d} has size {size} and padding ({lo}, {hi})"
            )
        if mode == "circular" and (lo > size or hi > size):
            raise ValueError(
                f"{fn}: padding_mode='circular' needs padding <= the {size_name} size in each "
                f"dimension; dimension {d} has size {size} and padding ({lo}, {hi})"
            )


def _check_span(fn, kernel, dilation) -> None:
    """dilation * kernel within the core's 64-bit limits, per dimension."""
    for d, (k, dl) in enumerate(zip(kernel, dilation)):
        if dl * k > _MAX_INT:
            raise ValueError(
                f"{fn}: dilation {dl} with kernel size {k} in dimension {d} spans more than "
                "2**60 - 1 cells"
            )


def _channels(fn, x_shape, w_shape, groups, x_name, w_name, per_group_axis):
    """Checks ndim, groups and channel counts; returns (n, groups)."""
    n = len(w_shape) - 2
    if len(x_shape) != len(w_shape):
        raise ValueError(
            f"{fn}: {x_name} of shape {x_shape} has {len(x_shape) - 2} spatial dimensions but "
            f"{w_name} of shape {w_shape} has {n} ({x_name} must be (batch, channels, *spatial))"
        )
    groups = _int(fn, "groups", groups)
    if groups < 1:
        raise ValueError(f"{fn}: groups must be >= 1, got {groups}")
    if w_shape[0] < 1 or w_shape[1] < 1 or any(k < 1 for k in w_shape[2:]):
        raise ValueError(f"{fn}: {w_name} must have no empty dimension, got shape {w_shape}")
    return n, groups


class _Uncacheable(Exception):
    pass


def _key(value):
    """A hashable key that tells apart everything validation tells apart:
    only plain ints, strings, None and (nested) sequences of them qualify;
    anything else (bools, NumPy scalars, floats, ...) takes the uncached,
    validating path."""
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if kind is tuple or kind is list:
        if set(map(type, value)) <= _INT_ONLY:  # shapes: checked at C speed
            return tuple(value)
        return tuple(_key(v) for v in value)
    raise _Uncacheable


_INT_ONLY = {int}
_PLAIN = {int, str, tuple, type(None)}


def _cached(build):
    """Memoises a Problem builder on its arguments: a call with arguments seen
    before (the common case in a training loop) costs a dictionary lookup.
    Only arguments of exact plain types are cached, so that a bool or a float
    equal to an int still reaches validation (and its error). Errors are
    raised again on every call (they are not cached)."""
    cache = {}

    def lookup(key):
        problem = cache.get(key)
        if problem is None:
            problem = build(*key)
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = problem
        return problem

    @functools.wraps(build)
    def wrapper(*args):
        for a in args:
            kind = type(a)
            if kind is tuple:
                if not set(map(type, a)) <= _INT_ONLY:
                    break
            elif kind is not int and kind is not str and a is not None:
                break
        else:  # plain ints, strings, None and tuples of ints (shapes)
            return lookup(args)
        try:
            key = tuple(_key(a) for a in args)
        except _Uncacheable:
            return build(*args)
        return lookup(key)

    wrapper.cache_clear = cache.clear
    return wrapper


def conv_problem(*args, **kwargs) -> Problem:
    """The Problem of ``conv(x, w)`` (PyTorch's conv{n}d semantics); arguments
    as `_conv_problem`."""
    if kwargs:
        return _conv_problem(*args, **kwargs)
    return _conv_problem_cached(*args)


def transposed_problem(*args, **kwargs) -> Problem:
    """The Problem of the convolution whose transpose ``conv_transpose(x, w)``
    is; arguments as `_transposed_problem`."""
    if kwargs:
        return _transposed_problem(*args, **kwargs)
    return _transposed_problem_cached(*args)


def _conv_problem(
    fn,
    x_shape,
    w_shape,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
    x_name="input",
    w_name="weight",
) -> Problem:
    """The Problem of ``conv(x, w)`` (PyTorch's conv{n}d semantics)."""
    x_shape = _check_shape(fn, f"{x_name} shape", x_shape)
    w_shape = _check_shape(fn, f"{w_name} shape", w_shape)
    n, groups = _channels(fn, x_shape, w_shape, groups, x_name, w_name, 1)
    batch, cin = x_shape[0], x_shape[1]
    cout, cin_g = w_shape[0], w_shape[1]
    if cout % groups:
        raise ValueError(
            f"{fn}: {w_name} has {cout} output channels, not divisible by groups={groups}"
        )
    if cin != cin_g * groups:
        raise ValueError(
            f"{fn}: {w_name} expects {cin_g} input channels per group, {x_name} has {cin} "
            f"channels (groups={groups})"
        )
    in_size = x_shape[2:]
    if any(s < 1 for s in in_size):
        raise ValueError(f"{fn}: {x_name} has an empty spatial dimension: shape {x_shape}")
    kernel = w_shape[2:]
    stride = per_dim(fn, "stride", stride, n, 1)
    dilation = per_dim(fn, "dilation", dilation, n, 1)
    _check_span(fn, kernel, dilation)
    mode = padding_mode_code(fn, padding_mode)
    spec = padding_spec(fn, padding, n)
    if spec == "valid":
        pairs = ((0, 0),) * n
    elif spec == "same":
        pairs = tuple(same_padding(i, k, s, d) for i, k, s, d in zip(in_size, kernel, stride, dilation))
    else:
        pairs = spec
    lows = tuple(p[0] for p in pairs)
    highs = tuple(p[1] for p in pairs)
    if mode != "zeros":
        _check_mode_padding(fn, mode, x_name, in_size, lows, highs)
    out_size = []
    for d in range(n):
        o = conv_out_size(in_size[d], kernel[d], stride[d], dilation[d], lows[d], highs[d])
        if o < 1:
            raise ValueError(
                f"{fn}: kernel is larger than the padded {x_name} in dimension {d}: kernel "
                f"{kernel[d]} with dilation {dilation[d]} spans {dilation[d] * (kernel[d] - 1) + 1}, "
                f"padded size is {in_size[d] + lows[d] + highs[d]}"
            )
        out_size.append(o)
    problem = Problem(
        batch, cin, cout, groups, in_size, tuple(out_size), kernel, stride, dilation, lows, highs, mode
    )
    _check_sizes(fn, problem)
    return problem


def _transposed_problem(
    fn,
    x_shape,
    w_shape,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    output_shape=None,
    padding_mode="zeros",
    x_name="input",
    w_name="weight",
) -> Problem:
    """The Problem of the convolution whose transpose ``conv_transpose(x, w)`` is
    (PyTorch's conv_transpose{n}d semantics, TensorFlow's "SAME" rule)."""
    x_shape = _check_shape(fn, f"{x_name} shape", x_shape)
    w_shape = _check_shape(fn, f"{w_name} shape", w_shape)
    n, groups = _channels(fn, x_shape, w_shape, groups, x_name, w_name, 0)
    batch, cin = x_shape[0], x_shape[1]
    if w_shape[0] != cin:
        raise ValueError(
            f"{fn}: {w_name} of shape {w_shape} expects {w_shape[0]} input channels "
            f"({w_name} is (in_channels, out_channels // groups, *kernel)), {x_name} has {cin}"
        )
    if cin % groups:
        raise ValueError(f"{fn}: {x_name} has {cin} channels, not divisible by groups={groups}")
    cout = w_shape[1] * groups
    in_size = x_shape[2:]
    if any(s < 1 for s in in_size):
        raise ValueError(f"{fn}: {x_name} has an empty spatial dimension: shape {x_shape}")
    kernel = w_shape[2:]
    stride = per_dim(fn, "stride", stride, n, 1)
    dilation = per_dim(fn, "dilation", dilation, n, 1)
    _check_span(fn, kernel, dilation)
    mode = padding_mode_code(fn, padding_mode)
    spec = padding_spec(fn, padding, n)

    wanted = None
    if output_shape is not None:
        wanted = per_dim(fn, "output_shape", output_shape, n, 1)
        if not _is_default_output_padding(output_padding):
            raise ValueError(f"{fn}: give output_padding or output_shape, not both")
    else:
        output_padding = per_dim(fn, "output_padding", output_padding, n, 0)
        if spec == "same" and any(output_padding):
            raise ValueError(
                f"{fn}: padding='same' fixes the output size (input * stride); give output_shape "
                f"to choose another size, not output_padding={output_padding}"
            )

    lows, highs, out_size = [], [], []
    for d in range(n):
        i, k, s, dl = in_size[d], kernel[d], stride[d], dilation[d]
        if spec == "same":
            # TensorFlow: the output is i * s unless output_shape says otherwise,
            # and the padding is "SAME" for the convolution of that output.
            o_same = wanted[d] if wanted is not None else i * s
            if -(-o_same // s) != i:
                raise ValueError(
                    f"{fn}: with padding='same' and stride {s}, {x_name} size {i} in dimension "
                    f"{d} gives outputs of size {(i - 1) * s + 1}..{i * s}, not {o_same}"
                )
            lo, hi = same_padding(o_same, k, s, dl)
        elif spec == "valid":
            lo, hi = 0, 0
        else:
            lo, hi = spec[d]
        smallest = transposed_out_size(i, k, s, dl, lo, hi, 0)
        limit = max(s, dl)
        if wanted is not None:
            op = wanted[d] - smallest
            if not 0 <= op < limit:
                lo_ok, hi_ok = max(smallest, 1), smallest + limit - 1
                raise ValueError(
                    f"{fn}: output_shape {tuple(wanted)} cannot be reached in dimension {d}: "
                    f"reachable sizes are {lo_ok}..{hi_ok}"
                    if hi_ok >= lo_ok
                    else f"{fn}: output_shape {tuple(wanted)} cannot be reached in dimension "
                    f"{d}: the padding leaves no output"
                )
        elif spec == "same":
            op = i * s - smallest
        else:
            op = output_padding[d]
            if op >= limit:
                raise ValueError(
                    f"{fn}: output_padding must be smaller than max(stride, dilation) = {limit} "
                    f"in dimension {d}, got {op}"
                )
        size = smallest + op
        if size < 1:
            raise ValueError(
                f"{fn}: padding ({lo}, {hi}) in dimension {d} removes the whole output "
                f"(size before cropping {smallest + lo + hi})"
            )
        lows.append(lo)
        highs.append(hi)
        out_size.append(size)
    if mode != "zeros":
        _check_mode_padding(fn, mode, "output", out_size, lows, highs)
    problem = Problem(
        batch,
        cout,
        cin,
        groups,
        tuple(out_size),
        in_size,
        kernel,
        stride,
        dilation,
        tuple(lows),
        tuple(highs),
        mode,
    )
    _check_sizes(fn, problem)
    return problem


_conv_problem_cached = _cached(_conv_problem)
_transposed_problem_cached = _cached(_transposed_problem)


def _is_default_output_padding(value) -> bool:
    if isinstance(value, numbers.Integral):
        return value == 0
    try:
        return all(v == 0 for v in value)
    except TypeError:
        return False


def _check_sizes(fn: str, p: Problem) -> None:
    padded = tuple(i + lo + hi for i, lo, hi in zip(p.in_size, p.pad_low, p.pad_high))
    for what, shape in (
        ("input", p.x_shape),
        ("output", p.y_shape),
        ("weight", p.w_shape),
        ("padded input", (p.batch, p.in_channels) + padded),
    ):
        _check_volume(fn, what, shape)


def check_output_grad(fn: str, expected_shape: tuple, given_shape, name="grad_output") -> None:
    if tuple(given_shape) != tuple(expected_shape):
        raise ValueError(
            f"{fn}: {name} must have shape {tuple(expected_shape)}, got {tuple(given_shape)}"
        )


def check_bias(fn: str, bias, channels: int) -> None:
    if bias.shape != (channels,):
        raise ValueError(f"{fn}: bias must have shape ({channels},), got {tuple(bias.shape)}")
