#!/usr/bin/env python
"""pytconv's TensorFlow adapter against TensorFlow's own convolutions: one
training step (forward + input gradient + weight gradient through
tf.GradientTape, inside tf.function) of every public workload, float32.

    python benchmarks/bench_tf_adapter.py [--repeats 7] [--threads 2]

Contenders, timed round-robin in this one process (workloads.interleaved_medians):

* ``tf``          TensorFlow's own ops (tf.nn.conv2d / convolution / conv_transpose) in
                  their fast layout, channels last (NWC/NHWC/NDHWC);
* ``adapter NC``  pytconv_tensorflow.conv / conv_transpose, channels first
                  (data_format "NC..."), pytconv's native layout;
* ``adapter NHWC`` the same, channels last, as a drop-in for tf.nn: TensorFlow
                  transposes to and from channels first around the core;
* ``numpy``       pytconv's NumPy API doing the same three computations, channels
                  first: what the adapter adds is the difference to ``adapter NC``.

TensorFlow runs with the given intra-op threads and one inter-op thread,
pytconv with the same number of threads. GFLOP/s count a training step as 3x
the forward FLOPs of direct convolution (workloads.py). The results are
checked against each other (float32, relative 2e-3) so that every contender
computes the same thing. Prints a table and writes benchmarks/results/tf_adapter.json.
"""

from __future__ import annotations

import argparse
import datetime
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


