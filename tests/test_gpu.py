"""The GPU path (pytconv.gpu).

Three layers, so that the path is checked on machines with and without a GPU:

1. Compilation: every .cu file of pytconv/gpu is compiled by nvcc, with every
   kernel instantiation the backend asks NVRTC for (CI has nvcc but no GPU).
2. Host emulation: the same kernels.cu compiled as C++ for the CPU (a small
   shim defines __global__, threadIdx, ...), launched through a stand-in for
   CuPy built on NumPy, so that the backend's chunking, index arithmetic and
   kernel signatures are checked against the C core on every machine. Every
   array the backend allocates is filled with NaN first (an element left
   unwritten shows), kernel arguments are checked against the kernels'
   parameter types, and pointers must be C-contiguous arrays.
3. The GPU itself: the public API on CuPy arrays against the C core and
   PyTorch's CUDA ops; skipped with pytconv.gpu.status()'s reason when there
   is no GPU.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

import pytconv
import pytconv.gpu
from pytconv import _args
from pytconv._api import _NumPyBackend
from pytconv.gpu import _backend as gpu_backend

from frameworks import _strict

GPU_DIR = Path(pytconv.gpu.__file__).parent
DTYPES = (np.float32, np.float64)


def _tolerance(dtype):
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


def assert_close(got, ref, dtype, what=""):
    got = np.asarray(got)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite entries (an output element was not written)"
    tol = _tolerance(dtype)
    scale = max(float(np.max(np.abs(ref))), 1e-30) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale, err_msg=what)


def _tool(name, *candidates):
    """Path of a compiler, or skip (locally) / fail (in CI) the test."""
    found = shutil.which(name) or next((c for c in candidates if c and os.path.exists(c)), None)
    if found is None:
        message = f"{name} is not installed"
        if _strict():
            pytest.fail(f"{message}; CI must compile the CUDA sources and their host emulation")
        pytest.skip(message)
    return found


def _nvcc():
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    return _tool(
        "nvcc",
        cuda_home and os.path.join(cuda_home, "bin", "nvcc"),
        "/usr/local/cuda/bin/nvcc",
    )


def _instantiation_unit(source: Path) -> str:
    """C++ that includes a .cu file and takes the address of every kernel
    instantiation the backend names, so that each one is compiled."""
    names = [n for dt in DTYPES for n in gpu_backend.kernel_names(dt)]
    body = ",\n".join(f"    (void *)&{n}" for n in names)
    return f'#include "{source}"\nvoid *ptc_every_kernel[] = {{\n{body}\n}};\n'


# ---- 1. compilation ---------------------------------------------------------


def test_cuda_sources_are_package_files():
    sources = sorted(GPU_DIR.glob("*.cu"))
    assert gpu_backend.KERNEL_SOURCE in sources
    text = gpu_backend.KERNEL_SOURCE.read_text()
    assert "#include" not in text.split("*/", 1)[1], "NVRTC compiles the kernels without headers"


def test_geometry_fields_match_the_cuda_enum():
    text = gpu_backend.KERNEL_SOURCE.read_text()
    enum = re.search(r"enum ptc_geo_field \{(.*?)\};", text, re.S).group(1)
    names = re.findall(r"PTC_GEO_(\w+)", enum)
    assert names[-1] == "FIELDS"
    assert [n.lower() for n in names[:-1]] == list(gpu_backend.GEO_FIELDS)


@pytest.mark.parametrize("source", sorted(GPU_DIR.glob("*.cu")), ids=lambda p: p.name)
def test_nvcc_compiles_every_cuda_file(source, tmp_path):
    nvcc = _nvcc()
    unit = tmp_path / "unit.cu"
    if source == gpu_backend.KERNEL_SOURCE:
        unit.write_text(_instantiation_unit(source))
    else:
        unit.write_text(f'#include "{source}"\n')
    # The sources keep to C++11 (what older NVRTC versions default to).
    ptx = tmp_path / "unit.ptx"
    cmd = [nvcc, "-std=c++11", "--ptx", "-arch=sm_80", "-Werror", "all-warnings",
           *gpu_backend.compile_options(), "-o", str(ptx), str(unit)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
    if source == gpu_backend.KERNEL_SOURCE:
        entries = re.findall(r"\.entry\s+(\w+)", ptx.read_text())
        assert len(entries) == 2 * len(gpu_backend.kernel_names(np.float32))
    # ptxas too: register allocation and resource limits for a real target.
    cubin = tmp_path / "unit.cubin"
    res = subprocess.run(
        [nvcc, "-std=c++17", "-cubin", "-arch=sm_80", "-Xptxas", "-v", *gpu_backend.compile_options(),
         "-o", str(cubin), str(unit)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    if source == gpu_backend.KERNEL_SOURCE:
        # Only the general-rank col2im keeps per-thread arrays in local
        # memory; nothing spills.
        blocks = (res.stdout + res.stderr).split("Compiling entry function '")[1:]
        report = {b.split("'")[0]: int(re.search(r"(\d+) bytes stack frame", b).group(1)) for b in blocks}
        assert len(report) == len(entries)
        for entry, stack in report.items():
            general_col2im = "ptc_col2im" in entry and "Li0E" in entry
            assert (stack > 0) == general_col2im, f"{entry}: {stack} bytes of stack"
        assert not re.search(r"[1-9]\d* bytes spill", res.stdout + res.stderr)


# ---- 2. host emulation ------------------------------------------------------

_SHIM = r"""
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

