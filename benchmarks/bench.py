#!/usr/bin/env python
"""pytconv against PyTorch, TensorFlow and JAX on the CPU, side by side.

    python benchmarks/bench.py                 # everything (6-8 minutes on 2 idle cores)
    python benchmarks/bench.py --quick         # public workloads and conv4d, fewer repeats (3-4 minutes)
    python benchmarks/bench.py --only resnet3x3,conv4d --dtypes float32 --no-train

Every workload of benchmarks/workloads.py (PUBLIC and EXTRA) is timed for each
installed library, forward and training step (forward + input gradient +
weight gradient), float32 and float64. The libraries of one row are timed
round-robin in this one process (workloads.interleaved_medians), so machine
noise falls on all of them alike; the medians are reported as GFLOP/s and
as pytconv's ratio to the best peer. Then come the summary figures: the
transposed convolution against the convolution it is the adjoint of, float64
against PyTorch, 4-d/5-d against JAX, the fixed cost of a tiny call and the
peak memory of a large 3-d call (in fresh subprocesses).

Results go to stdout, to a JSON file and to a bar chart; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(HERE))
from benchmarks import workloads  # noqa: E402

RESULTS = os.path.join(HERE, "results")
PEERS = ("torch", "tensorflow", "jax")
LIBRARIES = ("pytconv",) + PEERS
SHORT = {"pytconv": "pytconv", "torch": "torch", "tensorflow": "tf", "jax": "jax"}
DTYPES = ("float32", "float64")

# Targets of the project (benchmarks/README.md).
TARGET_FORWARD_GEOMEAN = 0.9
TARGET_FORWARD_MIN = 0.6
TARGET_TRAIN_GEOMEAN = 0.8
TARGET_ADJOINT = 0.8
TARGET_FLOAT64_VS_TORCH = 1.5
TARGET_HIGH_RANK_VS_JAX = 10.0

# Relative error (max |a - b| / max |b|) a peer's result may show against
# pytconv's before the row is flagged: it proves the peer timed the same problem.
CHECK_TOLERANCE = {"float32": 1e-4, "float64": 1e-11}


# --------------------------------------------------------------------------
# Threads: fixed before any library starts its thread pools.


def configure_threads(threads: int) -> str:
    """Give every library `threads` threads; returns how, for the report.

    Must run before TensorFlow, JAX or PyTorch are imported. When fewer
    threads than CPUs are asked for, the process is also pinned to that many
    CPUs, so that no library (JAX has no documented thread-count setting)
    runs on more, whatever the size of its thread pool.
    """
    cpus = sorted(os.sched_getaffinity(0))
    notes = []
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
        notes.append(f"process pinned to CPUs {cpus[:threads]}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTCONV_NUM_THREADS"):
        os.environ[var] = str(threads)
    eigen = "true" if threads > 1 else "false"
    flags = " ".join(  # the caller's other XLA flags stay
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith(("--xla_cpu_multi_thread_eigen=", "intra_op_parallelism_threads="))
    )
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}"
    ).strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    notes.append(f"XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    notes.append(f"TF intra-op threads {threads}, inter-op threads 1")
    notes.append(f"torch.set_num_threads({threads}), pytconv.set_num_threads({threads})")
    return "; ".join(notes)


def source_version() -> dict:
    """Which pytconv was measured: the repository's commit (and whether the
    working tree had changes) and when the compiled core was built."""
    out = {}
    root = os.path.dirname(HERE)
    try:
        git = ["git", "-C", root]
        out["commit"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        out["working_tree"] = "modified" if dirty else "clean"
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        import pytconv._core as core

        out["core_built"] = datetime.datetime.fromtimestamp(os.path.getmtime(core.__file__),
                                                            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (ImportError, OSError):
        pass
    return out


# --------------------------------------------------------------------------
# The libraries. Each prepares a Case for one workload and dtype: two
# callables to time (forward; training step) and the conversion of their
# results back to pytconv's layout for the correctness check.


class NotAvailable(Exception):
    """The library cannot run this case; the message says why (printed as n/a)."""


class Case:
    def __init__(self, forward, train, forward_result, train_result):
        self.forward = forward
        self.train = train
        self.forward_result = forward_result  # native result -> y (NumPy, channels first)
        self.train_result = train_result  # native result -> (y, dx, dw) (NumPy, pytconv layout)


def _first_line(exc):
    """The telling line of an exception's message (TensorFlow's start with a traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "support" in line or "not implemented" in line.lower() or "Unimplemented" in line:
            return line[:160]
    return (lines[0] if lines else "")[:160]


def _tuple(v, n):
    return (v,) * n


class PytconvLib:
    name = "pytconv"

    def __init__(self, threads):
        import pytconv

        self.pt = pytconv
        pytconv.set_num_threads(threads)
        self.version = f"{pytconv.__version__} ({pytconv._core.simd_level()})"

    def case(self, wl, dtype, x, w, dy):
        pt = self.pt
        kw = dict(stride=wl.stride, padding=wl.padding, dilation=wl.dilation, groups=wl.groups)
        if wl.op == "conv":

            def forward():
                return pt.conv(x, w, **kw)

            def train():
                y = pt.conv(x, w, **kw)
                dx = pt.conv_input_grad(x.shape, w, dy, **kw)
                dw = pt.conv_weight_grad(x, w.shape, dy, **kw)
                return y, dx, dw

        else:

            def forward():
                return pt.conv_transpose(x, w, **kw)

            def train():
                y = pt.conv_transpose(x, w, **kw)
                dx = pt.conv_transpose_input_grad(x.shape, w, dy, **kw)
                dw = pt.conv_transpose_weight_grad(x, w.shape, dy, **kw)
                return y, dx, dw

        return Case(forward, train, lambda y: y, lambda r: r)

    def tiny(self, x, w):
        pt = self.pt
        return lambda: pt.conv(x, w, padding=1)


