"""``python -m pytconv``: ``info`` (build and machine), ``demo`` (worked
examples of convolution and transposed convolution, with the output-size
arithmetic) and ``check`` (do pytconv and the installed frameworks agree?)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys

import numpy as np

import pytconv
from pytconv import _core

BLAS = "none: built-in packed micro-kernels"
FRAMEWORKS = ("torch", "tensorflow", "jax", "cupy")


# ---- info -------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_status() -> str:
    try:
        from pytconv import gpu

        available, reason = gpu.status()
    except (ImportError, AttributeError):
        return "GPU path not installed"
    return ("available: " if available else "not available: ") + reason


def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def info_lines() -> list:
    """(label, value) pairs describing this pytconv, its machine and its environment."""
    simd = _core.simd_level()
    if os.environ.get("PYTCONV_SIMD"):
        simd += f" (PYTCONV_SIMD={os.environ['PYTCONV_SIMD']})"
    threads = f"{pytconv.get_num_threads()} ({os.cpu_count()} CPUs online"
    if os.environ.get("PYTCONV_NUM_THREADS"):
        threads += f", PYTCONV_NUM_THREADS={os.environ['PYTCONV_NUM_THREADS']}"
    threads += ")"
    found = []
    for name in FRAMEWORKS:
        dist = {"tensorflow": "tensorflow-cpu", "cupy": "cupy-cuda12x"}.get(name, name)
        version = _version(name) or _version(dist)
        if version is not None:
            found.append(f"{name} {version}")
    return [
        ("version", pytconv.__version__),
        ("SIMD level", simd),
        ("threads", threads),
        ("BLAS", BLAS),
        ("CPU", _cpu_model()),
        ("GPU", _gpu_status()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("NumPy", np.__version__),
        ("frameworks", ", ".join(found) if found else "none installed"),
        ("adapters", ", ".join(pytconv.adapters()) or "none registered"),
    ]


def cmd_info(args) -> int:
    lines = info_lines()
    width = max(len(label) for label, _ in lines)
    print(f"pytconv {pytconv.__version__}")
    for label, value in lines:
        print(f"  {label:<{width}}  {value}")
    return 0


# ---- demo ---------------------------------------------------------------------------------


def _fmt(a) -> str:
    a = np.asarray(a)
    if np.all(a == np.round(a)):
        a = a.astype(np.int64)
    return np.array2string(a, separator=", ")


def _conv_matrix_1d(kernel, n_in, **kw) -> np.ndarray:
    """The matrix C with conv(x) == C @ x, column j being conv of the j-th unit vector."""
    w = np.asarray(kernel, np.float64).reshape(1, 1, -1)
    basis = np.eye(n_in).reshape(n_in, 1, n_in)  # n_in unit vectors as a batch
    return pytconv.conv(basis, w, **kw)[:, 0, :].T


def _matrix_str(m, indent="    ") -> str:
    return "\n".join(indent + line for line in _fmt(m).splitlines())


class _Demo:
    def __init__(self):
        self.failures = 0

    def show(self, label, got, expected=None, source="the example"):
        """Prints got; with `expected`, also whether it equals it (`source` says
        where the expected values come from)."""
        got = np.asarray(got)
        if got.ndim < 2:
            print(f"  {label} = {_fmt(got)}")
        else:
            print(f"  {label} =")
            print(_matrix_str(got))
        if expected is None:
            return
        ok = np.array_equal(got, np.asarray(expected, got.dtype))
        self.failures += not ok
        if ok:
            shown = _fmt(expected) if np.ndim(expected) < 2 else "the same"
        else:
            shown = "\n" + _matrix_str(expected) if np.ndim(expected) >= 2 else _fmt(expected)
        print(f"    {source}: {shown}  [{'ok' if ok else 'MISMATCH'}]")

    def section(self, title):
        print()
        print(title)
        print("-" * len(title))


def cmd_demo(args) -> int:
    d = _Demo()
    conv, conv_t = pytconv.conv, pytconv.conv_transpose

    def v(values):
        return np.asarray(values, np.float64).reshape(1, 1, -1)

    print("pytconv demo: worked examples of transposed convolution (lecture notes and tutorials), computed by pytconv.")
    print("Sizes: conv    out = floor((in + pad_low + pad_high - dilation*(k-1) - 1) / stride) + 1")
    print("       conv_T  out = (in - 1)*stride - pad_low - pad_high + dilation*(k-1) + 1 + output_padding")

    d.section("1. A 1-d convolution as a matrix product (lecture notes, 7.1)")
    x = [1, 4, -1, 0, 2, -2, 1, 3, 3, 1]
    k = [1, 2, 0, -1]
    print(f"  x = {x}, kernel = {k}")
    print("  out = floor((10 + 0 + 0 - 1*(4-1) - 1) / 1) + 1 = 7")
    c = _conv_matrix_1d(k, len(x))
    d.show("C (7 x 10, one shifted kernel per row)", c)
    y = conv(v(x), v(k))[0, 0]
    d.show("conv(x, kernel)", y)
    d.show("C @ x", c @ np.asarray(x, np.float64), y, "conv(x, kernel)")

    d.section("2. The transposed convolution is the transposed matrix (lecture notes)")
    x = [2, 3, 0, -1]
    k = [1, 2, -1]
    print(f"  x = {x}, kernel = {k}")
    print("  out = (4 - 1)*1 - 0 - 0 + 1*(3-1) + 1 + 0 = 6")
    c = _conv_matrix_1d(k, 6)
    d.show("C^T (6 x 4) of the convolution 6 -> 4", c.T)
    d.show("conv_transpose(x, kernel)", conv_t(v(x), v(k))[0, 0], [2, 7, 4, -4, -2, 1], "lecture notes")
    d.show("C^T @ x", c.T @ np.asarray(x, np.float64), [2, 7, 4, -4, -2, 1], "lecture notes")

    d.section("3. Convolution vs transposed convolution of one impulse (lecture notes)")
    x = [0, 0, 1, 0, 0, 0, 0]
    k = [1, 2, 3]
    print(f"  x = {x}, kernel = {k}")
    print("  conv:   out = floor((7 - 1*(3-1) - 1) / 1) + 1 = 5   (the kernel, read backwards)")
    d.show("conv(x, kernel)", conv(v(x), v(k))[0, 0], [3, 2, 1, 0, 0], "lecture notes (F.conv1d)")
    print("  conv_T: out = (7 - 1)*1 + 1*(3-1) + 1 = 9   (the kernel, pasted at the impulse)")
    d.show("conv_transpose(x, kernel)", conv_t(v(x), v(k))[0, 0], [0, 0, 1, 2, 3, 0, 0, 0, 0],
           "lecture notes (F.conv_transpose1d)")
    x = [1, 0, 0, 0, -1]
    k = [1, 2, 1]
    print(f"  nn.ConvTranspose1d example: x = {x}, kernel = {k}, out = (5 - 1)*1 + 1*(3-1) + 1 = 7")
    d.show("conv_transpose(x, kernel)", conv_t(v(x), v(k))[0, 0], [1, 2, 1, 0, -1, -2, -1],
           "lecture notes (nn.ConvTranspose1d)")

    d.section("4. Stride 2: a weighted sum of kernels, s apart (lecture notes)")
    x = [2, 3, 0, -1]
    k = [1, 2, -1]
    print(f"  x = {x}, kernel = {k}, stride = 2")
    print("  out = s*(W - 1) + w = (4 - 1)*2 - 0 - 0 + 1*(3-1) + 1 + 0 = 9")
    d.show("conv_transpose(x, kernel, stride=2)", conv_t(v(x), v(k), stride=2)[0, 0],
           [2, 4, 1, 6, -3, 0, -1, -2, 1], "lecture notes (stride 2 figure)")

    d.section("5. A 3x3 input and a 2x2 kernel, through the convolution matrix (understanding transposed convolutions)")
    k2 = np.array([[1.0, 2.0], [2.0, 1.0]])  # the article's kernel: rows {1, 2, 0}, {2, 1, 0} of its matrix
    x2 = np.arange(1.0, 10.0).reshape(3, 3)  # an input chosen here: 1..9
    print("  kernel = [[1, 2], [2, 1]], x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]")
    print("  conv:   out = floor((3 - 1*(2-1) - 1) / 1) + 1 = 2 per axis")
    basis = np.eye(9).reshape(9, 1, 3, 3)
    c = pytconv.conv(basis, k2.reshape(1, 1, 2, 2))[:, 0].reshape(9, 4).T
    d.show("C (4 x 9)", c)
    y2 = conv(x2.reshape(1, 1, 3, 3), k2.reshape(1, 1, 2, 2))[0, 0]
    d.show("conv(x, kernel)", y2, (c @ x2.ravel()).reshape(2, 2), "C @ x")
    print("  conv_T: out = (2 - 1)*1 + 1*(2-1) + 1 = 3 per axis: back to the input's size")
    back = conv_t(y2.reshape(1, 1, 2, 2), k2.reshape(1, 1, 2, 2))[0, 0]
    d.show("conv_transpose(conv(x), kernel)", back, (c.T @ y2.ravel()).reshape(3, 3), "C^T @ conv(x)")

    d.section("6. Upsampling 2x2 to 4x4: 3x3 kernel of ones, stride 2, padding 'same'")
    print("  'same' for conv_transpose: out = in * stride = 2*2 = 4 per axis;")
    print("  uncropped (2 - 1)*2 + 1*(3-1) + 1 = 5, so 5 - 4 = 1 cell is cropped: low 1//2 = 0, high 1")
    up = conv_t(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), stride=2, padding="same")[0, 0]
    d.show("conv_transpose(ones(2, 2), ones(3, 3), stride=2, padding='same')", up,
           [[1, 1, 2, 1], [1, 1, 2, 1], [2, 2, 4, 2], [1, 1, 2, 1]], "expected")

    print()
    if d.failures:
        print(f"{d.failures} result(s) differ from the examples")
        return 1
    print("all results agree with the examples")
    return 0


# ---- check ----------------------------------------------------------------------------------


def cmd_check(argv) -> int:
    from pytconv import check

    return int(check.main(list(argv)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytconv", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("info", help="version, SIMD level, threads, BLAS, CPU and whether the GPU path is available")
    sub.add_parser("demo", help="worked examples printed as arrays with the output-size arithmetic")
    sub.add_parser("check", add_help=False,
                   help="compare pytconv with the installed frameworks (python -m pytconv check --help)")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["check"]:  # every further argument belongs to check's own parser
        return cmd_check(argv[1:])
    args = _parser().parse_args(argv)
    return {"info": cmd_info, "demo": cmd_demo}[args.command](args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        sys.exit(1)
