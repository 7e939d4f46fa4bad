"""The PyTorch adapter's layers: torch.nn's constructor arguments, defaults,
parameters, initialisation and repr; state_dict interchange with torch.nn's
layers (same outputs and gradients); padding modes; transposed layers with
every padding mode as the adjoints of the convolution layers; output_size;
N-d layers."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import pytconv
from pytconv import _args, reference

from frameworks import require

LAYER_ARGS = {
    "Conv1d": [
        dict(in_channels=3, out_channels=4, kernel_size=3),
        dict(in_channels=4, out_channels=6, kernel_size=2, stride=2, padding=1, dilation=2, groups=2, bias=False),
        dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", padding_mode="reflect"),
    ],
    "Conv2d": [
        dict(in_channels=3, out_channels=4, kernel_size=3),
        dict(in_channels=4, out_channels=8, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
             groups=4, padding_mode="circular"),
        dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid", bias=False, padding_mode="replicate"),
    ],
    "Conv3d": [
        dict(in_channels=2, out_channels=3, kernel_size=2),
        dict(in_channels=2, out_channels=4, kernel_size=(1, 2, 3), stride=(1, 2, 1), padding=1, groups=2,
             padding_mode="zeros"),
    ],
    "ConvTranspose1d": [
        dict(in_channels=3, out_channels=4, kernel_size=3),
        dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2,
             dilation=1, bias=False),
    ],
    "ConvTranspose2d": [
        dict(in_channels=3, out_channels=4, kernel_size=3),
        dict(in_channels=4, out_channels=2, kernel_size=(4, 3), stride=(2, 3), padding=(1, 0), output_padding=(0, 2),
             groups=2, dilation=(1, 2)),
    ],
    "ConvTranspose3d": [
        dict(in_channels=2, out_channels=3, kernel_size=2, stride=2),
        dict(in_channels=2, out_channels=2, kernel_size=(2, 3, 2), padding=(0, 1, 0), bias=False),
    ],
}
CASES = [(name, kw) for name, kws in LAYER_ARGS.items() for kw in kws]


@pytest.fixture(scope="module")
def torch():
    return require("torch")


@pytest.fixture(scope="module")
def ptc(torch):
    return pytconv.adapter("torch")


def _input(torch, layer, batch=2, size=7, dtype=None, seed=0):
    n = len(layer.kernel_size)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, layer.in_channels) + (size,) * n, generator=gen, dtype=dtype or layer.weight.dtype)


@pytest.mark.parametrize("name, kw", CASES)
def test_same_parameters_repr_and_initialisation_as_torch_nn(torch, ptc, name, kw):
    torch.manual_seed(123)
    theirs = getattr(torch.nn, name)(**kw)
    torch.manual_seed(123)
    ours = getattr(ptc, name)(**kw)
    assert repr(ours) == repr(theirs)
    assert [(n, p.shape, p.dtype) for n, p in ours.named_parameters()] == [
        (n, p.shape, p.dtype) for n, p in theirs.named_parameters()
    ]
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "output_padding", "padding_mode", "transposed"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr


@pytest.mark.parametrize("name, kw", CASES)
def test_state_dict_moves_both_ways_with_the_same_results(torch, ptc, name, kw):
    """torch.nn -> pytconv and pytconv -> torch.nn (float64 state in a float64
    layer, then float32 layers), same outputs and gradients."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        theirs = getattr(torch.nn, name)(**kw, dtype=dtype)
        ours = getattr(ptc, name)(**kw, dtype=dtype)
        ours.load_state_dict(theirs.state_dict())
        torch.nn.init.normal_(theirs.weight)  # a fresh state for the other direction
        theirs.load_state_dict(ours.state_dict())
        ours.load_state_dict(theirs.state_dict())
        x = _input(torch, ours, dtype=dtype)
        xs = [x.clone().requires_grad_() for _ in range(2)]
        ys = [layer(xi) for layer, xi in zip((ours, theirs), xs)]
        scale = ys[1].abs().max().item()
        torch.testing.assert_close(ys[0], ys[1], rtol=tol, atol=tol * scale)
        cot = torch.randn(ys[1].shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        for y in ys:
            y.backward(cot)
        torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=tol, atol=tol * xs[1].grad.abs().max().item())
        for (n, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=tol, atol=tol * q.grad.abs().max().item(), msg=n)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes_match_torch_nn(torch, ptc, ndim, mode):
    cls = f"Conv{ndim}d"
    kw = dict(in_channels=4, out_channels=6, kernel_size=3, stride=(2,) + (1,) * (ndim - 1),
              padding=(2,) + (1,) * (ndim - 1), dilation=(1,) * (ndim - 1) + (2,), groups=2, padding_mode=mode,
              dtype=torch.float64)
    theirs = getattr(torch.nn, cls)(**kw)
    ours = getattr(ptc, cls)(**kw)
    ours.load_state_dict(theirs.state_dict())
    x = _input(torch, ours, size=6, seed=ndim).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y, y2 = ours(x), theirs(x2)
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    y.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "zeros"])
def test_transposed_layers_are_the_adjoints_of_the_conv_layers(torch, ptc, ndim, mode):
    """<conv(x), y> == <x, conv_transpose(y)> for layers sharing one weight,
    with the same stride, padding, dilation, groups and padding mode."""
    gen = torch.Generator().manual_seed(10 + ndim)
    stride = (2,) + (1,) * (ndim - 1)
    padding = ((2, 1),) + ((1, 1),) * (ndim - 1)
    dilation = (1,) * (ndim - 1) + (2,)
    conv = ptc.ConvNd(ndim, 4, 6, 3, stride, padding, dilation, groups=2, bias=False, padding_mode=mode,
                      dtype=torch.float64)
    size = (7,) * ndim if ndim < 4 else (5,) * ndim
    x = torch.randn((2, 4) + size, dtype=torch.float64, generator=gen)
    y_shape = conv(x).shape
    out_padding = tuple(
        i - _args.transposed_out_size(o, 3, s, d, lo, hi, 0)
        for i, o, s, d, (lo, hi) in zip(size, y_shape[2:], stride, dilation, padding)
    )
    tconv = ptc.ConvTransposeNd(ndim, 6, 4, 3, stride, padding, out_padding, groups=2, bias=False, dilation=dilation,
                                padding_mode=mode, dtype=torch.float64)
    tconv.load_state_dict(conv.state_dict())
    y = torch.randn(y_shape, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        lhs = (conv(x) * y).sum().item()
        rhs = (x * tconv(y)).sum().item()
        # The size of the terms summed bounds the rounding error.
        scale = (conv.weight.abs().sum() * x.abs().max() * y.abs().sum()).item()
    assert abs(lhs - rhs) <= 1e-13 * scale, (lhs, rhs)
    # The transposed layer's output_size spelling gives the same layer.
    tconv.output_padding = (0,) * ndim
    torch.testing.assert_close(tconv(y, output_size=size), tconv(y, output_size=x.shape), rtol=0, atol=0)


def test_output_size_in_forward_like_torch_nn(torch, ptc):
    kw = dict(in_channels=3, out_channels=2, kernel_size=3, stride=2, padding=1, dtype=torch.float64)
    theirs = torch.nn.ConvTranspose2d(**kw)
    ours = ptc.ConvTranspose2d(**kw)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64)
    for output_size in ((9, 7), (10, 8), [1, 2, 10, 7], torch.Size([9, 8])):
        torch.testing.assert_close(ours(x, output_size=output_size), theirs(x, output_size=output_size),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="reachable sizes are 9..10"):
        ours(x, output_size=(11, 7))


