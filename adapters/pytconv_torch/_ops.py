"""The PyTorch operators of pytconv: four `torch.library.custom_op`s over the
core's primitives, with fake (shape) functions and autograd formulas that
compose one another, so gradients of any order stay on the same core.

  pytconv::conv_forward     y  = conv(x, w) + b
  pytconv::conv_input_grad  dx = conv^T(dy, w) + b   (the transposed convolution)
  pytconv::conv_weight_grad dw = d<conv(x, w), dy>/dw
  pytconv::bias_grad        db = dy summed over batch and space

Each operator takes its convolution fully resolved (strides, explicit low and
high paddings, dilations, groups, padding mode: the fields of a
`pytconv._args.Problem`), so the shapes of every result follow from the
arguments without looking at data. The autograd formulas come from
bilinearity: with A(w) the convolution matrix,

  y  = A(w) x        dL/dx = A(w)^T g,  dL/dw = weight_grad(x, g)
  dx = A(w)^T dy     dL/ddy = A(w) g,   dL/dw = weight_grad(g, dy)
  dw = weight_grad(x, dy)
                     dL/dx = A(g)^T dy, dL/ddy = A(g) x

CPU tensors cross to NumPy without copies when contiguous; CUDA tensors cross
to CuPy through DLPack on the current stream and run on pytconv's GPU path.

The functions at the end (run_conv, conv_forward, ...) are how the adapter
calls the operators: through PyTorch's dispatcher when anything may observe
the call (torch.compile, FakeTensor, modes, tracing), and otherwise straight
to the same computation and autograd formulas (see _route), as the
dispatcher's cost would dominate small convolutions.
"""

from __future__ import annotations

import functools
import operator
from typing import Optional, Sequence

import torch
import torch.autograd.forward_ad as _forward_ad

from pytconv import _args, _core
from pytconv._api import _NumPyBackend

__all__ = [
    "run_conv",
    "run_conv_transpose",
    "conv_forward",
    "conv_input_grad",
    "conv_weight_grad",
    "bias_grad",
    "check_tensors",
]

_DTYPES = (torch.float32, torch.float64)
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_DEVICE_TYPES = ("cpu", "cuda", "meta")



# ---- argument checks shared by the functional API and the operators -------


def check_tensors(fn: str, names: tuple, *tensors) -> None:
    """Tensors (named by `names`; None: absent) of one supported dtype on one
    supported device.

    Raises TypeError for non-tensors and dtypes, ValueError for devices, and
    RuntimeError when CUDA tensors meet a missing GPU path.
    """
    # The common case, cheaply: CPU tensors of one supported dtype.
    first = tensors[0]
    if type(first) in _PLAIN_TYPES and first.is_cpu and first.dtype in _DTYPES:
        dtype = first.dtype
        for t in tensors[1:]:
            if t is not None and (type(t) not in _PLAIN_TYPES or not t.is_cpu or t.dtype is not dtype):
                break
        else:
            return
    named = [(name, t) for name, t in zip(names, tensors) if t is not None]
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(
                f"{fn}: {name} has dtype {t.dtype}; supported dtypes are torch.float32 and "
                "torch.float64"
            )
    given = ", ".join(f"{name} {t.dtype} on {t.device}" for name, t in named)
    if len({t.dtype for _, t in named}) > 1:
        raise TypeError(f"{fn}: tensors must share one dtype (float32 or float64), got {given}")
    if len({t.device for _, t in named}) > 1:
        raise ValueError(f"{fn}: tensors must share one device, got {given}")
    device = named[0][1].device
    if device.type not in _DEVICE_TYPES:
        raise ValueError(
            f"{fn}: tensors on device {device} are not supported; pytconv computes on the CPU "
            "and, with its GPU path, on CUDA devices"
        )
    if device.type == "cuda":
        _gpu_backend(fn)


def _gpu_backend(fn: str):
    """pytconv's GPU backend, or RuntimeError saying why there is none."""
    try:
        from pytconv import gpu
    except ImportError as exc:
        reason = f"pytconv.gpu cannot be imported ({exc})"
    else:
        try:
            return gpu.backend()
        except RuntimeError:
            reason = gpu.status()[1]
    raise RuntimeError(
        f"{fn}: CUDA tensors need pytconv's GPU path, which is not available: {reason} "
        "(or move the tensors to the CPU)"
    )


