"""Translate a convolution's or transposed convolution's arguments between
PyTorch, TensorFlow, Keras, JAX and pytconv, weights and data layouts included.

Every translation goes through one canonical form, a `Convolution`: the
`pytconv._args.Problem` of the convolution (its input, output and kernel sizes,
strides, dilations, groups, the padding of each side, the padding mode) and
whether the operation is that convolution or its transpose. ``from_*``
functions read a framework's arguments into it, ``to_*`` functions write the
arguments the framework needs to compute the same thing, or raise
``ValueError`` saying why it cannot::

    >>> from pytconv import conventions
    >>> c = conventions.from_tensorflow((1, 5, 5, 8), (3, 3, 4, 8), transposed=True,
    ...                                 strides=2, padding="SAME", output_shape=(1, 10, 10, 4))
    >>> conventions.to_torch(c)
    Traceback (most recent call last):
    ...
    ValueError: to_torch: PyTorch's ConvTranspose2d crops `padding` cells at both ends of a dimension (and output_padding adds up to max(stride, dilation) - 1 at the end); this transposed convolution crops 0 at the start and 1 at the end of dimension 0 with output size 10, which no padding/output_padding gives: crop the output of padding=0 yourself

Weight layouts (``weight`` is always pytconv's, which is PyTorch's):

=================  =============================  ===============================
framework          convolution                    transposed convolution
=================  =============================  ===============================
PyTorch, pytconv   ``(out, in / groups, *k)``     ``(in, out / groups, *k)``
TensorFlow, Keras  ``(*k, in / groups, out)``     ``(*k, out, in)`` (no groups)
JAX (as used here) ``(out, in / groups, *k)``     ``(out, in / groups, *k)``, flipped
=================  =============================  ===============================

Two convolutions with the same pad_low, sizes, strides, dilations, groups and
padding mode compute the same function: the padding at the high end only
decides the output size, so conversions compare ``pad_high`` through the sizes
(`Convolution.equivalent`).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from . import _args
from ._args import Problem

__all__ = [
    "Convolution",
    "from_pytconv",
    "from_torch",
    "to_torch",
    "from_tensorflow",
    "to_tensorflow",
    "from_keras",
    "to_keras",
    "from_jax",
    "to_jax",
    "weight_to_tensorflow",
    "weight_from_tensorflow",
    "weight_to_jax",
    "weight_from_jax",
    "to_channels_last",
    "to_channels_first",
    "tensorflow_data_format",
]


class Convolution(NamedTuple):
    """A convolution (``transposed=False``) or the transpose of one
    (``transposed=True``), as the `Problem` of the convolution.

    For a transposed convolution the operation's input is the problem's output
    (``y_shape``) and its output the problem's input (``x_shape``).
    """

    problem: Problem
    transposed: bool = False

    @property
    def ndim(self) -> int:
        return self.problem.ndim

    @property
    def input_shape(self) -> tuple:
        """Shape of the operation's input, channels first."""
        return self.problem.y_shape if self.transposed else self.problem.x_shape

    @property
    def output_shape(self) -> tuple:
        """Shape of the operation's output, channels first."""
        return self.problem.x_shape if self.transposed else self.problem.y_shape

    @property
    def weight_shape(self) -> tuple:
        """Shape of the weight in pytconv's (PyTorch's) layout."""
        return self.problem.w_shape

    @property
    def output_padding(self) -> tuple:
        """pytconv's output_padding of a transposed convolution (zeros otherwise)."""
        p = self.problem
        if not self.transposed:
            return (0,) * p.ndim
        return tuple(
            i - _args.transposed_out_size(o, k, s, d, lo, hi, 0)
            for i, o, k, s, d, lo, hi in zip(
                p.in_size, p.out_size, p.kernel, p.stride, p.dilation, p.pad_low, p.pad_high
            )
        )

    def pytconv_args(self) -> dict:
        """Keyword arguments of `pytconv.conv` / `pytconv.conv_transpose`."""
        p = self.problem
        args = dict(
            stride=p.stride,
            padding=tuple(zip(p.pad_low, p.pad_high)),
            dilation=p.dilation,
            groups=p.groups,
            padding_mode=p.padding_mode,
        )
        if self.transposed:
            args["output_padding"] = self.output_padding
        return args

    def equivalent(self, other: "Convolution") -> bool:
        """Whether both compute the same function (pad_high is implied by the sizes)."""
        a, b = self.problem, other.problem
        return self.transposed == other.transposed and a._replace(pad_high=()) == b._replace(pad_high=())


# ---- small helpers ----------------------------------------------------------


def _tuple(fn: str, name: str, value, n: int, minimum: int = 1) -> tuple:
    return _args.per_dim(fn, name, value, n, minimum)


def _tf_per_dim(fn: str, name: str, value, n: int, channels_last: bool) -> tuple:
    """TensorFlow's strides/dilations: an int, n ints, or n + 2 ints with 1 at
    the batch and channel positions."""
    if not isinstance(value, numbers.Integral) and value is not None:
        seq = tuple(value)
        if len(seq) == n + 2:
            outer = (seq[0], seq[-1]) if channels_last else (seq[0], seq[1])
            if outer != (1, 1):
                raise ValueError(
                    f"{fn}: {name} must be 1 at the batch and channel positions, got {value!r}"
                )
            value = seq[1:-1] if channels_last else seq[2:]
    return _tuple(fn, name, 1 if value is None else value, n)


