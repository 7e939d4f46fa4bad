#!/usr/bin/env python
"""pytconv's GPU path (CuPy arrays) against PyTorch's cuDNN convolutions.

    python benchmarks/bench_gpu.py             # public workloads + larger batches
    python benchmarks/bench_gpu.py --quick     # fewer repeats
    python benchmarks/bench_gpu.py --only resnet3x3,conv3d --no-train

Needs CuPy and an NVIDIA GPU (pytconv.gpu.status() says why not otherwise:
the script then exits with status 2 and writes nothing), and PyTorch with
CUDA for the peer columns. float32 throughout.

For each workload of benchmarks/workloads.py (PUBLIC, then each again with a
larger batch), in one process and round-robin (workloads.interleaved_medians):

* pytconv           pytconv.conv / conv_transpose on CuPy arrays (cuBLAS in
                    plain FP32: CuPy uses TF32 only when CUPY_TF32=1 is set)
* cudnn_fp32        torch.nn.functional with cudnn.allow_tf32 = False
* cudnn_tf32        the same with cudnn.allow_tf32 = True
* cudnn.benchmark is on for both (cuDNN picks its fastest algorithm).

"forward" is one call; "train" is forward + input gradient + weight gradient
(pytconv: the three public functions; PyTorch: autograd), counted as 3x the
forward FLOPs. Every timed callable ends with a device synchronisation, so
the medians are wall times of finished GPU work. Before timing, each row
checks that pytconv and cuDNN (FP32) agree (relative error < 1e-3).

Results: a table on stdout and benchmarks/results/gpu.json (device name,
versions, GFLOP/s of every contender and pytconv's ratios; the geometric mean
of the forward ratio to cudnn_fp32 is the project's target, >= 0.5).
"""

from __future__ import annotations

import argparse
import dataclasses
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
TARGET_FORWARD_GEOMEAN_VS_CUDNN_FP32 = 0.5
CHECK_TOLERANCE = 1e-3

#: Batch multiplier of the "larger batches" rows, per number of spatial dims.
LARGE_BATCH_FACTOR = {1: 8, 2: 8, 3: 4}


def larger_batches(cases):
    out = []
    for w in cases:
        factor = LARGE_BATCH_FACTOR.get(w.ndim, 2)
        out.append(dataclasses.replace(w, name=f"{w.name}_x{factor}", batch=w.batch * factor))
    return out


def _torch_fn(torch, w):
    F = torch.nn.functional
    if w.ndim not in (1, 2, 3):
        return None
    return getattr(F, f"conv{w.ndim}d" if w.op == "conv" else f"conv_transpose{w.ndim}d")


