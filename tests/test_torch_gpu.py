"""The PyTorch adapter on CUDA tensors: routed to pytconv's GPU path through
DLPack on PyTorch's current stream; results and gradients equal the CPU
core's. Needs CuPy and an NVIDIA GPU (skipped otherwise; the error without
them is tested in test_torch_functional.py)."""

from __future__ import annotations

import pytest

import pytconv

from frameworks import require

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def torch():
    torch = require("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    from pytconv import gpu

    available, reason = gpu.status()
    if not available:
        pytest.skip(f"pytconv's GPU path is off: {reason}")
    return torch


@pytest.fixture(scope="module")
def ptc(torch):
    return pytconv.adapter("torch")


CASES = [
    ("conv", (2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=((1, 0), 1), dilation=(1, 2), groups=2,
                                              padding_mode="circular")),
    ("conv", (2, 3, 6, 5, 7), (4, 3, 2, 3, 2), dict(padding="same", padding_mode="reflect")),
    ("conv_transpose", (2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("conv_transpose", (1, 2, 4, 4, 3, 3), (2, 2, 2, 2, 2, 2), dict(stride=2, padding="same",
                                                                  padding_mode="replicate")),
]


@pytest.mark.parametrize("op, x_shape, w_shape, kw", CASES)
def test_cuda_tensors_match_the_cpu(torch, ptc, op, x_shape, w_shape, kw):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, dtype=torch.float64, generator=gen)
    w = torch.randn(w_shape, dtype=torch.float64, generator=gen)
    channels = w_shape[0] if op == "conv" else w_shape[1] * kw.get("groups", 1)
    b = torch.randn(channels, dtype=torch.float64, generator=gen)
    fn = getattr(ptc, op)
    results = []
    for device in ("cpu", "cuda"):
        leaves = [t.to(device).requires_grad_() for t in (x, w, b)]
        y = fn(*leaves, **kw)
        assert y.device.type == device
        y.backward(torch.ones_like(y) * 0.5)
        results.append([y.detach().cpu()] + [t.grad.cpu() for t in leaves])
    for got, expected in zip(results[1], results[0]):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_work_is_ordered_on_the_current_stream(torch, ptc):
    """A layer on a side stream: its result is correct when read after that
    stream's work, with no device-wide synchronisation in between."""
    layer = ptc.Conv2d(3, 8, 3, padding=1).cuda()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    expected = layer.cpu()(x.cpu())
    layer.cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = layer(x * 1.0)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(y.cpu(), expected.detach(), rtol=1e-4, atol=1e-4)


def test_a_model_trains_on_the_gpu(torch, ptc):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        ptc.Conv2d(1, 8, 4, stride=2, padding=1), torch.nn.ReLU(), ptc.ConvTranspose2d(8, 1, 4, stride=2, padding=1)
    ).cuda()
    x = torch.rand(16, 1, 16, 16, device="cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