def test_nd_layers_match_the_reference(torch, ptc):
    gen = torch.Generator().manual_seed(5)
    conv = ptc.ConvNd(4, 2, 3, (2, 1, 2, 3), stride=(1, 2, 1, 1), padding=((1, 0), 1, 0, (2, 1)),
                      padding_mode="circular", dtype=torch.float64)
    x = torch.randn(1, 2, 4, 5, 3, 5, dtype=torch.float64, generator=gen)
    p = _args.conv_problem("conv", x.shape, conv.weight.shape, conv.stride, conv.padding, 1, 1, "circular")
    ref = reference.forward(p, x.numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy())
    np.testing.assert_allclose(conv(x).detach().numpy(), ref, rtol=1e-12, atol=1e-12)

    tconv = ptc.ConvTransposeNd(5, 2, 2, 2, stride=2, padding="same", padding_mode="replicate", dtype=torch.float64)
    t = torch.randn(1, 2, 2, 3, 2, 1, 2, dtype=torch.float64, generator=gen)
    got = tconv(t)
    assert got.shape == (1, 2, 4, 6, 4, 2, 4)
    p = _args.transposed_problem("conv_transpose", t.shape, tconv.weight.shape, 2, "same", 0, 1, 1, None,
                                 "replicate")
    ref = reference.backward_data(p, t.numpy(), tconv.weight.detach().numpy())
    ref += tconv.bias.detach().numpy().reshape(1, -1, 1, 1, 1, 1, 1)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-12, atol=1e-12)