def _relative_error(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def contenders(w, cp, torch, train: bool):
    """name -> callable running one forward (or training step) to completion."""
    import pytconv

    x, wt, dy = w.arrays(np.float32, seed=0)
    kw = dict(stride=w.stride, padding=w.padding, dilation=w.dilation, groups=w.groups)
    gx, gw, gdy = (cp.asarray(a) for a in (x, wt, dy))
    device = cp.cuda.Device()
    fns = {}

    if w.op == "conv":

        def pt_forward():
            return pytconv.conv(gx, gw, **kw)

        def pt_train():
            pytconv.conv(gx, gw, **kw)
            pytconv.conv_input_grad(gx.shape, gw, gdy, **kw)
            pytconv.conv_weight_grad(gx, gw.shape, gdy, **kw)

    else:

        def pt_forward():
            return pytconv.conv_transpose(gx, gw, **kw)

        def pt_train():
            pytconv.conv_transpose(gx, gw, **kw)
            pytconv.conv_transpose_input_grad(gx.shape, gw, gdy, **kw)
            pytconv.conv_transpose_weight_grad(gx, gw.shape, gdy, **kw)

    def synced(fn, sync):
        def run():
            fn()
            sync()

        return run

    fns["pytconv"] = synced(pt_train if train else pt_forward, device.synchronize)

    tfn = _torch_fn(torch, w) if torch is not None else None
    if tfn is not None:
        tx = torch.from_numpy(x).cuda().requires_grad_(train)
        tw = torch.from_numpy(wt).cuda().requires_grad_(train)
        tdy = torch.from_numpy(dy).cuda()

        def torch_forward():
            with torch.no_grad():
                return tfn(tx, tw, **kw)

        def torch_train():
            tx.grad = tw.grad = None
            tfn(tx, tw, **kw).backward(tdy)

        for name, tf32 in (("cudnn_fp32", False), ("cudnn_tf32", True)):

            def run(tf32=tf32):
                torch.backends.cudnn.allow_tf32 = tf32
                (torch_train if train else torch_forward)()
                torch.cuda.synchronize()

            fns[name] = run

        # The same problem: pytconv against cuDNN without TF32.
        torch.backends.cudnn.allow_tf32 = False
        ref = torch_forward().cpu().numpy()
        err = _relative_error(cp.asnumpy(pt_forward()), ref)
        if err > CHECK_TOLERANCE:
            raise RuntimeError(f"{w.name}: pytconv and cuDNN differ (relative error {err:.2e})")
    return fns


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--only", help="comma-separated workload names (with or without the _xN suffix)")
    ap.add_argument("--no-train", action="store_true", help="forward only")
    ap.add_argument("--no-large", action="store_true", help="skip the larger-batch rows")
    ap.add_argument("--output", default=os.path.join(RESULTS, "gpu.json"))
    args = ap.parse_args(argv)

    import pytconv.gpu

    ok, reason = pytconv.gpu.status()
    if not ok:
        print(f"bench_gpu: the GPU path is not available: {reason}", file=sys.stderr)
        return 2
    import cupy as cp

    try:
        import torch

        if not torch.cuda.is_available():
            print("bench_gpu: PyTorch has no CUDA device; timing pytconv alone", file=sys.stderr)
            torch = None
        else:
            torch.backends.cudnn.benchmark = True
    except ImportError:
        print("bench_gpu: PyTorch is not installed; timing pytconv alone", file=sys.stderr)
        torch = None

    cases = list(workloads.PUBLIC)
    if not args.no_large:
        cases += larger_batches(workloads.PUBLIC)
    if args.only:
        wanted = set(args.only.split(","))
        cases = [w for w in cases if w.name in wanted or w.name.rsplit("_x", 1)[0] in wanted]
    repeats, min_time = (3, 0.02) if args.quick else (7, 0.1)

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": name,
        "status": reason,
        "cupy": cp.__version__,
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "torch": None if torch is None else torch.__version__,
        "cudnn": None if torch is None else torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "dtype": "float32",
        "workspace_bytes": pytconv.gpu.get_workspace_limit(),
        "repeats": repeats,
        "min_time_s": min_time,
        "rows": [],
    }
    modes = ["forward"] + ([] if args.no_train else ["train"])
    header = f"{'case':<18} {'mode':<8} {'pytconv':>9} {'cudnn32':>9} {'tf32':>9} {'vs32':>6} {'vsTF32':>6}"
    print(f"device: {name}\n{header}\n{'-' * len(header)}")
    for w in cases:
        for mode in modes:
            fns = contenders(w, cp, torch, train=(mode == "train"))
            secs = workloads.interleaved_medians(fns, repeats=repeats, warmup=2, min_time=min_time)
            flops = w.flops() * (3 if mode == "train" else 1)
            gflops = {k: flops / s / 1e9 for k, s in secs.items()}
            row = {"case": w.name, "op": w.op, "mode": mode, "flops": flops, "seconds": secs,
                   "gflops": gflops}
            for peer in ("cudnn_fp32", "cudnn_tf32"):
                if peer in gflops:
                    row[f"ratio_vs_{peer}"] = gflops["pytconv"] / gflops[peer]
            report["rows"].append(row)
            fmt = lambda v: f"{v:9.0f}" if v is not None else f"{'-':>9}"  # noqa: E731
            rfmt = lambda v: f"{v:6.2f}" if v is not None else f"{'-':>6}"  # noqa: E731
            print(f"{w.name:<18} {mode:<8} {fmt(gflops['pytconv'])} {fmt(gflops.get('cudnn_fp32'))} "
                  f"{fmt(gflops.get('cudnn_tf32'))} {rfmt(row.get('ratio_vs_cudnn_fp32'))} "
                  f"{rfmt(row.get('ratio_vs_cudnn_tf32'))}", flush=True)

    summary = {}
    for mode in modes:
        for peer in ("cudnn_fp32", "cudnn_tf32"):
            ratios = [r[f"ratio_vs_{peer}"] for r in report["rows"]
                      if r["mode"] == mode and f"ratio_vs_{peer}" in r]
            if ratios:
                summary[f"{mode}_geomean_vs_{peer}"] = math.exp(sum(map(math.log, ratios)) / len(ratios))
    target = summary.get("forward_geomean_vs_cudnn_fp32")
    summary["target_forward_geomean_vs_cudnn_fp32"] = TARGET_FORWARD_GEOMEAN_VS_CUDNN_FP32
    summary["target_met"] = None if target is None else target >= TARGET_FORWARD_GEOMEAN_VS_CUDNN_FP32
    report["summary"] = summary
    print()
    for k, v in summary.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")

    workloads.write_json(args.output, report)
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