# ---- conversion between tensors and the backends' arrays ------------------


def _as_numpy(t: torch.Tensor):
    """The tensor's memory as a C-contiguous NumPy array, without a copy when
    the tensor is contiguous."""
    if t.requires_grad or not t.is_contiguous():
        t = t.detach().contiguous()
    try:
        return t.numpy()
    except RuntimeError:  # a negated view (torch._neg_view), which NumPy cannot represent
        return t.resolve_neg().numpy()


def _on_gpu(fn: str, device: torch.device, compute):
    """compute(backend, to_array) on pytconv's GPU path, as a fresh tensor."""
    if device.type != "cuda":
        raise ValueError(
            f"{fn}: tensors on device {device} are not supported; pytconv computes on the CPU "
            "and, with its GPU path, on CUDA devices"
        )
    backend = _gpu_backend(fn)
    import cupy

    # The work is queued on PyTorch's current stream of the tensors' device,
    # so it is ordered with the surrounding PyTorch work and DLPack needs no
    # extra synchronisation in either direction.
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream, device.index):
        result = compute(
            backend, lambda t: backend.prepare(cupy.from_dlpack(t.detach().contiguous().resolve_neg()))
        )
        return torch.from_dlpack(result)


# ---- Problems from the operators' arguments --------------------------------


def _ints(values) -> tuple:
    return tuple(map(operator.index, values))


@functools.lru_cache(maxsize=1024)
def _problem(fn, x_shape, w_shape, out_size, stride, pad_low, pad_high, dilation, groups, padding_mode):
    """The checked Problem of conv(x, w), its output cropped to out_size when
    given (the convolutions behind transposed ones with output_padding >=
    stride end early). Arguments are hashable ints and tuples, so repeated
    calls (a training loop) skip the normalisation."""
    p = _args.conv_problem(
        fn, x_shape, w_shape, stride, tuple(zip(pad_low, pad_high)), dilation, groups, padding_mode
    )
    if out_size is not None and out_size != p.out_size:
        if len(out_size) != p.ndim or not all(1 <= o <= m for o, m in zip(out_size, p.out_size)):
            raise ValueError(
                f"{fn}: an output of spatial size {out_size} does not fit this convolution, "
                f"whose output has at most {p.out_size} and at least one in each dimension"
            )
        p = p._replace(out_size=out_size)
    return p


def _conv_problem(fn, x_shape, w_shape, out_size, stride, pad_low, pad_high, dilation, groups, mode):
    if len(pad_low) != len(pad_high):
        raise ValueError(f"{fn}: pad_low and pad_high must have one entry per spatial dimension")
    return _problem(
        fn,
        _ints(x_shape),
        _ints(w_shape),
        None if out_size is None else _ints(out_size),
        _ints(stride),
        _ints(pad_low),
        _ints(pad_high),
        _ints(dilation),
        operator.index(groups),
        mode,
    )


def _same_rank(fn, **shapes) -> None:
    ranks = {len(tuple(s)) for s in shapes.values()}
    if len(ranks) > 1:
        given = ", ".join(f"{name} {tuple(s)}" for name, s in shapes.items())
        raise ValueError(f"{fn}: the shapes disagree on the number of spatial dimensions: {given}")


def _forward_problem(fn, x, w, output_size, *conv_args):
    if output_size is not None:
        _same_rank(fn, input_spatial=x.shape[2:], output_size=output_size)
    return _conv_problem(fn, x.shape, w.shape, output_size, *conv_args)


def _input_grad_problem(fn, dy, w, input_size, *conv_args):
    _same_rank(fn, grad_output_spatial=dy.shape[2:], weight_kernel=w.shape[2:], input_size=input_size)
    groups = conv_args[-2]
    x_shape = (dy.shape[0], w.shape[1] * groups) + tuple(input_size)
    p = _conv_problem(fn, x_shape, w.shape, dy.shape[2:], *conv_args)
    _args.check_output_grad(fn, p.y_shape, _ints(dy.shape))
    return p


