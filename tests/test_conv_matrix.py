"""pytconv.conv_matrix: the convolution as an explicit sparse matrix, checked
against the NumPy API and the float64 reference (three independent
computations of the same linear map)."""

import numpy as np
import pytest
import scipy.sparse

import pytconv
from pytconv import _args, reference
from pytconv.testing import random_config

MODES = ("zeros", "reflect", "replicate", "circular")

# (input spatial, kernel, stride, padding, dilation) per number of dimensions
CASES = {
    1: [((9,), (3,), 2, ((1, 2),), 1), ((7,), (2,), 1, "same", 2), ((8,), (3,), 3, "valid", 1)],
    2: [((7, 6), (3, 2), (2, 1), ((1, 0), (2, 1)), (1, 2)), ((5, 6), (3, 3), 2, "same", 1), ((6, 5), (1, 3), 1, 1, 1)],
    3: [((5, 4, 5), (3, 2, 2), (2, 1, 2), ((1, 1), (0, 1), (1, 0)), (1, 1, 2)), ((4, 4, 3), (2, 2, 2), 1, "same", 1)],
}


def _cases():
    return [
        pytest.param(n, case, mode, id=f"{n}d-{i}-{mode}")
        for n, cases in CASES.items()
        for i, case in enumerate(cases)
        for mode in MODES
    ]


@pytest.mark.parametrize("n, case, mode", _cases())
@pytest.mark.parametrize("groups", [1, 2])
def test_matrix_is_conv_and_its_transpose(n, case, mode, groups):
    size, kernel, stride, padding, dilation = case
    rng = np.random.default_rng(n * 100 + groups)
    x_shape = (2, 4) + size
    w = rng.standard_normal((6, 4 // groups) + kernel)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    try:
        p = _args.conv_problem("t", x_shape, w.shape, stride, padding, dilation, groups, mode)
    except ValueError:
        pytest.skip("padding too large for this padding mode")
    C = pytconv.conv_matrix(x_shape, w, **kwargs)
    assert isinstance(C, scipy.sparse.csr_matrix)
    assert C.shape == (int(np.prod(p.y_shape)), int(np.prod(x_shape)))
    assert C.dtype == np.float64

    x = rng.standard_normal(x_shape)
    y = pytconv.conv(x, w, **kwargs)
    y_ref = reference.forward(p, x, w)
    scale = np.abs(y_ref).max()
    np.testing.assert_allclose(C @ x.ravel(), y_ref.ravel(), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(C @ x.ravel(), y.ravel(), rtol=0, atol=1e-12 * scale)

    g = rng.standard_normal(p.y_shape)
    dx = pytconv.conv_transpose(g, w, None, stride, padding, groups=groups, dilation=dilation,
                                output_shape=size, padding_mode=mode)
    dx_ref = reference.backward_data(p, g, w)
    scale = np.abs(dx_ref).max()
    np.testing.assert_allclose(C.T @ g.ravel(), dx_ref.ravel(), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(C.T @ g.ravel(), dx.ravel(), rtol=0, atol=1e-12 * scale)


def test_float32_matrix():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 2, 6, 5)).astype(np.float32)
    C = pytconv.conv_matrix(x.shape, w, stride=2, padding="same", padding_mode="reflect")
    assert C.dtype == np.float32
    y = pytconv.conv(x, w, stride=2, padding="same", padding_mode="reflect")
    np.testing.assert_allclose(C @ x.ravel(), y.ravel(), rtol=1e-5, atol=1e-5)


def test_random_configurations_three_oracles():
    """conv_matrix, the C core and the reference agree on random configurations."""
    rng = np.random.default_rng(11)
    for trial in range(30):
        c = random_config(rng, int(rng.integers(1, 4)), "conv", max_size=6)
        w = rng.standard_normal(c.weight_shape)
        x = rng.standard_normal(c.input_shape)
        kw = dict(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups,
                  padding_mode=c.padding_mode)
        C = pytconv.conv_matrix(c.input_shape, w, **kw)
        got = C @ x.ravel()
        ref = reference.conv(x, w, None, **kw).ravel()
        core = pytconv.conv(x, w, **kw).ravel()
        atol = 1e-12 * max(np.abs(ref).max(), 1.0)
        np.testing.assert_allclose(got, ref, rtol=0, atol=atol, err_msg=c.label())
        np.testing.assert_allclose(core, ref, rtol=0, atol=atol, err_msg=c.label())


def test_seed_example_3x3_input_2x2_kernel():
    """The convolution matrix of a 2x2 kernel over a 3x3 image: 4 x 9, one row
    per kernel position; its transpose maps the 2x2 output back to 3x3."""
    kernel = np.array([[[[1.0, 2.0], [2.0, 1.0]]]])
    C = pytconv.conv_matrix((1, 1, 3, 3), kernel).toarray()
    expected = np.array([
        [1, 2, 0, 2, 1, 0, 0, 0, 0],
        [0, 1, 2, 0, 2, 1, 0, 0, 0],
        [0, 0, 0, 1, 2, 0, 2, 1, 0],
        [0, 0, 0, 0, 1, 2, 0, 2, 1],
    ], dtype=float)
    np.testing.assert_array_equal(C, expected)
    image = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal((C @ image.ravel()).reshape(1, 1, 2, 2), pytconv.conv(image, kernel))
    small = np.array([[[[2.0, 1.0], [1.0, 3.0]]]])
    np.testing.assert_array_equal((C.T @ small.ravel()).reshape(1, 1, 3, 3), pytconv.conv_transpose(small, kernel))


def test_padding_modes_duplicate_entries_are_summed():
    # A 1-cell input padded by 1 on each side: with circular or replicate
    # padding every tap reads that cell, so the one entry is the kernel's sum;
    # with zeros only the centre tap does.
    w = np.array([[[1.0, 2.0, 4.0]]])
    for mode, entry in (("circular", 7.0), ("replicate", 7.0), ("zeros", 2.0)):
        C = pytconv.conv_matrix((1, 1, 1), w, padding=1, padding_mode=mode)
        assert C.toarray().tolist() == [[entry]], mode


def test_errors_name_the_function():
    w = np.ones((2, 1, 3, 3))
    with pytest.raises(ValueError, match="conv_matrix"):
        pytconv.conv_matrix((1, 3, 5, 5), w)
    with pytest.raises(ValueError, match="conv_matrix.*reflect"):
        pytconv.conv_matrix((1, 1, 2, 2), w, padding=2, padding_mode="reflect")
    with pytest.raises(TypeError, match="conv_matrix.*dtype"):
        pytconv.conv_matrix((1, 1, 5, 5), w.astype(np.int64))