def _channels_last_of(fn: str, data_format, n: int) -> bool:
    if data_format is None:
        return True
    if not isinstance(data_format, str):
        raise TypeError(f"{fn}: data_format must be a string or None, got {data_format!r}")
    fmt = data_format.lower()
    if fmt in ("channels_last",) or (fmt.startswith("n") and fmt.endswith("c") and len(fmt) == n + 2):
        return True
    if fmt in ("channels_first",) or (fmt.startswith("nc") and len(fmt) == n + 2):
        return False
    raise ValueError(
        f"{fn}: data_format must be channels-last ({tensorflow_data_format(n, True)!r}) or "
        f"channels-first ({tensorflow_data_format(n, False)!r}) for {n} spatial dimensions, "
        f"got {data_format!r}"
    )


def tensorflow_data_format(n: int, channels_last: bool = True) -> str:
    """TensorFlow's data_format string for n spatial dimensions ("NHWC", "NCDHW", ...)."""
    spatial = {1: "W", 2: "HW", 3: "DHW"}.get(n)
    if spatial is None:
        raise ValueError(
            f"tensorflow_data_format: TensorFlow's tf.nn convolutions have 1 to 3 spatial "
            f"dimensions, not {n}"
        )
    return "N" + spatial + "C" if channels_last else "NC" + spatial


def _shape_channels_first(shape, channels_last: bool) -> tuple:
    shape = tuple(shape)
    if channels_last and len(shape) >= 2:
        return (shape[0], shape[-1]) + shape[1:-1]
    return shape


def _shape_in_format(shape, channels_last: bool) -> tuple:
    shape = tuple(shape)
    return (shape[0],) + shape[2:] + (shape[1],) if channels_last else shape


def to_channels_last(x):
    """(N, C, *spatial) -> (N, *spatial, C) (a NumPy array)."""
    return np.moveaxis(np.asarray(x), 1, -1)


def to_channels_first(x):
    """(N, *spatial, C) -> (N, C, *spatial) (a NumPy array)."""
    return np.moveaxis(np.asarray(x), -1, 1)


def _padding_is_valid(p: Problem) -> bool:
    """Whether TensorFlow's "VALID" (no padding) computes this."""
    return all(lo == 0 for lo in p.pad_low) and all(
        _args.conv_out_size(i, k, s, d, 0, 0) == o
        for i, o, k, s, d in zip(p.in_size, p.out_size, p.kernel, p.stride, p.dilation)
    )


def _padding_is_same(p: Problem) -> bool:
    """Whether TensorFlow's "SAME" rule (on the convolution's input size) computes this."""
    return all(
        -(-i // s) == o and _args.same_padding(i, k, s, d)[0] == lo
        for i, o, k, s, d, lo in zip(p.in_size, p.out_size, p.kernel, p.stride, p.dilation, p.pad_low)
    )


# ---- pytconv ------------------------------------------------------------------


def from_pytconv(input_shape, weight_shape, *, transposed=False, stride=1, padding=0, output_padding=0,
                 dilation=1, groups=1, output_shape=None, padding_mode="zeros") -> Convolution:
    """The `Convolution` of `pytconv.conv` / `pytconv.conv_transpose` arguments
    (channels-first shapes, PyTorch weight layout)."""
    if transposed:
        p = _args.transposed_problem("from_pytconv", input_shape, weight_shape, stride, padding,
                                     output_padding, groups, dilation, output_shape, padding_mode)
    else:
        if output_shape is not None or not _args._is_default_output_padding(output_padding):
            raise ValueError("from_pytconv: output_padding and output_shape are for transposed=True only")
        p = _args.conv_problem("from_pytconv", input_shape, weight_shape, stride, padding, dilation,
                               groups, padding_mode)
    return Convolution(p, bool(transposed))


# ---- PyTorch ------------------------------------------------------------------

_TORCH_MODES = ("zeros", "reflect", "replicate", "circular")


def _torch_padding(fn: str, padding, n: int, transposed: bool):
    if isinstance(padding, str):
        if transposed:
            raise ValueError(
                f"{fn}: PyTorch's ConvTranspose{n}d takes integer padding only, got {padding!r}"
            )
        if padding not in ("same", "valid"):
            raise ValueError(f"{fn}: PyTorch's padding strings are 'same' and 'valid', got {padding!r}")
        return padding
    values = padding if not isinstance(padding, numbers.Integral) else (padding,)
    for v in tuple(values):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool):
            raise ValueError(
                f"{fn}: PyTorch's padding is an int or one int per dimension (both sides "
                f"alike), got {padding!r}; (low, high) pairs are pytconv's and JAX's spelling"
            )
    return _tuple(fn, "padding", padding, n, 0)


