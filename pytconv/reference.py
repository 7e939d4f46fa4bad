"""A slow, independent float64 reference written from the definitions, used by
the tests and the consistency checker as the oracle.

It shares nothing with the C core but the argument normalisation (a
`pytconv._args.Problem` says which convolution is meant):

* ``conv``: pad the input explicitly (``numpy.pad``), then sum, for each kernel
  offset, the strided slice of the padded input times the weight tap.
* ``conv_transpose``: the scatter definition: every input element adds
  ``x * w`` at ``o * stride + k * dilation`` of a full-size output, which is
  then cropped (zeros) or folded back onto itself (the adjoint of the padding
  for the other modes).
"""

from __future__ import annotations

import itertools

import numpy as np

from . import _args

_NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad(x, problem):
    widths = [(0, 0), (0, 0)] + list(zip(problem.pad_low, problem.pad_high))
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[problem.padding_mode])


def _source_index(mode, i, size):
    """Index of the input element that padded position i (relative) copies."""
    if mode == "replicate":
        return min(max(i, 0), size - 1)
    if mode == "circular":
        return i % size
    if mode == "reflect":
        if size == 1:
            return 0
        period = 2 * size - 2
        m = i % period
        return m if m < size else period - m
    raise ValueError(mode)


def _unpad(buf, problem):
    """The adjoint of `_pad`: crop (zeros) or add the border back (other modes)."""
    mode = problem.padding_mode
    for d, (size, lo) in enumerate(zip(problem.in_size, problem.pad_low)):
        axis = d + 2
        padded = buf.shape[axis]
        if mode == "zeros":
            buf = np.take(buf, np.arange(lo, lo + size), axis=axis)
            continue
        moved = np.moveaxis(buf, axis, 0)
        out = np.zeros((size,) + moved.shape[1:], dtype=buf.dtype)
        for j in range(padded):
            out[_source_index(mode, j - lo, size)] += moved[j]
        buf = np.moveaxis(out, 0, axis)
    return buf


def _tap_slices(problem, offset):
    return tuple(
        slice(k * dl, k * dl + (o - 1) * s + 1, s)
        for k, dl, s, o in zip(offset, problem.dilation, problem.stride, problem.out_size)
    )


def forward(problem, x, w, bias=None):
    """y = conv(x, w) + bias in float64 for a Problem."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp = _pad(x, problem)
    g = problem.groups
    cin_g = problem.in_channels // g
    cout_g = problem.out_channels // g
    y = np.zeros(problem.y_shape)
    for offset in itertools.product(*(range(k) for k in problem.kernel)):
        view = xp[(slice(None), slice(None)) + _tap_slices(problem, offset)]
        tap = w[(slice(None), slice(None)) + offset]  # (cout, cin_g)
        for gi in range(g):
            xs = view[:, gi * cin_g:(gi + 1) * cin_g]
            ws = tap[gi * cout_g:(gi + 1) * cout_g]
            y[:, gi * cout_g:(gi + 1) * cout_g] += np.tensordot(ws, xs, axes=([1], [1])).swapaxes(0, 1)
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * problem.ndim)
    return y


def backward_data(problem, dy, w):
    """dx = conv^T(dy) in float64: the scatter definition of a transposed convolution."""
    dy = np.asarray(dy, np.float64)
    w = np.asarray(w, np.float64)
    g = problem.groups
    cin_g = problem.in_channels // g
    cout_g = problem.out_channels // g
    padded = tuple(i + lo + hi for i, lo, hi in zip(problem.in_size, problem.pad_low, problem.pad_high))
    buf = np.zeros((problem.batch, problem.in_channels) + padded)
    for offset in itertools.product(*(range(k) for k in problem.kernel)):
        index = (slice(None), slice(None)) + _tap_slices(problem, offset)
        tap = w[(slice(None), slice(None)) + offset]  # (cout, cin_g)
        for gi in range(g):
            ys = dy[:, gi * cout_g:(gi + 1) * cout_g]
            ws = tap[gi * cout_g:(gi + 1) * cout_g]
            contrib = np.tensordot(ws, ys, axes=([0], [1])).swapaxes(0, 1)  # (n, cin_g, out...)
            sub = buf[:, gi * cin_g:(gi + 1) * cin_g]
            sub[(slice(None), slice(None)) + index[2:]] += contrib
    return _unpad(buf, problem)


def backward_filter(problem, x, dy):
    """dw = d<conv(x, w), dy>/dw in float64."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    xp = _pad(x, problem)
    g = problem.groups
    cin_g = problem.in_channels // g
    cout_g = problem.out_channels // g
    dw = np.zeros(problem.w_shape)
    spatial_axes = list(range(2, 2 + problem.ndim))
    for offset in itertools.product(*(range(k) for k in problem.kernel)):
        view = xp[(slice(None), slice(None)) + _tap_slices(problem, offset)]
        for gi in range(g):
            xs = view[:, gi * cin_g:(gi + 1) * cin_g]
            ys = dy[:, gi * cout_g:(gi + 1) * cout_g]
            dw[(slice(gi * cout_g, (gi + 1) * cout_g), slice(None)) + offset] = np.tensordot(
                ys, xs, axes=([0] + spatial_axes, [0] + spatial_axes)
            )
    return dw


def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Reference of `pytconv.conv` (same arguments), in float64."""
    p = _args.conv_problem("conv", np.shape(x), np.shape(weight), stride, padding, dilation, groups, padding_mode)
    return forward(p, x, weight, bias)


def conv_transpose(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                   output_shape=None, padding_mode="zeros"):
    """Reference of `pytconv.conv_transpose` (same arguments), in float64."""
    p = _args.transposed_problem(
        "conv_transpose", np.shape(x), np.shape(weight), stride, padding, output_padding, groups,
        dilation, output_shape, padding_mode,
    )
    out = backward_data(p, x, weight)
    if bias is not None:
        out = out + np.asarray(bias, np.float64).reshape((1, -1) + (1,) * p.ndim)
    return out