class TorchLib:
    name = "torch"

    def __init__(self, threads):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        self.version = torch.__version__

    def _fn(self, wl):
        F = self.torch.nn.functional
        if wl.ndim > 3:
            raise NotAvailable(f"PyTorch has no {wl.ndim}-d convolution")
        if wl.op == "conv":
            f = getattr(F, f"conv{wl.ndim}d")
            return lambda x, w: f(x, w, None, wl.stride, wl.padding, wl.dilation, wl.groups)
        f = getattr(F, f"conv_transpose{wl.ndim}d")
        return lambda x, w: f(x, w, None, wl.stride, wl.padding, 0, wl.groups, wl.dilation)

    def case(self, wl, dtype, x, w, dy):
        torch = self.torch
        f = self._fn(wl)
        xt, wt, dyt = (torch.from_numpy(a.copy()) for a in (x, w, dy))
        xg = xt.clone().requires_grad_(True)
        wg = wt.clone().requires_grad_(True)

        def forward():
            with torch.no_grad():
                return f(xt, wt)

        def train():
            y = f(xg, wg)
            dx, dw = torch.autograd.grad(y, (xg, wg), dyt)
            return y, dx, dw

        return Case(
            forward,
            train,
            lambda y: y.numpy(),
            lambda r: tuple(t.detach().numpy() for t in r),
        )

    def tiny(self, x, w):
        torch = self.torch
        F = torch.nn.functional
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)

        # Neither tensor requires a gradient: the plain call records no graph.
        return lambda: F.conv2d(xt, wt, None, 1, 1)


def _same_pads(size, k, stride, dilation):
    """TensorFlow's "SAME" padding (low, high) of a convolution of `size`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (k - 1) + 1 - size, 0)
    return out, (total // 2, total - total // 2)


class TensorFlowLib:
    """TensorFlow in its own fast layout, channels last (NWC/NHWC/NDHWC); the
    arrays are converted outside the timing."""

    name = "tensorflow"

    def __init__(self, threads):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        # Each case makes its own tf.function on purpose; TF's warning about it is noise here.
        tf.get_logger().setLevel("ERROR")
        self.tf = tf
        self.version = tf.__version__

    @staticmethod
    def _to_last(a):
        return np.ascontiguousarray(np.moveaxis(a, 1, -1))

    @staticmethod
    def _to_first(a):
        return np.moveaxis(np.asarray(a), -1, 1)

    def _fn(self, wl, shape):
        """The TF op for the workload, and how to convert the weight to and from TF's layout."""
        tf = self.tf
        n = wl.ndim
        if n > 3:
            raise NotAvailable(f"TensorFlow has no {n}-d convolution")
        if wl.stride > 1 and wl.dilation > 1:
            raise NotAvailable("TensorFlow has no strided dilated convolution on CPU")
        k, s, d, p = wl.kernel, wl.stride, wl.dilation, wl.padding
        # (C_out, C_in/g, k...) and (C_in, C_out/g, k...) both go to (k..., second, first).
        perm = tuple(range(2, 2 + n)) + (1, 0)
        inverse = tuple(np.argsort(perm))
        w_to = lambda a: np.ascontiguousarray(np.transpose(a, perm))  # noqa: E731
        w_from = lambda a: np.transpose(np.asarray(a), inverse)  # noqa: E731
        if wl.op == "conv":
            same = [_same_pads(i, k, s, d) for i in wl.spatial]
            if p == 0:
                padding = "VALID"
            elif all(pads == (p, p) for _, pads in same):
                padding = "SAME"
            else:
                padding = [[0, 0]] + [[p, p]] * n + [[0, 0]]
            if wl.groups == wl.in_channels and wl.groups > 1:
                if n != 2:
                    raise NotAvailable(f"TensorFlow has no {n}-d depthwise convolution")
                mult = wl.out_channels // wl.groups
                C = wl.in_channels

                def w_to(a):  # (C*m, 1, kh, kw) -> (kh, kw, C, m)
                    return np.ascontiguousarray(a.reshape((C, mult) + a.shape[2:]).transpose(2, 3, 0, 1))

                def w_from(a):
                    a = np.asarray(a).transpose(2, 3, 0, 1)
                    return a.reshape((C * mult, 1) + a.shape[2:])

                def f(x, w):
                    return tf.nn.depthwise_conv2d(x, w, (1, s, s, 1), padding, dilations=(d, d))

            elif isinstance(padding, list) and n != 2:
                # Explicit padding exists only for 2-d: pad, then a valid convolution.
                def f(x, w):
                    return tf.nn.convolution(tf.pad(x, padding), w, s, "VALID", dilations=d)

            elif n == 2:

                def f(x, w):
                    return tf.nn.conv2d(x, w, s, padding, dilations=d)

            else:

                def f(x, w):
                    return tf.nn.convolution(x, w, s, padding, dilations=d)

            return f, w_to, w_from
        if wl.groups > 1:
            raise NotAvailable("TensorFlow has no grouped transposed convolution")
        if d > 1:
            raise NotAvailable("TensorFlow has no dilated transposed convolution on CPU")
        out = wl.output_spatial()
        if p == 0 and list(wl.spatial) == [(o - k) // s + 1 for o in out]:
            padding = "VALID"
        elif all(_same_pads(o, k, s, d) == (i, (p, p)) for o, i in zip(out, wl.spatial)):
            padding = "SAME"
        else:
            raise NotAvailable("TensorFlow's transposed convolution has only SAME/VALID padding")
        out_shape = (wl.batch,) + tuple(out) + (wl.out_channels,)

        def f(x, w):
            return tf.nn.conv_transpose(x, w, out_shape, s, padding)

        return f, w_to, w_from

    def case(self, wl, dtype, x, w, dy):
        tf = self.tf
        f, w_to, w_from = self._fn(wl, x.shape)
        xt = tf.constant(self._to_last(x))
        wt = tf.constant(w_to(w))
        dyt = tf.constant(self._to_last(dy))

        def train(x, w, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = f(x, w)
            dx, dw = tape.gradient(y, [x, w], output_gradients=dy)
            return y, dx, dw

        try:  # traced here, outside the timing; TF raises for ops it lacks
            forward_fn = tf.function(f).get_concrete_function(xt, wt)
            train_fn = tf.function(train).get_concrete_function(xt, wt, dyt)
        except (tf.errors.OpError, TypeError, ValueError, NotImplementedError) as exc:
            raise NotAvailable(f"TensorFlow: {type(exc).__name__}: {_first_line(exc)}")
        return Case(
            lambda: forward_fn(xt, wt),
            lambda: train_fn(xt, wt, dyt),
            lambda y: self._to_first(y),
            lambda r: (self._to_first(r[0]), self._to_first(r[1]), w_from(r[2])),
        )

    def tiny(self, x, w):
        tf = self.tf
        xt = tf.constant(self._to_last(x))
        wt = tf.constant(np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0))))
        # Eager: for one small op it costs less than calling a tf.function.
        return lambda: tf.nn.conv2d(xt, wt, 1, "SAME")