def _weight_grad_problem(fn, x, dy, kernel_size, *conv_args):
    _same_rank(fn, input=x.shape, grad_output=dy.shape)
    _same_rank(fn, input_spatial=x.shape[2:], kernel_size=kernel_size)
    groups = operator.index(conv_args[-2])
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"{fn}: input has {x.shape[1]} channels, not divisible by groups={groups}")
    w_shape = (dy.shape[1], x.shape[1] // groups) + tuple(kernel_size)
    p = _conv_problem(fn, x.shape, w_shape, dy.shape[2:], *conv_args)
    _args.check_output_grad(fn, p.y_shape, _ints(dy.shape))
    return p


# ---- the computations: the core's primitives on the tensors' memory --------


_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


def _cpu_buffer(t: torch.Tensor) -> torch.Tensor:
    """t, or a C-contiguous copy of it, whose memory the core can read by address."""
    if not t.is_contiguous() or t.is_neg():
        t = t.resolve_neg().contiguous()
    return t


def _forward_impl(p, x, w, bias):
    if x.is_cpu:
        # Every buffer stays referenced until the core returns: the core reads
        # them by address.
        x, w = _cpu_buffer(x), _cpu_buffer(w)
        b = None if bias is None else _cpu_buffer(bias)
        y = torch.empty(p.y_shape, dtype=x.dtype)
        if y.numel():
            _core.forward_raw(p, _DTYPE_CODES[x.dtype], x.data_ptr(), w.data_ptr(),
                              0 if b is None else b.data_ptr(), y.data_ptr())
        return y
    return _on_gpu(
        "conv_forward",
        x.device,
        lambda be, arr: be.forward(p, arr(x), arr(w), None if bias is None else arr(bias)),
    )


def _add_bias(p, dx, bias):
    # The same broadcast add as pytconv.conv_transpose, so that results are
    # bitwise those of the NumPy API.
    if bias is not None:
        dx += bias.reshape((1, -1) + (1,) * p.ndim)
    return dx


def _input_grad_impl(p, dy, w, bias):
    if dy.is_cpu:
        dy, w = _cpu_buffer(dy), _cpu_buffer(w)
        dx = torch.empty(p.x_shape, dtype=dy.dtype)
        if dx.numel():
            _core.backward_data_raw(p, _DTYPE_CODES[dy.dtype], dy.data_ptr(), w.data_ptr(), dx.data_ptr())
        return _add_bias(p, dx, None if bias is None else bias.detach())
    return _on_gpu(
        "conv_input_grad",
        dy.device,
        lambda be, arr: _add_bias(p, be.backward_data(p, arr(dy), arr(w)), None if bias is None else arr(bias)),
    )


def _weight_grad_impl(p, x, dy):
    if x.is_cpu:
        x, dy = _cpu_buffer(x), _cpu_buffer(dy)
        dw = torch.empty(p.w_shape, dtype=x.dtype)
        _core.backward_filter_raw(p, _DTYPE_CODES[x.dtype], x.data_ptr(), dy.data_ptr(), dw.data_ptr())
        return dw
    return _on_gpu("conv_weight_grad", x.device, lambda be, arr: be.backward_filter(p, arr(x), arr(dy)))


def _bias_grad_impl(dy):
    def compute(be, a):
        if a.shape[1] == 0 or a.size == 0:
            return be.xp.zeros((a.shape[1],), dtype=a.dtype)
        return be.bias_backward(a)

    if dy.is_cpu:
        return torch.from_numpy(compute(_NumPyBackend, _as_numpy(dy)))
    return _on_gpu("bias_grad", dy.device, lambda be, arr: compute(be, arr(dy)))


# ---- the custom operators ---------------------------------------------------


@torch.library.custom_op("pytconv::conv_forward", mutates_args=())
def _conv_forward_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    output_size: Optional[Sequence[int]],
    stride: Sequence[int],
    pad_low: Sequence[int],
    pad_high: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    padding_mode: str,
) -> torch.Tensor:
    """conv(input, weight) + bias with explicit (low, high) padding; the first
    output_size outputs (all when None)."""
    fn = "pytconv::conv_forward"
    check_tensors(fn, ("input", "weight", "bias"), input, weight, bias)
    p = _forward_problem(
        fn, input, weight, output_size, stride, pad_low, pad_high, dilation, groups, padding_mode
    )
    if bias is not None:
        _args.check_bias(fn, bias, p.out_channels)
    return _forward_impl(p, input, weight, bias)


