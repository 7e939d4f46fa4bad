"""Random convolution problems for the core's tests, and the output-size
arithmetic they are checked against.

The sizes here are written out again from the definitions (CONVENTIONS.md),
not taken from `pytconv._args`, so the tests also check the shape rules.

A `ConvCase` is one convolution ``conv(x, w)`` with every argument drawn at
random; `TransposedCase` is the transposed convolution built on it (its input
has the convolution's output shape, its output the convolution's input
shape or a neighbouring size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DTYPES = (np.float32, np.float64)


# ---- output-size arithmetic, from the definitions -------------------------


def span(k: int, d: int) -> int:
    """Extent of a kernel of k taps with dilation d."""
    return d * (k - 1) + 1


def conv_size(n_in: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    return (n_in + lo + hi - span(k, d)) // s + 1


def same_pads(n_in: int, k: int, s: int, d: int) -> tuple:
    """TensorFlow's "SAME" rule: output ceil(n_in / s), extra cell at the end."""
    out = -(-n_in // s)
    total = max((out - 1) * s + span(k, d) - n_in, 0)
    return total // 2, total - total // 2


def transposed_size(n_in: int, k: int, s: int, d: int, lo: int, hi: int, op: int) -> int:
    return (n_in - 1) * s - lo - hi + span(k, d) + op


def mode_allows(mode: str, size: int, lo: int, hi: int) -> bool:
    """PyTorch's limits on the padding of the non-zero modes."""
    if mode == "reflect":
        return lo < size and hi < size
    if mode == "circular":
        return lo <= size and hi <= size
    return True


def rel_tol(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


def assert_close(got, ref, scale, dtype, what=""):
    """got (dtype, new C-contiguous) equals the float64 ref to rel_tol(dtype)
    times scale, the size of the terms summed (the reference computed on
    absolute values), which bounds the rounding error of any summation order."""
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert got.flags.c_contiguous, f"{what}: result is not C-contiguous"
    if got.size == 0:
        return
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    bound = rel_tol(dtype) * max(float(np.max(np.abs(scale))), 1e-300)
    assert err <= bound, f"{what}: max error {err:.3e} exceeds {bound:.3e} (scale {np.max(np.abs(scale)):.3e})"


# ---- random problems --------------------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    batch: int
    groups: int
    cin: int
    cout: int
    in_size: tuple
    kernel: tuple
    stride: object  # as passed: int or tuple
    dilation: object
    padding: object  # as passed: int, tuple of ints or pairs, "same", "valid"
    pads: tuple  # resolved ((lo, hi), ...)
    padding_mode: str
    dtype: type
    bias: bool
    seed: int
    strides: tuple = field(repr=False, default=())
    dilations: tuple = field(repr=False, default=())

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    @property
    def x_shape(self) -> tuple:
        return (self.batch, self.cin) + self.in_size

    @property
    def w_shape(self) -> tuple:
        return (self.cout, self.cin // self.groups) + self.kernel

    @property
    def out_size(self) -> tuple:
        return tuple(
            conv_size(i, k, s, d, lo, hi)
            for i, k, s, d, (lo, hi) in zip(self.in_size, self.kernel, self.strides, self.dilations, self.pads)
        )

    @property
    def y_shape(self) -> tuple:
        return (self.batch, self.cout) + self.out_size

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    padding_mode=self.padding_mode)

    def rng(self, salt: int = 0):
        return np.random.default_rng([self.seed, salt])

    def arrays(self):
        """x, w, bias (or None), dy: random normal values of the case's dtype."""
        rng = self.rng()
        x = rng.standard_normal(self.x_shape).astype(self.dtype)
        w = rng.standard_normal(self.w_shape).astype(self.dtype)
        b = rng.standard_normal(self.cout).astype(self.dtype) if self.bias else None
        dy = rng.standard_normal(self.y_shape).astype(self.dtype)
        return x, w, b, dy


@dataclass(frozen=True)
class TransposedCase:
    """conv_transpose(t, w, ...) for the convolution `conv`: t has the
    convolution's output shape and w its weight's shape."""

    conv: ConvCase
    output: str  # "default", "output_padding" or "output_shape"
    output_padding: tuple
    out_size: tuple  # the transposed convolution's spatial output size
    pads: tuple  # the (lo, hi) the transposed output is cropped by

    @property
    def t_shape(self) -> tuple:
        return self.conv.y_shape

    @property
    def out_shape(self) -> tuple:
        return (self.conv.batch, self.conv.cin) + self.out_size

    def kwargs(self) -> dict:
        c = self.conv
        kw = dict(stride=c.stride, padding=c.padding, groups=c.groups, dilation=c.dilation,
                  padding_mode=c.padding_mode)
        if self.output == "output_padding":
            kw["output_padding"] = self.output_padding
        elif self.output == "output_shape":
            kw["output_shape"] = self.out_size
        return kw

    def grad_kwargs(self) -> dict:
        """The arguments of the transposed convolution's gradient functions."""
        c = self.conv
        return dict(stride=c.stride, padding=c.padding, groups=c.groups, dilation=c.dilation,
                    padding_mode=c.padding_mode)

    def arrays(self):
        """t, w, bias (or None), dout."""
        c = self.conv
        rng = c.rng(1)
        t = rng.standard_normal(self.t_shape).astype(c.dtype)
        w = rng.standard_normal(c.w_shape).astype(c.dtype)
        b = rng.standard_normal(c.cin).astype(c.dtype) if c.bias else None
        dout = rng.standard_normal(self.out_shape).astype(c.dtype)
        return t, w, b, dout


def _per_dim_arg(draw, values):
    """An int when all values agree (sometimes), else the tuple."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return tuple(values)


@st.composite
def conv_cases(draw, ndims=(1, 2, 3), modes=PADDING_MODES, dtypes=DTYPES, paddings=None,
               groups=None, batch=(1, 2), max_stride=3, max_dilation=2, wide=False):
    """A valid random convolution; `wide` draws up to 20 channels per group and
    larger sizes (for 1-d and 2-d), past the core's register and cache tiles."""
    n = draw(st.sampled_from(ndims))
    small = n >= 4  # keep 4-d and 5-d problems to a few thousand elements
    mode = draw(st.sampled_from(modes))
    dtype = draw(st.sampled_from(dtypes))
    kmax = 2 if small else 3
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(n))
    strides = tuple(draw(st.integers(1, 2 if small else max_stride)) for _ in range(n))
    dilations = tuple(draw(st.integers(1, max_dilation)) for _ in range(n))
    form = draw(st.sampled_from(paddings or ("int", "per_dim", "pairs", "same", "valid")))
    pmax = 1 if small else 2
    if form == "int":
        p = draw(st.integers(0, pmax))
        explicit = ((p, p),) * n
        padding = p
    elif form == "per_dim":
        ps = tuple(draw(st.integers(0, pmax)) for _ in range(n))
        explicit = tuple((p, p) for p in ps)
        padding = ps
    elif form == "pairs":
        explicit = tuple((draw(st.integers(0, pmax)), draw(st.integers(0, pmax))) for _ in range(n))
        padding = explicit
    else:
        explicit = None
        padding = form
    in_size, pads = [], []
    extra = 2 if small else (14 if wide else 4)
    for d in range(n):
        k, s, dl = kernel[d], strides[d], dilations[d]
        if explicit is not None:
            lo, hi = explicit[d]
            least = max(1, span(k, dl) - lo - hi)
            if mode == "reflect":
                least = max(least, lo + 1, hi + 1)
            elif mode == "circular":
                least = max(least, lo, hi)
        elif form == "valid":
            least = span(k, dl)
        else:  # "same": its padding is < span, so size >= span suits every mode
            least = 1 if mode == "zeros" else span(k, dl)
        size = draw(st.integers(least, least + extra))
        if explicit is not None:
            pad = explicit[d]
        elif form == "valid":
            pad = (0, 0)
        else:
            pad = same_pads(size, k, s, dl)
        in_size.append(size)
        pads.append(pad)
    group_kind = draw(st.sampled_from(groups or ("one", "several", "depthwise")))
    cmax = 20 if wide else (2 if small else 3)
    if group_kind == "one":
        g, cin_g, cout_g = 1, draw(st.integers(1, cmax)), draw(st.integers(1, cmax))
    elif group_kind == "several":
        g, cin_g, cout_g = draw(st.integers(2, 3)), draw(st.integers(1, cmax - 1)), draw(st.integers(1, cmax - 1))
    else:  # depthwise, with a channel multiplier
        g, cin_g, cout_g = draw(st.integers(2, 4)), 1, draw(st.integers(1, 2))
    return ConvCase(
        batch=draw(st.sampled_from(batch)) if isinstance(batch, tuple) else batch,
        groups=g,
        cin=g * cin_g,
        cout=g * cout_g,
        in_size=tuple(in_size),
        kernel=kernel,
        stride=_per_dim_arg(draw, strides),
        dilation=_per_dim_arg(draw, dilations),
        padding=padding,
        pads=tuple(pads),
        padding_mode=mode,
        dtype=dtype,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
        strides=strides,
        dilations=dilations,
    )


def transposed_case(conv: ConvCase, output: str, op_draw=None) -> TransposedCase:
    """The transposed convolution over `conv`'s output. `output` picks how its
    size is given: "output_shape" (conv's input size), "output_padding" (the
    draws op_draw(limit) in each dimension) or "default". A choice the padding
    mode does not allow falls back to "output_shape", which always is valid."""
    c = conv
    if output != "output_shape":
        sizes, pads, ops = [], [], []
        for d in range(c.ndim):
            i, k, s, dl = c.out_size[d], c.kernel[d], c.strides[d], c.dilations[d]
            op = op_draw(max(s, dl)) if output == "output_padding" else 0
            if c.padding == "same":
                size = i * s  # TensorFlow's rule without output_shape
                lo, hi = same_pads(size, k, s, dl)
                op = 0
            else:
                lo, hi = c.pads[d]
                size = transposed_size(i, k, s, dl, lo, hi, op)
            if size < 1 or not mode_allows(c.padding_mode, size, lo, hi):
                return transposed_case(conv, "output_shape")
            sizes.append(size)
            pads.append((lo, hi))
            ops.append(op)
        if c.padding == "same" and output == "output_padding":
            output = "default"  # "same" fixes the size; output_padding plays no part
        return TransposedCase(c, output, tuple(ops), tuple(sizes), tuple(pads))
    ops = input_output_padding(c)
    if c.padding != "same" and any(i - op < 1 for i, op in zip(c.in_size, ops)):
        # The uncropped size is < 1 here, which output_shape does not accept
        # (test_core_errors.py::test_output_shape_reachable_by_output_padding).
        return TransposedCase(c, "output_padding", ops, c.in_size, c.pads)
    return TransposedCase(c, "output_shape", ops, c.in_size, c.pads)


def crops_below_one(t: "TransposedCase") -> bool:
    """Whether the padding crops more than the uncropped transposed output
    (size < 1 before output_padding) in some dimension: output_shape, and the
    transposed convolution's gradients, which use it, reject these cases
    (test_core_errors.py::test_output_shape_reachable_by_output_padding)."""
    c = t.conv
    return any(
        transposed_size(o, k, s, d, lo, hi, 0) < 1
        for o, k, s, d, (lo, hi) in zip(c.out_size, c.kernel, c.strides, c.dilations, t.pads)
    )


def input_output_padding(c: ConvCase) -> tuple:
    """The output_padding that makes conv_transpose's output the size of the
    convolution's input (0 for "same", which is sized by output_shape)."""
    if c.padding == "same":
        return (0,) * c.ndim
    return tuple(
        i - transposed_size(o, k, s, d, lo, hi, 0)
        for i, o, k, s, d, (lo, hi) in zip(c.in_size, c.out_size, c.kernel, c.strides, c.dilations, c.pads)
    )


def adjoint_kwargs(c: ConvCase, spelling: str) -> dict:
    """conv_transpose's size argument giving the convolution's input size:
    output_padding (not with "same") or output_shape."""
    t = transposed_case(c, "output_shape")
    if spelling == "output_padding" and c.padding != "same":
        return dict(output_padding=input_output_padding(c))
    return {k: v for k, v in t.kwargs().items() if k in ("output_padding", "output_shape")}


@st.composite
def transposed_cases(draw, **conv_kwargs):
    conv = draw(conv_cases(**conv_kwargs))
    output = draw(st.sampled_from(("default", "output_padding", "output_shape")))
    return transposed_case(conv, output, lambda limit: draw(st.integers(0, limit - 1)))