class JaxLib:
    """JAX with its default layout, channels first (lax.conv_general_dilated
    with no dimension_numbers: (N, C, spatial...) and (O, I, spatial...)),
    every function under jax.jit, compiled outside the timing."""

    name = "jax"

    def __init__(self, threads):
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64
        import jax.numpy as jnp
        from jax import lax

        self.jax, self.jnp, self.lax = jax, jnp, lax
        self.version = jax.__version__

    def _fn(self, wl):
        jnp, lax = self.jnp, self.lax
        n, k, s, d, p, g = wl.ndim, wl.kernel, wl.stride, wl.dilation, wl.padding, wl.groups
        if wl.op == "conv":
            return lambda x, w: lax.conv_general_dilated(
                x, w, _tuple(s, n), [(p, p)] * n, rhs_dilation=_tuple(d, n), feature_group_count=g
            )
        edge = d * (k - 1) - p

        def f(x, w):
            # The transposed convolution as JAX writes it: a convolution of the
            # stride-dilated input with the flipped kernel, in/out channels swapped.
            cin, cout_g = w.shape[:2]
            ks = w.shape[2:]
            wt = w.reshape((g, cin // g, cout_g) + ks).swapaxes(1, 2).reshape((g * cout_g, cin // g) + ks)
            wt = jnp.flip(wt, axis=tuple(range(2, 2 + n)))
            return lax.conv_general_dilated(
                x, wt, _tuple(1, n), [(edge, edge)] * n, lhs_dilation=_tuple(s, n),
                rhs_dilation=_tuple(d, n), feature_group_count=g,
            )

        return f

    def case(self, wl, dtype, x, w, dy):
        jax = self.jax
        f = self._fn(wl)
        xj, wj, dyj = (jax.device_put(a) for a in (x, w, dy))

        def train(x, w, dy):
            y, vjp = jax.vjp(f, x, w)
            dx, dw = vjp(dy)
            return y, dx, dw

        # Compiled here (ahead of time), outside the timing.
        forward_fn = jax.jit(f).lower(xj, wj).compile()
        train_fn = jax.jit(train).lower(xj, wj, dyj).compile()

        return Case(
            lambda: forward_fn(xj, wj).block_until_ready(),
            lambda: jax.block_until_ready(train_fn(xj, wj, dyj)),
            lambda y: np.asarray(y),
            lambda r: tuple(np.asarray(a) for a in r),
        )

    def tiny(self, x, w):
        jax, lax = self.jax, self.lax
        xj, wj = jax.device_put(x), jax.device_put(w)
        f = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)]))
        return lambda: f(xj, wj).block_until_ready()


LIBRARY_CLASSES = {"pytconv": PytconvLib, "torch": TorchLib, "tensorflow": TensorFlowLib, "jax": JaxLib}
# Imported in this order (TensorFlow first, then PyTorch, then JAX): every
# order tried works, this one keeps TF's oneDNN set-up ahead of PyTorch's.
IMPORT_ORDER = ("tensorflow", "torch", "jax", "pytconv")


def load_libraries(names, threads):
    libs, missing = {}, {}
    for name in IMPORT_ORDER:
        if name not in names:
            continue
        try:
            libs[name] = LIBRARY_CLASSES[name](threads)
        except ImportError as exc:
            missing[name] = f"not installed ({exc})"
    return {n: libs[n] for n in LIBRARIES if n in libs}, missing


# --------------------------------------------------------------------------
# Timing


def relative_error(a, ref):
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        return math.inf
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return float(np.max(np.abs(a - ref))) / scale if scale > 0 else float(np.max(np.abs(a), initial=0.0))


def time_row(fns: dict, settings, first=None):
    """Median seconds per call of each (already warmed-up) callable, and the
    number of samples behind each median.

    A callable whose first call (`first`: seconds, taken after compilation)
    lasted more than settings.slow_seconds keeps that one call as its figure:
    a further sample would cost more time than it could change the ratio of a
    call that slow. One timed call of each other callable gives the cost of a
    round; the repeats are scaled to make the row last about
    settings.row_seconds (between settings.min_repeats and
    settings.max_repeats) and run round-robin with workloads.interleaved_medians.
    """
    first = first or {}
    slow = {n: t for n, t in first.items() if n in fns and t > settings.slow_seconds}
    fast = {n: fn for n, fn in fns.items() if n not in slow}
    seconds, samples = dict(slow), {n: 1 for n in slow}
    if fast:
        once = {}
        for name, fn in fast.items():
            start = time.perf_counter()
            fn()
            once[name] = time.perf_counter() - start
        # A turn: one untimed call (see interleaved_medians), then the timed ones.
        per_round = sum(t + max(t, settings.min_time) for t in once.values())
        repeats = int(settings.row_seconds / per_round)
        repeats = max(settings.min_repeats, min(settings.max_repeats, repeats))
        seconds.update(workloads.interleaved_medians(fast, repeats=repeats, warmup=0, min_time=settings.min_time))
        samples.update({n: repeats for n in fast})
    return {n: seconds[n] for n in fns}, {n: samples[n] for n in fns}