@torch.library.custom_op("pytconv::conv_input_grad", mutates_args=())
def _conv_input_grad_op(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    input_size: Sequence[int],
    stride: Sequence[int],
    pad_low: Sequence[int],
    pad_high: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    padding_mode: str,
) -> torch.Tensor:
    """conv^T(grad_output, weight) + bias: the input gradient of conv, and the
    transposed convolution; input_size is the spatial size of the result."""
    fn = "pytconv::conv_input_grad"
    check_tensors(fn, ("grad_output", "weight", "bias"), grad_output, weight, bias)
    p = _input_grad_problem(
        fn, grad_output, weight, input_size, stride, pad_low, pad_high, dilation, groups, padding_mode
    )
    if bias is not None:
        _args.check_bias(fn, bias, p.in_channels)
    return _input_grad_impl(p, grad_output, weight, bias)


@torch.library.custom_op("pytconv::conv_weight_grad", mutates_args=())
def _conv_weight_grad_op(
    input: torch.Tensor,
    grad_output: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    pad_low: Sequence[int],
    pad_high: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    padding_mode: str,
) -> torch.Tensor:
    """The weight gradient of conv(input, weight) for grad_output."""
    fn = "pytconv::conv_weight_grad"
    check_tensors(fn, ("input", "grad_output"), input, grad_output)
    p = _weight_grad_problem(
        fn, input, grad_output, kernel_size, stride, pad_low, pad_high, dilation, groups, padding_mode
    )
    return _weight_grad_impl(p, input, grad_output)


@torch.library.custom_op("pytconv::bias_grad", mutates_args=())
def _bias_grad_op(grad_output: torch.Tensor) -> torch.Tensor:
    """grad_output (batch, channels, *spatial) summed to (channels,), in the
    core's fixed order."""
    fn = "pytconv::bias_grad"
    check_tensors(fn, ("grad_output",), grad_output)
    if grad_output.dim() < 3:
        raise ValueError(
            f"{fn}: grad_output must be (batch, channels, *spatial), got shape "
            f"{tuple(grad_output.shape)}"
        )
    return _bias_grad_impl(grad_output)


# ---- shapes without data (FakeTensor, meta tensors, torch.compile) ----------


@_conv_forward_op.register_fake
def _(input, weight, bias, output_size, stride, pad_low, pad_high, dilation, groups, padding_mode):
    if output_size is None:
        sizes = zip(input.shape[2:], weight.shape[2:], stride, dilation, pad_low, pad_high)
        output_size = [_args.conv_out_size(*size) for size in sizes]
    return input.new_empty((input.shape[0], weight.shape[0], *output_size))


@_conv_input_grad_op.register_fake
def _(grad_output, weight, bias, input_size, stride, pad_low, pad_high, dilation, groups, padding_mode):
    return grad_output.new_empty((grad_output.shape[0], weight.shape[1] * groups, *input_size))


