"""The convolution as an explicit sparse matrix.

``conv_matrix(input_shape, weight, ...)`` returns the matrix C with
``conv(x).ravel() == C @ x.ravel()``; its transpose is the transposed
convolution with the same arguments, ``conv_transpose(y).ravel() == C.T @ y.ravel()``.

C is built from index arithmetic alone (no convolution is run to find it):
output position ``o`` reads, through kernel tap ``k``, the padded input at
``o * stride + k * dilation``, i.e. the input at
``t = o * stride + k * dilation - pad_low``. For padding_mode "zeros" a ``t``
outside the input contributes nothing; for the other modes the padding is
itself a linear map (each padded cell copies one input cell), so ``t`` is
replaced by the index of the cell it copies. Entries that land on the same
(row, column) are summed, which composes the padding map with the
convolution exactly.
"""

from __future__ import annotations

import numpy as np

from . import _args

__all__ = ["conv_matrix"]


def _source_indices(mode: str, t: np.ndarray, size: int) -> np.ndarray:
    """For positions t relative to the unpadded input (any integers), the index
    of the input cell each copies, or -1 where the padding is zeros."""
    if mode == "zeros":
        return np.where((t >= 0) & (t < size), t, -1)
    if mode == "replicate":
        return np.clip(t, 0, size - 1)
    if mode == "circular":
        return np.mod(t, size)
    if mode == "reflect":
        if size == 1:
            return np.zeros_like(t)
        period = 2 * size - 2
        m = np.mod(t, period)
        return np.where(m < size, m, period - m)
    raise ValueError(f"conv_matrix: unknown padding_mode {mode!r}")


def conv_matrix(input_shape, weight, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """The convolution ``pytconv.conv(x, weight, None, stride, padding, dilation,
    groups, padding_mode)`` for inputs of shape ``input_shape`` as a
    ``scipy.sparse.csr_matrix`` C of shape ``(prod(output_shape), prod(input_shape))``.

    ``C @ x.ravel()`` is ``conv(x).ravel()`` and ``C.T @ y.ravel()`` is
    ``conv_transpose(y, weight, None, stride, padding, output_padding, groups,
    dilation, padding_mode=padding_mode).ravel()`` with the output_padding that
    gives back ``input_shape``. Arguments are those of `pytconv.conv`; the
    matrix has weight's dtype (float32 or float64).

    >>> import numpy as np
    >>> C = conv_matrix((1, 1, 3, 3), np.array([[[[1.0, 2.0], [2.0, 1.0]]]]))
    >>> C.toarray()[0]
    array([1., 2., 0., 2., 1., 0., 0., 0., 0.])
    """
    import scipy.sparse

    fn = "conv_matrix"
    weight = _args.as_array(fn, "weight", weight)
    p = _args.conv_problem(
        fn, input_shape, weight.shape, stride, padding, dilation, groups, padding_mode
    )
    n = p.ndim

    # Per spatial dimension d: for every (output position, kernel tap), the
    # input index read (or -1): an (out_size[d], kernel[d]) table.
    tables = []
    for d in range(n):
        o = np.arange(p.out_size[d])[:, None]
        k = np.arange(p.kernel[d])[None, :]
        t = o * p.stride[d] + k * p.dilation[d] - p.pad_low[d]
        tables.append(_source_indices(p.padding_mode, t, p.in_size[d]))

    # Broadcast the tables into one (out..., kernel...) grid: the flat spatial
    # input index read and whether it is inside (zeros mode drops the rest).
    # Axis layout: output dims first, then kernel dims.
    src = np.zeros((1,) * (2 * n), dtype=np.int64)
    valid = np.ones((1,) * (2 * n), dtype=bool)
    for d in range(n):
        shape = [1] * (2 * n)
        shape[d] = p.out_size[d]
        shape[n + d] = p.kernel[d]
        table = tables[d].reshape(shape)
        valid = valid & (table >= 0)
        src = src * p.in_size[d] + np.maximum(table, 0)
    full = tuple(p.out_size) + tuple(p.kernel)
    src = np.broadcast_to(src, full).reshape(-1)
    valid = np.broadcast_to(valid, full).reshape(-1)
    out_spatial = int(np.prod(p.out_size))
    taps = int(np.prod(p.kernel))
    row_spatial = np.repeat(np.arange(out_spatial), taps)  # (out * taps,)
    tap_index = np.tile(np.arange(taps), out_spatial)  # (out * taps,)
    row_spatial, tap_index, src = row_spatial[valid], tap_index[valid], src[valid]

    # Channels: output channel co of group g reads input channels
    # g * cin_g + ci for ci < cin_g with weight[co, ci, tap].
    cin_g = p.in_channels // p.groups
    cout_g = p.out_channels // p.groups
    co = np.arange(p.out_channels)[:, None]  # (cout, 1)
    ci = (co // cout_g) * cin_g + np.arange(cin_g)[None, :]  # (cout, cin_g)
    w = weight.reshape(p.out_channels, cin_g, taps)
    in_spatial = int(np.prod(p.in_size))

    # (cout, cin_g, entries) for one batch element, then repeated per batch.
    rows = co[:, :, None] * out_spatial + row_spatial[None, None, :]
    cols = ci[:, :, None] * in_spatial + src[None, None, :]
    vals = w[:, :, tap_index]
    rows, cols = np.broadcast_arrays(rows, cols)
    rows, cols, vals = rows.reshape(-1), cols.reshape(-1), vals.reshape(-1)

    y_per_batch = p.out_channels * out_spatial
    x_per_batch = p.in_channels * in_spatial
    batch = np.arange(p.batch)[:, None]
    rows = (batch * y_per_batch + rows[None, :]).reshape(-1)
    cols = (batch * x_per_batch + cols[None, :]).reshape(-1)
    vals = np.broadcast_to(vals, (p.batch, vals.size)).reshape(-1)

    shape = (p.batch * y_per_batch, p.batch * x_per_batch)
    # COO -> CSR sums the entries that share a (row, column): the padding map
    # composed with the convolution.
    return scipy.sparse.coo_matrix((vals, (rows, cols)), shape=shape, dtype=weight.dtype).tocsr()
