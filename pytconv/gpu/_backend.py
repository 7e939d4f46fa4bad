"""The three convolution primitives on CuPy arrays.

Every primitive is a loop over *chunks* of columns (a column is one output
position of one image). For each chunk:

* ``forward``          cols = im2col(x)           Y  = W @ cols
* ``backward_data``    cols = W^T @ dY            dx = col2im(cols)  (a gather)
* ``backward_filter``  cols = im2col(x)           dW += dY @ cols

with the matrix products done by cuBLAS through ``cupy.matmul``, batched over
the groups. A chunk holds whole images when an image's columns fit in the
workspace limit, else a tile of one image's positions, so the extra memory
of a call stays near the limit whatever the problem size.

Non-zero padding modes pad the input explicitly (forward, weight gradient)
and fold the padded gradient back (input gradient, the adjoint), as the C
core does. Everything runs on the current CuPy stream; nothing is copied to
the host, and the order of every sum is fixed by the problem and the
workspace limit alone, so results are reproducible run to run.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from .. import _args

#: The CUDA sources, compiled by NVRTC on first use.
KERNEL_SOURCE = Path(__file__).with_name("kernels.cu")

#: Order of the geometry fields, as ``enum ptc_geo_field`` in kernels.cu.
GEO_FIELDS = (
    "in",
    "out",
    "kernel",
    "stride",
    "dilation",
    "pad_low",
    "padded",
    "in_stride",
    "out_stride",
    "kernel_stride",
    "gcd",
    "q_step",
    "o_step",
    "dil_inv",
)

#: Ranks with unrolled im2col/col2im kernels (their per-dimension state lives
#: in registers); other ranks use the general kernel, whose col2im keeps that
#: state for up to 62 dimensions in per-thread local memory.
SPECIALISED_RANKS = (1, 2, 3, 4, 5)

_TYPE_NAMES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_MODE_CODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}

#: Elements summed by one thread of the bias gradient's first pass (fixed, so
#: the order of the sum does not depend on the device).
BIAS_CHUNK = 256

BLOCK = 256
MAX_BLOCKS = 1 << 20

DEFAULT_WORKSPACE_BYTES = 256 << 20


def kernel_names(dtype) -> list:
    """The name expressions of every kernel instantiation for one dtype."""
    t = _TYPE_NAMES[np.dtype(dtype)]
    names = []
    for rank in SPECIALISED_RANKS + (0,):
        names.append(f"ptc_im2col<{t}, {rank}>")
        names.append(f"ptc_col2im<{t}, {rank}>")
    for kernel in ("ptc_pad", "ptc_fold_dim", "ptc_bias_add", "ptc_bias_partial", "ptc_bias_finish"):
        names.append(f"{kernel}<{t}>")
    return names


def compile_options() -> tuple:
    return (f"-DPTC_MAX_NDIM={_args.MAX_SPATIAL_DIMS}",)


def _workspace_from_env() -> int:
    value = os.environ.get("PYTCONV_GPU_WORKSPACE_MB")
    if value is None:
        return DEFAULT_WORKSPACE_BYTES
    try:
        mb = int(value)
    except ValueError:
        raise ValueError(f"PYTCONV_GPU_WORKSPACE_MB must be an integer, got {value!r}") from None
    if mb < 1:
        raise ValueError(f"PYTCONV_GPU_WORKSPACE_MB must be >= 1, got {mb}")
    return mb << 20


def _needs_explicit_padding(p: _args.Problem) -> bool:
    return p.padding_mode != "zeros" and (any(p.pad_low) or any(p.pad_high))


def _padded_problem(p: _args.Problem) -> _args.Problem:
    """The same convolution on the explicitly padded input."""
    padded = tuple(i + lo + hi for i, lo, hi in zip(p.in_size, p.pad_low, p.pad_high))
    zeros = (0,) * p.ndim
    return p._replace(in_size=padded, pad_low=zeros, pad_high=zeros, padding_mode="zeros")


def _row_major_strides(shape) -> list:
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= size
    return strides[::-1]


def geometry(p: _args.Problem) -> np.ndarray:
    """The int64 geometry array of a problem, field-major (see kernels.cu)."""
    n = p.ndim
    fields = {name: [0] * n for name in GEO_FIELDS}
    fields["in_stride"] = _row_major_strides(p.in_size)
    fields["out_stride"] = _row_major_strides(p.out_size)
    fields["kernel_stride"] = _row_major_strides(p.kernel)
    for d in range(n):
        s, dl = p.stride[d], p.dilation[d]
        g = math.gcd(s, dl)
        fields["in"][d] = p.in_size[d]
        fields["out"][d] = p.out_size[d]
        fields["kernel"][d] = p.kernel[d]
        fields["stride"][d] = s
        fields["dilation"][d] = dl
        fields["pad_low"][d] = p.pad_low[d]
        fields["padded"][d] = p.in_size[d] + p.pad_low[d] + p.pad_high[d]
        fields["gcd"][d] = g
        fields["q_step"][d] = s // g
        fields["o_step"][d] = dl // g
        fields["dil_inv"][d] = pow(dl // g, -1, s // g) if s // g > 1 else 0
    return np.array([fields[name] for name in GEO_FIELDS], dtype=np.int64).reshape(-1)


class Chunk:
    """Columns of images n0 .. n0 + images - 1 at positions p0 .. p0 + tile - 1."""

    __slots__ = ("n0", "images", "p0", "tile")

    def __init__(self, n0, images, p0, tile):
        self.n0, self.images, self.p0, self.tile = n0, images, p0, tile

    @property
    def ncols(self) -> int:
        return self.images * self.tile

    def __repr__(self):
        return f"Chunk(n0={self.n0}, images={self.images}, p0={self.p0}, tile={self.tile})"


def plan_chunks(batch: int, positions: int, per_column: int, budget_elements: int) -> list:
    """Chunks covering every (image, position) once, each of at most about
    budget_elements / per_column columns (at least one column)."""
    max_cols = max(1, budget_elements // max(1, per_column))
    if max_cols >= positions:
        per = min(batch, max_cols // positions)
        return [Chunk(n0, min(per, batch - n0), 0, positions) for n0 in range(0, batch, per)]
    ntiles = -(-positions // max_cols)
    tile = -(-positions // ntiles)
    return [
        Chunk(n, 1, p0, min(tile, positions - p0))
        for n in range(batch)
        for p0 in range(0, positions, tile)
    ]


class CuPyBackend:
    """pytconv's primitives on the arrays of one array module (CuPy)."""

    def __init__(self, cp, workspace_bytes=None, specialised_ranks=SPECIALISED_RANKS):
        self.xp = cp
        self.workspace_bytes = _workspace_from_env() if workspace_bytes is None else int(workspace_bytes)
        self.specialised_ranks = tuple(specialised_ranks)
        self._modules = {}
        self._functions = {}
        self._geometries = {}
        self._lock = threading.Lock()

    # ---- arrays, kernels, geometry -------------------------------------

    def _device_id(self) -> int:
        return self.xp.cuda.Device().id

    def prepare(self, a):
        """a as a C-contiguous array on the current device."""
        cp = self.xp
        current = self._device_id()
        device = getattr(getattr(a, "device", None), "id", current)
        if device != current:
            with cp.cuda.Device(device):
                src = cp.ascontiguousarray(a)
                # The copy below is ordered on this device's stream, not on
                # the one that produced `a`: wait for that work first.
                cp.cuda.get_current_stream().synchronize()
            out = cp.empty(src.shape, dtype=src.dtype)
            if src.size:
                out.data.copy_from_device_async(src.data, src.nbytes)
            return out
        return cp.ascontiguousarray(a)

    def _function(self, name: str, dtype):
        key = (self._device_id(), np.dtype(dtype).str, name)
        fn = self._functions.get(key)
        if fn is None:
            with self._lock:
                mkey = key[:2]
                module = self._modules.get(mkey)
                if module is None:
                    module = self.xp.RawModule(
                        code=KERNEL_SOURCE.read_text(),
                        options=compile_options(),
                        name_expressions=kernel_names(dtype),
                    )
                    self._modules[mkey] = module
                fn = module.get_function(name)
                self._functions[key] = fn
        return fn

    def _launch(self, kernel: str, dtype, total: int, args: tuple, ndim=None) -> None:
        """Runs `kernel` for dtype over `total` outputs on the current stream;
        ndim picks the rank instantiation of im2col/col2im."""
        if total <= 0:
            return
        t = _TYPE_NAMES[np.dtype(dtype)]
        if ndim is None:
            name = f"{kernel}<{t}>"
        else:
            name = f"{kernel}<{t}, {ndim if ndim in self.specialised_ranks else 0}>"
        blocks = min(-(-total // BLOCK), MAX_BLOCKS)
        self._function(name, dtype)((blocks,), (BLOCK,), args)

    def _geometry(self, p: _args.Problem):
        """The problem's geometry in device memory, uploaded once per device
        and stream (the upload is ordered before the kernels on that stream,
        so nothing waits for it)."""
        key = (self._device_id(), self.xp.cuda.get_current_stream().ptr, p)
        geo = self._geometries.get(key)
        if geo is None:
            geo = self.xp.asarray(geometry(p))
            with self._lock:
                if len(self._geometries) >= 256:
                    # Freed blocks return to CuPy's pool of their stream, so
                    # kernels still queued there are not disturbed.
                    self._geometries.clear()
                self._geometries[key] = geo
        return geo

    def _budget(self, dtype) -> int:
        return max(1, self.workspace_bytes // np.dtype(dtype).itemsize)

    def _matmul(self, a, b, out=None):
        """a @ b over the groups (leading axis); 2-d products when there is one
        group, so that transposed operands cost no copy."""
        cp = self.xp
        if a.shape[0] == 1:
            res = cp.matmul(a[0], b[0], out=None if out is None else out[0])
            return res[None] if out is None else out
        return cp.matmul(a, b, out=out)

    # ---- padding modes --------------------------------------------------

    def _pad(self, p: _args.Problem, x):
        cp = self.xp
        q = _padded_problem(p)
        padded = cp.empty(q.x_shape, dtype=x.dtype)
        in_vol = math.prod(p.in_size)
        padded_vol = math.prod(q.in_size)
        self._launch(
            "ptc_pad",
            x.dtype,
            padded.size,
            (x, padded, self._geometry(p), np.int32(p.ndim), np.int64(in_vol), np.int64(padded_vol),
             np.int64(padded.size), np.int32(_MODE_CODES[p.padding_mode])),
        )
        return padded

    def _fold(self, p: _args.Problem, src, dx) -> None:
        """dx = the adjoint of padding applied to src (of the padded shape),
        one dimension at a time, the last first."""
        cp = self.xp
        shape = list(src.shape)
        dims = [d for d in range(p.ndim) if p.pad_low[d] or p.pad_high[d]]
        for step, d in enumerate(reversed(dims)):
            axis = 2 + d
            new_shape = list(shape)
            new_shape[axis] = p.in_size[d]
            dst = dx if step == len(dims) - 1 else cp.empty(tuple(new_shape), dtype=src.dtype)
            inner = math.prod(shape[axis + 1:])
            total = math.prod(new_shape)
            self._launch(
                "ptc_fold_dim",
                src.dtype,
                total,
                (src, dst, np.int64(shape[axis]), np.int64(p.in_size[d]), np.int64(inner),
                 np.int64(p.pad_low[d]), np.int64(total), np.int32(_MODE_CODES[p.padding_mode])),
            )
            src, shape = dst, new_shape

    # ---- chunks of dy ---------------------------------------------------

    @staticmethod
    def _columns_of(arr, p: _args.Problem, ch: Chunk, channels: int):
        """arr (batch, channels, *out) as (groups, channels / groups, ncols)
        for the columns of a chunk (a view when the chunk is one whole image)."""
        g = p.groups
        positions = math.prod(p.out_size)
        if ch.images == 1 and ch.tile == positions:
            return arr[ch.n0].reshape(g, channels // g, positions)
        part = arr.reshape(p.batch, g, channels // g, positions)[
            ch.n0 : ch.n0 + ch.images, :, :, ch.p0 : ch.p0 + ch.tile
        ]
        # (images, g, c, tile) -> (g, c, images, tile)
        return part.transpose(1, 2, 0, 3).copy().reshape(g, channels // g, ch.ncols)

    # ---- the primitives -------------------------------------------------

    def forward(self, p: _args.Problem, x, w, bias):
        cp = self.xp
        y = cp.empty(p.y_shape, dtype=x.dtype)
        if y.size == 0:
            return y
        if _needs_explicit_padding(p):
            x = self._pad(p, x)
            p_run = _padded_problem(p)
        else:
            p_run = p
        self._forward_zero_padded(p_run, x, w, y)
        if bias is not None:
            spatial = math.prod(p.out_size)
            self._launch(
                "ptc_bias_add",
                y.dtype,
                y.size,
                (y, bias, np.int64(p.out_channels), np.int64(spatial), np.int64(y.size)),
            )
        return y

    def _forward_zero_padded(self, p: _args.Problem, x, w, y) -> None:
        cp = self.xp
        g = p.groups
        cin, cout = p.in_channels, p.out_channels
        kvol = math.prod(p.kernel)
        kdim = cin // g * kvol
        positions = math.prod(p.out_size)
        in_vol = math.prod(p.in_size)
        w3 = w.reshape(g, cout // g, kdim)
        y4 = y.reshape(p.batch, g, cout // g, positions)
        geo = self._geometry(p)
        for ch in plan_chunks(p.batch, positions, cin * kvol + cout, self._budget(x.dtype)):
            ncols = ch.ncols
            cols = cp.empty((g, kdim, ncols), dtype=x.dtype)
            self._launch(
                "ptc_im2col",
                x.dtype,
                cols.size,
                (x[ch.n0 : ch.n0 + ch.images], cols, geo, np.int32(p.ndim), np.int64(cin),
                 np.int64(g), np.int64(in_vol), np.int64(kvol), np.int64(ch.p0),
                 np.int64(ch.tile), np.int64(ncols), np.int64(cols.size), np.int32(0)),
                ndim=p.ndim,
            )
            if ch.images == 1 and ch.tile == positions:
                self._matmul(w3, cols, out=y4[ch.n0])
            else:
                yc = self._matmul(w3, cols)  # (g, cout_g, images * tile)
                y4[ch.n0 : ch.n0 + ch.images, :, :, ch.p0 : ch.p0 + ch.tile] = yc.reshape(
                    g, cout // g, ch.images, ch.tile
                ).transpose(2, 0, 1, 3)

    def backward_data(self, p: _args.Problem, dy, w):
        cp = self.xp
        dx = cp.empty(p.x_shape, dtype=dy.dtype)
        if dx.size == 0:
            return dx
        if _needs_explicit_padding(p):
            q = _padded_problem(p)
            dxp = cp.empty(q.x_shape, dtype=dy.dtype)
            self._backward_data_zero_padded(q, dy, w, dxp)
            self._fold(p, dxp, dx)
        else:
            self._backward_data_zero_padded(p, dy, w, dx)
        return dx

    def _backward_data_zero_padded(self, p: _args.Problem, dy, w, dx) -> None:
        cp = self.xp
        g = p.groups
        cin, cout = p.in_channels, p.out_channels
        kvol = math.prod(p.kernel)
        kdim = cin // g * kvol
        positions = math.prod(p.out_size)
        in_vol = math.prod(p.in_size)
        # W^T per group: (g, kdim, cout_g); a transposed view for one group
        # (cuBLAS reads it as is), a contiguous copy for a batched product.
        wt = w.reshape(g, cout // g, kdim).transpose(0, 2, 1)
        if g > 1:
            wt = cp.ascontiguousarray(wt)
        geo = self._geometry(p)
        chunks = plan_chunks(p.batch, positions, cin * kvol + cout, self._budget(dy.dtype))
        tiled = any(ch.tile < positions for ch in chunks)
        if tiled:
            dx.fill(0)
        inner = in_vol // p.in_size[0]
        for ch in chunks:
            dyc = self._columns_of(dy, p, ch, cout)
            cols = self._matmul(wt, dyc)  # (g, kdim, ncols)
            if ch.tile == positions:
                first, count = 0, in_vol
            else:
                # The inputs a tile reaches lie in a slab along the first
                # dimension; only that slab gathers (and accumulates).
                o_stride = positions // p.out_size[0]
                o_lo, o_hi = ch.p0 // o_stride, (ch.p0 + ch.tile - 1) // o_stride
                i_lo = max(0, o_lo * p.stride[0] - p.pad_low[0])
                i_hi = min(
                    p.in_size[0] - 1,
                    o_hi * p.stride[0] + (p.kernel[0] - 1) * p.dilation[0] - p.pad_low[0],
                )
                if i_hi < i_lo:
                    continue
                first, count = i_lo * inner, (i_hi - i_lo + 1) * inner
            total = ch.images * cin * count
            self._launch(
                "ptc_col2im",
                dy.dtype,
                total,
                (cols, dx[ch.n0 : ch.n0 + ch.images], geo, np.int32(p.ndim), np.int64(cin),
                 np.int64(in_vol), np.int64(kvol), np.int64(ch.p0), np.int64(ch.tile),
                 np.int64(ch.ncols), np.int64(first), np.int64(count), np.int64(total),
                 np.int32(1 if tiled else 0)),
                ndim=p.ndim,
            )

    def backward_filter(self, p: _args.Problem, x, dy):
        cp = self.xp
        dw = cp.empty(p.w_shape, dtype=x.dtype)
        if p.batch == 0:
            dw.fill(0)
            return dw
        if _needs_explicit_padding(p):
            x = self._pad(p, x)
            p = _padded_problem(p)
        g = p.groups
        cin, cout = p.in_channels, p.out_channels
        kvol = math.prod(p.kernel)
        kdim = cin // g * kvol
        positions = math.prod(p.out_size)
        in_vol = math.prod(p.in_size)
        dw3 = dw.reshape(g, cout // g, kdim)
        geo = self._geometry(p)
        chunks = plan_chunks(p.batch, positions, cin * kvol + cout, self._budget(x.dtype))
        for i, ch in enumerate(chunks):
            ncols = ch.ncols
            cols = cp.empty((g, ncols, kdim), dtype=x.dtype)  # transposed patches
            self._launch(
                "ptc_im2col",
                x.dtype,
                cols.size,
                (x[ch.n0 : ch.n0 + ch.images], cols, geo, np.int32(p.ndim), np.int64(cin),
                 np.int64(g), np.int64(in_vol), np.int64(kvol), np.int64(ch.p0),
                 np.int64(ch.tile), np.int64(ncols), np.int64(cols.size), np.int32(1)),
                ndim=p.ndim,
            )
            dyc = self._columns_of(dy, p, ch, cout)
            if i == 0:
                self._matmul(dyc, cols, out=dw3)
            else:
                dw3 += self._matmul(dyc, cols)
        return dw

    def bias_backward(self, dy):
        cp = self.xp
        batch, channels = dy.shape[0], dy.shape[1]
        spatial = math.prod(dy.shape[2:])
        nchunks = -(-(batch * spatial) // BIAS_CHUNK)
        partial = cp.empty((channels, nchunks), dtype=np.float64)
        db = cp.empty((channels,), dtype=dy.dtype)
        self._launch(
            "ptc_bias_partial",
            dy.dtype,
            partial.size,
            (dy, partial, np.int64(batch), np.int64(channels), np.int64(spatial),
             np.int64(BIAS_CHUNK), np.int64(nchunks), np.int64(partial.size)),
        )
        self._launch(
            "ptc_bias_finish",
            dy.dtype,
            channels,
            (partial, db, np.int64(channels), np.int64(nchunks)),
        )
        return db