def from_torch(input_shape, weight_shape, *, transposed=False, stride=1, padding=0, output_padding=0,
               dilation=1, groups=1, padding_mode="zeros") -> Convolution:
    """The `Convolution` of ``torch.nn.functional.conv{n}d`` / ``conv_transpose{n}d``
    (or ``torch.nn.Conv{n}d`` / ``ConvTranspose{n}d``) arguments.

    ``input_shape`` is (N, C, *spatial); ``weight_shape`` is torch's:
    (out, in / groups, *k), or (in, out / groups, *k) when transposed.
    """
    fn = "from_torch"
    n = len(tuple(weight_shape)) - 2
    if n < 1:
        raise ValueError(f"{fn}: weight_shape must be (channels, channels, *kernel), got {weight_shape!r}")
    pad = _torch_padding(fn, padding, n, transposed)
    if transposed:
        if padding_mode != "zeros":
            raise ValueError(
                f"{fn}: PyTorch's ConvTranspose{n}d supports only padding_mode='zeros', got {padding_mode!r}"
            )
        return from_pytconv(input_shape, weight_shape, transposed=True, stride=stride, padding=pad,
                            output_padding=output_padding, dilation=dilation, groups=groups)
    if pad == "same" and any(s != 1 for s in _tuple(fn, "stride", stride, n)):
        raise ValueError(f"{fn}: PyTorch's padding='same' needs stride 1, got stride={stride!r}")
    if not _args._is_default_output_padding(output_padding):
        raise ValueError(f"{fn}: output_padding is for transposed=True only")
    return from_pytconv(input_shape, weight_shape, stride=stride, padding=pad, dilation=dilation,
                        groups=groups, padding_mode=padding_mode)


def to_torch(conv: Convolution, *, module: bool = False) -> dict:
    """Keyword arguments computing ``conv`` in PyTorch.

    ``module=False``: for ``torch.nn.functional.conv{n}d`` / ``conv_transpose{n}d``
    (stride, padding, dilation, groups, and output_padding when transposed).
    ``module=True``: for the ``torch.nn.Conv{n}d`` / ``ConvTranspose{n}d``
    constructor (adds in_channels, out_channels, kernel_size, padding_mode).
    Raises ValueError when PyTorch cannot express it.
    """
    fn = "to_torch"
    p = conv.problem
    n = p.ndim
    name = f"ConvTranspose{n}d" if conv.transposed else f"Conv{n}d"
    if n > 3:
        raise ValueError(f"{fn}: PyTorch has 1-, 2- and 3-d convolutions only; this one has {n} spatial dimensions")
    if conv.transposed:
        if p.padding_mode != "zeros":
            raise ValueError(
                f"{fn}: PyTorch's {name} supports only padding_mode='zeros'; this transposed "
                f"convolution uses {p.padding_mode!r}"
            )
        output_padding = []
        for d in range(n):
            lo = p.pad_low[d]
            op = p.in_size[d] - _args.transposed_out_size(
                p.out_size[d], p.kernel[d], p.stride[d], p.dilation[d], lo, lo, 0
            )
            if not 0 <= op < max(p.stride[d], p.dilation[d]):
                raise ValueError(
                    f"{fn}: PyTorch's {name} crops `padding` cells at both ends of a dimension (and "
                    f"output_padding adds up to max(stride, dilation) - 1 at the end); this transposed "
                    f"convolution crops {lo} at the start and {p.pad_high[d]} at the end of dimension {d} "
                    f"with output size {p.in_size[d]}, which no padding/output_padding gives: crop the "
                    f"output of padding=0 yourself"
                )
            output_padding.append(op)
        args = dict(stride=p.stride, padding=p.pad_low, output_padding=tuple(output_padding),
                    groups=p.groups, dilation=p.dilation)
        if module:
            args.update(in_channels=p.out_channels, out_channels=p.in_channels, kernel_size=p.kernel,
                        padding_mode="zeros")
        return args

    symmetric = all(
        _args.conv_out_size(i, k, s, d, lo, lo) == o
        for i, o, k, s, d, lo in zip(p.in_size, p.out_size, p.kernel, p.stride, p.dilation, p.pad_low)
    )
    if symmetric:
        padding = p.pad_low
    elif all(s == 1 for s in p.stride) and _padding_is_same(p):
        padding = "same"
    else:
        sides = ", ".join(f"({lo}, {hi})" for lo, hi in zip(p.pad_low, p.pad_high))
        raise ValueError(
            f"{fn}: PyTorch's {name} pads both ends of a dimension alike (padding='same' only with "
            f"stride 1); this convolution pads {sides} with stride {p.stride}: pad the input with "
            f"torch.nn.functional.pad first"
        )
    if p.padding_mode != "zeros" and not module:
        raise ValueError(
            f"{fn}: torch.nn.functional.conv{n}d has no padding_mode (this convolution uses "
            f"{p.padding_mode!r}): use module=True (torch.nn.{name}) or torch.nn.functional.pad"
        )
    args = dict(stride=p.stride, padding=padding, dilation=p.dilation, groups=p.groups)
    if module:
        args.update(in_channels=p.in_channels, out_channels=p.out_channels, kernel_size=p.kernel,
                    padding_mode=p.padding_mode)
    return args


