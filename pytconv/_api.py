"""The NumPy API: convolution, transposed convolution, their gradients and
shape helpers, for any number of spatial dimensions.

Each function resolves its arguments into a `Problem` (pytconv._args), makes
its arrays C-contiguous, and runs one of the core's three primitives:

* ``forward``          y  = conv(x, w) + b
* ``backward_data``    dx = conv^T(dy, w)   (the transposed convolution)
* ``backward_filter``  dw = d<conv(x, w), dy>/dw

so a transposed convolution and the gradients of both operations are these
same three computations with the arrays' roles exchanged.

CuPy arrays are computed on the GPU by pytconv.gpu with the same Problem.
"""

from __future__ import annotations

import math

import numpy as np

from . import _args
from . import _core

__all__ = [
    "conv",
    "conv_transpose",
    "conv_input_grad",
    "conv_weight_grad",
    "conv_transpose_input_grad",
    "conv_transpose_weight_grad",
    "bias_grad",
    "conv_output_shape",
    "conv_transpose_output_shape",
    "set_num_threads",
    "get_num_threads",
]


_POOL_FROM = 65536  # bytes: smaller results take np.empty as it comes


def _empty(shape, dtype):
    """An uninitialised C-contiguous array for a result. From 64 KiB, its
    memory comes from the core's pool of released results (no page faults
    when calls repeat) and starts on a cache line, as PyTorch's does (NumPy
    aligns to 16 bytes): the core's vector stores then never split a line,
    and its streaming stores need whole lines."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _POOL_FROM:
        return np.empty(shape, dtype=dtype)
    return _core.empty(shape, dtype, nbytes)


class _NumPyBackend:
    """Runs the three primitives with the C core on NumPy arrays."""

    xp = np

    @staticmethod
    def prepare(a):
        return np.ascontiguousarray(a)

    @staticmethod
    def forward(problem, x, w, bias):
        y = _empty(problem.y_shape, x.dtype)
        if y.size:
            _core.forward(problem, x, w, bias, y)
        return y

    @staticmethod
    def backward_data(problem, dy, w):
        dx = _empty(problem.x_shape, dy.dtype)
        if dx.size:
            _core.backward_data(problem, dy, w, dx)
        return dx

    @staticmethod
    def backward_filter(problem, x, dy):
        dw = _empty(problem.w_shape, x.dtype)
        _core.backward_filter(problem, x, dy, dw)
        return dw

    @staticmethod
    def bias_backward(dy):
        db = np.empty((dy.shape[1],), dtype=dy.dtype)
        _core.bias_backward(dy, db)
        return db


def _backend(*arrays):
    """The backend of the arrays: NumPy, or CuPy when every array is on the GPU."""
    if all(type(a) is np.ndarray or a is None for a in arrays):
        return _NumPyBackend
    on_gpu = [type(a).__module__.split(".")[0] == "cupy" for a in arrays if a is not None]
    if not any(on_gpu):
        return _NumPyBackend
    if not all(on_gpu):
        raise TypeError(
            "pytconv: arrays must all be NumPy arrays or all CuPy arrays, got a mix "
            f"({', '.join(type(a).__module__ + '.' + type(a).__name__ for a in arrays if a is not None)})"
        )
    from . import gpu

    return gpu.backend()


def _checked(fn, backend, **named):
    """The arrays as the backend's arrays of one supported dtype, checked but
    not copied (None stays None): shapes are validated before any copy."""
    arrays = {
        name: None if a is None else _args.as_array(fn, name, a, backend.xp)
        for name, a in named.items()
    }
    _args.common_dtype(fn, **arrays)
    return list(arrays.values())


def _contiguous(backend, *arrays):
    return [a if a is None or a.flags.c_contiguous else backend.prepare(a) for a in arrays]


_F32, _F64 = _args.DTYPES


def _plain(x, w, b=None):
    """True for C-contiguous NumPy arrays of one supported dtype: the common
    case, which needs neither conversion nor copy."""
    if type(x) is not np.ndarray or type(w) is not np.ndarray:
        return False
    dt = x.dtype
    if w.dtype is not dt or (dt is not _F32 and dt is not _F64):
        return False
    if b is not None and (type(b) is not np.ndarray or b.dtype is not dt or not b.flags.c_contiguous):
        return False
    return x.flags.c_contiguous and w.flags.c_contiguous


def _prepare(fn, **named):
    """The backend and the named arrays, checked (a bias may be None); the
    caller copies them to C order after the shapes are validated."""
    arrays = list(named.values())
    if _plain(*arrays):
        return [_NumPyBackend] + arrays
    for name, a in named.items():
        if a is None and name != "bias":
            raise TypeError(f"{fn}: {name} must be an array, got None")
    be = _backend(*arrays)
    return [be] + _checked(fn, be, **named)


def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """N-d convolution (cross-correlation, as in deep learning), PyTorch semantics.

    x: (N, C_in, *spatial); weight: (C_out, C_in / groups, *kernel); bias: (C_out,).
    ``padding``: int, one int per dimension, one (low, high) pair per dimension,
    "same" (TensorFlow's rule, any stride) or "valid". ``padding_mode``: "zeros",
    "reflect", "replicate" or "circular". Returns (N, C_out, *out_spatial).
    """
    plain = _plain(x, weight, bias)  # the common case: nothing to convert, check or copy
    if plain:
        be = _NumPyBackend
    else:
        be, x, weight, bias = _prepare("conv", input=x, weight=weight, bias=bias)
    p = _args.conv_problem("conv", x.shape, weight.shape, stride, padding, dilation, groups, padding_mode)
    if bias is not None:
        _args.check_bias("conv", bias, p.out_channels)
    if not plain:
        x, weight, bias = _contiguous(be, x, weight, bias)
    return be.forward(p, x, weight, bias)


def conv_transpose(
    x,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    output_shape=None,
    padding_mode="zeros",
):
    """N-d transposed convolution: the adjoint of ``conv`` with the same arguments.

    x: (N, C_in, *spatial); weight: (C_in, C_out / groups, *kernel) as in
    ``torch.nn.functional.conv_transpose2d``. Output size per dimension:
    ``(in - 1) * stride - low - high + dilation * (k - 1) + 1 + output_padding``,
    or ``in * stride`` for padding="same". ``output_shape`` (spatial) may be
    given instead of ``output_padding``. Computed directly (GEMM + col2im), never
    by inserting zeros.
    """
    be, x, weight, bias = _prepare("conv_transpose", input=x, weight=weight, bias=bias)
    p = _args.transposed_problem(
        "conv_transpose",
        x.shape,
        weight.shape,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        output_shape,
        padding_mode,
    )
    if bias is not None:
        _args.check_bias("conv_transpose", bias, p.in_channels)
    x, weight = _contiguous(be, x, weight)
    out = be.backward_data(p, x, weight)
    if bias is not None:
        out += bias.reshape((1, -1) + (1,) * p.ndim)
    return out


def conv_input_grad(
    input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"
):
    """Gradient of ``conv`` with respect to its input (a transposed convolution).

    Argument order as ``torch.nn.grad.conv2d_input``.
    """
    fn = "conv_input_grad"
    be, weight, grad_output = _prepare(fn, weight=weight, grad_output=grad_output)
    p = _args.conv_problem(fn, input_shape, weight.shape, stride, padding, dilation, groups, padding_mode)
    _args.check_output_grad(fn, p.y_shape, grad_output.shape)
    return be.backward_data(p, *_contiguous(be, grad_output, weight))


def conv_weight_grad(
    x, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"
):
    """Gradient of ``conv`` with respect to its weight.

    Argument order as ``torch.nn.grad.conv2d_weight``.
    """
    fn = "conv_weight_grad"
    be, x, grad_output = _prepare(fn, input=x, grad_output=grad_output)
    p = _args.conv_problem(fn, x.shape, weight_shape, stride, padding, dilation, groups, padding_mode)
    _args.check_output_grad(fn, p.y_shape, grad_output.shape)
    return be.backward_filter(p, *_contiguous(be, x, grad_output))


def conv_transpose_input_grad(
    input_shape, weight, grad_output, stride=1, padding=0, groups=1, dilation=1, padding_mode="zeros"
):
    """Gradient of ``conv_transpose`` with respect to its input (a convolution).

    The output padding is implied by ``grad_output``'s shape.
    """
    fn = "conv_transpose_input_grad"
    be, weight, grad_output = _prepare(fn, weight=weight, grad_output=grad_output)
    p = _transposed_from_output(fn, input_shape, weight.shape, grad_output.shape, stride, padding,
                                groups, dilation, padding_mode)
    grad_output, weight = _contiguous(be, grad_output, weight)
    return be.forward(p, grad_output, weight, None)


def conv_transpose_weight_grad(
    x, weight_shape, grad_output, stride=1, padding=0, groups=1, dilation=1, padding_mode="zeros"
):
    """Gradient of ``conv_transpose`` with respect to its weight.

    The output padding is implied by ``grad_output``'s shape.
    """
    fn = "conv_transpose_weight_grad"
    be, x, grad_output = _prepare(fn, input=x, grad_output=grad_output)
    p = _transposed_from_output(fn, x.shape, weight_shape, grad_output.shape, stride, padding,
                                groups, dilation, padding_mode)
    return be.backward_filter(p, *_contiguous(be, grad_output, x))


def _transposed_from_output(fn, x_shape, w_shape, out_shape, stride, padding, groups, dilation, mode):
    out_shape = tuple(out_shape)
    if len(out_shape) != len(tuple(x_shape)):
        raise ValueError(
            f"{fn}: grad_output of shape {out_shape} and input of shape {tuple(x_shape)} "
            "differ in rank"
        )
    p = _args.transposed_problem(
        fn, x_shape, w_shape, stride, padding, 0, groups, dilation, out_shape[2:], mode
    )
    _args.check_output_grad(fn, p.x_shape, out_shape)
    return p


def bias_grad(grad_output):
    """Gradient of either operation with respect to its bias: grad_output summed
    over the batch and every spatial position, in a fixed order."""
    be = _backend(grad_output)
    (grad_output,) = _checked("bias_grad", be, grad_output=grad_output)
    if grad_output.ndim < 2:
        raise ValueError(f"bias_grad: grad_output must be (batch, channels, ...), got shape {grad_output.shape}")
    if grad_output.shape[1] == 0 or grad_output.size == 0:
        return be.xp.zeros((grad_output.shape[1],), dtype=grad_output.dtype)
    if grad_output.ndim == 2:
        grad_output = grad_output.reshape(grad_output.shape + (1,))
    (grad_output,) = _contiguous(be, grad_output)
    return be.bias_backward(grad_output)


def conv_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                      padding_mode="zeros"):
    """The shape ``conv`` returns for these arguments, without computing."""
    return _args.conv_problem(
        "conv_output_shape", input_shape, weight_shape, stride, padding, dilation, groups, padding_mode
    ).y_shape


def conv_transpose_output_shape(input_shape, weight_shape, stride=1, padding=0, output_padding=0,
                                groups=1, dilation=1, output_shape=None, padding_mode="zeros"):
    """The shape ``conv_transpose`` returns for these arguments, without computing."""
    return _args.transposed_problem(
        "conv_transpose_output_shape", input_shape, weight_shape, stride, padding, output_padding,
        groups, dilation, output_shape, padding_mode,
    ).x_shape


def set_num_threads(n: int) -> None:
    """Threads the core uses for each call (default: every CPU, or PYTCONV_NUM_THREADS)."""
    n = _args._int("set_num_threads", "n", n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    return _core.get_num_threads()