def run_row(libs, wl, dtype, mode, settings):
    """One table row: every library on one workload, one dtype, one mode
    ("forward" or "train"). Returns the row's record."""
    flops = wl.flops() * (3 if mode == "train" else 1)
    x, w, dy = wl.arrays(dtype)
    fns, notes, errors, first = {}, {}, {}, {}
    reference = None
    for name, lib in libs.items():
        try:
            case = lib.case(wl, dtype, x, w, dy)
            fn = case.forward if mode == "forward" else case.train
            start = time.perf_counter()
            result = fn()  # the first call, after compiling/tracing: warms up and checks the answer
            first[name] = time.perf_counter() - start
        except NotAvailable as exc:
            notes[name] = str(exc)
            continue
        except Exception as exc:
            if name == "pytconv":
                raise
            # A peer without a kernel for this case (TensorFlow has, e.g., no
            # float64 dilated convolution gradient on CPU) gets n/a, with why.
            notes[name] = f"failed: {type(exc).__name__}: {_first_line(exc)}"
            continue
        if mode == "forward":
            got = (case.forward_result(result),)
        else:
            got = case.train_result(result)
        if name == "pytconv":
            reference = tuple(np.array(a) for a in got)
        elif reference is not None:
            err = max(relative_error(a, r) for a, r in zip(got, reference))
            errors[name] = err
            if not err <= CHECK_TOLERANCE[dtype]:
                notes[name] = f"result differs from pytconv's (relative error {err:.2e})"
        fns[name] = fn
        del result, got
    seconds, samples = time_row(fns, settings, first) if fns else ({}, {})
    gflops = {name: (flops / seconds[name] / 1e9 if name in seconds else None) for name in libs}
    # A peer whose answer differs timed some other problem: shown, never "best".
    peers = {n: v for n, v in gflops.items()
             if n != "pytconv" and v is not None and "differs" not in notes.get(n, "")}
    best = max(peers, key=peers.get) if peers else None
    mine = gflops.get("pytconv")
    ratio = mine / peers[best] if (mine and best) else None
    vs_torch = mine / gflops["torch"] if (mine and gflops.get("torch")) else None
    return {
        "workload": wl.name,
        "set": "public" if wl in workloads.PUBLIC else "extra",
        "op": wl.op,
        "ndim": wl.ndim,
        "mode": mode,
        "dtype": dtype,
        "gflop": flops / 1e9,
        "seconds": seconds,
        "samples": samples,
        "gflops": gflops,
        "best_peer": best,
        "ratio_best_peer": ratio,
        "ratio_torch": vs_torch,
        "ratio_jax": mine / gflops["jax"] if (mine and gflops.get("jax")) else None,
        "check_relative_error": errors,
        "notes": notes,
    }


def run_adjoint(pytconv_lib, wl, dtype, settings):
    """A transposed convolution against the convolution it is the adjoint of."""
    pt = pytconv_lib.pt
    adj = wl.adjoint()
    x, w, _ = wl.arrays(dtype)
    z = adj.arrays(dtype)[0]
    kw = dict(stride=wl.stride, padding=wl.padding, dilation=wl.dilation, groups=wl.groups)
    fns = {
        "conv_transpose": lambda: pt.conv_transpose(x, w, **kw),
        "conv": lambda: pt.conv(z, w, **kw),
    }
    for fn in fns.values():
        fn()
    seconds, _ = time_row(fns, settings)
    gf = {k: wl.flops() / v / 1e9 for k, v in seconds.items()}
    return {
        "workload": wl.name,
        "dtype": dtype,
        "conv_shape": list(adj.input_shape()),
        "gflops_conv_transpose": gf["conv_transpose"],
        "gflops_conv": gf["conv"],
        "ratio": gf["conv_transpose"] / gf["conv"],
    }


def run_overhead(libs, settings):
    """Microseconds per call on a tiny problem (1x1x8x8 input, 3x3 kernel)."""
    x, w, _ = workloads.TINY.arrays(np.float32)
    fns = {}
    for name, lib in libs.items():
        fn = lib.tiny(x, w)
        for _ in range(20):
            fn()
        fns[name] = fn
    seconds = workloads.interleaved_medians(fns, repeats=settings.overhead_repeats, warmup=0, min_time=0.05)
    return {name: s * 1e6 for name, s in seconds.items()}


def overhead_child(lib_names, repeats):
    """Runs in a subprocess started with --threads 1: the small-call figures
    with one thread per library, printed as JSON."""
    libs, _ = load_libraries(lib_names, 1)
    settings = Settings(quick=False)
    settings.overhead_repeats = repeats
    print(json.dumps(run_overhead(libs, settings)))