struct ptc_emu_dim { unsigned x, y, z; };
static ptc_emu_dim threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline

#include "SOURCE"

template <typename A> static void ptc_emu_describe(std::string &s)
{
    typedef typename std::decay<A>::type D;
    typedef typename std::remove_cv<typename std::remove_pointer<D>::type>::type E;
    if (!s.empty()) s += ',';
    if (std::is_pointer<D>::value) {
        s += 'p';
        s += std::is_floating_point<E>::value ? 'f' : 'i';
        s += std::to_string(sizeof(E));
    } else {
        s += std::is_floating_point<D>::value ? 'f' : 'i';
        s += std::to_string(sizeof(D));
    }
}

template <typename... A> static std::string ptc_emu_signature(void (*)(A...))
{
    std::string s;
    int expand[] = {0, (ptc_emu_describe<A>(s), 0)...};
    (void)expand;
    return s;
}

template <typename... A, std::size_t... I>
static void ptc_emu_call(void (*f)(A...), void **args, std::index_sequence<I...>)
{
    f(*static_cast<typename std::decay<A>::type *>(args[I])...);
}

/* Runs every thread of every block, one after the other (the kernels have no
 * barriers and each output has one writer, so the order does not matter). */
template <typename... A>
static void ptc_emu_launch(void (*f)(A...), unsigned grid, unsigned block, void **args)
{
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; b++)
        for (unsigned t = 0; t < block; t++) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            ptc_emu_call(f, args, std::index_sequence_for<A...>{});
        }
}
"""


def _emulation_source(code: str, names) -> str:
    parts = [_SHIM.replace('#include "SOURCE"', code)]
    for i, name in enumerate(names):
        parts.append(
            f'extern "C" void ptc_emu_launch_{i}(unsigned g, unsigned b, void **a)'
            f" {{ ptc_emu_launch(&{name}, g, b, a); }}\n"
            f'extern "C" const char *ptc_emu_signature_{i}()'
            f" {{ static std::string s = ptc_emu_signature(&{name}); return s.c_str(); }}\n"
        )
    return "\n".join(parts)


_CTYPES = {"i4": ctypes.c_int32, "i8": ctypes.c_int64, "f4": ctypes.c_float, "f8": ctypes.c_double}


class _EmulatedFunction:
    def __init__(self, lib, index, name):
        self.name = name
        self._launch = getattr(lib, f"ptc_emu_launch_{index}")
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        self._launch.restype = None
        sig = getattr(lib, f"ptc_emu_signature_{index}")
        sig.restype = ctypes.c_char_p
        self.signature = sig().decode().split(",")

    def __call__(self, grid, block, args):
        assert len(grid) == 1 and len(block) == 1 and grid[0] >= 1 and 1 <= block[0] <= 1024
        assert len(args) == len(self.signature), f"{self.name}: {len(args)} arguments for {self.signature}"
        holders = []
        for pos, (arg, kind) in enumerate(zip(args, self.signature)):
            where = f"{self.name} argument {pos}"
            if kind[0] == "p":
                assert isinstance(arg, np.ndarray), f"{where}: expected an array, got {type(arg)}"
                assert arg.flags.c_contiguous, f"{where}: pointers must be to C-contiguous arrays"
                assert arg.dtype.kind == kind[1] and arg.dtype.itemsize == int(kind[2:]), (
                    f"{where}: array of {arg.dtype} for parameter {kind}"
                )
                holders.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                # CuPy passes NumPy scalars by value with their own type.
                assert isinstance(arg, np.generic), f"{where}: pass NumPy scalars, got {type(arg)}"
                assert arg.dtype.kind == kind[0] and arg.dtype.itemsize == int(kind[1:]), (
                    f"{where}: {arg.dtype} scalar for parameter {kind}"
                )
                holders.append(_CTYPES[kind](arg.item()))
        argv = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        self._launch(grid[0], block[0], argv)


_BUILDS = {}
# Set by test_emulation_under_address_sanitizer for the run it starts.
_SANITIZE = os.environ.get("PYTCONV_TEST_GPU_EMULATION_ASAN") == "1"


class _EmulatedModule:
    """cupy.RawModule's interface, compiling the code with the host C++
    compiler instead of NVRTC."""

    def __init__(self, code, options=(), name_expressions=()):
        names = list(name_expressions)
        defines = [o for o in options if o.startswith("-D")]
        assert len(defines) == len(options), f"unexpected compile options {options}"
        key = hashlib.sha256(repr((code, defines, names)).encode()).hexdigest()[:16]
        if key not in _BUILDS:
            cxx = _tool("c++", "/usr/bin/g++", "/usr/bin/clang++")
            build = Path(tempfile.mkdtemp(prefix="pytconv-gpu-emu-"))
            atexit.register(shutil.rmtree, build, True)
            src = build / "emulation.cpp"
            src.write_text(_emulation_source(code, names))
            lib = build / "emulation.so"
            sanitize = ["-fsanitize=address", "-fno-omit-frame-pointer"] if _SANITIZE else []
            cmd = [cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Werror", *sanitize,
                   "-Wno-unknown-pragmas", "-Wno-unused-function", *defines, "-o", str(lib), str(src)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
            _BUILDS[key] = ctypes.CDLL(str(lib))
        self._lib = _BUILDS[key]
        self._index = {n: i for i, n in enumerate(names)}
        self.functions = {}

    def get_function(self, name):
        assert name in self._index, f"{name} was not among the name expressions"
        if name not in self.functions:
            self.functions[name] = _EmulatedFunction(self._lib, self._index[name], name)
        return self.functions[name]


def _poisoned_empty(shape, dtype=float, order="C"):
    return np.full(shape, np.nan, dtype=dtype, order=order)


class _Device:
    id = 0

    def __init__(self, device=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _emulated_cupy():
    """The part of CuPy the backend uses, on NumPy arrays and host kernels."""
    return types.SimpleNamespace(
        ndarray=np.ndarray,
        empty=_poisoned_empty,
        asarray=np.asarray,
        ascontiguousarray=np.ascontiguousarray,
        matmul=np.matmul,
        RawModule=_EmulatedModule,
        cuda=types.SimpleNamespace(
            Device=_Device,
            get_current_stream=lambda: types.SimpleNamespace(ptr=0, synchronize=lambda: None),
        ),
    )


@pytest.fixture(scope="module")
def emulated():
    _tool("c++", "/usr/bin/g++", "/usr/bin/clang++")

    def make(workspace_bytes=256 << 20, specialised_ranks=gpu_backend.SPECIALISED_RANKS):
        return gpu_backend.CuPyBackend(_emulated_cupy(), workspace_bytes, specialised_ranks)

    return make


def _rng_arrays(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# (name, op, x_shape, w_shape, keyword arguments)
CASES = [
    ("1d", "conv", (2, 3, 17), (4, 3, 3), dict(stride=2, padding=1)),
    ("1d_dilated", "conv", (2, 2, 20), (3, 2, 3), dict(dilation=3, padding=((2, 5),))),
    ("2d", "conv", (2, 3, 9, 8), (5, 3, 3, 2), dict(stride=(2, 1), padding=((1, 2), (0, 1)))),
    ("2d_groups", "conv", (2, 4, 7, 7), (6, 2, 3, 3), dict(groups=2, padding=1, dilation=2)),
    ("2d_depthwise", "conv", (1, 3, 6, 5), (3, 1, 3, 3), dict(groups=3, padding="same")),
    ("2d_stride_gt_kernel", "conv", (2, 2, 11, 10), (3, 2, 2, 2), dict(stride=3)),
    ("3d", "conv", (1, 2, 6, 5, 7), (3, 2, 3, 2, 3), dict(stride=(1, 2, 2), padding=1)),
    ("4d", "conv", (2, 2, 5, 4, 5, 4), (3, 2, 3, 2, 2, 3), dict(padding=(1, 0, 1, 1), stride=(1, 2, 1, 1))),
    ("5d", "conv", (1, 2, 4, 3, 4, 3, 4), (2, 2, 2, 2, 3, 2, 2), dict(padding=1, dilation=(1, 1, 1, 2, 1))),
    ("6d", "conv", (1, 2, 3, 2, 3, 2, 2, 3), (2, 2, 2, 1, 2, 2, 1, 2),
     dict(padding=(1, 0, 1, 0, 1, 1), stride=(1, 1, 2, 1, 1, 2))),
    ("t1d", "conv_transpose", (2, 3, 9), (3, 4, 4), dict(stride=3, padding=1, output_padding=2)),
    ("t1d_long_kernel", "conv_transpose", (1, 2, 5), (2, 3, 16), dict(stride=4)),
    ("t2d", "conv_transpose", (2, 4, 5, 6), (4, 3, 4, 3), dict(stride=2, padding=1)),
    ("t2d_groups_dilated", "conv_transpose", (2, 4, 5, 4), (4, 2, 3, 3),
     dict(stride=(3, 2), dilation=(2, 4), groups=2, padding=(2, 1), output_padding=(1, 3))),
    ("t2d_same", "conv_transpose", (1, 2, 5, 3), (2, 3, 3, 3), dict(stride=2, padding="same")),
    ("t3d", "conv_transpose", (1, 3, 4, 3, 4), (3, 2, 2, 3, 2), dict(stride=2, padding=(0, 1, 0))),
    ("t4d", "conv_transpose", (1, 2, 3, 3, 2, 3), (2, 2, 2, 2, 3, 2), dict(stride=(2, 1, 2, 3))),
    ("t5d", "conv_transpose", (1, 2, 2, 3, 2, 2, 3), (2, 1, 2, 2, 2, 3, 2), dict(stride=2, padding=1)),
    ("t6d", "conv_transpose", (1, 2, 2, 2, 2, 1, 2, 2), (2, 1, 2, 2, 1, 2, 2, 3), dict(stride=(2, 1, 2, 1, 1, 2))),
] + [
    (f"2d_{mode}", "conv", (2, 3, 6, 7), (4, 3, 3, 2), dict(padding=((2, 1), (1, 1)), padding_mode=mode))
    for mode in ("reflect", "replicate", "circular")
] + [
    (f"3d_{mode}", "conv", (1, 2, 4, 5, 3), (2, 2, 3, 3, 2), dict(stride=(2, 1, 1), padding=(1, 2, 1), padding_mode=mode))
    for mode in ("reflect", "replicate", "circular")
] + [
    (f"t2d_{mode}", "conv_transpose", (2, 3, 4, 5), (3, 2, 3, 3), dict(stride=2, padding=(1, 2), padding_mode=mode))
    for mode in ("reflect", "replicate", "circular")
] + [
    ("1d_circular_full", "conv", (1, 2, 4), (2, 2, 5), dict(padding=4, padding_mode="circular")),
    ("4d_replicate", "conv", (1, 2, 3, 4, 3, 3), (2, 2, 2, 3, 2, 2), dict(padding=1, padding_mode="replicate")),
]


def _problem(op, x_shape, w_shape, kw):
    if op == "conv":
        return _args.conv_problem("test", x_shape, w_shape, **kw)
    return _args.transposed_problem("test", x_shape, w_shape, **kw)


def _check_all_primitives(be, case, dtype, seed=0):
    name, op, x_shape, w_shape, kw = case
    p = _problem(op, x_shape, w_shape, kw)
    x, w, dy, bias = _rng_arrays([p.x_shape, p.w_shape, p.y_shape, (p.out_channels,)], dtype, seed)
    ref = _NumPyBackend
    assert_close(be.forward(p, x, w, bias), ref.forward(p, x, w, bias), dtype, f"{name} forward")
    assert_close(be.forward(p, x, w, None), ref.forward(p, x, w, None), dtype, f"{name} forward, no bias")
    assert_close(be.backward_data(p, dy, w), ref.backward_data(p, dy, w), dtype, f"{name} backward_data")
    assert_close(be.backward_filter(p, x, dy), ref.backward_filter(p, x, dy), dtype, f"{name} backward_filter")
    assert_close(be.bias_backward(dy), ref.bias_backward(dy), dtype, f"{name} bias_backward")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_emulated_primitives_match_the_core(emulated, case):
    be = emulated()
    for dtype in DTYPES:
        _check_all_primitives(be, case, dtype)


# Workspace limits (bytes of float64) that force each chunking regime:
# several whole images per chunk, one image per chunk, tiles of positions
# (down to a single position per tile).
_CHUNKING_CASES = [c for c in CASES if c[0] in ("1d", "2d_groups", "3d", "4d", "t1d_long_kernel",
                                                  "t2d_groups_dilated", "t3d", "2d_reflect", "t2d_circular")]


@pytest.mark.parametrize("columns", [1, 3, 7, 40, 200])
@pytest.mark.parametrize("case", _CHUNKING_CASES, ids=[c[0] for c in _CHUNKING_CASES])
def test_emulated_chunking(emulated, case, columns):
    _, op, x_shape, w_shape, kw = case
    p = _problem(op, x_shape, w_shape, kw)
    per_column = p.in_channels * math.prod(p.kernel) + p.out_channels
    be = emulated(workspace_bytes=columns * per_column * 8)
    _check_all_primitives(be, case, np.float64, seed=columns)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_emulated_general_rank_kernels(emulated, case):
    """The run-time-rank im2col/col2im (used from 6 dimensions on) on the
    ranks that otherwise get unrolled kernels."""
    be = emulated(specialised_ranks=())
    _check_all_primitives(be, case, np.float64, seed=1)


def test_emulation_under_address_sanitizer():
    """The emulated kernels again, built with AddressSanitizer in a separate
    process (NumPy's buffers then have red zones): a read or write outside
    any array the backend passes fails the run."""
    cxx = _tool("c++", "/usr/bin/g++", "/usr/bin/clang++")
    libasan = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip(f"{cxx} has no AddressSanitizer runtime")
    env = dict(os.environ, PYTCONV_TEST_GPU_EMULATION_ASAN="1", LD_PRELOAD=libasan,
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
         "-k", "emulated_primitives or (emulated_chunking and (1 or 7)) or residues"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    assert " passed" in res.stdout


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("2d_groups", "t2d_groups_dilated", "2d_reflect",
                                                                 "t2d_circular", "5d", "6d")],
                         ids=lambda c: c[0])
def test_emulated_grid_stride_loops(emulated, monkeypatch, case):
    """Tiny grids: every thread goes round its grid-stride loop many times."""
    monkeypatch.setattr(gpu_backend, "BLOCK", 32)
    monkeypatch.setattr(gpu_backend, "MAX_BLOCKS", 3)
    _check_all_primitives(emulated(), case, np.float64, seed=9)


def test_emulated_chunk_plans_cover_every_column():
    for batch, positions, per_column, budget in [(3, 10, 4, 40), (3, 10, 4, 39), (5, 7, 3, 300),
                                                 (2, 1000, 10, 10), (1, 13, 1, 5), (4, 6, 2, 10**9)]:
        seen = []
        for ch in gpu_backend.plan_chunks(batch, positions, per_column, budget):
            assert ch.images == 1 or ch.tile == positions
            assert ch.ncols * per_column <= max(budget, per_column)
            seen += [(ch.n0 + i, ch.p0 + j) for i in range(ch.images) for j in range(ch.tile)]
        assert sorted(seen) == [(n, q) for n in range(batch) for q in range(positions)]


def test_emulated_large_stride_and_dilation_residues(emulated):
    """Strides and dilations with every gcd relation, where the kernel
    offsets that reach an input form sparse progressions."""
    be = emulated()
    for s, dl, k in [(3, 2, 4), (4, 2, 5), (2, 4, 3), (6, 4, 4), (5, 3, 7), (7, 1, 9)]:
        case = (f"s{s}d{dl}k{k}", "conv_transpose", (1, 2, 4), (2, 2, k),
                dict(stride=s, dilation=dl, padding=1, output_padding=min(max(s, dl) - 1, 1)))
        _check_all_primitives(be, case, np.float64, seed=s * 10 + dl)


def test_emulated_results_are_reproducible(emulated):
    be = emulated(workspace_bytes=5 * (3 * 9 + 5) * 8)
    p = _problem("conv", (2, 3, 9, 8), (5, 3, 3, 3), dict(padding=1, padding_mode="reflect"))
    x, w, dy = _rng_arrays([p.x_shape, p.w_shape, p.y_shape], np.float32, 3)
    for fn, args in ((be.forward, (p, x, w, None)), (be.backward_data, (p, dy, w)),
                     (be.backward_filter, (p, x, dy)), (be.bias_backward, (dy,))):
        assert np.array_equal(fn(*args), fn(*args))


def test_emulated_kernels_compile_once_per_dtype(emulated):
    be = emulated()
    p = _problem("conv", (1, 1, 5), (1, 1, 2), {})
    for dtype in DTYPES:
        x, w = _rng_arrays([p.x_shape, p.w_shape], dtype, 0)
        be.forward(p, x, w, None)
        be.forward(p, x, w, None)
    assert len(be._modules) == 2


# ---- 3. CPU-only behaviour ---------------------------------------------------


def test_status_reports_a_reason():
    ok, reason = pytconv.gpu.status()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert not ok and "CuPy is not installed" in reason
    if ok:
        assert reason.startswith("ok: ")
    else:
        with pytest.raises(RuntimeError, match="GPU path is not available"):
            pytconv.gpu.backend()


def _fake_cupy(device_count=1, count_error=None, nvrtc_error=None):
    """A module named cupy whose CUDA queries give the answers asked for."""

    def get_device_count():
        if count_error:
            raise count_error
        return device_count

    def nvrtc_version():
        if nvrtc_error:
            raise nvrtc_error
        return (13, 0)

    fake = types.ModuleType("cupy")
    fake.__version__ = "0.0-test"
    fake.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            getDeviceCount=get_device_count,
            getDeviceProperties=lambda i: {"name": b"Test GPU"},
        ),
        nvrtc=types.SimpleNamespace(getVersion=nvrtc_version),
        Device=_Device,
    )
    return fake


@pytest.mark.parametrize(
    "answers, expected",
    [
        (dict(count_error=RuntimeError("cudaErrorNoDevice")), "no CUDA device: RuntimeError: cudaErrorNoDevice"),
        (dict(device_count=0), "no CUDA device: the CUDA runtime reports 0 devices"),
        (dict(nvrtc_error=OSError("libnvrtc.so")), "NVRTC, the CUDA run-time compiler, cannot be loaded"),
        ({}, "ok: Test GPU (device 0, CuPy 0.0-test)"),
    ],
)
def test_status_reasons(monkeypatch, answers, expected):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(**answers))
    monkeypatch.setattr(pytconv.gpu, "_instance", None)
    ok, reason = pytconv.gpu.status()
    assert reason.startswith(expected)
    assert ok == expected.startswith("ok: ")
    if ok:
        be = pytconv.gpu.backend()
        assert isinstance(be, gpu_backend.CuPyBackend) and be.xp is sys.modules["cupy"]
    else:
        with pytest.raises(RuntimeError, match=re.escape(reason)):
            pytconv.gpu.backend()


def test_workspace_limit_is_validated():
    before = pytconv.gpu.get_workspace_limit()
    with pytest.raises(ValueError, match="set_workspace_limit"):
        pytconv.gpu.set_workspace_limit(0)
    with pytest.raises(TypeError, match="set_workspace_limit"):
        pytconv.gpu.set_workspace_limit(1.5)
    assert pytconv.gpu.get_workspace_limit() == before


def test_workspace_limit_setting_and_environment(monkeypatch):
    monkeypatch.setattr(pytconv.gpu, "_workspace_bytes", None)
    monkeypatch.setenv("PYTCONV_GPU_WORKSPACE_MB", "64")
    assert pytconv.gpu.get_workspace_limit() == 64 << 20
    pytconv.gpu.set_workspace_limit(3 << 20)
    assert pytconv.gpu.get_workspace_limit() == 3 << 20
    monkeypatch.setattr(pytconv.gpu, "_workspace_bytes", None)
    monkeypatch.setenv("PYTCONV_GPU_WORKSPACE_MB", "lots")
    with pytest.raises(ValueError, match="PYTCONV_GPU_WORKSPACE_MB"):
        pytconv.gpu.get_workspace_limit()


def test_command_line_info_says_whether_the_gpu_path_is_on():
    res = subprocess.run([sys.executable, "-m", "pytconv", "info"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    ok, reason = pytconv.gpu.status()
    assert "gpu" in res.stdout.lower()
    assert reason.split(" (")[0] in res.stdout


# ---- 4. on the GPU ------------------------------------------------------------


@pytest.fixture(scope="module")
def cp():
    ok, reason = pytconv.gpu.status()
    if not ok:
        pytest.skip(f"GPU path unavailable: {reason}")
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gpu_matches_the_core(cp, case):
    name, op, x_shape, w_shape, kw = case
    p = _problem(op, x_shape, w_shape, kw)
    ref = _NumPyBackend
    be = pytconv.gpu.backend()
    for dtype in DTYPES:
        x, w, dy, bias = _rng_arrays([p.x_shape, p.w_shape, p.y_shape, (p.out_channels,)], dtype, 0)
        g = [cp.asarray(a) for a in (x, w, dy, bias)]
        assert_close(be.forward(p, g[0], g[1], g[3]).get(), ref.forward(p, x, w, bias), dtype, name)
        assert_close(be.backward_data(p, g[2], g[1]).get(), ref.backward_data(p, dy, w), dtype, name)
        assert_close(be.backward_filter(p, g[0], g[2]).get(), ref.backward_filter(p, x, dy), dtype, name)
        assert_close(be.bias_backward(g[2]).get(), ref.bias_backward(dy), dtype, name)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gpu_public_api(cp, case):
    name, op, x_shape, w_shape, kw = case
    for dtype in DTYPES:
        x, w = _rng_arrays([x_shape, w_shape], dtype, 2)
        b = _rng_arrays([(w_shape[0] if op == "conv" else w_shape[1] * kw.get("groups", 1),)], dtype, 3)[0]
        fn = pytconv.conv if op == "conv" else pytconv.conv_transpose
        got = fn(cp.asarray(x), cp.asarray(w), cp.asarray(b), **kw)
        assert isinstance(got, cp.ndarray) and got.dtype == dtype and got.flags.c_contiguous
        assert got.device.id == cp.cuda.Device().id
        assert_close(got.get(), fn(x, w, b, **kw), dtype, name)


class _PoisonedCuPy:
    """CuPy whose `empty` fills the new array with NaN."""

    def __init__(self, cp):
        self._cp = cp

    def __getattr__(self, name):
        return getattr(self._cp, name)

    def empty(self, *args, **kwargs):
        a = self._cp.empty(*args, **kwargs)
        a.fill(np.nan)
        return a


@pytest.mark.gpu
@pytest.mark.parametrize("case", _CHUNKING_CASES, ids=[c[0] for c in _CHUNKING_CASES])
def test_gpu_chunking_and_poisoned_outputs(cp, case):
    """Small workspaces force tiles; every array the backend allocates is
    filled with NaN first, so that an element left unwritten shows."""
    name, op, x_shape, w_shape, kw = case
    p = _problem(op, x_shape, w_shape, kw)
    per_column = p.in_channels * math.prod(p.kernel) + p.out_channels
    x, w, dy = _rng_arrays([p.x_shape, p.w_shape, p.y_shape], np.float64, 4)
    ref = _NumPyBackend
    for columns in (1, 7, 200):
        be = gpu_backend.CuPyBackend(_PoisonedCuPy(cp), workspace_bytes=columns * per_column * 8)
        gx, gw, gdy = (cp.asarray(a) for a in (x, w, dy))
        assert_close(be.forward(p, gx, gw, None).get(), ref.forward(p, x, w, None), np.float64, name)
        assert_close(be.backward_data(p, gdy, gw).get(), ref.backward_data(p, dy, w), np.float64, name)
        assert_close(be.backward_filter(p, gx, gdy).get(), ref.backward_filter(p, x, dy), np.float64, name)


@pytest.mark.gpu
def test_gpu_mixing_numpy_and_cupy_is_a_type_error(cp):
    x = np.ones((1, 1, 4), np.float32)
    w = np.ones((1, 1, 2), np.float32)
    with pytest.raises(TypeError, match="mix"):
        pytconv.conv(cp.asarray(x), w)
    with pytest.raises(TypeError, match="mix"):
        pytconv.conv_transpose(x, cp.asarray(w))
    with pytest.raises(TypeError, match="mix"):
        pytconv.conv(cp.asarray(x), cp.asarray(w), np.ones(1, np.float32))


@pytest.mark.gpu
def test_gpu_gradients_and_results_are_reproducible(cp):
    x, w, dy = _rng_arrays([(4, 8, 20, 20), (16, 8, 3, 3), (4, 16, 20, 20)], np.float32, 5)
    gx, gw, gdy = (cp.asarray(a) for a in (x, w, dy))
    a = pytconv.conv_weight_grad(gx, w.shape, gdy, padding=1)
    b = pytconv.conv_weight_grad(gx, w.shape, gdy, padding=1)
    assert bool((a == b).all())
    assert_close(a.get(), pytconv.conv_weight_grad(x, w.shape, dy, padding=1), np.float32)
    assert_close(pytconv.conv_input_grad(x.shape, gw, gdy, padding=1).get(),
                 pytconv.conv_input_grad(x.shape, w, dy, padding=1), np.float32)
    assert_close(pytconv.bias_grad(gdy).get(), pytconv.bias_grad(dy), np.float32)


@pytest.mark.gpu
def test_gpu_runs_on_the_current_stream(cp):
    x, w = _rng_arrays([(2, 4, 30, 30), (8, 4, 3, 3)], np.float32, 6)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        y = pytconv.conv(cp.asarray(x), cp.asarray(w), padding=1)
    stream.synchronize()
    assert_close(y.get(), pytconv.conv(x, w, padding=1), np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_matches_torch_cuda(cp, dtype):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    F = torch.nn.functional
    x, w, wt = _rng_arrays([(2, 6, 14, 13), (8, 3, 3, 3), (6, 4, 4, 4)], dtype, 7)
    tx, tw, twt = (torch.from_numpy(a).cuda() for a in (x, w, wt))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    got = pytconv.conv(cp.asarray(x), cp.asarray(w), stride=2, padding=1, dilation=(1, 2), groups=2)
    ref = F.conv2d(tx, tw, stride=2, padding=1, dilation=(1, 2), groups=2).cpu().numpy()
    assert_close(got.get(), ref, dtype, "conv2d")
    got = pytconv.conv_transpose(cp.asarray(x), cp.asarray(wt), stride=2, padding=1, output_padding=1, groups=2)
    ref = F.conv_transpose2d(tx, twt, stride=2, padding=1, output_padding=1, groups=2).cpu().numpy()
    assert_close(got.get(), ref, dtype, "conv_transpose2d")
    x3, w3 = _rng_arrays([(1, 3, 8, 9, 7), (4, 3, 3, 3, 3)], dtype, 8)
    got = pytconv.conv(cp.asarray(x3), cp.asarray(w3), padding=1, padding_mode="circular")
    tconv = torch.nn.Conv3d(3, 4, 3, padding=1, padding_mode="circular", bias=False).to(
        device="cuda", dtype=torch.float32 if dtype == np.float32 else torch.float64)
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(w3))
        ref = tconv(torch.from_numpy(x3).cuda()).cpu().numpy()
    assert_close(got.get(), ref, dtype, "conv3d circular")