# ---- TensorFlow -----------------------------------------------------------------


def _tf_explicit(fn: str, padding, n: int, channels_last: bool) -> tuple:
    """TensorFlow's explicit padding (n + 2 pairs in data-format order) as n pairs."""
    try:
        pairs = [tuple(int(v) for v in pair) for pair in padding]
    except TypeError:
        raise TypeError(f"{fn}: padding must be 'SAME', 'VALID' or a list of (low, high) pairs, "
                        f"got {padding!r}") from None
    if len(pairs) != n + 2 or any(len(pair) != 2 for pair in pairs):
        raise ValueError(
            f"{fn}: TensorFlow's explicit padding has one (low, high) pair per dimension of the "
            f"input ({n + 2} pairs, batch and channels included), got {padding!r}"
        )
    outer = (pairs[0], pairs[-1]) if channels_last else (pairs[0], pairs[1])
    if outer != ((0, 0), (0, 0)):
        raise ValueError(f"{fn}: explicit padding of the batch and channel dimensions must be (0, 0), got {padding!r}")
    return tuple(pairs[1:-1] if channels_last else pairs[2:])


def from_tensorflow(input_shape, filters_shape, *, transposed=False, strides=1, padding="VALID",
                    dilations=1, output_shape=None, data_format=None) -> Convolution:
    """The `Convolution` of ``tf.nn.convolution`` / ``tf.nn.conv_transpose`` arguments.

    ``input_shape`` and ``output_shape`` (transposed: required, full or spatial)
    are in ``data_format`` (channels last by default). ``filters_shape`` is
    TensorFlow's: (*k, in / groups, out), or (*k, out, in) when transposed; a
    convolution's groups are ``in_channels // filters_shape[-2]``, as in TensorFlow.
    """
    fn = "from_tensorflow"
    filters_shape = tuple(filters_shape)
    n = len(filters_shape) - 2
    if n < 1:
        raise ValueError(f"{fn}: filters_shape must be (*kernel, channels, channels), got {filters_shape!r}")
    last = _channels_last_of(fn, data_format, n)
    x_shape = _shape_channels_first(input_shape, last)
    if len(x_shape) != n + 2:
        raise ValueError(f"{fn}: input_shape {tuple(input_shape)} does not have {n} spatial dimensions "
                         f"as filters_shape {filters_shape} does")
    stride = _tf_per_dim(fn, "strides", strides, n, last)
    dilation = _tf_per_dim(fn, "dilations", dilations, n, last)
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{fn}: padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
        pad = padding.lower()
    else:
        pad = _tf_explicit(fn, padding, n, last)
    weight_shape = _weight_shape_from_tensorflow(filters_shape)
    if not transposed:
        if output_shape is not None:
            raise ValueError(f"{fn}: output_shape is for transposed=True only")
        cin_g = filters_shape[-2]
        if cin_g < 1 or x_shape[1] % cin_g:
            raise ValueError(f"{fn}: input has {x_shape[1]} channels, not a multiple of the filters' "
                             f"{cin_g} input channels")
        return from_pytconv(x_shape, weight_shape, stride=stride, padding=pad, dilation=dilation,
                            groups=x_shape[1] // cin_g)
    if output_shape is None:
        raise ValueError(f"{fn}: a transposed convolution needs output_shape (as tf.nn.conv_transpose)")
    output_shape = tuple(output_shape)
    spatial = output_shape if len(output_shape) == n else _shape_channels_first(output_shape, last)[2:]
    if len(output_shape) == n + 2:
        full = _shape_channels_first(output_shape, last)
        if full[0] != x_shape[0] or full[1] != filters_shape[-2]:
            raise ValueError(f"{fn}: output_shape {output_shape} does not match the batch {x_shape[0]} "
                             f"and the filters' {filters_shape[-2]} output channels")
    elif len(output_shape) != n:
        raise ValueError(f"{fn}: output_shape must have {n} or {n + 2} entries, got {output_shape}")
    if pad == "valid":
        pad = 0
    return from_pytconv(x_shape, weight_shape, transposed=True, stride=stride, padding=pad,
                        dilation=dilation, output_shape=spatial)


def _explicit_allowed(allow_explicit, n: int) -> bool:
    return n == 2 if allow_explicit is None else bool(allow_explicit)


def to_tensorflow(conv: Convolution, *, data_format=None, allow_explicit=None) -> dict:
    """Keyword arguments computing ``conv`` with ``tf.nn.convolution`` (strides,
    padding, data_format, dilations) or ``tf.nn.conv_transpose`` (plus
    output_shape, in ``data_format``).

    padding is "VALID" or "SAME" when one of them computes ``conv``, else an
    explicit list of (low, high) pairs, which TensorFlow accepts only in 2-d
    (``tf.nn.conv2d`` / ``conv2d_transpose``): ``allow_explicit=None`` allows it
    for 2-d only, True always (e.g. for pytconv's TensorFlow adapter), False never.
    Raises ValueError when TensorFlow cannot express it.
    """
    fn = "to_tensorflow"
    p = conv.problem
    n = p.ndim
    last = _channels_last_of(fn, data_format, n)
    if n > 3:
        raise ValueError(f"{fn}: tf.nn convolutions have 1 to 3 spatial dimensions; this one has {n}")
    fmt = tensorflow_data_format(n, last)
    if p.padding_mode != "zeros" and conv.transposed:
        raise ValueError(
            f"{fn}: tf.nn.conv_transpose is the adjoint of a zero-padded convolution only; this one uses "
            f"padding_mode={p.padding_mode!r}"
        )
    if p.padding_mode != "zeros":
        raise ValueError(
            f"{fn}: tf.nn convolutions pad with zeros only; this one uses padding_mode="
            f"{p.padding_mode!r}: pad with tf.pad first (mode 'REFLECT' is PyTorch's 'reflect'; "
            f"'replicate' and 'circular' have no tf.pad mode)"
        )
    if any(s > 1 for s in p.stride) and any(d > 1 for d in p.dilation):
        raise ValueError(
            f"{fn}: TensorFlow does not combine strides > 1 with dilations > 1; this one has "
            f"strides {p.stride} and dilations {p.dilation}"
        )
    if conv.transposed and p.groups > 1:
        raise ValueError(f"{fn}: tf.nn.conv_transpose has no groups; this one has groups={p.groups}")
    if _padding_is_same(p):
        padding = "SAME"
    elif _padding_is_valid(p):
        padding = "VALID"
    elif _explicit_allowed(allow_explicit, n):
        pairs = [(0, 0)] + list(zip(p.pad_low, p.pad_high)) + [(0, 0)]
        if not last:
            pairs = [pairs[0], pairs[-1]] + pairs[1:-1]
        padding = [list(pair) for pair in pairs]
    else:
        sides = ", ".join(f"({lo}, {hi})" for lo, hi in zip(p.pad_low, p.pad_high))
        raise ValueError(
            f"{fn}: padding {sides} is neither TensorFlow's 'SAME' nor 'VALID', and TensorFlow "
            f"takes explicit padding only in 2-d: pad the input with tf.pad first"
            + (" (or crop the output)" if conv.transposed else "")
        )
    args = dict(strides=p.stride, padding=padding, data_format=fmt, dilations=p.dilation)
    if conv.transposed:
        args["output_shape"] = _shape_in_format(p.x_shape, last)
    return args


def _weight_shape_from_tensorflow(filters_shape) -> tuple:
    filters_shape = tuple(filters_shape)
    return (filters_shape[-1], filters_shape[-2]) + filters_shape[:-2]


def weight_to_tensorflow(weight):
    """pytconv's (PyTorch's) weight -> TensorFlow's/Keras' filters (NumPy array):
    (out, in / g, *k) -> (*k, in / g, out) for a convolution, and
    (in, out / g, *k) -> (*k, out / g, in) for a transposed one (the same axes)."""
    weight = np.asarray(weight)
    n = weight.ndim - 2
    return np.transpose(weight, tuple(range(2, n + 2)) + (1, 0))


def weight_from_tensorflow(filters):
    """TensorFlow's/Keras' filters -> pytconv's (PyTorch's) weight (NumPy array)."""
    filters = np.asarray(filters)
    n = filters.ndim - 2
    return np.transpose(filters, (n + 1, n) + tuple(range(n)))


# ---- Keras ----------------------------------------------------------------------


def _keras_transposed_size(i, k, s, d, padding, output_padding):
    """Keras' transposed output size (keras.layers.Conv*Transpose, TensorFlow backend)."""
    kd = (k - 1) * d + 1
    if padding == "valid":
        return (i - 1) * s + kd + (max(kd, s) - kd if output_padding is None else output_padding)
    return i * s if output_padding is None else (i - 1) * s + kd % 2 + output_padding


def from_keras(input_shape, kernel_shape, *, transposed=False, strides=1, padding="valid",
               dilation_rate=1, groups=1, output_padding=None, data_format="channels_last") -> Convolution:
    """The `Convolution` of a Keras ``Conv{n}D`` / ``Conv{n}DTranspose`` layer
    (TensorFlow backend) applied to inputs of ``input_shape`` (in data_format),
    with a kernel of ``kernel_shape`` (the layer's ``kernel.shape``:
    (*k, in / groups, out), or (*k, out, in) when transposed)."""
    fn = "from_keras"
    kernel_shape = tuple(kernel_shape)
    n = len(kernel_shape) - 2
    last = _channels_last_of(fn, data_format, n)
    x_shape = _shape_channels_first(input_shape, last)
    stride = _tuple(fn, "strides", strides, n)
    dilation = _tuple(fn, "dilation_rate", dilation_rate, n)
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same", "causal"):
        raise ValueError(f"{fn}: Keras padding is 'valid', 'same' or 'causal' (Conv1D), got {padding!r}")
    padding = padding.lower()
    if any(s > 1 for s in stride) and any(d > 1 for d in dilation):
        raise ValueError(f"{fn}: Keras does not combine strides > 1 with dilation_rate > 1")
    weight_shape = _weight_shape_from_tensorflow(kernel_shape)
    if not transposed:
        if output_padding is not None:
            raise ValueError(f"{fn}: output_padding is for transposed=True only")
        if padding == "causal":
            if n != 1:
                raise ValueError(f"{fn}: padding='causal' is for Conv1D only")
            padding = ((dilation[0] * (kernel_shape[0] - 1), 0),)
        if kernel_shape[-2] * groups != x_shape[1]:
            raise ValueError(f"{fn}: kernel expects {kernel_shape[-2]} input channels per group, the "
                             f"input has {x_shape[1]} (groups={groups})")
        return from_pytconv(x_shape, weight_shape, stride=stride, padding=padding, dilation=dilation,
                            groups=groups)
    if padding == "causal":
        raise ValueError(f"{fn}: padding='causal' is for Conv1D only")
    if groups != 1:
        raise ValueError(f"{fn}: Keras' transposed convolutions have no groups")
    ops = None if output_padding is None else _tuple(fn, "output_padding", output_padding, n, 0)
    if ops is not None and any(op >= s for op, s in zip(ops, stride)):
        raise ValueError(f"{fn}: output_padding must be smaller than strides, got {ops} with {stride}")
    sizes = tuple(
        _keras_transposed_size(i, k, s, d, padding, None if ops is None else op)
        for i, k, s, d, op in zip(x_shape[2:], kernel_shape[:n], stride, dilation, ops or (0,) * n)
    )
    return from_pytconv(x_shape, weight_shape, transposed=True, stride=stride,
                        padding=0 if padding == "valid" else "same", dilation=dilation, output_shape=sizes)


def to_keras(conv: Convolution, *, data_format="channels_last") -> dict:
    """Constructor arguments of the Keras layer (``Conv{n}D`` or
    ``Conv{n}DTranspose``, TensorFlow backend) that computes ``conv``: filters,
    kernel_size, strides, padding, dilation_rate, data_format, and groups
    (convolution) or output_padding (transposed). Raises ValueError when Keras
    cannot express it."""
    fn = "to_keras"
    p = conv.problem
    n = p.ndim
    last = _channels_last_of(fn, data_format, n)
    fmt = "channels_last" if last else "channels_first"
    if n > 3:
        raise ValueError(f"{fn}: Keras has 1-, 2- and 3-d convolution layers; this one has {n} spatial dimensions")
    if p.padding_mode != "zeros":
        raise ValueError(f"{fn}: Keras' convolution layers pad with zeros only; this one uses "
                         f"padding_mode={p.padding_mode!r}")
    if any(s > 1 for s in p.stride) and any(d > 1 for d in p.dilation):
        raise ValueError(f"{fn}: Keras does not combine strides > 1 with dilation_rate > 1; this one has "
                         f"strides {p.stride} and dilations {p.dilation}")
    common = dict(kernel_size=p.kernel, strides=p.stride, dilation_rate=p.dilation, data_format=fmt)
    if not conv.transposed:
        if _padding_is_same(p):
            padding = "same"
        elif _padding_is_valid(p):
            padding = "valid"
        elif n == 1 and p.pad_low[0] == p.dilation[0] * (p.kernel[0] - 1) and _args.conv_out_size(
                p.in_size[0], p.kernel[0], p.stride[0], p.dilation[0], p.pad_low[0], 0) == p.out_size[0]:
            padding = "causal"
        else:
            sides = ", ".join(f"({lo}, {hi})" for lo, hi in zip(p.pad_low, p.pad_high))
            raise ValueError(f"{fn}: padding {sides} is neither Keras' 'same' nor 'valid': put a "
                             f"keras.layers.ZeroPadding{n}D layer before the convolution")
        return dict(filters=p.out_channels, padding=padding, groups=p.groups, **common)
    if p.groups > 1:
        raise ValueError(f"{fn}: Keras' Conv{n}DTranspose has no groups; this one has groups={p.groups}")
    reasons = []
    geometry = list(zip(p.out_size, p.kernel, p.stride, p.dilation))
    for padding in ("same", "valid"):
        # Keras' output size: its default (output_padding=None), or explicit
        # output_padding < strides in every dimension.
        defaults = tuple(_keras_transposed_size(i, k, s, dl, padding, None) for i, k, s, dl in geometry)
        ops = tuple(size - _keras_transposed_size(i, k, s, dl, padding, 0)
                    for size, (i, k, s, dl) in zip(p.in_size, geometry))
        if defaults == p.in_size:
            output_padding = None
        elif all(0 <= op < s for op, s in zip(ops, p.stride)):
            output_padding = ops
        else:
            reasons.append(f"padding={padding!r} gives output sizes {defaults} or, with output_padding < "
                           f"strides, other than {p.in_size}")
            continue
        try:
            candidate = Convolution(_args.transposed_problem(
                fn, p.y_shape, p.w_shape, p.stride, 0 if padding == "valid" else "same", 0, 1, p.dilation,
                p.in_size), True)
        except ValueError as exc:
            reasons.append(f"padding={padding!r}: {exc}")
            continue
        if candidate.equivalent(conv):
            return dict(filters=p.in_channels, padding=padding, output_padding=output_padding, **common)
        reasons.append(f"padding={padding!r} crops {candidate.problem.pad_low} at the start, not {p.pad_low}")
    raise ValueError(f"{fn}: Keras' Conv{n}DTranspose cannot compute this transposed convolution: "
                     + "; ".join(reasons))


# ---- JAX -------------------------------------------------------------------------

_SPATIAL_LETTERS = "DHWABEFGJKLMPQRSTUVXYZ"


def _jax_dimension_numbers(n: int, channels_last: bool):
    if not channels_last:
        return None
    if n > len(_SPATIAL_LETTERS):
        raise ValueError(f"to_jax: at most {len(_SPATIAL_LETTERS)} spatial dimensions in channels-last form")
    sp = _SPATIAL_LETTERS[:n] if n > 3 else "DHW"[3 - n:]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def _parse_jax_dimension_numbers(fn: str, dimension_numbers, n: int) -> bool:
    """Whether ``dimension_numbers`` is channels-last (None: channels first)."""
    if dimension_numbers is None:
        return False
    try:
        lhs, rhs, out = (str(s) for s in dimension_numbers)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: dimension_numbers must be None or three strings, got {dimension_numbers!r}") from None
    if lhs == out and lhs.startswith("NC") and rhs.startswith("OI") and len(lhs) == n + 2:
        return False
    if lhs == out and lhs[0] == "N" and lhs[-1] == "C" and rhs.endswith("IO") and len(lhs) == n + 2:
        return True
    raise ValueError(
        f"{fn}: dimension_numbers must be channels first ('NC...', 'OI...', 'NC...') or channels "
        f"last ('N...C', '...IO', 'N...C'), got {dimension_numbers!r}"
    )


def to_jax(conv: Convolution, *, channels_last: bool = False) -> dict:
    """Keyword arguments computing ``conv`` with ``jax.lax.conv_general_dilated``
    (window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
    feature_group_count), given the kernel from `weight_to_jax`.

    A transposed convolution is a convolution of the input dilated by the
    stride (``lhs_dilation``) with the flipped kernel, padded by
    ``dilation * (k - 1) - pad_low`` at the start (negative: cropped).
    Raises ValueError for non-zero padding modes (pad with jnp.pad first).
    """
    fn = "to_jax"
    p = conv.problem
    n = p.ndim
    if p.padding_mode != "zeros":
        remedy = ("compute the uncropped transposed convolution and apply jax.linear_transpose of "
                  "jax.numpy.pad" if conv.transposed else "pad with jax.numpy.pad first")
        raise ValueError(f"{fn}: jax.lax.conv_general_dilated pads with zeros only; this one uses "
                         f"padding_mode={p.padding_mode!r}: {remedy}")
    dn = _jax_dimension_numbers(n, channels_last)
    if not conv.transposed:
        return dict(window_strides=p.stride, padding=tuple(zip(p.pad_low, p.pad_high)), lhs_dilation=(1,) * n,
                    rhs_dilation=p.dilation, dimension_numbers=dn, feature_group_count=p.groups)
    padding = []
    for d in range(n):
        span = p.dilation[d] * (p.kernel[d] - 1)
        low = span - p.pad_low[d]
        # dilated input (o - 1) * s + 1, padded (low, high), minus the kernel span, is the output size
        high = p.in_size[d] - ((p.out_size[d] - 1) * p.stride[d] + 1) - low + span
        padding.append((low, high))
    return dict(window_strides=(1,) * n, padding=tuple(padding), lhs_dilation=p.stride, rhs_dilation=p.dilation,
                dimension_numbers=dn, feature_group_count=p.groups)


def from_jax(input_shape, kernel_shape, *, window_strides=1, padding="VALID", lhs_dilation=None,
             rhs_dilation=None, dimension_numbers=None, feature_group_count=1, transposed=None) -> Convolution:
    """The `Convolution` of ``jax.lax.conv_general_dilated`` arguments.

    With ``lhs_dilation`` 1 it is read as a convolution; with ``lhs_dilation``
    > 1 (and window_strides 1) as a transposed convolution with stride
    ``lhs_dilation`` whose kernel is the flipped one (convert the kernel with
    `weight_from_jax`). A stride-1 transposed convolution is a convolution too:
    ``transposed=True`` reads it as one (``None``: decided by lhs_dilation). ``input_shape``/``kernel_shape`` follow
    ``dimension_numbers`` (None: (N, C, *spatial) and (O, I, *k)).
    Raises ValueError when the JAX call is no convolution or transposed
    convolution pytconv can express (e.g. zero padding beyond the output_padding limit).
    """
    fn = "from_jax"
    kernel_shape = tuple(kernel_shape)
    n = len(kernel_shape) - 2
    last = _parse_jax_dimension_numbers(fn, dimension_numbers, n)
    x_shape = _shape_channels_first(input_shape, last)
    oi_shape = (kernel_shape[-1], kernel_shape[-2]) + kernel_shape[:-2] if last else kernel_shape
    strides = _tuple(fn, "window_strides", window_strides, n)
    lhs = _tuple(fn, "lhs_dilation", 1 if lhs_dilation is None else lhs_dilation, n)
    rhs = _tuple(fn, "rhs_dilation", 1 if rhs_dilation is None else rhs_dilation, n)
    groups = _args._int(fn, "feature_group_count", feature_group_count)
    kernel = oi_shape[2:]
    if transposed is None:
        transposed = any(v != 1 for v in lhs)
    if not transposed:
        if any(v != 1 for v in lhs):
            raise ValueError(f"{fn}: lhs_dilation {lhs} > 1 is a transposed convolution (transposed=True)")
        if isinstance(padding, str):
            name = padding.upper()
            if name == "SAME_LOWER":
                pairs = []
                for i, k, s, d in zip(x_shape[2:], kernel, strides, rhs):
                    lo, hi = _args.same_padding(i, k, s, d)
                    pairs.append((hi, lo))
                padding = tuple(pairs)
            elif name not in ("SAME", "VALID"):
                raise ValueError(f"{fn}: padding must be 'SAME', 'SAME_LOWER', 'VALID' or pairs, got {padding!r}")
            else:
                padding = name.lower()
        return from_pytconv(x_shape, oi_shape, stride=strides, padding=padding, dilation=rhs, groups=groups)
    if any(s != 1 for s in strides):
        raise ValueError(f"{fn}: lhs_dilation > 1 with window_strides > 1 is no transposed convolution")
    if isinstance(padding, str):
        raise ValueError(f"{fn}: give a transposed convolution's padding as (low, high) pairs")
    pairs = tuple(tuple(int(v) for v in pr) for pr in padding)
    if len(pairs) != n:
        raise ValueError(f"{fn}: padding needs {n} (low, high) pairs, got {padding!r}")
    # canonical weight (in_t, out_t / g, *k) from the kernel (out_t, in_t / g, *k)
    cout_t, cin_g = oi_shape[0], oi_shape[1]
    if cout_t % groups:
        raise ValueError(f"{fn}: kernel has {cout_t} output channels, not divisible by feature_group_count={groups}")
    weight_shape = (cin_g * groups, cout_t // groups) + kernel
    pads, ops, sizes = [], [], []
    for d in range(n):
        o, k, s, dl = x_shape[2 + d], kernel[d], lhs[d], rhs[d]
        span = dl * (k - 1)
        low, high = pairs[d]
        crop_low = span - low
        size = (o - 1) * s + 1 + low + high - span
        full = (o - 1) * s + span + 1
        crop_high = full - crop_low - size
        op = 0
        if crop_high < 0:
            op, crop_high = -crop_high, 0
        if crop_low < 0 or op >= max(s, dl):
            raise ValueError(
                f"{fn}: in dimension {d} this lhs-dilated convolution adds zeros beyond the transposed "
                f"convolution's output (padding {pairs[d]} with kernel span {span + 1}); pytconv's "
                f"conv_transpose crops its output and extends it by output_padding < max(stride, dilation) "
                f"only"
            )
        pads.append((crop_low, crop_high))
        ops.append(op)
        sizes.append(size)
    return from_pytconv(x_shape, weight_shape, transposed=True, stride=lhs, padding=tuple(pads),
                        output_padding=tuple(ops), dilation=rhs, groups=groups)


def weight_to_jax(weight, conv: Convolution, *, channels_last: bool = False):
    """pytconv's (PyTorch's) weight -> the kernel `to_jax`'s arguments expect
    (NumPy array): (O, I, *k) (or (*k, I, O) channels last); for a transposed
    convolution the per-group in/out channels are exchanged and the kernel flipped."""
    w = np.asarray(weight)
    n = w.ndim - 2
    if conv.transposed:
        g = conv.problem.groups
        cin_t, cout_g = w.shape[0], w.shape[1]
        w = w.reshape((g, cin_t // g, cout_g) + w.shape[2:])  # (g, in_t/g, out_t/g, *k)
        w = np.swapaxes(w, 1, 2).reshape((g * cout_g, cin_t // g) + w.shape[3:])  # (out_t, in_t/g, *k)
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * n]
    if channels_last:
        w = np.transpose(w, tuple(range(2, n + 2)) + (1, 0))
    return np.ascontiguousarray(w)


def weight_from_jax(kernel, conv: Convolution, *, channels_last: bool = False):
    """The inverse of `weight_to_jax`: JAX's kernel -> pytconv's (PyTorch's) weight."""
    w = np.asarray(kernel)
    n = w.ndim - 2
    if channels_last:
        w = np.transpose(w, (n + 1, n) + tuple(range(n)))
    if conv.transposed:
        g = conv.problem.groups
        cout_t, cin_g = w.shape[0], w.shape[1]
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * n]
        w = w.reshape((g, cout_t // g, cin_g) + w.shape[2:])  # (g, out_t/g, in_t/g, *k)
        w = np.swapaxes(w, 1, 2).reshape((g * cin_g, cout_t // g) + w.shape[3:])  # (in_t, out_t/g, *k)
    return np.ascontiguousarray(w)