@_conv_weight_grad_op.register_fake
def _(input, grad_output, kernel_size, stride, pad_low, pad_high, dilation, groups, padding_mode):
    return input.new_empty((grad_output.shape[1], input.shape[1] // groups, *kernel_size))


@_bias_grad_op.register_fake
def _(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


# ---- calling the operators ----------------------------------------------------

# How a call runs (see _route).
_DIRECT, _FUNCTION, _FUNCTORCH, _OPERATOR = "direct", "function", "functorch", "operator"


def _route(*tensors) -> str:
    """How to run a call on these tensors.

    Plain CPU/CUDA tensors with nothing observing the call (compiler, tracer,
    functorch transform, torch-function or dispatch mode, profiler) skip
    PyTorch's dispatcher, whose cost for a custom operator with autograd
    (tens to hundreds of microseconds) would dominate small convolutions:
    _DIRECT computes at once when no gradient is recorded; _FUNCTION records
    the operator's own autograd formula through a torch.autograd.Function.
    Under torch.func's transforms, the same formulas run as an
    autograd.Function of the kind those need (_FUNCTORCH). Anything else goes
    through the operator (_OPERATOR), which the compiler, FakeTensor, meta
    tensors and modes see and trace."""
    if torch.compiler.is_compiling():
        return _OPERATOR
    if _forward_ad._current_level >= 0:  # inside forward_ad.dual_level()
        _refuse_tangents(tensors)
    if torch._C._are_functorch_transforms_active():
        return _functorch_route()
    grad = False
    for t in tensors:
        if t is None:
            continue
        if type(t) not in _PLAIN_TYPES or t.is_meta:
            return _OPERATOR
        grad = grad or t.requires_grad
    if (
        torch._C._is_torch_function_mode_enabled()
        or torch._C._len_torch_dispatch_stack()
        or torch._C._is_tracing()
        or torch._C._autograd._profiler_enabled()
    ):
        return _OPERATOR
    return _FUNCTION if grad and torch.is_grad_enabled() else _DIRECT


_FORWARD_AD_MESSAGE = (
    "pytconv: forward-mode automatic differentiation (torch.func.jvp, jacfwd, hessian, "
    "torch.autograd.forward_ad) is not supported: the operators have reverse-mode formulas "
    "only (use backward(), torch.func.grad, vjp or jacrev)"
)


def _refuse_tangents(tensors) -> None:
    """Dual tensors would lose their tangents silently: refuse them."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and _forward_ad.unpack_dual(t).tangent is not None:
            raise NotImplementedError(_FORWARD_AD_MESSAGE)


def _functorch_route() -> str:
    """The route under torch.func transforms (grad, vjp, jacrev, vmap and
    their compositions): _FUNCTORCH; forward mode is refused rather than
    computed wrongly."""
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    if any(i.key() == TransformType.Jvp for i in retrieve_all_functorch_interpreters()):
        raise NotImplementedError(_FORWARD_AD_MESSAGE)
    return _FUNCTORCH


def _conv_args(p) -> tuple:
    """The operators' description of the convolution of a Problem."""
    return p.stride, p.pad_low, p.pad_high, p.dilation, p.groups, p.padding_mode


def run_conv(p, x, w, bias):
    """conv(x, w) + bias for the checked Problem p (the functional API's call)."""
    route = _route(x, w, bias)
    if route == _DIRECT:
        return _forward_impl(p, x, w, bias)
    if route == _FUNCTION:
        return _ConvForward.apply(p, _conv_args(p), x, w, bias)
    return conv_forward(x, w, bias, None, *_conv_args(p))


def run_conv_transpose(p, t, w, bias):
    """conv^T(t, w) + bias for the checked Problem p of the convolution whose
    output has t's shape (the functional API's call)."""
    route = _route(t, w, bias)
    if route == _DIRECT:
        return _input_grad_impl(p, t, w, bias)
    if route == _FUNCTION:
        return _ConvInputGrad.apply(p, _conv_args(p), t, w, bias)
    return conv_input_grad(t, w, bias, p.in_size, *_conv_args(p))


def conv_forward(x, w, bias, output_size, *conv_args):
    """pytconv::conv_forward, run as _route says. conv_args: stride, pad_low,
    pad_high, dilation, groups, padding_mode."""
    route = _route(x, w, bias)
    if route == _DIRECT or route == _FUNCTION:
        problem = _forward_problem("pytconv::conv_forward", x, w, output_size, *conv_args)
        if route == _DIRECT:
            return _forward_impl(problem, x, w, bias)
        return _ConvForward.apply(problem, conv_args, x, w, bias)
    if route == _FUNCTORCH:
        return _FuncConvForward.apply(x, w, bias, output_size, *conv_args)
    return _conv_forward_op(x, w, bias, output_size, *conv_args)


def conv_input_grad(dy, w, bias, input_size, *conv_args):
    """pytconv::conv_input_grad, run as _route says (see conv_forward)."""
    route = _route(dy, w, bias)
    if route == _DIRECT or route == _FUNCTION:
        problem = _input_grad_problem("pytconv::conv_input_grad", dy, w, input_size, *conv_args)
        if route == _DIRECT:
            return _input_grad_impl(problem, dy, w, bias)
        return _ConvInputGrad.apply(problem, conv_args, dy, w, bias)
    if route == _FUNCTORCH:
        return _FuncConvInputGrad.apply(dy, w, bias, input_size, *conv_args)
    return _conv_input_grad_op(dy, w, bias, input_size, *conv_args)


def conv_weight_grad(x, dy, kernel_size, *conv_args):
    """pytconv::conv_weight_grad, run as _route says (see conv_forward)."""
    route = _route(x, dy)
    if route == _DIRECT or route == _FUNCTION:
        problem = _weight_grad_problem("pytconv::conv_weight_grad", x, dy, kernel_size, *conv_args)
        if route == _DIRECT:
            return _weight_grad_impl(problem, x, dy)
        return _ConvWeightGrad.apply(problem, conv_args, x, dy)
    if route == _FUNCTORCH:
        return _FuncConvWeightGrad.apply(x, dy, kernel_size, *conv_args)
    return _conv_weight_grad_op(x, dy, kernel_size, *conv_args)


def bias_grad(dy):
    """pytconv::bias_grad, run as _route says (see conv_forward)."""
    route = _route(dy)
    if route == _DIRECT:
        return _bias_grad_impl(dy)
    if route == _FUNCTION:
        return _BiasGrad.apply(dy)
    if route == _FUNCTORCH:
        return _FuncBiasGrad.apply(dy)
    return _bias_grad_op(dy)


# ---- autograd: each operator's gradients are the others ----------------------
# setup_context and backward as torch.library's register_autograd takes them;
# `needs` is which inputs want a gradient (ctx.needs_input_grad by default).


def _setup_with_bias(ctx, inputs, output):
    """setup_context of conv_forward (x, w, bias, output_size, ...) and
    conv_input_grad (dy, w, bias, input_size, ...): the same layout."""
    a, w, bias, _size, *conv_args = inputs
    ctx.conv_args = conv_args
    ctx.has_bias = bias is not None
    ctx.save_for_backward(a, w)


def _backward_forward(ctx, grad, needs=None):
    needs = ctx.needs_input_grad if needs is None else needs
    x, w = ctx.saved_tensors
    gx = gw = gb = None
    if needs[0]:
        gx = conv_input_grad(grad, w, None, x.shape[2:], *ctx.conv_args)
    if needs[1]:
        gw = conv_weight_grad(x, grad, w.shape[2:], *ctx.conv_args)
    if ctx.has_bias and needs[2]:
        gb = bias_grad(grad)
    return gx, gw, gb, None, None, None, None, None, None, None


def _backward_input_grad(ctx, grad, needs=None):
    needs = ctx.needs_input_grad if needs is None else needs
    dy, w = ctx.saved_tensors
    g_dy = gw = gb = None
    if needs[0]:
        g_dy = conv_forward(grad, w, None, dy.shape[2:], *ctx.conv_args)
    if needs[1]:
        gw = conv_weight_grad(grad, dy, w.shape[2:], *ctx.conv_args)
    if ctx.has_bias and needs[2]:
        gb = bias_grad(grad)
    return g_dy, gw, gb, None, None, None, None, None, None, None


def _setup_weight_grad(ctx, inputs, output):
    x, dy, _kernel_size, *conv_args = inputs
    ctx.conv_args = conv_args
    ctx.save_for_backward(x, dy)


def _backward_weight_grad(ctx, grad, needs=None):
    needs = ctx.needs_input_grad if needs is None else needs
    x, dy = ctx.saved_tensors
    gx = g_dy = None
    if needs[0]:
        gx = conv_input_grad(dy, grad, None, x.shape[2:], *ctx.conv_args)
    if needs[1]:
        g_dy = conv_forward(x, grad, None, dy.shape[2:], *ctx.conv_args)
    return gx, g_dy, None, None, None, None, None, None, None


def _setup_bias_grad(ctx, inputs, output):
    (dy,) = inputs
    ctx.dy_shape = dy.shape


def _backward_bias_grad(ctx, grad):
    # d(sum over batch and space)/d(dy): the channel's gradient everywhere.
    shape = ctx.dy_shape
    return (grad.reshape((1, -1) + (1,) * (len(shape) - 2)).expand(shape),)


_conv_forward_op.register_autograd(_backward_forward, setup_context=_setup_with_bias)
_conv_input_grad_op.register_autograd(_backward_input_grad, setup_context=_setup_with_bias)
_conv_weight_grad_op.register_autograd(_backward_weight_grad, setup_context=_setup_weight_grad)
_bias_grad_op.register_autograd(_backward_bias_grad, setup_context=_setup_bias_grad)


# ---- the same formulas in eager mode, without the dispatcher -------------------
# apply(problem, conv_args, *tensors): the checked Problem and the operator's
# (stride, pad_low, pad_high, dilation, groups, padding_mode) ride along as
# two arguments, and forward takes ctx itself, because torch.autograd.Function
# inspects the signature of a forward with a separate setup_context on every
# call and walks every argument: both cost more than a small convolution.


class _ConvForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, conv_args, x, w, bias):
        output = _forward_impl(p, x, w, bias)
        _setup_with_bias(ctx, (x, w, bias, None, *conv_args), output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return (None, None) + _backward_forward(ctx, grad, ctx.needs_input_grad[2:])[:3]


class _ConvInputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, conv_args, dy, w, bias):
        output = _input_grad_impl(p, dy, w, bias)
        _setup_with_bias(ctx, (dy, w, bias, p.in_size, *conv_args), output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return (None, None) + _backward_input_grad(ctx, grad, ctx.needs_input_grad[2:])[:3]


class _ConvWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, conv_args, x, dy):
        output = _weight_grad_impl(p, x, dy)
        _setup_weight_grad(ctx, (x, dy, p.kernel, *conv_args), output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return (None, None) + _backward_weight_grad(ctx, grad, ctx.needs_input_grad[2:])[:2]


class _BiasGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy):
        output = _bias_grad_impl(dy)
        _setup_bias_grad(ctx, (dy,), output)
        return output

    backward = staticmethod(_backward_bias_grad)


# ---- the same formulas for torch.func's transforms ------------------------------
# (which need forward and setup_context apart, and a vmap rule; PyTorch's own
# autograd of custom operators lacks the first in this PyTorch generation)


def _vmap_by_loop(function):
    """A vmap rule computing each element of the vmapped dimension in turn
    (as PyTorch's fallback for operators without a batching rule)."""

    def vmap(info, in_dims, *args):
        results = []
        for i in range(info.batch_size):
            # in_dims mirrors the arguments: an int or None for a tensor, a
            # structure of Nones for the others (int lists).
            sliced = [
                a.select(d, i) if isinstance(a, torch.Tensor) and d is not None else a
                for a, d in zip(args, in_dims)
            ]
            results.append(function(*sliced))
        return torch.stack(results), 0

    return staticmethod(vmap)


class _FuncConvForward(torch.autograd.Function):
    @staticmethod
    def forward(x, w, bias, output_size, *conv_args):
        p = _forward_problem("pytconv::conv_forward", x, w, output_size, *conv_args)
        return _forward_impl(p, x, w, bias)

    setup_context = staticmethod(_setup_with_bias)
    backward = staticmethod(_backward_forward)
    vmap = _vmap_by_loop(conv_forward)


class _FuncConvInputGrad(torch.autograd.Function):
    @staticmethod
    def forward(dy, w, bias, input_size, *conv_args):
        p = _input_grad_problem("pytconv::conv_input_grad", dy, w, input_size, *conv_args)
        return _input_grad_impl(p, dy, w, bias)

    setup_context = staticmethod(_setup_with_bias)
    backward = staticmethod(_backward_input_grad)
    vmap = _vmap_by_loop(conv_input_grad)


class _FuncConvWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(x, dy, kernel_size, *conv_args):
        p = _weight_grad_problem("pytconv::conv_weight_grad", x, dy, kernel_size, *conv_args)
        return _weight_grad_impl(p, x, dy)

    setup_context = staticmethod(_setup_weight_grad)
    backward = staticmethod(_backward_weight_grad)
    vmap = _vmap_by_loop(conv_weight_grad)


class _FuncBiasGrad(torch.autograd.Function):
    @staticmethod
    def forward(dy):
        return _bias_grad_impl(dy)

    setup_context = staticmethod(_setup_bias_grad)
    backward = staticmethod(_backward_bias_grad)
    vmap = _vmap_by_loop(bias_grad)
