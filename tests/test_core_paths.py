"""Each of the core's algorithm choices, on problems chosen to take it, against
the float64 reference, with the bits compared across thread counts.

The random properties of test_core_reference.py reach these paths too, but by
chance; here every path is named, with its edges: the implicit GEMM of
stride-1 convolutions in 3 or more dimensions (runs narrower and wider than a
register tile, output channels that leave a partial row panel, groups, bias,
dilation), the explicitly padded input for volumes whose rows mostly touch the
padding, the direct depthwise kernels (rows longer and shorter than their
register blocks, channel multipliers, strides through phase-split rows), the gradients of 1-d
convolutions with long kernels (GEMMs over the windows), the transposed convolution
whose windows do not overlap (tiles run side by side; where the windows tile
the output exactly, nothing is cleared first), and the 1-d transposed
convolution with a long kernel (tiles of windows added straight into the
output), and the unfolded weight gradient's chunks (several small images at a
time, dY read in place or copied, masked ends, pointwise patches read in
place).
"""

from __future__ import annotations

import numpy as np
import pytest

import pytconv
from pytconv import reference
from pytconv import _core
from pytconv._args import conv_problem, transposed_problem

from core_cases import assert_close

# name: (x shape, w shape, conv keyword arguments)
CONV_PATHS = {
    # implicit GEMM (stride 1, 3 or more dims)
    "implicit 3d": ((2, 5, 9, 7, 11), (10, 5, 3, 3, 3), dict(padding=1)),
    "implicit 3d groups bias": ((1, 6, 6, 5, 4), (9, 2, 2, 3, 1), dict(padding=(1, 0, 2), groups=3)),
    "implicit 3d dilated": ((1, 3, 10, 9, 12), (4, 3, 3, 2, 3), dict(padding=2, dilation=2)),
    "implicit 3d wide rows": ((1, 4, 3, 4, 70), (17, 4, 2, 2, 5), dict(padding=(0, 1, 2))),
    "implicit 4d": ((2, 4, 6, 5, 6, 7), (6, 4, 3, 3, 3, 3), dict(padding=1)),
    "implicit 5d": ((1, 3, 5, 4, 5, 4, 6), (8, 3, 3, 3, 3, 3, 3), dict(padding=1)),
    "implicit 3d no padding": ((1, 2, 7, 8, 9), (3, 2, 3, 2, 4), dict()),
    # explicitly padded first (most rows touch the padding), strided
    "padded first 4d stride 2": ((1, 3, 6, 7, 6, 5), (5, 3, 3, 3, 3, 3), dict(padding=1, stride=2)),
    "padded first 3d dilated stride": ((2, 2, 5, 6, 5), (3, 2, 3, 3, 3), dict(padding=2, stride=(1, 2, 1), dilation=(2, 1, 2))),
    "padded first 2d": ((1, 4, 3, 40), (6, 4, 3, 3), dict(padding=(2, 1), stride=(1, 3))),
    # kernel 2, stride 2 along the last dimension: pairs of offsets unfolded from one run
    "k2 s2 3d": ((2, 3, 6, 8, 10), (4, 3, 2, 2, 2), dict(stride=2)),
    "k2 s2 odd sizes padded": ((1, 2, 5, 7, 9), (3, 2, 2, 2, 2), dict(stride=2, padding=1)),
    # windows that tile the input (kernel == stride, no padding): unfolded in
    # address order, with offsets of the last dimension 1, 2, 3 and 4 wide,
    # input left over past the last window, and k-blocks that split channels
    "tiled k3 s3 leftover": ((1, 4, 10, 11), (5, 4, 3, 3), dict(stride=3)),
    "tiled k(1,2)": ((2, 3, 5, 8), (4, 3, 1, 2), dict(stride=(1, 2))),
    "tiled 3d blocks split channels": ((1, 45, 4, 4, 6), (6, 45, 2, 2, 2), dict(stride=2)),
    "tiled 1d k4 leftover": ((2, 3, 30), (2, 3, 4), dict(stride=4)),
    "tiled k(2,1)": ((1, 5, 6, 7), (3, 5, 2, 1), dict(stride=(2, 1))),
    "tiled k(3,2) blocks at odd offsets": ((1, 59, 6, 8), (4, 59, 3, 2), dict(stride=(3, 2))),
    # pointwise (kernel 1, stride 1, no padding): the patches are x's rows,
    # read in place, whole strips of the register tile from x and a last,
    # narrower strip copied; groups, and channels in several k-blocks
    "pointwise in place": ((2, 5, 7, 9), (6, 5, 1, 1), dict()),
    "pointwise in place groups k-blocks": ((1, 700, 3, 50), (20, 350, 1, 1), dict(groups=2)),
    "pointwise 1d whole strips": ((2, 9, 96), (4, 9, 1), dict()),
    # pointwise weight gradients with 100 flops or more per packed element:
    # GEMM tiles over chunks of positions (several per image, a last one
    # shorter), output channels past a whole panel, input channels past a
    # whole strip, groups
    "pointwise weight gradient tiles": ((2, 130, 30, 25), (201, 130, 1, 1), dict()),
    "pointwise weight gradient tiles groups": ((1, 256, 17, 23), (258, 128, 1, 1), dict(groups=2)),
    # direct depthwise (one input channel per group): rows longer than a
    # register block, between one vector and a block, narrower than a vector
    "depthwise 2d": ((2, 6, 9, 70), (6, 1, 3, 3), dict(padding=1, groups=6)),
    "depthwise multiplier 3 dilated": ((1, 4, 11, 29), (12, 1, 3, 2), dict(padding=(2, 1), dilation=(2, 3), groups=4)),
    "depthwise narrow rows": ((2, 3, 4, 3), (3, 1, 3, 3), dict(padding=2, groups=3)),
    "depthwise stride 2": ((2, 5, 12, 15), (5, 1, 3, 3), dict(padding=1, stride=2, groups=5)),
    "depthwise stride 3 dilated": ((1, 4, 13, 17), (8, 1, 3, 3), dict(padding=((1, 2), (2, 0)), stride=(2, 3), dilation=(1, 2), groups=4)),
    "depthwise stride 2 unpadded 3d": ((2, 3, 5, 6, 9), (3, 1, 2, 3, 3), dict(stride=(1, 2, 2), groups=3)),
    "depthwise 1d unpadded": ((1, 3, 300), (3, 1, 5), dict(groups=3)),
    "depthwise 3d asymmetric": ((1, 4, 5, 6, 7), (8, 1, 3, 3, 3), dict(padding=(1, 0, 2), groups=4)),
    "depthwise 4d": ((1, 2, 4, 5, 4, 6), (2, 1, 2, 3, 2, 3), dict(padding=1, groups=2)),
    "depthwise 7x7 reflect": ((1, 3, 10, 21), (3, 1, 7, 7), dict(padding=3, groups=3, padding_mode="reflect")),
    # 1-d long kernels: input and weight gradients as GEMMs over the windows
    "long kernel 1d": ((2, 3, 400), (5, 3, 60), dict(stride=7, padding=11)),
    "long kernel 1d groups": ((1, 4, 300), (6, 2, 50), dict(stride=13, groups=2)),
    "long kernel 1d many channels": ((3, 2, 200), (70, 2, 100), dict(stride=30, padding=((0, 40),))),
    "long kernel windows in the padding": ((2, 3, 5), (2, 3, 50), dict(stride=100, padding=((70, 0),))),
    # 1-d kernels of 2 or 4 strides with 128 rows of the polyphase view and
    # output channels or more: minimal filtering over the rows (tiles of J
    # outputs cut by the end, padding, groups, images in one block of tiles)
    "polyphase 4 strides padded": ((3, 2, 2000), (130, 2, 256), dict(stride=64, padding=37)),
    "polyphase 2 strides groups": ((2, 4, 1300), (256, 2, 128), dict(stride=64, padding=((5, 40),), groups=2)),
    "polyphase stride 1 kernel 4": ((3, 128, 50), (128, 128, 4), dict(padding=2)),
    "polyphase one channel": ((2, 1, 5000), (140, 1, 512), dict(stride=128, padding=300)),
    "polyphase padding past the kernel": ((3, 1, 3000), (130, 1, 512), dict(stride=128, padding=((600, 10),))),
    # minimal filtering (3x3 or 4x4, stride 2, 64 channels or more on both
    # sides, 256 tiles of 2x2 outputs or more; the weight gradient from 96
    # channels): even and odd output sizes (tiles cut by the edge), windows
    # reaching into large and asymmetric paddings, and wholly outside the
    # input, groups, a GEMM depth of several k-blocks, 64 channels (forward
    # and input gradient only)
    "minimal filtering": ((3, 96, 46, 42), (96, 96, 3, 3), dict(stride=2, padding=1)),
    "minimal filtering odd outputs unpadded": ((2, 96, 51, 47), (100, 96, 3, 3), dict(stride=2)),
    "minimal filtering large paddings": ((3, 97, 37, 38), (96, 97, 3, 3), dict(stride=2, padding=((6, 1), (0, 7)))),
    "minimal filtering groups": ((2, 192, 44, 46), (192, 96, 3, 3), dict(stride=2, padding=(1, 2), groups=2)),
    "minimal filtering deep": ((1, 400, 62, 66), (64, 400, 3, 3), dict(stride=2, padding=1)),
    "minimal filtering 64 channels reflect": ((2, 64, 46, 44), (64, 64, 3, 3), dict(stride=2, padding=1, padding_mode="reflect")),
    "minimal filtering 4x4": ((3, 96, 46, 43), (100, 96, 4, 4), dict(stride=2, padding=1)),
    "minimal filtering 4x4 odd outputs large paddings": ((2, 97, 45, 38), (96, 97, 4, 4), dict(stride=2, padding=((5, 0), (2, 6)))),
    "minimal filtering 4x4 groups": ((2, 192, 44, 46), (192, 96, 4, 4), dict(stride=2, padding=(1, 2), groups=2)),
    # minimal filtering at stride 1 (3x3, 32 channels or more on both sides,
    # 256 tiles or more; the forward, and the input gradient as a flipped
    # forward): odd output sizes, windows wholly in the padding, groups,
    # a padding mode, rows of more tiles than a run of the vectorised
    # transform takes
    "minimal filtering stride 1": ((2, 64, 34, 31), (64, 64, 3, 3), dict(padding=1)),
    "minimal filtering stride 1 odd outputs unpadded": ((1, 40, 37, 36), (48, 40, 3, 3), dict()),
    "minimal filtering stride 1 large paddings": ((2, 33, 30, 29), (36, 33, 3, 3), dict(padding=((4, 0), (1, 2)))),
    "minimal filtering stride 1 groups": ((2, 128, 24, 26), (128, 64, 3, 3), dict(padding=1, groups=2)),
    "minimal filtering stride 1 reflect": ((2, 32, 32, 34), (40, 32, 3, 3), dict(padding=1, padding_mode="reflect")),
    "minimal filtering stride 1 long rows": ((1, 32, 6, 301), (33, 32, 3, 3), dict(padding=1)),
    # N-d forwards (and stride-1 input gradients): minimal filtering over the
    # last two dimensions, the outer ones summed directly (their offsets rows
    # of the GEMMs: strided, dilated, reaching wholly into the padding)
    "minimal filtering 3d": ((2, 12, 6, 18, 17), (32, 12, 3, 3, 3), dict(padding=1)),
    "minimal filtering 3d outer stride dilation padding": ((1, 16, 9, 20, 21), (33, 16, 2, 3, 3), dict(padding=(3, 1, 0), stride=(2, 1, 1), dilation=(3, 1, 1))),
    "minimal filtering 3d stride 2": ((2, 64, 6, 22, 20), (64, 64, 3, 3, 3), dict(stride=(1, 2, 2), padding=1)),
    "minimal filtering 3d groups": ((2, 64, 5, 16, 16), (64, 32, 3, 3, 3), dict(padding=1, groups=2)),
    "minimal filtering 4d": ((1, 8, 4, 5, 14, 13), (33, 8, 2, 3, 3, 3), dict(padding=(1, 0, 1, 1))),
}