def _tf_padding(wl, n):
    """TensorFlow's padding for the workload's symmetric padding p: "VALID",
    "SAME" where it pads exactly (p, p), else the explicit form."""
    k, s, d, p = wl.kernel, wl.stride, wl.dilation, wl.padding
    if p == 0:
        return "VALID"
    sizes = wl.spatial if wl.op == "conv" else wl.output_spatial()
    same = []
    for size in sizes:
        out = -(-size // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
        same.append((total // 2, total - total // 2))
    if all(pads == (p, p) for pads in same):
        return "SAME"
    return [[0, 0]] + [[p, p]] * n + [[0, 0]]


def _contenders(tf, ptf, wl):
    """name -> (op(x, w), channels_first): each computes the workload's forward pass."""
    n = wl.ndim
    k, s, d, p = wl.kernel, wl.stride, wl.dilation, wl.padding
    explicit_last = [[0, 0]] + [[p, p]] * n + [[0, 0]]
    explicit_first = [[0, 0], [0, 0]] + [[p, p]] * n
    tf_padding = _tf_padding(wl, n)
    if wl.op == "conv":
        if isinstance(tf_padding, list) and n != 2:
            raise ValueError(f"{wl.name}: TensorFlow has explicit padding in 2-d only")

        def tf_op(x, w):
            if n == 2:
                return tf.nn.conv2d(x, w, s, tf_padding, dilations=d)
            return tf.nn.convolution(x, w, s, tf_padding, dilations=d)

        def adapter_first(x, w):
            return ptf.conv(x, w, s, explicit_first, data_format="NC...", dilations=d, groups=wl.groups)

        def adapter_last(x, w):
            return ptf.conv(x, w, s, explicit_last, dilations=d, groups=wl.groups)

    else:
        out_last = (wl.batch,) + wl.output_spatial() + (wl.out_channels,)
        out_first = (wl.batch, wl.out_channels) + wl.output_spatial()
        if isinstance(tf_padding, list) and n != 2:
            raise ValueError(f"{wl.name}: TensorFlow has explicit padding in 2-d only")

        def tf_op(x, w):
            return tf.nn.conv_transpose(x, w, out_last, s, tf_padding, dilations=d)

        def adapter_first(x, w):
            return ptf.conv_transpose(x, w, out_first, s, explicit_first, data_format="NC...", dilations=d,
                                      groups=wl.groups)

        def adapter_last(x, w):
            return ptf.conv_transpose(x, w, out_last, s, explicit_last, dilations=d, groups=wl.groups)

    return {"tf": (tf_op, False), "adapter NC": (adapter_first, True), "adapter NHWC": (adapter_last, False)}


def _numpy_step(wl, x, w, dy):
    """The training step through pytconv's NumPy API (channels first, pytconv's layouts)."""
    import pytconv

    pad = wl.padding
    if wl.op == "conv":
        def step():
            y = pytconv.conv(x, w, None, wl.stride, pad, wl.dilation, wl.groups)
            dx = pytconv.conv_input_grad(x.shape, w, dy, wl.stride, pad, wl.dilation, wl.groups)
            dw = pytconv.conv_weight_grad(x, w.shape, dy, wl.stride, pad, wl.dilation, wl.groups)
            return y, dx, dw
    else:
        def step():
            y = pytconv.conv_transpose(x, w, None, wl.stride, pad, 0, wl.groups, wl.dilation)
            dx = pytconv.conv_transpose_input_grad(x.shape, w, dy, wl.stride, pad, wl.groups, wl.dilation)
            dw = pytconv.conv_transpose_weight_grad(x, w.shape, dy, wl.stride, pad, wl.groups, wl.dilation)
            return y, dx, dw
    return step


def _train_step(tf, op):
    @tf.function
    def step(x, w, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = op(x, w)
        dx, dw = tape.gradient(y, [x, w], output_gradients=dy)
        return y, dx, dw

    return step


def _max_rel(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--output", default=os.path.join(RESULTS, "tf_adapter.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["PYTCONV_NUM_THREADS"] = str(args.threads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.get_logger().setLevel("ERROR")
    import pytconv

    pytconv.set_num_threads(args.threads)
    ptf = pytconv.adapter("tensorflow")

    chosen = [w for w in workloads.PUBLIC if not args.only or w.name in args.only.split(",")]
    names = ("tf", "adapter NC", "adapter NHWC", "numpy")
    rows = []
    print(f"TensorFlow {tf.__version__} ({args.threads} intra-op threads, 1 inter-op), pytconv "
          f"{pytconv.__version__} ({pytconv._core.simd_level()}, {args.threads} threads), {workloads.cpu_model()}")
    print("training step (forward + input and weight gradients, tf.function), float32, GFLOP/s (3x forward FLOPs)")
    header = (f"{'case':<11} {'tf (NHWC)':>10} {'adapter NC':>11} {'adapter NHWC':>13} {'numpy API':>10} "
              f"{'NC/tf':>7} {'NHWC/tf':>8} {'NC/numpy':>9}")
    print(header)
    print("-" * len(header))
    for wl in chosen:
        x, w, dy = wl.arrays(np.float32)
        x_last, dy_last = np.moveaxis(x, 1, -1).copy(), np.moveaxis(dy, 1, -1).copy()
        w_tf = np.ascontiguousarray(np.transpose(w, tuple(range(2, 2 + wl.ndim)) + (1, 0)))
        steps, results = {}, {}
        for name, (op, first) in _contenders(tf, ptf, wl).items():
            step = _train_step(tf, op)
            inputs = [tf.constant(a) for a in ((x, w_tf, dy) if first else (x_last, w_tf, dy_last))]
            y, dx, dw = step(*inputs)
            to_first = (lambda a: a) if first else (lambda a: np.moveaxis(a, -1, 1))
            results[name] = (to_first(y.numpy()), to_first(dx.numpy()), dw.numpy())
            steps[name] = (lambda step=step, inputs=inputs: step(*inputs))
        numpy_step = _numpy_step(wl, x, w, dy)
        y, dx, dw = numpy_step()
        results["numpy"] = (y, dx, np.transpose(dw, tuple(range(2, 2 + wl.ndim)) + (1, 0)))
        steps["numpy"] = numpy_step
        errors = {
            name: max(_max_rel(a, b) for a, b in zip(results[name], results["tf"])) for name in names[1:]
        }
        seconds = workloads.interleaved_medians(steps, repeats=args.repeats, warmup=1)
        flops = 3 * wl.flops()
        gflops = {name: flops / seconds[name] / 1e9 for name in names}
        row = {
            "case": wl.name,
            "op": wl.op,
            "train_flops": flops,
            "seconds": seconds,
            "gflops": gflops,
            "ratio_vs_tf": {name: seconds["tf"] / seconds[name] for name in names[1:]},
            "adapter_nc_vs_numpy": seconds["numpy"] / seconds["adapter NC"],
            "max_rel_error_vs_tf": errors,
        }
        rows.append(row)
        flag = "" if max(errors.values()) <= CHECK_TOLERANCE else f"  MISMATCH {errors}"
        print(f"{wl.name:<11} {gflops['tf']:>10.1f} {gflops['adapter NC']:>11.1f} {gflops['adapter NHWC']:>13.1f} "
              f"{gflops['numpy']:>10.1f} {row['ratio_vs_tf']['adapter NC']:>7.2f} "
              f"{row['ratio_vs_tf']['adapter NHWC']:>8.2f} {row['adapter_nc_vs_numpy']:>9.2f}{flag}")
    geo = {name: float(np.exp(np.mean([np.log(r["ratio_vs_tf"][name]) for r in rows]))) for name in names[1:]}
    geo_numpy = float(np.exp(np.mean([np.log(r["adapter_nc_vs_numpy"]) for r in rows])))
    print(f"{'geomean':<11} {'':>10} {'':>11} {'':>13} {'':>10} {geo['adapter NC']:>7.2f} "
          f"{geo['adapter NHWC']:>8.2f} {geo_numpy:>9.2f}")

    report = {
        "benchmark": "tf_adapter",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": workloads.cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"tensorflow": tf.__version__, "pytconv": pytconv.__version__, "numpy": np.__version__,
                     "simd": pytconv._core.simd_level()},
        "threads": {"tensorflow_intra_op": args.threads, "tensorflow_inter_op": 1, "pytconv": args.threads},
        "dtype": "float32",
        "measure": "median seconds of one training step (forward + input and weight gradients via "
                   "tf.GradientTape in tf.function), interleaved; GFLOP/s = 3 x forward FLOPs / seconds",
        "layouts": {"tf": "channels last (TensorFlow's fast CPU layout)", "adapter NC": "channels first",
                    "adapter NHWC": "channels last", "numpy": "channels first (pytconv's NumPy API, no TensorFlow)"},
        "repeats": args.repeats,
        "rows": rows,
        "geomean_ratio_vs_tf": geo,
        "geomean_adapter_nc_vs_numpy": geo_numpy,
    }
    workloads.write_json(args.output, report, indent=2)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
