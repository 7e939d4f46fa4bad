"""The PyTorch adapter's layers under DistributedDataParallel (gloo, CPU): two
processes on loopback, each with half the batch, train to the same gradients
and weights as one process on the whole batch."""

from __future__ import annotations

import os
import socket
import sys

import pytest

import pytconv

from frameworks import require

STEPS = 3
BATCH = 8
WORLD = 2


def _model(torch):
    ptc = pytconv.adapter("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(
        ptc.Conv2d(1, 4, 3, stride=2, padding=1, padding_mode="circular"),
        torch.nn.Tanh(),
        ptc.ConvNd(2, 4, 4, 3, padding="same", groups=2, padding_mode="reflect"),
        torch.nn.Tanh(),
        ptc.ConvTranspose2d(4, 1, 4, stride=2, padding=1, padding_mode="replicate"),
    ).double()


def _data(torch):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 1, 8, 8, dtype=torch.float64, generator=gen)
    return x, torch.sin(3 * x)


def _train(torch, model, x, target):
    """STEPS of SGD on the mean squared error; the gradients of each step and
    the final weights."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grads = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        optimizer.step()
    return grads, [p.detach().clone() for p in model.parameters()]


def _worker(rank, port, out_dir):
    """One DDP process: trains on its half of the batch, saves what it saw."""
    torch = require("torch")
    import torch.distributed as dist

    torch.set_num_threads(1)
    pytconv.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model(torch))
        x, target = _data(torch)
        half = BATCH // WORLD
        part = slice(rank * half, (rank + 1) * half)
        grads, weights = _train(torch, model, x[part], target[part])
        torch.save({"grads": grads, "weights": weights}, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done before either tears gloo down: a rank whose peer has
        # closed its connections mid-operation aborts in gloo's C++ threads.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_equals_one_process_on_the_whole_batch(tmp_path):
    torch = require("torch")
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)

    expected_grads, expected_weights = _train(torch, _model(torch), *_data(torch))
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for step, (grads, expected) in enumerate(zip(got["grads"], expected_grads)):
            for g, e in zip(grads, expected):
                torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14, msg=f"rank {rank}, step {step}")
        for w, e in zip(got["weights"], expected_weights):
            torch.testing.assert_close(w, e, rtol=1e-12, atol=1e-14, msg=f"rank {rank}, final weights")
    # The steps changed the weights (the comparison above is not of initial values).
    assert not torch.equal(expected_weights[0], _model(torch)[0].weight.detach())


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