# name: (transposed input shape, w shape, conv_transpose keyword arguments)
TRANSPOSED_PATHS = {
    "disjoint covered 2x2 s2 3d": ((2, 6, 3, 4, 5), (6, 5, 2, 2, 2), dict(stride=2)),
    "disjoint covered 4d": ((1, 4, 3, 3, 2, 3), (4, 3, 2, 2, 2, 2), dict(stride=2)),
    "disjoint covered 5d groups": ((1, 4, 2, 3, 2, 2, 3), (4, 3, 2, 2, 2, 2, 2), dict(stride=2, groups=2)),
    "disjoint with gaps k2 s3": ((1, 3, 4, 5, 3), (3, 4, 2, 2, 2), dict(stride=3)),
    "disjoint k1 s2": ((2, 5, 4, 6), (5, 3, 1, 1), dict(stride=2)),
    "disjoint covered k3 s3": ((2, 3, 4, 5), (3, 2, 3, 3), dict(stride=3)),
    "disjoint covered 1d pairs": ((2, 4, 37), (4, 3, 2), dict(stride=2)),
    "disjoint dilated": ((1, 2, 5, 4), (2, 3, 2, 2), dict(stride=(4, 3), dilation=(3, 2))),
    # dilated taps that span the stride yet leave gaps (offsets 0 and 2 of
    # every 3), over enough positions for several tiles, which are not cleared
    # as one: the gaps must still be zeroed
    "disjoint dilated gaps many tiles": ((2, 3, 61, 47), (3, 16, 2, 2), dict(stride=3, dilation=2)),
    "disjoint padded": ((1, 3, 4, 5, 4), (3, 2, 2, 2, 2), dict(stride=2, padding=1)),
    "disjoint output padding": ((1, 3, 4, 3, 5), (3, 2, 2, 2, 2), dict(stride=2, output_padding=1)),
    "overlapping 4d": ((1, 3, 3, 4, 3, 3), (3, 2, 3, 3, 3, 3), dict(stride=2, padding=1)),
    # overlapping windows at stride 2: the last dimension's offsets added in
    # pairs (0 and 1, 2 and 3; a kernel of 3 leaves 2 alone), rows of 3, 9, 13
    # and 21 pairs (the vectors' masked tails), with padding cutting off ends
    "overlapping k4 s2 pairs": ((2, 3, 5, 21), (3, 4, 4, 4), dict(stride=2, padding=1)),
    "overlapping k3 s2 pairs": ((1, 4, 6, 13), (4, 3, 3, 3), dict(stride=2, padding=1)),
    "overlapping k(2,4) s2 pairs": ((1, 2, 4, 9), (2, 3, 2, 4), dict(stride=2, padding=(0, 2))),
    "overlapping 1d k6 s2 pairs": ((2, 3, 3), (3, 2, 6), dict(stride=2)),
    # 1-d long kernels: C^T added straight into dx, rows of a tile overlapping
    # (stride below the tile width) or not, with padding cut off, and groups
    "long kernel 1d": ((2, 3, 20), (3, 2, 100), dict(stride=7)),
    "long kernel 1d wide stride": ((2, 5, 13), (5, 1, 130), dict(stride=64)),
    "long kernel padded groups": ((1, 4, 9), (4, 3, 70), dict(stride=16, padding=20, output_padding=5, groups=2)),
    "long kernel one channel": ((1, 1, 30), (1, 1, 64), dict(stride=8, padding=3)),
    # positions in two blocks, the last ending inside a panel; channels enough
    # for the packing to prefetch rows ahead
    "long kernel position blocks": ((1, 40, 300), (40, 2, 64), dict(stride=8)),
    # the input gradient of 3x3 and 4x4 stride-2 convolutions (the DCGAN
    # generator's layers), by minimal filtering
    "minimal filtering 3x3 s2": ((4, 96, 22, 17), (96, 80, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "minimal filtering 4x4 s2": ((4, 96, 22, 17), (96, 80, 4, 4), dict(stride=2, padding=1)),
    # the input gradient of 1-d convolutions whose kernel spans 2 or 4
    # strides, by minimal filtering (dx rows cut by padding and output padding)
    "polyphase 4 strides": ((3, 130, 21), (130, 1, 512), dict(stride=128, padding=50, output_padding=7)),
    "polyphase 2 strides": ((3, 128, 17), (128, 2, 128), dict(stride=64)),
}


@pytest.fixture
def restore_threads():
    before = pytconv.get_num_threads()
    yield
    pytconv.set_num_threads(before)


def _on_threads(call):
    """call() with 1, 2 and 3 threads; all must give the same bits."""
    results = []
    for threads in (1, 2, 3):
        pytconv.set_num_threads(threads)
        results.append(call())
    for r in results[1:]:
        assert r.tobytes() == results[0].tobytes(), "the thread count changed the bits"
    return results[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CONV_PATHS))
def test_conv_paths(name, dtype, restore_threads):
    x_shape, w_shape, kw = CONV_PATHS[name]
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64)

    y = _on_threads(lambda: pytconv.conv(x, w, bias, **kw))
    ref = reference.conv(x64, w64, b64, **kw)
    assert_close(y, ref, reference.conv(abs(x64), abs(w64), abs(b64), **kw), dtype, name)

    g = rng.standard_normal(y.shape).astype(dtype)
    g64 = g.astype(np.float64)
    dx = _on_threads(lambda: pytconv.conv_input_grad(x.shape, w, g, **kw))
    dw = _on_threads(lambda: pytconv.conv_weight_grad(x, w.shape, g, **kw))
    problem = conv_problem("test", x.shape, w.shape, **kw)
    ref_dx = reference.backward_data(problem, g64, w64)
    ref_dw = reference.backward_filter(problem, x64, g64)
    assert_close(dx, ref_dx, reference.backward_data(problem, abs(g64), abs(w64)), dtype, name + " dx")
    assert_close(dw, ref_dw, reference.backward_filter(problem, abs(x64), abs(g64)), dtype, name + " dw")

    # Into memory full of NaN: every element of each result is written.
    for call, args, expected in (
        (_core.forward, (x, w, bias), y),
        (_core.backward_data, (g, w), dx),
        (_core.backward_filter, (x, g), dw),
    ):
        into = np.full(expected.shape, np.nan, dtype=dtype)
        call(problem, *args, into)
        assert into.tobytes() == expected.tobytes(), call.__name__


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(TRANSPOSED_PATHS))
def test_transposed_paths(name, dtype, restore_threads):
    t_shape, w_shape, kw = TRANSPOSED_PATHS[name]
    rng = np.random.default_rng(len(name) + 100)
    t = rng.standard_normal(t_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    t64, w64 = t.astype(np.float64), w.astype(np.float64)
    y = _on_threads(lambda: pytconv.conv_transpose(t, w, **kw))
    ref = reference.conv_transpose(t64, w64, **kw)
    assert_close(y, ref, reference.conv_transpose(abs(t64), abs(w64), **kw), dtype, name)
    # Into memory full of NaN: every element is written, gaps included.
    problem = transposed_problem("test", t.shape, w.shape, **kw)
    into = np.full(y.shape, np.nan, dtype=dtype)
    _core.backward_data(problem, t, w, into)
    assert into.tobytes() == y.tobytes()


def _assert_same_non_finite(out, ref, tol):
    """NaN and Inf exactly where the reference has them, the rest close."""
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    assert np.array_equal(np.isinf(out), np.isinf(ref))
    finite = np.isfinite(ref)
    assert np.allclose(out[finite], ref[finite], rtol=tol, atol=tol)


def test_implicit_gemm_propagates_nan_exactly_where_windows_reach():
    """The implicit GEMM computes and drops the padded columns between rows,
    whose inputs are other rows' data: a NaN must reach exactly the outputs
    whose windows hold it, no more."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 6, 5, 7))
    w = rng.standard_normal((3, 2, 3, 3, 3))
    x[0, 1, 2, 4, 6] = np.nan  # at a row's end: its neighbour in memory starts the next row
    x[0, 0, 5, 0, 0] = np.inf
    y = pytconv.conv(x, w, padding=1)
    ref = reference.conv(x, w, padding=1)
    _assert_same_non_finite(y, ref, 1e-12)


def test_shifted_weight_gradient_keeps_inf_and_nan_where_they_belong():
    """The shifted weight gradient multiplies x at the padded columns between
    rows by zeros of dY: with an Inf there it would make NaNs, so such an x
    takes the unfolding path; the result must match the reference's
    non-finite entries exactly."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 2, 4, 5, 4, 6))
    g = rng.standard_normal((1, 3, 4, 5, 4, 6))
    x[0, 0, 1, 2, 3, 5] = np.inf  # at a row's end
    x[0, 1, 3, 0, 0, 0] = np.nan
    dw = pytconv.conv_weight_grad(x, (3, 2, 3, 3, 3, 3), g, padding=1)
    problem = conv_problem("test", x.shape, (3, 2, 3, 3, 3, 3), padding=1)
    ref = reference.backward_filter(problem, x, g)
    _assert_same_non_finite(dw, ref, 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("where", [0, 16, 629])
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_weight_gradient_finds_one_non_finite_x_anywhere(dtype, where, value):
    """The scan for non-finite x (eight sums at a time, then the last few
    one by one) must see an Inf or NaN wherever it is: x's 630 elements
    leave a tail of 6 past the blocks of 8. Flat indices 0 and 16 sit in the
    first lane of a block, 629 in the tail; a missed one sends x down the
    shifted path, which puts NaNs where the reference has none."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 3, 5, 3, 7)).astype(dtype)
    g = rng.standard_normal((1, 3, 3, 5, 3, 7)).astype(dtype)
    x.flat[where] = value
    dw = pytconv.conv_weight_grad(x, (3, 2, 3, 3, 3, 3), g, padding=1)
    problem = conv_problem("test", x.shape, (3, 2, 3, 3, 3, 3), padding=1)
    ref = reference.backward_filter(problem, x.astype(np.float64), g.astype(np.float64))
    _assert_same_non_finite(dw, ref, 1e-12 if dtype == np.float64 else 1e-5)


def _assert_passes_match_non_finite(x, w, g, kw, operand):
    """The passes that read the non-finite operand (x, w or dy) against the
    reference: the same Inf and NaN entries, the finite ones within tolerance."""
    problem = conv_problem("test", x.shape, w.shape, **kw)
    x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    tol = 1e-12 if x.dtype == np.float64 else 1e-4
    results = []
    with np.errstate(invalid="ignore"):  # the reference's own NaN arithmetic
        if operand != "dy":
            results.append((pytconv.conv(x, w, **kw), reference.forward(problem, x64, w64)))
        if operand != "x":
            results.append((pytconv.conv_input_grad(x.shape, w, g, **kw),
                            reference.backward_data(problem, g64, w64)))
        if operand != "w":
            results.append((pytconv.conv_weight_grad(x, w.shape, g, **kw),
                            reference.backward_filter(problem, x64, g64)))
    for out, ref in results:
        assert not np.isfinite(ref).all()
        _assert_same_non_finite(out, ref, tol * np.abs(ref[np.isfinite(ref)]).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("operand", ["x", "w", "dy"])
@pytest.mark.parametrize("value", [np.inf, np.nan])
@pytest.mark.parametrize("k, stride", [(3, 2), (4, 2), (3, 1)])
def test_minimal_filtering_leaves_inf_and_nan_to_the_direct_sums(dtype, operand, value, k, stride):
    """Minimal filtering takes differences of inputs (Inf - Inf is NaN where
    the direct sum has an Inf): a call with a non-finite result is run again
    by the direct method, whose non-finite entries are the reference's. One
    Inf or NaN at the edge of the input, in a weight, or in the output
    gradient, for the forward and both gradients."""
    rng = np.random.default_rng(13)
    kw = dict(stride=stride, padding=1)
    x = rng.standard_normal((3, 96, 46, 42)).astype(dtype)
    w = rng.standard_normal((96, 96, k, k)).astype(dtype)
    g = rng.standard_normal(pytconv.conv_output_shape(x.shape, w.shape, **kw)).astype(dtype)
    {"x": x, "w": w, "dy": g}[operand][(1, 5, 0, 1) if operand != "w" else (7, 3, 0, 2)] = value
    _assert_passes_match_non_finite(x, w, g, kw, operand)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("value", [np.inf, np.nan])
@pytest.mark.parametrize("shape, kw", [
    (((2, 3, 9, 8), (4, 3, 3, 3)), dict(padding=1)),
    (((1, 2, 7, 6, 5), (3, 2, 3, 2, 3)), dict(padding=(2, 1, 0))),
    (((3, 40, 30, 29), (36, 40, 3, 3)), dict(padding=1)),  # minimal filtering
    (((2, 12, 6, 18, 17), (32, 12, 3, 3, 3)), dict(padding=1)),  # its 3-d form
])
def test_stride_1_input_gradient_with_non_finite_weights(dtype, value, shape, kw):
    """A stride-1 input gradient computed as a forward of the flipped kernel
    over dy would multiply the weights by the zeros around dy (0 * Inf is
    NaN where the scatter's sum is finite): weights that are not all finite
    go to the scatter. One Inf or NaN in a corner tap of the kernel, which
    reaches past dy's edge."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal(shape[0]).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    g = rng.standard_normal(pytconv.conv_output_shape(x.shape, w.shape, **kw)).astype(dtype)
    w[(1, 1) + tuple(k - 1 for k in w.shape[2:])] = value
    _assert_passes_match_non_finite(x, w, g, kw, "w")


def _aligned(a, offset):
    """A copy of a whose data starts `offset` elements past a 64-byte boundary."""
    raw = np.empty(a.size + 64, dtype=a.dtype)
    start = (-raw.ctypes.data % 64) // a.itemsize + offset
    out = raw[start : start + a.size].reshape(a.shape)
    out[...] = a
    return out


# Transposed outputs of 8 MiB and more whose windows tile them exactly leave
# through the streaming stores: rows of whole lines straight from the zip
# kernel (16 and 64 elements, a 1-d row of 2^17), others staged into whole
# lines (rows of 12, lines shared by two rows; 1-d rows of offsets 3 wide,
# longer than the stage); and, below 8 MiB, float32 rows of 12 zipped with
# masked tails.
STREAMED = {
    "4d rows of 16": ((1, 4, 8, 8, 8, 8), (4, 16, 2, 2, 2, 2), np.float64, 2),
    "4d float32 rows of 16": ((1, 4, 8, 8, 8, 8), (4, 32, 2, 2, 2, 2), np.float32, 2),
    "5d rows of 12": ((1, 3, 6, 6, 6, 6, 6), (3, 5, 2, 2, 2, 2, 2), np.float64, 2),
    "5d float32 rows of 12": ((1, 3, 6, 6, 6, 6, 6), (3, 5, 2, 2, 2, 2, 2), np.float32, 2),
    "2d rows of 64": ((8, 8, 32, 32), (8, 64, 2, 2), np.float32, 2),
    "1d one row": ((1, 3, 65536), (3, 8, 2), np.float64, 2),
    "1d k3 rows past the stage": ((1, 3, 50000), (3, 8, 3), np.float64, 3),
}


@pytest.mark.parametrize("name", list(STREAMED))
def test_streamed_depth_to_space(name, restore_threads):
    t_shape, w_shape, dtype, stride = STREAMED[name]
    rng = np.random.default_rng(len(name) + 200)
    t = rng.standard_normal(t_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y = _on_threads(lambda: pytconv.conv_transpose(t, w, stride=stride))
    assert y.nbytes >= 8 << 20 or "float32 rows of 12" in name
    t64, w64 = t.astype(np.float64), w.astype(np.float64)
    ref = reference.conv_transpose(t64, w64, stride=stride)
    assert_close(y, ref, reference.conv_transpose(abs(t64), abs(w64), stride=stride), dtype, name)
    # Into NaN-filled memory starting on a cache line (rows of whole lines
    # zipped straight out), 16 bytes past one (where NumPy's large arrays
    # start: those rows staged) and one element past one (partial lines at
    # every row's ends, stored in the ordinary way): the same bits.
    problem = transposed_problem("test", t.shape, w.shape, stride=stride)
    for offset in (0, 16 // t.itemsize, 1):
        into = _aligned(np.full(y.shape, np.nan, dtype=dtype), offset)
        _core.backward_data(problem, t, w, into)
        assert into.tobytes() == y.tobytes(), offset


# Unfolded forward outputs of 16 MiB and more leave the last k-block's whole
# register tiles through streaming stores, the partial ones (output channels
# past the last whole panel, positions past the last whole tile) through
# ordinary stores; one k-block or several (float64: 341 rows of the patches
# a block); not with a bias, nor into memory whose rows are not on lines.
# name: (x shape, w shape, dtype, conv keyword arguments)
STREAMED_FORWARD = {
    "pointwise one k-block, partial panel": ((2, 72, 64, 65), (260, 72, 1, 1), np.float64, {}),
    "3x3 two k-blocks": ((1, 40, 256, 512), (20, 40, 3, 3), np.float64, dict(padding=1)),
    "float32 pointwise three k-blocks": ((2, 700, 64, 64), (520, 700, 1, 1), np.float32, {}),
}


@pytest.mark.parametrize("name", list(STREAMED_FORWARD))
def test_streamed_forward(name, restore_threads):
    x_shape, w_shape, dtype, kw = STREAMED_FORWARD[name]
    rng = np.random.default_rng(len(name) + 400)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y = _on_threads(lambda: pytconv.conv(x, w, **kw))
    assert y.nbytes >= 16 << 20
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert_close(y, reference.conv(x64, w64, **kw), reference.conv(abs(x64), abs(w64), **kw),
                 dtype, name)
    # Into NaN-filled memory on a line (streamed), 16 bytes past one and one
    # element past one (stored in the ordinary way): the same bits; with a
    # bias, the bias added to them.
    problem = conv_problem("test", x.shape, w.shape, **kw)
    for offset in (0, 16 // x.itemsize, 1):
        into = _aligned(np.full(y.shape, np.nan, dtype=dtype), offset)
        _core.forward(problem, x, w, None, into)
        assert into.tobytes() == y.tobytes(), offset
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    into = _aligned(np.full(y.shape, np.nan, dtype=dtype), 0)
    _core.forward(problem, x, w, bias, into)
    assert into.tobytes() == (y + bias.reshape((-1,) + (1,) * (y.ndim - 2))).tobytes()


# The unfolded weight gradient sums its reduction in chunks of about 512
# positions: parts of an image, or several whole small images at a time (the
# last group of images partial); it reads dY's rows in place where they are
# whole vectors long (else from a copy), chunks that end inside a vector through
# masked loads, and the patches of a pointwise convolution in place.
# name: (x shape, w shape, conv keyword arguments)
WEIGHT_GRADIENT_PATHS = {
    "images per chunk, rows of 196": ((5, 6, 28, 28), (7, 6, 3, 3), dict(stride=2, padding=1)),
    "images per chunk, rows of 256": ((5, 3, 32, 32), (8, 3, 4, 4), dict(stride=2, padding=1)),
    "many small images, last group partial": ((70, 3, 9, 7), (5, 3, 3, 3), dict(stride=2)),
    "one position per image": ((9, 4, 3, 3), (6, 4, 3, 3), dict()),
    "chunks inside an image": ((2, 3, 40, 37), (4, 3, 3, 3), dict(padding=1, stride=(1, 2))),
    "pointwise in place": ((3, 5, 7, 9), (6, 5, 1, 1), dict()),
    "pointwise in place, rows of 64": ((4, 7, 8, 8), (16, 7, 1, 1), dict()),
    "pointwise groups": ((2, 6, 5, 13), (9, 6 // 3, 1, 1), dict(groups=3)),
    "pointwise strided (not in place)": ((2, 4, 9, 8), (5, 4, 1, 1), dict(stride=2)),
    # Many output channels and patch rows: the GEMM form (dW^T from packed
    # panels of the patches and dY transposed), with chunks of positions that
    # span images or end inside one, columns and rows past whole tiles,
    # groups, patches tiled (kernel = stride), and x's channels in place.
    "gemm form, chunks across images": ((3, 64, 9, 9), (256, 64, 3, 3), dict(stride=2, padding=1)),
    "gemm form, chunks inside images": ((3, 63, 20, 20), (250, 63, 3, 3), dict(stride=2, padding=1)),
    "gemm form, groups": ((1, 128, 7, 7), (512, 64, 3, 3), dict(stride=2, groups=2)),
    "gemm form, tiled patches": ((2, 161, 8, 8), (260, 161, 2, 2), dict(stride=2)),
    "gemm form, pointwise in place": ((2, 390, 6, 5), (385, 390, 1, 1), dict()),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(WEIGHT_GRADIENT_PATHS))
def test_weight_gradient_paths(name, dtype, restore_threads):
    x_shape, w_shape, kw = WEIGHT_GRADIENT_PATHS[name]
    rng = np.random.default_rng(len(name) + 300)
    problem = conv_problem("test", x_shape, w_shape, **kw)
    x = rng.standard_normal(x_shape).astype(dtype)
    g = rng.standard_normal(problem.y_shape).astype(dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    ref = reference.backward_filter(problem, x64, g64)
    scale = reference.backward_filter(problem, abs(x64), abs(g64))
    results = []
    # dY and x starting on a vector, 16 bytes past one (NumPy's large arrays)
    # and one element past one: read in place with split loads where dY's
    # rows are whole vectors long, else copied; the same bits.
    for offset in (0, 16 // dtype().itemsize, 1):
        gi, xi = _aligned(g, offset), _aligned(x, offset)
        dw = _on_threads(lambda: pytconv.conv_weight_grad(xi, w_shape, gi, **kw))
        assert_close(dw, ref, scale, dtype, name)
        into = np.full(w_shape, np.nan, dtype=dtype)
        _core.backward_filter(problem, xi, gi, into)
        assert into.tobytes() == dw.tobytes()
        results.append(dw)
    for other in results[1:]:
        assert other.tobytes() == results[0].tobytes(), "dY's alignment changed the bits"


def test_transposed_weight_gradient_of_a_pointwise_kernel_with_output_padding():
    """A 1x1 transposed convolution with output padding: as a convolution, its
    output (x there) has positions no window reads, so the patches are not
    x's channels read in place."""
    rng = np.random.default_rng(5)
    for t_shape, w_shape, out_shape, kw in (
        ((2, 3, 4, 5), (3, 2, 1, 1), (2, 2, 4, 6), dict(dilation=(1, 2))),
        ((1, 4, 6, 3), (4, 5, 1, 1), (1, 5, 11, 6), dict(stride=2)),
    ):
        t, dout = rng.standard_normal(t_shape), rng.standard_normal(out_shape)
        dw = pytconv.conv_transpose_weight_grad(t, w_shape, dout, **kw)
        problem = transposed_problem("test", t_shape, w_shape, output_shape=out_shape[2:], **kw)
        ref = reference.backward_filter(problem, dout, t)
        assert_close(dw, ref, reference.backward_filter(problem, abs(dout), abs(t)), np.float64, str(kw))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pointwise_weight_gradient_reads_nothing_past_a_chunk(dtype):
    """The pointwise weight gradient reads x's channels in place; a chunk that
    ends inside a vector must not read on into the next channel (an Inf there
    would turn the sum into NaN)."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5, 7, 9)).astype(dtype)  # 63 positions a channel
    g = rng.standard_normal((3, 4, 7, 9)).astype(dtype)
    x[:, 1:, 0, 0] = np.inf  # each channel's first position, just past the previous one
    dw = pytconv.conv_weight_grad(x, (4, 5, 1, 1), g)
    problem = conv_problem("test", x.shape, (4, 5, 1, 1))
    with np.errstate(invalid="ignore"):  # Inf - Inf in the reference's sums
        ref = reference.backward_filter(problem, x.astype(np.float64), g.astype(np.float64))
    assert np.array_equal(np.isnan(dw), np.isnan(ref))
    assert np.array_equal(np.isinf(dw), np.isinf(ref))
    assert np.all(np.isfinite(dw[:, 0]))


def test_gemm_weight_gradient_over_spans_of_positions(restore_threads):
    """The GEMM form of the weight gradient transposes dY a span of positions
    at a time (8 MiB, whole chunks of them, image after image): 3 images of
    2025 positions x 256 channels (4.3 MB each in float64) take two spans,
    each starting or ending inside an image, whose sums are added in order:
    the same bits for any thread count."""
    rng = np.random.default_rng(17)
    x_shape, w_shape, kw = (3, 64, 90, 90), (256, 64, 3, 3), dict(stride=2, padding=1)
    problem = conv_problem("test", x_shape, w_shape, **kw)
    x = rng.standard_normal(x_shape)
    g = rng.standard_normal(problem.y_shape)
    dw = _on_threads(lambda: pytconv.conv_weight_grad(x, w_shape, g, **kw))
    ref = reference.backward_filter(problem, x, g)
    assert_close(dw, ref, reference.backward_filter(problem, abs(x), abs(g)), np.float64, "batches")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("operand", ["x", "w", "dy"])
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_polyphase_filtering_leaves_inf_and_nan_to_the_direct_sums(dtype, operand, value):
    """The 1-d minimal filtering over polyphase rows takes differences too: one
    Inf or NaN in the input, a weight or the output gradient sends each pass
    to the direct sums, whose non-finite entries are the reference's."""
    rng = np.random.default_rng(17)
    kw = dict(stride=64, padding=10)
    x = rng.standard_normal((2, 2, 1500)).astype(dtype)
    w = rng.standard_normal((130, 2, 256)).astype(dtype)
    g = rng.standard_normal(pytconv.conv_output_shape(x.shape, w.shape, **kw)).astype(dtype)
    {"x": x, "w": w, "dy": g}[operand][(1, 1, 700) if operand == "x" else (3, 1, 100) if operand == "w" else (1, 7, 11)] = value
    _assert_passes_match_non_finite(x, w, g, kw, operand)
