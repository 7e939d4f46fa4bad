"""The benchmark workloads of the project (public peer figures exist for the
first eight) and the helpers every benchmark script uses: timing, the CPU's
name, writing the JSON report.

FLOPs are counted as direct convolution:
  conv            2 * N * Cout * Cin/groups * prod(k) * prod(out)
  conv_transpose  2 * N * Cin * Cout/groups * prod(k) * prod(in)
A training step (forward + input gradient + weight gradient) counts 3x.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from math import prod

import numpy as np


@dataclass(frozen=True)
class Workload:
    name: str
    op: str  # "conv" or "conv_transpose"
    batch: int
    in_channels: int
    spatial: tuple
    out_channels: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    groups: int = 1

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    def input_shape(self) -> tuple:
        return (self.batch, self.in_channels) + tuple(self.spatial)

    def weight_shape(self) -> tuple:
        k = (self.kernel,) * self.ndim
        if self.op == "conv":
            return (self.out_channels, self.in_channels // self.groups) + k
        return (self.in_channels, self.out_channels // self.groups) + k

    def output_spatial(self) -> tuple:
        out = []
        for i in self.spatial:
            if self.op == "conv":
                out.append((i + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) // self.stride + 1)
            else:
                out.append((i - 1) * self.stride - 2 * self.padding + self.dilation * (self.kernel - 1) + 1)
        return tuple(out)

    def flops(self) -> int:
        k = self.kernel**self.ndim
        if self.op == "conv":
            return 2 * self.batch * self.out_channels * (self.in_channels // self.groups) * k * prod(self.output_spatial())
        return 2 * self.batch * self.in_channels * (self.out_channels // self.groups) * k * prod(self.spatial)

    def output_shape(self) -> tuple:
        return (self.batch, self.out_channels) + self.output_spatial()

    def adjoint(self) -> "Workload":
        """The convolution whose adjoint this transposed convolution is: its
        input has this workload's output shape, its output this workload's
        input shape, and it takes the same weight, so both count the same FLOPs."""
        if self.op != "conv_transpose":
            raise ValueError(f"Workload.adjoint: {self.name} is not a transposed convolution")
        return Workload(
            self.name + "_adjoint", "conv", self.batch, self.out_channels, self.output_spatial(),
            self.in_channels, self.kernel, self.stride, self.padding, self.dilation, self.groups,
        )

    def arrays(self, dtype=np.float32, seed=0):
        """Input, weight and an output gradient, deterministic for a seed."""
        rng = np.random.default_rng(seed)
        dtype = np.dtype(dtype)
        # Drawn in the target dtype: no float64 temporaries (the memory
        # benchmark measures peak RSS after this).
        x = rng.standard_normal(self.input_shape(), dtype=dtype)
        w = rng.standard_normal(self.weight_shape(), dtype=dtype)
        w *= 0.1
        dy = rng.standard_normal(self.output_shape(), dtype=dtype)
        return x, w, dy


#: The public workloads (../shared/bench/README.md), float32 peers measured there.
PUBLIC = [
    Workload("resnet3x3", "conv", 8, 64, (56, 56), 64, 3, 1, 1, 1),
    Workload("stride2", "conv", 8, 128, (28, 28), 256, 3, 2, 1, 1),
    Workload("dilated", "conv", 4, 64, (64, 64), 64, 3, 1, 2, 2),
    Workload("dcgan_up", "conv_transpose", 16, 256, (16, 16), 128, 4, 2, 1, 1),
    Workload("unet_up2", "conv_transpose", 8, 128, (32, 32), 64, 2, 2, 0, 1),
    Workload("wavenet1d", "conv", 8, 64, (16000,), 64, 3, 1, 4, 4),
    Workload("conv3d", "conv", 2, 32, (32, 32, 32), 32, 3, 1, 1, 1),
    Workload("tconv3d", "conv_transpose", 2, 64, (16, 16, 16), 32, 2, 2, 0, 1),
]

#: Further cases the project keeps at peer speed or better.
EXTRA = [
    Workload("depthwise3x3", "conv", 8, 128, (56, 56), 128, 3, 1, 1, 1, groups=128),
    Workload("pointwise1x1", "conv", 8, 128, (56, 56), 256, 1, 1, 0, 1),
    # An inverse STFT as one layer: 1026 channels (real and imaginary parts of
    # 513 bins) of 256 frames back to a signal, window 1024, hop 256.
    Workload("tconv1d_long", "conv_transpose", 4, 1026, (256,), 1, 1024, 256, 0, 1),
    Workload("conv4d", "conv", 2, 16, (12, 12, 12, 12), 16, 3, 1, 1, 1),
    Workload("tconv4d", "conv_transpose", 2, 16, (8, 8, 8, 8), 16, 2, 2, 0, 1),
    Workload("conv5d", "conv", 1, 8, (8, 8, 8, 8, 8), 8, 3, 1, 1, 1),
    Workload("tconv5d", "conv_transpose", 1, 8, (6, 6, 6, 6, 6), 8, 2, 2, 0, 1),
]

BY_NAME = {w.name: w for w in PUBLIC + EXTRA}

#: The fixed cost of a call: a tiny input, one channel, a 3x3 kernel.
TINY = Workload("tiny3x3", "conv", 1, 1, (8, 8), 1, 3, 1, 1, 1)

#: A large 3-d call for the peak-memory measurement: 256 MiB of float32 input
#: and as much output, where a full patch (im2col) matrix would need 27x the input.
LARGE3D = Workload("large3d", "conv", 4, 64, (64, 64, 64), 64, 3, 1, 1, 1)


def median_seconds(fn, repeats=7, warmup=1, min_time=0.0):
    """Median wall time of fn() over `repeats` runs after `warmup` runs; each
    measurement repeats fn until it lasts at least min_time seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        count = 0
        start = time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / count)
    return statistics.median(samples)


def interleaved_medians(fns: dict, repeats=7, warmup=1, min_time=0.0, settle=1) -> dict:
    """Median seconds of each callable, timed round-robin (a, b, c, a, b, c, ...)
    so that machine noise falls on every contender alike.

    Each turn starts with `settle` untimed calls. A library's worker threads
    keep running for a while after its call returns (PyTorch's OpenMP
    workers busy-wait for several milliseconds; perf sched shows them sharing
    a core with the next contender's threads), so without them the first
    timed call of a turn would pay for the previous contender's threads."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            for _ in range(settle):
                fn()
            count = 0
            start = time.perf_counter()
            while True:
                fn()
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            samples[name].append(elapsed / count)
    return {name: statistics.median(s) for name, s in samples.items()}


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(path: str, report, indent: int = 1) -> None:
    """Writes report to path (its folder created), replacing the file only once
    complete, so an interrupted run leaves the previous results."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=indent)
    os.replace(tmp, path)