def run_overhead_one_thread(lib_names, settings):
    """The small-call figures with one thread per library, in a fresh process
    pinned to one CPU. A call this small has nothing to share out, and with
    more threads a library that always opens a parallel region (PyTorch's
    OpenMP) waits in each call for a thread the busy machine has descheduled:
    its figure then swings between microseconds and milliseconds."""
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", "1", "--overhead-child", ",".join(lib_names),
           str(settings.overhead_repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------
# Peak memory, each measurement in a fresh interpreter.


def _status_mib(field):
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss():
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0);
    False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(lib_name, mode, threads):
    """Runs in a subprocess: one large 3-d call, and how far it raised the peak RSS.

    The library is imported and warmed up on a small call first, and the
    arrays are made before the baseline is read, so the increase is the call's
    own memory: its outputs and its working memory. The peak is VmHWM, the
    high-water mark of this process's own memory map (ru_maxrss would not do:
    Linux carries it over from the parent across fork and exec), reset to the
    current RSS just before the call where the kernel allows.
    """
    libs, missing = load_libraries((lib_name,), threads)
    if lib_name not in libs:
        print(json.dumps({"error": missing.get(lib_name, "unavailable")}))
        return
    lib = libs[lib_name]
    small = workloads.Workload("small", "conv", 1, 8, (6, 6, 6), 8, 3, 1, 1, 1)
    case = lib.case(small, "float32", *small.arrays(np.float32))
    (case.forward if mode == "forward" else case.train)()
    wl = workloads.LARGE3D
    x, w, dy = wl.arrays(np.float32)
    case = lib.case(wl, "float32", x, w, dy)
    del x, w, dy  # the case holds what it needs (PyTorch: its own copies)
    fn = case.forward if mode == "forward" else case.train
    reset = _reset_peak_rss()
    before = _status_mib("VmRSS")
    before_peak = _status_mib("VmHWM")
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    after_peak = _status_mib("VmHWM")
    itemsize = 4
    n_x = math.prod(wl.input_shape())
    n_w = math.prod(wl.weight_shape())
    n_y = math.prod(wl.output_shape())
    if mode == "forward":
        inputs, outputs = (n_x + n_w) * itemsize, n_y * itemsize
    else:
        inputs, outputs = (n_x + n_w + n_y) * itemsize, (n_y + n_x + n_w) * itemsize
    increase = after_peak - before
    print(json.dumps({
        "library": lib_name,
        "mode": mode,
        "seconds": elapsed,
        "inputs_mib": inputs / 2**20,
        "outputs_mib": outputs / 2**20,
        "peak_increase_mib": increase,
        "working_mib": increase - outputs / 2**20,
        # Exact when the peak was reset or the call set a new one; otherwise an upper bound.
        "exact": reset or after_peak > before_peak,
    }))
    del result


