"""Every bad argument gets a ValueError or TypeError, before any work, with a
message naming the function and the argument; sizes whose products overflow
raise quickly instead of crashing."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import pytconv

F64 = np.float64


def ones(*shape, dtype=F64):
    return np.ones(shape, dtype)


X2 = ones(2, 4, 6, 6)  # (batch, channels, h, w)
W2 = ones(3, 4, 3, 3)  # (out, in / groups, kh, kw)
WT2 = ones(4, 3, 3, 3)  # conv_transpose: (in, out / groups, kh, kw)


def raises(exc, fn_name, *fragments):
    """pytest.raises matching a message that starts with the function's name
    and contains every fragment, in order."""
    pattern = "^" + re.escape(fn_name) + ":" + "".join(".*" + re.escape(f) for f in fragments)
    return pytest.raises(exc, match=re.compile(pattern, re.S))


# ---- ranks, channels, groups -----------------------------------------------------


def test_spatial_rank_mismatch():
    with raises(ValueError, "conv", "input of shape (2, 4, 6)", "1 spatial dimensions", "weight", "has 2"):
        pytconv.conv(ones(2, 4, 6), W2)
    with raises(ValueError, "conv_transpose", "2 spatial dimensions", "has 3"):
        pytconv.conv_transpose(X2, ones(4, 3, 3, 3, 3))
    with raises(ValueError, "conv_input_grad", "input"):
        pytconv.conv_input_grad((2, 4, 6), W2, ones(2, 3, 4, 4))


def test_too_few_dimensions():
    with raises(ValueError, "conv", "input shape must have at least 3 dimensions", "(4, 6)"):
        pytconv.conv(ones(4, 6), ones(3, 4, 3))
    with raises(ValueError, "conv", "weight shape must have at least 3 dimensions"):
        pytconv.conv(X2, ones(3, 4))
    with raises(ValueError, "conv_output_shape", "at most 62 are supported"):
        pytconv.conv_output_shape((1, 1) + (1,) * 70, (1, 1) + (1,) * 70)


def test_channel_mismatch():
    with raises(ValueError, "conv", "weight expects 4 input channels per group, input has 6 channels (groups=1)"):
        pytconv.conv(ones(2, 6, 6, 6), W2)
    with raises(ValueError, "conv", "weight expects 2 input channels per group, input has 4 channels (groups=3)"):
        pytconv.conv(X2, ones(3, 2, 3, 3), groups=3)
    with raises(ValueError, "conv_transpose", "expects 4 input channels", "input has 6"):
        pytconv.conv_transpose(ones(2, 6, 5, 5), WT2)
    with raises(ValueError, "conv_weight_grad", "input channels per group"):
        pytconv.conv_weight_grad(ones(2, 6, 6, 6), W2.shape, ones(2, 3, 4, 4))


def test_groups():
    with raises(ValueError, "conv", "3 output channels, not divisible by groups=2"):
        pytconv.conv(X2, ones(3, 2, 3, 3), groups=2)
    with raises(ValueError, "conv_transpose", "input has 4 channels, not divisible by groups=3"):
        pytconv.conv_transpose(X2, WT2, groups=3)
    with raises(ValueError, "conv", "groups must be >= 1, got 0"):
        pytconv.conv(X2, W2, groups=0)
    with raises(TypeError, "conv", "groups must be an int", "2.0"):
        pytconv.conv(X2, ones(4, 2, 3, 3), groups=2.0)
    with raises(TypeError, "conv", "groups must be an int", "True"):
        pytconv.conv(X2, W2, groups=True)


def test_empty_dimensions():
    with raises(ValueError, "conv", "empty spatial dimension"):
        pytconv.conv(ones(2, 4, 0, 6), W2)
    with raises(ValueError, "conv", "weight must have no empty dimension"):
        pytconv.conv(X2, ones(3, 4, 0, 3))
    with raises(ValueError, "conv_weight_grad", "negative size", "(3, -4, 3, 3)"):
        pytconv.conv_weight_grad(X2, (3, -4, 3, 3), ones(2, 3, 4, 4))


# ---- stride, dilation, padding ------------------------------------------------------


@pytest.mark.parametrize("name", ["stride", "dilation"])
def test_stride_and_dilation_at_least_one(name):
    with raises(ValueError, "conv", f"{name} must be >= 1", "0"):
        pytconv.conv(X2, W2, **{name: 0})
    with raises(ValueError, "conv_transpose", f"{name} must be >= 1", "(1, -1)"):
        pytconv.conv_transpose(X2, WT2, **{name: (1, -1)})
    with raises(ValueError, "conv", f"{name} needs 1 or 2 values for 2 spatial dimensions, got 3"):
        pytconv.conv(X2, W2, **{name: (1, 1, 1)})
    with raises(TypeError, "conv", f"{name} must be an int", "1.5"):
        pytconv.conv(X2, W2, **{name: 1.5})
    with raises(TypeError, "conv", f"{name} must be an int or a sequence of 2 ints", "'2'"):
        pytconv.conv(X2, W2, **{name: "2"})


def test_negative_padding():
    with raises(ValueError, "conv", "padding must be >= 0, got -1"):
        pytconv.conv(X2, W2, padding=-1)
    with raises(ValueError, "conv", "padding must be >= 0", "(0, -1)"):
        pytconv.conv(X2, W2, padding=((0, 0), (0, -1)))
    with raises(ValueError, "conv_transpose", "padding must be >= 0"):
        pytconv.conv_transpose(X2, WT2, padding=(1, -2))


def test_bad_padding_values():
    with raises(ValueError, "conv", "'same' or 'valid', got 'full'"):
        pytconv.conv(X2, W2, padding="full")
    with raises(ValueError, "conv_transpose", "'same' or 'valid', got 'causal'"):
        pytconv.conv_transpose(X2, WT2, padding="causal")
    with raises(ValueError, "conv", "padding needs 1 or 2 entries for 2 spatial dimensions, got 3"):
        pytconv.conv(X2, W2, padding=(1, 1, 1))
    with raises(ValueError, "conv", "padding pairs must be (low, high)", "(1, 2, 3)"):
        pytconv.conv(X2, W2, padding=((1, 2, 3), (0, 0)))
    with raises(TypeError, "conv", "padding must be an int, a sequence", "1.5"):
        pytconv.conv(X2, W2, padding=1.5)


def test_kernel_larger_than_padded_input():
    with raises(ValueError, "conv", "kernel is larger than the padded input in dimension 1", "kernel 7",
                "spans 7", "padded size is 6"):
        pytconv.conv(X2, ones(3, 4, 3, 7))
    with raises(ValueError, "conv", "kernel 3 with dilation 4 spans 9, padded size is 8"):
        pytconv.conv(X2, W2, padding=1, dilation=4)
    with raises(ValueError, "conv_output_shape", "kernel is larger"):
        pytconv.conv_output_shape((1, 1, 4), (1, 1, 5))


def test_output_padding_out_of_range():
    with raises(ValueError, "conv_transpose", "output_padding must be smaller than max(stride, dilation) = 2",
                "dimension 1, got 2"):
        pytconv.conv_transpose(X2, WT2, stride=2, output_padding=(1, 2))
    with raises(ValueError, "conv_transpose", "output_padding must be smaller than max(stride, dilation) = 1"):
        pytconv.conv_transpose(X2, WT2, output_padding=1)
    with raises(ValueError, "conv_transpose", "output_padding must be >= 0"):
        pytconv.conv_transpose(X2, WT2, stride=2, output_padding=-1)
    with raises(ValueError, "conv_transpose", "give output_padding or output_shape, not both"):
        pytconv.conv_transpose(X2, WT2, stride=2, output_padding=1, output_shape=(12, 12))


def test_unreachable_output_shape_lists_reachable_sizes():
    # 6 -> (6 - 1) * 2 + 3 = 13 .. 14 with stride 2.
    with raises(ValueError, "conv_transpose", "output_shape (13, 15) cannot be reached in dimension 1",
                "reachable sizes are 13..14"):
        pytconv.conv_transpose(X2, WT2, stride=2, output_shape=(13, 15))
    with raises(ValueError, "conv_transpose", "padding='same'", "stride 2", "size 11..12, not 13"):
        pytconv.conv_transpose(X2, WT2, stride=2, padding="same", output_shape=(12, 13))
    with raises(ValueError, "conv_transpose_output_shape", "reachable sizes are 8..8"):
        pytconv.conv_transpose_output_shape(X2.shape, WT2.shape, output_shape=(8, 9))


def test_output_shape_reachable_by_output_padding():
    """output_shape accepts every size output_padding reaches: here the padding
    crops the uncropped output to -1 and output_padding=2 brings it to 1."""
    x, w = ones(1, 1, 1), ones(1, 1, 1)
    kw = dict(stride=3, padding=1)
    assert pytconv.conv_transpose(x, w, output_padding=2, **kw).shape == (1, 1, 1)
    assert pytconv.conv_output_shape((1, 1, 1), (1, 1, 1), **kw) == (1, 1, 1)
    assert pytconv.conv_transpose(x, w, output_shape=(1,), **kw).shape == (1, 1, 1)
    # the transposed convolution's gradients take their size from grad_output the same way
    assert pytconv.conv_transpose_input_grad(x.shape, w, ones(1, 1, 1), **kw).shape == (1, 1, 1)


def test_grad_output_shape():
    with raises(ValueError, "conv_input_grad", "grad_output must have shape (2, 3, 4, 4), got (2, 3, 4, 5)"):
        pytconv.conv_input_grad(X2.shape, W2, ones(2, 3, 4, 5))
    with raises(ValueError, "conv_weight_grad", "grad_output must have shape (2, 3, 4, 4)"):
        pytconv.conv_weight_grad(X2, W2.shape, ones(2, 3, 4, 4, 1))
    with raises(ValueError, "conv_transpose_input_grad", "grad_output", "differ in rank"):
        pytconv.conv_transpose_input_grad(X2.shape, WT2, ones(2, 3, 8))
    with raises(ValueError, "conv_transpose_weight_grad", "reachable sizes are 8..8"):
        pytconv.conv_transpose_weight_grad(X2, WT2.shape, ones(2, 3, 8, 9))
    with raises(ValueError, "bias_grad", "grad_output must be (batch, channels, ...)"):
        pytconv.bias_grad(ones(5))


def test_wrong_bias_shape():
    with raises(ValueError, "conv", "bias must have shape (3,), got (4,)"):
        pytconv.conv(X2, W2, ones(4))
    with raises(ValueError, "conv", "bias must have shape (3,), got (3, 1)"):
        pytconv.conv(X2, W2, ones(3, 1))
    with raises(ValueError, "conv_transpose", "bias must have shape (3,), got (4,)"):
        pytconv.conv_transpose(X2, WT2, ones(4))


# ---- dtypes -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float16, np.complex64, np.complex128,
                                   np.bool_, object, np.longdouble])
def test_unsupported_dtypes(dtype):
    if np.dtype(dtype) in (np.dtype(np.float64),):  # longdouble is float64 on some platforms
        pytest.skip("longdouble is float64 here")
    bad = X2.astype(dtype)
    name = str(np.dtype(dtype))
    with raises(TypeError, "conv", f"input has dtype {name}; supported dtypes are float32 and float64"):
        pytconv.conv(bad, W2)
    with raises(TypeError, "conv", f"weight has dtype {name}"):
        pytconv.conv(X2, W2.astype(dtype))
    with raises(TypeError, "conv", f"bias has dtype {name}"):
        pytconv.conv(X2, W2, ones(3).astype(dtype))
    with raises(TypeError, "conv_transpose", f"input has dtype {name}"):
        pytconv.conv_transpose(bad, WT2)
    with raises(TypeError, "conv_input_grad", f"grad_output has dtype {name}"):
        pytconv.conv_input_grad(X2.shape, W2, ones(2, 3, 4, 4).astype(dtype))
    with raises(TypeError, "conv_weight_grad", f"input has dtype {name}"):
        pytconv.conv_weight_grad(bad, W2.shape, ones(2, 3, 4, 4))
    with raises(TypeError, "conv_transpose_input_grad", f"weight has dtype {name}"):
        pytconv.conv_transpose_input_grad(X2.shape, WT2.astype(dtype), ones(2, 3, 8, 8))
    with raises(TypeError, "conv_transpose_weight_grad", f"input has dtype {name}"):
        pytconv.conv_transpose_weight_grad(bad, WT2.shape, ones(2, 3, 8, 8))
    with raises(TypeError, "bias_grad", f"grad_output has dtype {name}"):
        pytconv.bias_grad(ones(2, 3, 4).astype(dtype))


def test_python_sequences_of_ints_are_rejected_by_dtype():
    with raises(TypeError, "conv", "input has dtype int64"):
        pytconv.conv([[[1, 2, 3]]], [[[1.0]]])


def test_mixed_dtypes():
    with raises(TypeError, "conv", "arrays must share one dtype", "input float32, weight float64"):
        pytconv.conv(X2.astype(np.float32), W2)
    with raises(TypeError, "conv", "input float64, weight float64, bias float32"):
        pytconv.conv(X2, W2, ones(3, dtype=np.float32))
    with raises(TypeError, "conv_transpose", "input float64, weight float32"):
        pytconv.conv_transpose(X2, WT2.astype(np.float32))
    with raises(TypeError, "conv_input_grad", "weight float32, grad_output float64"):
        pytconv.conv_input_grad(X2.shape, W2.astype(np.float32), ones(2, 3, 4, 4))


def test_missing_array_is_a_type_error():
    with raises(TypeError, "conv", "weight"):
        pytconv.conv(X2, None)


def test_zero_dimensional_input_reports_its_shape():
    with raises(ValueError, "conv", "input shape must have at least 3 dimensions", "got shape ()"):
        pytconv.conv(np.float64(1.0), ones(1, 1, 1))


# ---- padding modes ------------------------------------------------------------------


def test_bad_padding_mode():
    with raises(ValueError, "conv", "padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular'",
                "got 'mirror'"):
        pytconv.conv(X2, W2, padding=1, padding_mode="mirror")
    with raises(ValueError, "conv_transpose", "padding_mode must be one of", "got 'zero'"):
        pytconv.conv_transpose(X2, WT2, padding_mode="zero")
    with raises(TypeError, "conv", "padding_mode must be a string, got 0"):
        pytconv.conv(X2, W2, padding_mode=0)


def test_reflect_padding_must_be_smaller_than_the_size():
    x = ones(1, 4, 3, 6)
    with raises(ValueError, "conv", "padding_mode='reflect' needs padding < the input size",
                "dimension 0 has size 3 and padding (3, 3)"):
        pytconv.conv(x, W2, padding=3, padding_mode="reflect")
    assert pytconv.conv(x, W2, padding=(2, 2), padding_mode="reflect").shape == (1, 3, 5, 8)
    with raises(ValueError, "conv", "dimension 1 has size 6 and padding (0, 6)"):
        pytconv.conv(x, W2, padding=((2, 2), (0, 6)), padding_mode="reflect")
    # conv_transpose checks its output, the padded array of the convolution it is the adjoint of
    with raises(ValueError, "conv_transpose", "padding_mode='reflect' needs padding < the output size"):
        pytconv.conv_transpose(ones(1, 4, 5, 5), WT2, padding=3, padding_mode="reflect")


def test_circular_padding_may_not_exceed_the_size():
    x = ones(1, 4, 3, 6)
    assert pytconv.conv(x, W2, padding=3, padding_mode="circular").shape == (1, 3, 7, 10)
    with raises(ValueError, "conv", "padding_mode='circular' needs padding <= the input size",
                "dimension 0 has size 3 and padding (4, 4)"):
        pytconv.conv(x, W2, padding=4, padding_mode="circular")
    with raises(ValueError, "conv_transpose", "padding_mode='circular' needs padding <= the output size"):
        pytconv.conv_transpose(ones(1, 4, 3, 3), WT2, padding=((4, 0), (0, 0)), stride=1,
                               padding_mode="circular")


def test_set_num_threads_arguments():
    with raises(ValueError, "set_num_threads", "n must be >= 1, got 0"):
        pytconv.set_num_threads(0)
    with raises(TypeError, "set_num_threads", "n must be an int"):
        pytconv.set_num_threads(2.0)


# ---- sizes whose products overflow -----------------------------------------------------


def _quick(call, limit=5.0):
    """call() raises ValueError or MemoryError within `limit` seconds."""
    start = time.perf_counter()
    with pytest.raises((ValueError, MemoryError)) as info:
        call()
    assert time.perf_counter() - start < limit
    return info.value


@pytest.mark.parametrize(
    "label,call",
    [
        ("output shape helper", lambda: pytconv.conv_output_shape((1, 1, 2**40, 2**40), (1, 1, 3, 3))),
        ("channels", lambda: pytconv.conv_output_shape((2**40, 2**40, 1), (2**40, 1, 1), groups=2**40)),
        ("batch", lambda: pytconv.conv_output_shape((2**62, 1, 1), (1, 1, 1))),
        ("transposed helper", lambda: pytconv.conv_transpose_output_shape((1, 1, 2**40, 2**40), (1, 1, 3, 3),
                                                                          stride=2**30)),
        ("conv_transpose stride", lambda: pytconv.conv_transpose(ones(1, 1, 2, 2), ones(1, 1, 1, 1),
                                                                 stride=2**40)),
        ("conv_transpose output_shape", lambda: pytconv.conv_transpose(ones(1, 1, 2), ones(1, 1, 1),
                                                                       stride=2**62, output_shape=(2**62 + 1,))),
        ("padding", lambda: pytconv.conv(ones(1, 1, 2), ones(1, 1, 1), padding=2**62)),
        ("padding and stride", lambda: pytconv.conv(ones(1, 1, 2), ones(1, 1, 1), padding=2**62, stride=2**62)),
        ("dilation", lambda: pytconv.conv(ones(1, 1, 2), ones(1, 1, 2), dilation=2**70)),
        ("input gradient", lambda: pytconv.conv_input_grad((1, 1, 2**40, 2**40), ones(1, 1, 1, 1),
                                                           ones(1, 1, 1, 1), stride=2**40)),
        ("input gradient too big to allocate", lambda: pytconv.conv_input_grad(
            (1, 1, 2**29, 2**29), ones(1, 1, 1, 1), ones(1, 1, 1, 1), stride=2**29)),
        ("weight gradient", lambda: pytconv.conv_weight_grad(ones(1, 1, 2), (1, 1, 2**62), ones(1, 1, 1),
                                                             padding=2**62)),
    ],
)
def test_huge_sizes_fail_fast(label, call):
    _quick(call)


def test_huge_zero_stride_views_fail_fast():
    """Broadcast views of 2**48 elements (no memory behind them) cannot be made
    contiguous: a MemoryError, not a crash or a hang."""
    giant = np.broadcast_to(np.zeros(1), (1, 1, 2**24, 2**24))
    _quick(lambda: pytconv.conv(giant, ones(1, 1, 3, 3)))
    _quick(lambda: pytconv.conv_transpose(giant, ones(1, 1, 3, 3)))
    _quick(lambda: pytconv.conv_weight_grad(giant, (1, 1, 3, 3), ones(1, 1, 3, 3)))
    giant_w = np.broadcast_to(np.zeros(1), (1, 1, 2**24, 2**24))
    _quick(lambda: pytconv.conv(ones(1, 1, 4, 4), giant_w))
    strided = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(2**20, 2**20, 4, 4), strides=(0, 0, 0, 0),
                                              writeable=False)
    _quick(lambda: pytconv.bias_grad(strided))


def test_stride_beyond_int64_is_a_value_error():
    with raises(ValueError, "conv", "stride"):
        pytconv.conv(ones(1, 1, 2), ones(1, 1, 1), stride=2**70)


def test_bad_arguments_are_rejected_before_copying_a_view():
    """A wrong channel count is reported as such even when the input is a
    broadcast view too big to copy: arguments are checked before any work."""
    giant = np.broadcast_to(np.zeros(1), (1, 1, 2**24, 2**24))
    with raises(ValueError, "conv", "weight expects 2 input channels per group, input has 1"):
        pytconv.conv(giant, ones(1, 2, 3, 3))
