#!/usr/bin/env python
"""pytconv's PyTorch adapter against PyTorch's own convolutions and against
pytconv's own NumPy API: one training step of every public workload, float32,
and the fixed cost of a tiny call.

    python benchmarks/bench_torch_adapter.py [--repeats 7] [--threads 2]

Contenders of a training step (forward + input gradient + weight gradient),
timed round-robin in this one process (workloads.interleaved_medians):

* ``torch``    torch.nn.functional.conv{n}d / conv_transpose{n}d, backward through autograd;
* ``adapter``  pytconv_torch.conv / conv_transpose, backward through autograd;
* ``core``     the NumPy API: conv (or conv_transpose) and its input and weight
               gradient functions, the same three core calls with no framework.

GFLOP/s count a training step as 3x the forward FLOPs of direct convolution
(workloads.py). The "core" and "adapter" ratios are their speeds over
PyTorch's; the adapter keeps the core's ratio when "adapter/core" is near 1
(target: >= 0.9). The results of the adapter are checked against PyTorch's
(relative 2e-3) so that both compute the same thing.

The tiny call (1x1x8x8 input, 3x3 kernel, padding 1) measures the fixed cost
of a call, with one thread each: functional and layer calls, without autograd
(inference) and recording autograd (the forward of a training step); target:
the functional call within 2x of PyTorch's own.

Timing order: PyTorch runs before each pytconv contender (its OpenMP threads
spin for a while after a call and slow whatever runs next), and the NumPy
API's results are kept until the next step as a training step keeps its
activations and gradients.

Prints a table and writes benchmarks/results/torch_adapter.json.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(HERE))
from benchmarks import workloads  # noqa: E402

RESULTS = os.path.join(HERE, "results")
CHECK_TOLERANCE = 2e-3
TARGET_ADAPTER_OVER_CORE = 0.9
TARGET_TINY_CALL = 2.0


def _training_steps(torch, ptc, pytconv, wl):
    """name -> step(): the three contenders of one workload, and a check of
    the adapter's results against PyTorch's."""
    F = torch.nn.functional
    n = wl.ndim
    x_np, w_np, dy_np = wl.arrays(np.float32)
    x, w, dy = (torch.from_numpy(a) for a in (x_np, w_np, dy_np))
    kw = dict(stride=wl.stride, padding=wl.padding, dilation=wl.dilation, groups=wl.groups)
    if wl.op == "conv":
        theirs = lambda x, w: getattr(F, f"conv{n}d")(x, w, None, **kw)  # noqa: E731
        ours = lambda x, w: ptc.conv(x, w, None, **kw)  # noqa: E731

        def core_step():
            return (
                pytconv.conv(x_np, w_np, None, **kw),
                pytconv.conv_input_grad(x_np.shape, w_np, dy_np, **kw),
                pytconv.conv_weight_grad(x_np, w_np.shape, dy_np, **kw),
            )

    else:
        tkw = dict(stride=wl.stride, padding=wl.padding, groups=wl.groups, dilation=wl.dilation)
        theirs = lambda x, w: getattr(F, f"conv_transpose{n}d")(x, w, None, **tkw)  # noqa: E731
        ours = lambda x, w: ptc.conv_transpose(x, w, None, **tkw)  # noqa: E731

        def core_step():
            return (
                pytconv.conv_transpose(x_np, w_np, None, **tkw),
                pytconv.conv_transpose_input_grad(x_np.shape, w_np, dy_np, **tkw),
                pytconv.conv_transpose_weight_grad(x_np, w_np.shape, dy_np, **tkw),
            )

    def autograd_step(op):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

        def step():
            xg.grad = wg.grad = None
            op(xg, wg).backward(dy)
            return xg.grad, wg.grad

        return step

    kept = []

    def core():
        # The results live until the next step, as a training step's
        # activation and gradients do (the autograd contenders keep theirs):
        # memory freed at once would be reused warm, which a step cannot do.
        kept[:] = [None]
        kept[:] = core_step()

    steps = {"torch": autograd_step(theirs), "adapter": autograd_step(ours), "core": core}
    worst = 0.0
    for got, ref in zip(steps["adapter"](), steps["torch"]()):
        worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
    return steps, worst


def run_training(torch, ptc, pytconv, repeats, only=None):
    rows = []
    for wl in workloads.PUBLIC:
        if only and wl.name not in only:
            continue
        steps, error = _training_steps(torch, ptc, pytconv, wl)
        # PyTorch runs before each pytconv contender: its OpenMP threads keep
        # spinning a while after a call, which slows whatever runs next, so
        # both pytconv contenders get that neighbour alike.
        order = {("torch", 0): steps["torch"], "adapter": steps["adapter"],
                 ("torch", 1): steps["torch"], "core": steps["core"]}
        timed = workloads.interleaved_medians(order, repeats=repeats, warmup=1, min_time=0.05)
        seconds = {"torch": min(timed[("torch", 0)], timed[("torch", 1)]),
                   "adapter": timed["adapter"], "core": timed["core"]}
        flops = 3 * wl.flops()
        gflops = {name: flops / s / 1e9 for name, s in seconds.items()}
        row = {
            "case": wl.name,
            "op": wl.op,
            "seconds": seconds,
            "gflops": gflops,
            "core_ratio": gflops["core"] / gflops["torch"],
            "adapter_ratio": gflops["adapter"] / gflops["torch"],
            "adapter_over_core": seconds["core"] / seconds["adapter"],
            "max_relative_error_vs_torch": error,
            "checked": error <= CHECK_TOLERANCE,
        }
        rows.append(row)
        _print_row(row)
    return rows


def run_tiny_call(torch, ptc, repeats):
    """Microseconds per forward call on 1x1x8x8 with a 3x3 kernel, padding 1:
    functional calls and layer calls, without autograd (inference) and with
    a weight that requires grad (the forward of a training step)."""
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 8, 8, generator=gen)
    w = torch.randn(1, 1, 3, 3, generator=gen)
    wg = w.clone().requires_grad_()
    theirs, ours = torch.nn.Conv2d(1, 1, 3, padding=1), ptc.Conv2d(1, 1, 3, padding=1)
    ours.load_state_dict(theirs.state_dict())

    def no_grad(layer):
        def call():
            with torch.no_grad():
                return layer(x)

        return call

    pairs = {
        "functional": (lambda: F.conv2d(x, w, None, 1, 1), lambda: ptc.conv(x, w, None, 1, 1)),
        "functional, weight requires grad": (lambda: F.conv2d(x, wg, None, 1, 1), lambda: ptc.conv(x, wg, None, 1, 1)),
        "layer under torch.no_grad": (no_grad(theirs), no_grad(ours)),
        "layer (parameters require grad)": (lambda: theirs(x), lambda: ours(x)),
    }
    fns = {}
    for name, (torch_call, adapter_call) in pairs.items():
        fns[(name, "torch")] = torch_call
        fns[(name, "adapter")] = adapter_call
    seconds = workloads.interleaved_medians(fns, repeats=repeats, warmup=200, min_time=0.05)
    return {
        name: {
            "torch_us": seconds[(name, "torch")] * 1e6,
            "adapter_us": seconds[(name, "adapter")] * 1e6,
            "ratio": seconds[(name, "adapter")] / seconds[(name, "torch")],
        }
        for name in pairs
    }


def _print_header():
    print(f"{'case':<12} {'op':<15} {'torch':>7} {'adapter':>8} {'core':>7} {'core/torch':>11} "
          f"{'adapter/torch':>14} {'adapter/core':>13}  check")
    print(f"{'':<12} {'':<15} {'GFLOP/s (training step)':^24}")


def _print_row(r):
    g = r["gflops"]
    flag = "ok" if r["checked"] else f"DIFFERS ({r['max_relative_error_vs_torch']:.1e})"
    print(f"{r['case']:<12} {r['op']:<15} {g['torch']:>7.1f} {g['adapter']:>8.1f} {g['core']:>7.1f} "
          f"{r['core_ratio']:>11.2f} {r['adapter_ratio']:>14.2f} {r['adapter_over_core']:>13.2f}  {flag}",
          flush=True)


def _geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated workload names (default: all public)")
    parser.add_argument("--json", default=os.path.join(RESULTS, "torch_adapter.json"))
    args = parser.parse_args(argv)

    import torch

    import pytconv

    ptc = pytconv.adapter("torch")
    torch.set_num_threads(args.threads)
    pytconv.set_num_threads(args.threads)

    print(f"PyTorch {torch.__version__}, pytconv {pytconv.__version__} ({pytconv._core.simd_level()}), "
          f"{args.threads} threads each, float32, {workloads.cpu_model()}\n")
    _print_header()
    only = set(filter(None, args.only.split(",")))
    unknown = only - {wl.name for wl in workloads.PUBLIC}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    rows = run_training(torch, ptc, pytconv, args.repeats, only)
    summary = {
        "core_ratio_geomean": _geomean(r["core_ratio"] for r in rows),
        "adapter_ratio_geomean": _geomean(r["adapter_ratio"] for r in rows),
        "adapter_over_core_geomean": _geomean(r["adapter_over_core"] for r in rows),
        "adapter_over_core_min": min(r["adapter_over_core"] for r in rows),
    }
    print(f"{'geomean':<28} {'':>7} {'':>8} {'':>7} {summary['core_ratio_geomean']:>11.2f} "
          f"{summary['adapter_ratio_geomean']:>14.2f} {summary['adapter_over_core_geomean']:>13.2f}")

    # The fixed cost of a call is single-threaded work; with two threads,
    # waking PyTorch's second OpenMP thread for a 1x1x8x8 problem on busy
    # cores costs more than the call itself and would swamp what is measured.
    torch.set_num_threads(1)
    pytconv.set_num_threads(1)
    tiny = run_tiny_call(torch, ptc, max(args.repeats, 9))
    torch.set_num_threads(args.threads)
    pytconv.set_num_threads(args.threads)
    print("\ntiny call, 1x1x8x8 input, 3x3 kernel, padding 1, one thread each "
          "(microseconds per forward call):")
    for name, r in tiny.items():
        print(f"  {name:<34} torch {r['torch_us']:7.2f}   adapter {r['adapter_us']:7.2f}   "
              f"adapter/torch {r['ratio']:.2f}x")

    targets = {
        "training step: adapter/core >= 0.9 in every workload":
            summary["adapter_over_core_min"] >= TARGET_ADAPTER_OVER_CORE,
        "tiny functional call: adapter/torch < 2": tiny["functional"]["ratio"] < TARGET_TINY_CALL,
        "results agree with torch": all(r["checked"] for r in rows),
    }
    print("\ntargets:")
    for name, met in targets.items():
        print(f"  {'met' if met else 'MISSED':<7} {name}")

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": workloads.cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "torch": torch.__version__,
        "pytconv": pytconv.__version__,
        "simd": pytconv._core.simd_level(),
        "threads": args.threads,
        "dtype": "float32",
        "repeats": args.repeats,
        "rows": rows,
        "summary": summary,
        "tiny_call_one_thread": tiny,
        "targets": targets,
    }
    workloads.write_json(args.json, report, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