def run_memory(lib_names, modes, threads):
    out = []
    for name in lib_names:
        for mode in modes:
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, mode, "--threads", str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                out.append({"library": name, "mode": mode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
                continue
            record = json.loads(lines[-1])
            record.setdefault("library", name)
            record.setdefault("mode", mode)
            out.append(record)
    return out


# --------------------------------------------------------------------------
# Report


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _fmt(v, width=8, digits=1):
    return f"{'n/a':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def print_table(rows, lib_names, dtype, mode):
    sel = [r for r in rows if r["dtype"] == dtype and r["mode"] == mode]
    if not sel:
        return
    title = "forward" if mode == "forward" else "training step (forward + input and weight gradients, 3x FLOPs)"
    print(f"\n{title}, {dtype}: GFLOP/s (median); ratio = pytconv / best peer; vs torch = pytconv / torch")
    head = f"{'workload':<14}{'GFLOP':>8}" + "".join(f"{SHORT[n]:>9}" for n in lib_names)
    print(head + f"{'best':>6}{'ratio':>7}{'vs torch':>9}")
    for r in sel:
        line = f"{r['workload']:<14}{r['gflop']:>8.2f}" + "".join(_fmt(r["gflops"][n], 9) for n in lib_names)
        best = SHORT[r["best_peer"]] if r["best_peer"] else "-"
        line += f"{best:>6}" + _fmt(r["ratio_best_peer"], 7, 2) + _fmt(r["ratio_torch"], 9, 2)
        print(line)
    reasons = {}
    for r in sel:
        for n, note in r["notes"].items():
            if "differs" in note:
                print(f"  !! {r['workload']} {SHORT[n]}: {note}")
            else:
                reasons.setdefault((n, note), []).append(r["workload"])
    for (n, note), names in reasons.items():
        print(f"  n/a {SHORT[n]} ({', '.join(names)}): {note}")


def summarise(rows, adjoint, overhead, memory, threads):
    """The figures the project's targets are stated in (benchmarks/README.md)."""
    s = {}

    def pick(mode, dtype, sets=("public",), key="ratio_best_peer"):
        return {r["workload"]: r[key] for r in rows
                if r["mode"] == mode and r["dtype"] == dtype and r["set"] in sets and r[key]}

    for label, mode in (("forward_float32", "forward"), ("train_float32", "train")):
        r = pick(mode, "float32")
        if r:
            worst = min(r, key=r.get)
            s[label] = {"geomean": geomean(r.values()), "min": r[worst], "min_workload": worst,
                        "count": len(r), "ratios": r}
    r = pick("forward", "float32", sets=("extra",))
    r.update({k + " (train)": v for k, v in pick("train", "float32", sets=("extra",)).items()})
    if r:
        worst = min(r, key=r.get)
        s["extra_float32"] = {"min": r[worst], "min_workload": worst, "ratios": r}
    if adjoint:
        rs = {f"{a['workload']} {a['dtype']}": a["ratio"] for a in adjoint}
        worst = min(rs, key=rs.get)
        s["adjoint"] = {"min": rs[worst], "min_workload": worst, "ratios": rs}
    rs = {}
    for r in rows:
        if r["dtype"] == "float64" and r["ratio_torch"]:
            rs[f"{r['workload']} {r['mode']}"] = r["ratio_torch"]
    if rs:
        worst = min(rs, key=rs.get)
        s["float64_vs_torch"] = {"geomean": geomean(rs.values()), "min": rs[worst], "min_case": worst, "ratios": rs}
    rs = {}
    for r in rows:
        if r["ndim"] > 3 and r["ratio_jax"]:
            rs[f"{r['workload']} {r['mode']} {r['dtype']}"] = r["ratio_jax"]
    if rs:
        worst = min(rs, key=rs.get)
        s["high_rank_vs_jax"] = {"geomean": geomean(rs.values()), "min": rs[worst], "min_case": worst, "ratios": rs}
    if overhead:
        s["small_call_us"] = overhead
        s["threads"] = threads
    if memory:
        s["memory"] = memory
    return s


def print_summary(s, settings):
    print("\nSummary (targets in brackets)")

    def mark(ok):
        return "ok" if ok else "BELOW TARGET"

    a = s.get("forward_float32")
    if a:
        ok = a["geomean"] >= TARGET_FORWARD_GEOMEAN and a["min"] >= TARGET_FORWARD_MIN
        print(f"(a) forward float32, pytconv / best peer over {a['count']} public workloads: geometric mean "
              f"{a['geomean']:.2f} [>= {TARGET_FORWARD_GEOMEAN}], min {a['min']:.2f} ({a['min_workload']}) "
              f"[>= {TARGET_FORWARD_MIN}]  {mark(ok)}")
    b = s.get("train_float32")
    if b:
        print(f"(b) training step float32, pytconv / best peer over {b['count']} public workloads: geometric mean "
              f"{b['geomean']:.2f} [>= {TARGET_TRAIN_GEOMEAN}], min {b['min']:.2f} ({b['min_workload']})  "
              f"{mark(b['geomean'] >= TARGET_TRAIN_GEOMEAN)}")
    c = s.get("adjoint")
    if c:
        detail = ", ".join(f"{k} {v:.2f}" for k, v in c["ratios"].items())
        print(f"(c) transposed conv / the conv it is the adjoint of (GFLOP/s): min {c['min']:.2f} "
              f"({c['min_workload']}) [>= {TARGET_ADJOINT}]  {mark(c['min'] >= TARGET_ADJOINT)}\n    {detail}")
    d = s.get("float64_vs_torch")
    if d:
        below = [k for k, v in d["ratios"].items() if v < TARGET_FLOAT64_VS_TORCH]
        print(f"(d) float64, pytconv / torch float64 on {len(d['ratios'])} workload x mode: min {d['min']:.2f} "
              f"({d['min_case']}), geometric mean {d['geomean']:.2f} [>= {TARGET_FLOAT64_VS_TORCH} each]  "
              f"{mark(not below)}" + (f"\n    below: {', '.join(below)}" if below else ""))
    e = s.get("high_rank_vs_jax")
    if e:
        detail = ", ".join(f"{k} {v:.1f}" for k, v in e["ratios"].items())
        print(f"(e) 4-d/5-d, pytconv / JAX: min {e['min']:.1f}x ({e['min_case']}), geometric mean "
              f"{e['geomean']:.1f}x [>= {TARGET_HIGH_RANK_VS_JAX}x]  {mark(e['min'] >= TARGET_HIGH_RANK_VS_JAX)}"
              f"\n    {detail}")
    f = s.get("small_call_us")
    if f:
        print("(f) small call (1x1x8x8 input, 3x3 kernel, float32), microseconds per call:")
        for key, label in (("one_thread", "1 thread (fresh process)"), ("threads", f"{s.get('threads', '?')} threads")):
            us = f.get(key) or {}
            if "error" in us:
                print(f"    {label}: failed: {us['error']}")
                continue
            detail = ", ".join(f"{SHORT[k]} {v:.1f}" for k, v in us.items())
            verdict = ""
            if "pytconv" in us and "torch" in us:
                verdict = f"  [pytconv <= torch]  {mark(us['pytconv'] <= us['torch'])}"
            print(f"    {label}: {detail}{verdict}")
    g = s.get("memory")
    if g:
        wl = workloads.LARGE3D
        print(f"(g) peak memory of one large 3-d convolution (batch {wl.batch}, {wl.in_channels} -> {wl.out_channels} "
              f"channels, {'x'.join(map(str, wl.spatial))}, k{wl.kernel}, float32), a fresh process each; MiB:")
        for m in g:
            if "error" in m:
                print(f"    {m['library']:<8} {m['mode']:<8} failed: {m['error']}")
                continue
            print(f"    {m['library']:<8} {m['mode']:<8} inputs {m['inputs_mib']:7.0f}  outputs {m['outputs_mib']:7.0f}"
                  f"  peak increase {m['peak_increase_mib']:7.0f}  working memory beyond outputs "
                  f"{m['working_mib']:7.0f} ({m['working_mib'] / (m['inputs_mib'] + m['outputs_mib']):.2f}x in+out)"
                  f"  {m['seconds']:.2f} s" + ("" if m["exact"] else "  (upper bound)"))


def markdown_entry(data) -> str:
    """A version-log entry for benchmarks/README.md from a run's JSON: the
    run's particulars, pytconv's ratio to the best peer per workload, and the
    summary figures."""
    info, rows, s = data["info"], data["rows"], data["summary"]
    src = info.get("pytconv_source", {})
    out = [
        f"Measured {info['timestamp']}, {info['cpu']}, threads: {info['threads']}, load average "
        f"{info.get('load_average_start', float('nan')):.1f} at the start and {info.get('load_average_end', float('nan')):.1f} "
        f"at the end; pytconv {info['versions'].get('pytconv', '?')} at commit {src.get('commit', '?')} "
        f"(working tree {src.get('working_tree', '?')}, core built {src.get('core_built', '?')}); "
        + ", ".join(f"{n} {v}" for n, v in info["versions"].items() if n != "pytconv")
        + f"; {info.get('run', 'full')} run of {info.get('seconds', 0):.0f} s.",
        "",
    ]
    columns = [(m, d) for d in DTYPES for m in ("forward", "train")
               if any(r["mode"] == m and r["dtype"] == d for r in rows)]
    names = list(dict.fromkeys(r["workload"] for r in rows))
    cell = {(r["workload"], r["mode"], r["dtype"]): r for r in rows}
    out.append("pytconv / best peer (best peer), and pytconv / torch in float64:")
    out.append("")
    out.append("| workload | " + " | ".join(f"{m} {d}" for m, d in columns) + " |")
    out.append("|---" * (len(columns) + 1) + "|")
    for name in names:
        cells = []
        for m, d in columns:
            r = cell.get((name, m, d))
            if r is None or r["ratio_best_peer"] is None:
                cells.append("n/a")
                continue
            text = f"{r['ratio_best_peer']:.2f} ({SHORT[r['best_peer']]})"
            if d == "float64" and r["ratio_torch"]:
                text += f", {r['ratio_torch']:.2f} vs torch"
            cells.append(text)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")
    lines = []
    if "forward_float32" in s:
        a = s["forward_float32"]
        lines.append(f"(a) forward float32 geometric mean {a['geomean']:.2f}, min {a['min']:.2f} ({a['min_workload']})")
    if "train_float32" in s:
        b = s["train_float32"]
        lines.append(f"(b) training step float32 geometric mean {b['geomean']:.2f}, min {b['min']:.2f} ({b['min_workload']})")
    if "adjoint" in s:
        c = s["adjoint"]
        lines.append(f"(c) transposed / adjoint conv min {c['min']:.2f} ({c['min_workload']})")
    if "float64_vs_torch" in s:
        d = s["float64_vs_torch"]
        below = sum(v < TARGET_FLOAT64_VS_TORCH for v in d["ratios"].values())
        lines.append(f"(d) float64 vs torch min {d['min']:.2f} ({d['min_case']}), geometric mean {d['geomean']:.2f}, "
                     f"{below} of {len(d['ratios'])} below {TARGET_FLOAT64_VS_TORCH}")
    if "high_rank_vs_jax" in s:
        e = s["high_rank_vs_jax"]
        lines.append(f"(e) 4-d/5-d vs JAX min {e['min']:.1f}x ({e['min_case']}), geometric mean {e['geomean']:.1f}x")
    for key, label in (("one_thread", "1 thread"), ("threads", f"{s.get('threads', '?')} threads")):
        us = s.get("small_call_us", {}).get(key)
        if us and "error" not in us:
            lines.append(f"(f) small call, microseconds, {label}: " + ", ".join(f"{SHORT[k]} {v:.1f}" for k, v in us.items()))
    for m in s.get("memory", []):
        if "error" not in m:
            lines.append(f"(g) {m['library']} {m['mode']}: working memory beyond outputs {m['working_mib']:.0f} MiB "
                         f"({m['working_mib'] / (m['inputs_mib'] + m['outputs_mib']):.2f}x inputs + outputs)")
    out += [f"- {line}" for line in lines]
    return "\n".join(out)


def report(data, png):
    """Prints a saved run (its JSON) again, with its version-log entry, and redraws its chart."""
    info, rows = data["info"], data["rows"]
    lib_names = [n for n in LIBRARIES if n in info["versions"]]
    print(f"CPU: {info['cpu']}, threads: {info['threads']}; {info['timestamp']}")
    for dtype in DTYPES:
        for mode in ("forward", "train"):
            print_table(rows, lib_names, dtype, mode)
    print_summary(data["summary"], None)
    print("\nVersion-log entry (markdown):\n")
    print(markdown_entry(data))
    if png and plot(rows, lib_names, info, png):
        print(f"\nwrote {png}")


def plot(rows, lib_names, info, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"pytconv": "#d62728", "torch": "#ee8a2e", "tensorflow": "#1f77b4", "jax": "#2ca02c"}
    panels = [(m, "float32") for m in ("forward", "train") if any(r["mode"] == m and r["dtype"] == "float32" for r in rows)]
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(15, 5.2 * len(panels)), squeeze=False)
    for ax, (mode, dtype) in zip(axes[:, 0], panels):
        sel = [r for r in rows if r["mode"] == mode and r["dtype"] == dtype]
        width = 0.8 / len(lib_names)
        values = [v for r in sel for v in r["gflops"].values() if v]
        top = max(values, default=1.0)
        bottom = 10.0 ** math.floor(math.log10(min(values, default=1.0) * 0.8))
        for i, name in enumerate(lib_names):
            xs = [j + (i - (len(lib_names) - 1) / 2) * width for j in range(len(sel))]
            vals = [r["gflops"][name] for r in sel]
            ax.bar([x for x, v in zip(xs, vals) if v], [v for v in vals if v], width, label=SHORT[name],
                   color=colors[name])
            for x, v in zip(xs, vals):
                if v is None:
                    ax.text(x, bottom * 1.2, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
        for j, r in enumerate(sel):
            if r["ratio_best_peer"]:
                ax.text(j, top * 1.6, f"\u00d7{r['ratio_best_peer']:.2f}", ha="center", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylim(bottom, top * 3)
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([r["workload"] for r in sel], rotation=30, ha="right")
        n_public = sum(r["set"] == "public" for r in sel)
        if 0 < n_public < len(sel):
            ax.axvline(n_public - 0.5, color="grey", lw=0.8, ls="--")
            ax.text(n_public - 0.55, top * 2.5, "public workloads", ha="right", va="center", fontsize=8, color="grey")
            ax.text(n_public - 0.45, top * 2.5, "extra workloads", ha="left", va="center", fontsize=8, color="grey")
        ax.set_ylabel("GFLOP/s (log scale)")
        what = "forward" if mode == "forward" else "training step (forward + both gradients)"
        ax.set_title(f"{what}, {dtype}; above each group: pytconv / best peer", fontsize=11)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(lib_names), fontsize=10)
    fig.suptitle(f"pytconv vs peers, {info['cpu']}, {info['threads']} threads, {info['timestamp']}", fontsize=12,
                 x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------


class Settings:
    def __init__(self, quick):
        self.min_time = 0.02
        self.slow_seconds = 2.0
        if quick:
            self.min_repeats, self.max_repeats, self.row_seconds, self.overhead_repeats = 2, 5, 1.2, 5
        else:
            self.min_repeats, self.max_repeats, self.row_seconds, self.overhead_repeats = 3, 9, 3.0, 9


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="threads for every library (default: every CPU of this process, %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="the public workloads and conv4d only, fewer repeats, forward memory only")
    p.add_argument("--only", help="comma-separated workload names (of: %s)" % ", ".join(workloads.BY_NAME))
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated, of float32,float64")
    p.add_argument("--libs", default=",".join(LIBRARIES), help="comma-separated libraries to time")
    p.add_argument("--no-train", action="store_true", help="forward only")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", help="JSON output (default benchmarks/results/bench.json)")
    p.add_argument("--png", help="bar chart (default benchmarks/results/bench.png; with --report: none)")
    p.add_argument("--report", metavar="JSON",
                   help="time nothing: print a saved run's tables, summary and version-log entry, redraw --png")
    p.add_argument("--memory-child", nargs=2, metavar=("LIB", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--overhead-child", nargs=2, metavar=("LIBS", "REPEATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad or not args.dtypes:
        p.error(f"--dtypes: unknown {bad}; choose from {', '.join(DTYPES)}")
    args.libs = [n.strip() for n in args.libs.split(",") if n.strip()]
    bad = [n for n in args.libs if n not in LIBRARIES]
    if bad:
        p.error(f"--libs: unknown {bad}; choose from {', '.join(LIBRARIES)}")
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in names if n not in workloads.BY_NAME]
        if bad:
            p.error(f"--only: unknown workloads {bad}; choose from {', '.join(workloads.BY_NAME)}")
        args.workloads = [workloads.BY_NAME[n] for n in names]
    elif args.quick:
        args.workloads = workloads.PUBLIC + [workloads.BY_NAME["conv4d"]]
    else:
        args.workloads = workloads.PUBLIC + workloads.EXTRA
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        with open(args.report) as f:
            report(json.load(f), args.png)
        return 0
    args.json = args.json or os.path.join(RESULTS, "bench.json")
    args.png = args.png or os.path.join(RESULTS, "bench.png")
    threading_note = configure_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], args.threads)
        return 0
    if args.overhead_child:
        overhead_child(args.overhead_child[0].split(","), int(args.overhead_child[1]))
        return 0
    settings = Settings(args.quick)
    started = time.time()
    libs, missing = load_libraries(args.libs, args.threads)
    lib_names = list(libs)
    info = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": workloads.cpu_model(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "threading": threading_note,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "versions": {n: lib.version for n, lib in libs.items()},
        "missing": missing,
        "layouts": {
            "tensorflow": "channels last (NWC/NHWC/NDHWC), tf.function",
            "jax": "channels first (NC..., OI...), jax.jit",
            "torch": "channels first (NCHW), eager",
            "pytconv": "channels first",
        },
        "quick": args.quick,
        "run": "quick" if args.quick and not args.only else (f"selected ({args.only})" if args.only else "full"),
        "dtypes": args.dtypes,
        "train": not args.no_train,
        "pytconv_source": source_version() if "pytconv" in libs else {},
        "load_average_start": os.getloadavg()[0],
    }
    print(f"CPU: {info['cpu']} ({info['cpus']} CPUs), threads: {args.threads}; {info['timestamp']}; "
          f"load average {info['load_average_start']:.1f}")
    print("versions: " + ", ".join(f"{n} {v}" for n, v in info["versions"].items())
          + "".join(f"; pytconv {k.replace('_', ' ')} {v}" for k, v in info["pytconv_source"].items()))
    if missing:
        print("missing: " + ", ".join(f"{n} ({why})" for n, why in missing.items()))
    print("threading: " + threading_note)
    print("layouts: TensorFlow channels last (its fast path), JAX and PyTorch channels first")

    rows = []
    modes = ["forward"] + ([] if args.no_train else ["train"])
    for dtype in args.dtypes:
        for mode in modes:
            for wl in args.workloads:
                rows.append(run_row(libs, wl, dtype, mode, settings))
                print(f"  .. {mode} {dtype} {wl.name}: "
                      + ", ".join(f"{SHORT[n]} {_fmt(v, 0)}" for n, v in rows[-1]["gflops"].items()),
                      file=sys.stderr, flush=True)
            print_table(rows, lib_names, dtype, mode)
            sys.stdout.flush()

    adjoint = []
    if "pytconv" in libs:
        for dtype in args.dtypes:
            for wl in args.workloads:
                if wl.op == "conv_transpose":
                    adjoint.append(run_adjoint(libs["pytconv"], wl, dtype, settings))
    overhead = {"threads": run_overhead(libs, settings), "one_thread": run_overhead_one_thread(lib_names, settings)}
    memory = []
    if not args.no_memory:
        mem_libs = [n for n in ("pytconv", "torch") if n in libs]
        memory = run_memory(mem_libs, ["forward"] if (args.quick or args.no_train) else ["forward", "train"], args.threads)

    summary = summarise(rows, adjoint, overhead, memory, args.threads)
    print_summary(summary, settings)
    info["seconds"] = round(time.time() - started, 1)
    info["load_average_end"] = os.getloadavg()[0]
    print(f"\n{info['seconds']:.0f} s; load average at the end {info['load_average_end']:.1f} "
          f"(above {args.threads}, other processes shared the CPUs: compare ratios, not absolute figures)")

    if args.json:
        workloads.write_json(args.json, {"info": info, "rows": rows, "adjoint": adjoint, "summary": summary})
        print(f"wrote {args.json}")
    if args.png and plot(rows, lib_names, info, args.png):
        print(f"wrote {args.png}")
    print("\nVersion-log entry (markdown), for benchmarks/README.md:\n")
    print(markdown_entry({"info": info, "rows": rows, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