def test_repr_of_extensions(torch, ptc):
    assert repr(ptc.ConvNd(4, 2, 3, 3, padding=((1, 0), 1, 1, 1))) == (
        "ConvNd(4, 2, 3, kernel_size=(3, 3, 3, 3), stride=(1, 1, 1, 1), padding=((1, 0), (1, 1), (1, 1), (1, 1)))"
    )
    assert repr(ptc.ConvTranspose2d(4, 2, 3, stride=2, padding="same", padding_mode="circular", bias=False)) == (
        "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), padding=same, bias=False, padding_mode=circular)"
    )
    assert repr(ptc.ConvTransposeNd(1, 2, 2, 3, output_padding=1, stride=2)) == (
        "ConvTransposeNd(1, 2, 2, kernel_size=(3,), stride=(2,), output_padding=(1,))"
    )


def test_strided_same_padding_follows_tensorflow(torch, ptc):
    """torch.nn refuses padding="same" with stride > 1; pytconv gives
    TensorFlow's rule: output ceil(in / stride), and in * stride transposed."""
    conv = ptc.Conv2d(2, 3, 3, stride=2, padding="same")
    assert conv(torch.randn(1, 2, 7, 8)).shape == (1, 3, 4, 4)
    tconv = ptc.ConvTranspose2d(3, 2, 3, stride=2, padding="same")
    assert tconv(torch.randn(1, 3, 4, 4)).shape == (1, 2, 8, 8)
    assert tconv(torch.randn(1, 3, 4, 4), output_size=(7, 8)).shape == (1, 2, 7, 8)


def test_layers_move_copy_and_pickle(torch, ptc):
    layer = ptc.ConvTranspose2d(2, 3, 3, stride=2, padding_mode="reflect", padding=1)
    x = torch.randn(1, 2, 4, 4)
    y = layer(x)
    double = copy.deepcopy(layer).double()
    torch.testing.assert_close(double(x.double()), y.double(), rtol=1e-6, atol=1e-6)
    restored = pickle.loads(pickle.dumps(layer))
    torch.testing.assert_close(restored(x), y, rtol=0, atol=0)
    assert type(restored) is ptc.ConvTranspose2d
    meta = ptc.Conv3d(2, 4, 3, device="meta")
    assert meta.weight.device.type == "meta"
    assert meta(torch.empty(1, 2, 5, 5, 5, device="meta")).shape == (1, 4, 3, 3, 3)
    meta.to_empty(device="cpu").reset_parameters()
    assert meta(torch.randn(1, 2, 5, 5, 5)).shape == (1, 4, 3, 3, 3)


def test_constructor_errors(torch, ptc):
    cases = [
        (ValueError, r"Conv2d: in_channels \(3\) must be divisible by groups \(2\)",
         lambda: ptc.Conv2d(3, 4, 3, groups=2)),
        (ValueError, r"ConvTranspose1d: out_channels \(3\) must be divisible by groups \(2\)",
         lambda: ptc.ConvTranspose1d(4, 3, 3, groups=2)),
        (ValueError, "Conv2d: groups must be a positive integer, got 0", lambda: ptc.Conv2d(3, 3, 3, groups=0)),
        (ValueError, "Conv1d: padding must be an int, per-dimension ints or .* got 'full'",
         lambda: ptc.Conv1d(1, 1, 3, padding="full")),
        (ValueError, "Conv3d: padding_mode must be one of", lambda: ptc.Conv3d(1, 1, 3, padding_mode="mirror")),
        (ValueError, r"Conv2d: kernel_size needs 1 or 2 values for 2 spatial dimensions, got 3",
         lambda: ptc.Conv2d(1, 1, (3, 3, 3))),
        (ValueError, "ConvNd: ndim must be a positive integer, got 0", lambda: ptc.ConvNd(0, 1, 1, 3)),
        (TypeError, "Conv2d: dtype must be torch.float32 or torch.float64, got torch.float16",
         lambda: ptc.Conv2d(1, 1, 3, dtype=torch.float16)),
        (TypeError, "Conv1d: in_channels must be an int", lambda: ptc.Conv1d(1.0, 1, 3)),
    ]
    for error, message, make in cases:
        with pytest.raises(error, match=message):
            make()
