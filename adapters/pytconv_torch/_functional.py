"""Functional convolution and transposed convolution on torch tensors, with
``torch.nn.functional``'s argument names and order, for any number of spatial
dimensions and every padding form and mode of pytconv.

The arguments are resolved once here (pytconv._args) into a Problem whose
explicit paddings and sizes are what the operators of `._ops` take.
"""

from __future__ import annotations

import torch

from pytconv import _args

from . import _ops

__all__ = ["conv", "conv_transpose"]

_NAMES = ("input", "weight", "bias")


# Problems of earlier calls, by builder, shapes and (plain) arguments.
_PROBLEMS = {}
_INT = {int}


def _resolve(resolve, fn, x_shape, w_shape, *arguments):
    """resolve(fn, x_shape, w_shape, *arguments) with pytconv._args's Problem
    builders, remembered for plain arguments: a model calls its layers with
    the same arguments every step, and a small convolution costs little more
    than resolving them."""
    if torch.compiler.is_compiling():
        # The operators take the batch size from their tensors, not from the
        # Problem: resolving with a stand-in keeps it symbolic in the graph,
        # so a new batch size does not recompile.
        return resolve(fn, (1,) + tuple(x_shape[1:]), tuple(w_shape), *arguments)
    if torch._C._is_tracing():
        # Traced sizes are tensors; the trace keeps the example's sizes (as
        # for torch.nn's layers) and records the operators.
        return resolve(fn, tuple(map(int, x_shape)), tuple(map(int, w_shape)), *arguments)
    for a in arguments:
        # Only ints, strings, None and tuples of ints: 2.0 or True equal to 2
        # or 1 must still reach validation and its error.
        kind = type(a)
        if not (kind is int or kind is str or a is None or (kind is tuple and set(map(type, a)) <= _INT)):
            return resolve(fn, tuple(x_shape), tuple(w_shape), *arguments)
    key = (resolve, fn, x_shape, w_shape) + arguments  # torch.Size: a tuple of ints
    problem = _PROBLEMS.get(key)
    if problem is None:
        problem = resolve(fn, tuple(x_shape), tuple(w_shape), *arguments)
        if len(_PROBLEMS) >= 4096:
            _PROBLEMS.clear()
        _PROBLEMS[key] = problem
    return problem


def _batched(fn: str, input: torch.Tensor, weight: torch.Tensor):
    """(input with a batch dimension, whether one was added): like
    torch.nn.functional, an input without batch dimension is accepted."""
    if weight.dim() < 3:
        raise ValueError(
            f"{fn}: weight must have at least 3 dimensions (channels, channels, *kernel), got "
            f"shape {tuple(weight.shape)}"
        )
    if input.dim() == weight.dim():
        return input, False
    if input.dim() == weight.dim() - 1:
        return input.unsqueeze(0), True
    n = weight.dim() - 2
    raise ValueError(
        f"{fn}: input of shape {tuple(input.shape)} has {input.dim()} dimensions; a weight of shape "
        f"{tuple(weight.shape)} ({n} spatial dimensions) needs input (batch, channels, *spatial) "
        f"with {n + 2} dimensions or (channels, *spatial) with {n + 1}"
    )


def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """N-d convolution (cross-correlation, as ``torch.nn.functional.conv{1,2,3}d``).

    input: (N, C_in, *spatial) or (C_in, *spatial); weight: (C_out, C_in / groups,
    *kernel), whose rank gives the number of spatial dimensions (any n >= 1);
    bias: (C_out,). ``stride``/``dilation``: an int or one per dimension.
    ``padding``: an int, one int per dimension, one (low, high) pair per
    dimension, "valid", or "same" (TensorFlow's rule, any stride).
    ``padding_mode``: "zeros", "reflect", "replicate" or "circular", as
    ``torch.nn.Conv2d``'s. Differentiable to any order; float32 and float64.
    """
    fn = "conv"
    _ops.check_tensors(fn, _NAMES, input, weight, bias)
    x, unbatched = _batched(fn, input, weight)
    p = _resolve(
        _args.conv_problem,
        fn,
        x.shape,
        weight.shape,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
    )
    if bias is not None:
        _args.check_bias(fn, bias, p.out_channels)
    y = _ops.run_conv(p, x, weight, bias)
    return y.squeeze(0) if unbatched else y


def conv_transpose(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    output_size=None,
    padding_mode="zeros",
):
    """N-d transposed convolution (as ``torch.nn.functional.conv_transpose{1,2,3}d``):
    the adjoint of ``conv`` with the same arguments.

    input: (N, C_in, *spatial) or (C_in, *spatial); weight: (C_in, C_out / groups,
    *kernel); bias: (C_out,). Output size per dimension
    ``(in - 1) * stride - low - high + dilation * (k - 1) + 1 + output_padding``
    (``in * stride`` for padding="same"). ``output_size`` (the spatial size,
    optionally with the batch and channel sizes in front, as
    ``torch.nn.ConvTranspose2d.forward`` takes it) may replace ``output_padding``.
    ``padding_mode`` other than "zeros" gives the adjoint of that padding: e.g.
    "circular" folds the cropped border back periodically.
    """
    fn = "conv_transpose"
    _ops.check_tensors(fn, _NAMES, input, weight, bias)
    x, unbatched = _batched(fn, input, weight)
    if output_size is not None:
        output_size = _spatial_output_size(fn, output_size, weight.dim() - 2, unbatched)
    p = _resolve(
        _args.transposed_problem,
        fn,
        x.shape,
        weight.shape,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        output_size,
        padding_mode,
    )
    if bias is not None:
        _args.check_bias(fn, bias, p.in_channels)
    # The transposed convolution of x is the input gradient of the
    # convolution p whose output has x's shape.
    y = _ops.run_conv_transpose(p, x, weight, bias)
    return y.squeeze(0) if unbatched else y


def _spatial_output_size(fn, output_size, n, unbatched):
    """The spatial part of output_size, which may lead with the batch and
    channel sizes (as torch.nn.ConvTranspose2d.forward's)."""
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        return output_size  # one size for every dimension
    if isinstance(output_size, (str, bytes)):
        raise TypeError(f"{fn}: output_size must be a sequence of ints, got {output_size!r}")
    try:
        sizes = tuple(output_size)
    except TypeError:
        raise TypeError(
            f"{fn}: output_size must be a sequence of ints, got {type(output_size).__name__}"
        ) from None
    leading = 1 if unbatched else 2
    if len(sizes) == n + leading:
        sizes = sizes[leading:]
    if len(sizes) != n:
        raise ValueError(
            f"{fn}: output_size needs {n} spatial sizes (or {n + leading} with the "
            f"{'channel' if unbatched else 'batch and channel'} sizes in front), got {output_size!r}"
        )
    return sizes
