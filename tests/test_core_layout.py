"""Memory layouts, empty batches, threads and SIMD paths: none of them changes
a single bit of the results (or, across SIMD paths, the agreement with the
reference)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pytconv
from pytconv import reference

from core_cases import assert_close

# ---- one problem per operation -----------------------------------------------------


def _operations(dtype=np.float64, seed=0, big=False):
    """(name, callable) for every public operation on random arrays. `big`
    makes each one tens of MFLOP, enough for the core to use two threads."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    if big:
        x, w, b = r(4, 16, 40, 38), r(24, 8, 3, 3), r(24)
        kw = dict(stride=1, padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)
        t, wt, bt = r(4, 32, 24, 23), r(32, 16, 4, 3), r(16)
        tkw = dict(stride=2, padding=1, groups=1, dilation=1)
        x3, w3 = r(2, 8, 12, 14, 10), r(12, 8, 3, 3, 3)
        # many channels on few positions: the weight gradient as a GEMM
        xd, wd = r(2, 64, 11, 11), r(256, 64, 3, 3)
        # 3x3 and 4x4 at stride 2 on 96 channels and 264 tiles: minimal filtering
        xm, wm, w4 = r(2, 96, 46, 42), r(96, 96, 3, 3), r(96, 96, 4, 4)
    else:
        x, w, b = r(2, 4, 9, 8), r(6, 2, 3, 3), r(6)
        kw = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)
        t, wt, bt = r(2, 6, 5, 4), r(6, 4, 4, 3), r(4)
        tkw = dict(stride=2, padding=1, groups=1, dilation=1)
        x3, w3 = r(1, 3, 5, 6, 4), r(2, 3, 2, 3, 2)
        xd, wd = r(1, 8, 5, 5), r(12, 8, 3, 3)
        xm, wm, w4 = r(1, 5, 9, 8), r(7, 5, 3, 3), r(7, 5, 4, 4)
    dkw = dict(stride=2, padding=1)
    dym = r(*pytconv.conv_output_shape(xm.shape, wm.shape, **dkw))
    dy4 = r(*pytconv.conv_output_shape(xm.shape, w4.shape, **dkw))
    dyd = r(*pytconv.conv_output_shape(xd.shape, wd.shape, **dkw))
    y_shape = pytconv.conv_output_shape(x.shape, w.shape, **kw)
    dy = r(*y_shape)
    t_out = pytconv.conv_transpose_output_shape(t.shape, wt.shape, output_padding=1, **tkw)
    dt = r(*t_out)
    return {
        "conv": (pytconv.conv, (x, w, b), kw),
        "conv_reflect": (pytconv.conv, (x, w, b), dict(kw, padding_mode="reflect")),
        "conv_circular_3d": (pytconv.conv, (x3, w3), dict(padding=(1, 2, 1), padding_mode="circular")),
        "conv_transpose": (pytconv.conv_transpose, (t, wt, bt), dict(tkw, output_padding=1)),
        "conv_transpose_replicate": (pytconv.conv_transpose, (t, wt, bt),
                                     dict(tkw, output_padding=1, padding_mode="replicate")),
        "conv_input_grad": (pytconv.conv_input_grad, (x.shape, w, dy), kw),
        "conv_weight_grad": (pytconv.conv_weight_grad, (x, w.shape, dy), kw),
        "conv_weight_grad_deep": (pytconv.conv_weight_grad, (xd, wd.shape, dyd), dkw),
        "conv_3x3_stride_2": (pytconv.conv, (xm, wm), dkw),
        "conv_3x3_stride_2_input_grad": (pytconv.conv_input_grad, (xm.shape, wm, dym), dkw),
        "conv_3x3_stride_2_weight_grad": (pytconv.conv_weight_grad, (xm, wm.shape, dym), dkw),
        "conv_4x4_stride_2": (pytconv.conv, (xm, w4), dkw),
        "conv_4x4_stride_2_input_grad": (pytconv.conv_input_grad, (xm.shape, w4, dy4), dkw),
        "conv_4x4_stride_2_weight_grad": (pytconv.conv_weight_grad, (xm, w4.shape, dy4), dkw),
        "conv_transpose_input_grad": (pytconv.conv_transpose_input_grad, (t.shape, wt, dt), tkw),
        "conv_transpose_weight_grad": (pytconv.conv_transpose_weight_grad, (t, wt.shape, dt), tkw),
        "bias_grad": (pytconv.bias_grad, (dy,), {}),
    }


def _run(op):
    fn, args, kw = op
    return fn(*args, **kw)


def _same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---- memory layouts ------------------------------------------------------------------


def _layouts(a):
    """The same values as `a` in other memory layouts (all != C-contiguous)."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return {}
    out = {"fortran": np.asfortranarray(a)}
    rev = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    out["negative_strides"] = rev
    big = np.zeros((2,) + a.shape, a.dtype)
    big[1] = a
    wide = np.zeros(a.shape[:-1] + (a.shape[-1] * 2,), a.dtype)
    wide[..., ::2] = a
    out["every_other"] = wide[..., ::2]
    perm = tuple(reversed(range(a.ndim)))
    out["transposed_view"] = np.ascontiguousarray(a.transpose(perm)).transpose(perm)
    ro = a.copy()
    ro.setflags(write=False)
    out["read_only"] = ro
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_operations()))
def test_any_memory_layout_gives_the_same_bits(name, dtype):
    fn, args, kw = _operations(dtype)[name]
    expected = fn(*args, **kw)
    assert expected.flags.c_contiguous and expected.flags.writeable and expected.flags.owndata
    for i, a in enumerate(args):
        for layout, variant in _layouts(a).items():
            if variant.flags.c_contiguous and layout != "read_only":
                continue  # e.g. a 1-d bias in Fortran order
            changed = list(args)
            changed[i] = variant
            got = fn(*changed, **kw)
            assert _same_bits(got, expected), f"{name}: argument {i} as {layout}"
            assert got.flags.c_contiguous and got.flags.writeable
            assert not any(isinstance(v, np.ndarray) and np.shares_memory(got, v) for v in changed)


def test_inputs_are_not_modified():
    for name, (fn, args, kw) in _operations().items():
        before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        fn(*args, **kw)
        for a, b in zip(args, before):
            if isinstance(a, np.ndarray):
                assert _same_bits(a, b), name


def test_broadcast_weight_and_array_like_inputs():
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5))
    w = np.broadcast_to(np.float64(0.5), (3, 2, 3, 3))  # zero strides
    expected = pytconv.conv(x, np.full((3, 2, 3, 3), 0.5))
    assert _same_bits(pytconv.conv(x, w), expected)
    assert _same_bits(pytconv.conv(x.tolist(), w.tolist()), expected)  # nested lists of floats are float64


# ---- empty batches ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_empty_batch(dtype, ndim):
    x = np.zeros((0, 4) + (5,) * ndim, dtype)
    w = np.ones((6, 2) + (3,) * ndim, dtype)
    b = np.ones(6, dtype)
    y = pytconv.conv(x, w, b, stride=2, padding=1, groups=2)
    assert y.shape == (0, 6) + (3,) * ndim and y.dtype == dtype
    assert pytconv.conv(x, w, padding="same", groups=2, padding_mode="reflect").shape == (0, 6) + (5,) * ndim
    t = np.zeros((0, 6) + (3,) * ndim, dtype)
    wt = np.ones((6, 2) + (3,) * ndim, dtype)
    out = pytconv.conv_transpose(t, wt, np.ones(4, dtype), stride=2, padding=1, output_padding=1, groups=2)
    assert out.shape == (0, 4) + (6,) * ndim and out.dtype == dtype

    dx = pytconv.conv_input_grad(x.shape, w, y, stride=2, padding=1, groups=2)
    assert dx.shape == x.shape and dx.dtype == dtype
    dw = pytconv.conv_weight_grad(x, w.shape, y, stride=2, padding=1, groups=2)
    assert dw.shape == w.shape and dw.dtype == dtype and not dw.any()
    dt = pytconv.conv_transpose_input_grad(t.shape, wt, out, stride=2, padding=1, groups=2)
    assert dt.shape == t.shape and dt.dtype == dtype
    dwt = pytconv.conv_transpose_weight_grad(t, wt.shape, out, stride=2, padding=1, groups=2)
    assert dwt.shape == wt.shape and not dwt.any()
    db = pytconv.bias_grad(y)
    assert db.shape == (6,) and db.dtype == dtype and not db.any()


def test_empty_batch_weight_grad_is_zero_even_in_recycled_memory():
    """np.empty may hand back memory holding old values: the empty-batch weight
    gradient must still be written as zeros."""
    for _ in range(5):
        garbage = np.full((64, 64, 3, 3), 7.0)
        del garbage
        dw = pytconv.conv_weight_grad(np.zeros((0, 64, 8, 8)), (64, 64, 3, 3), np.zeros((0, 64, 6, 6)))
        assert not dw.any()


# ---- threads --------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    saved = pytconv.get_num_threads()
    yield
    pytconv.set_num_threads(saved)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_give_the_same_bits(restore_threads, dtype):
    ops = _operations(dtype, seed=5, big=True)
    pytconv.set_num_threads(1)
    assert pytconv.get_num_threads() == 1
    one = {name: _run(op) for name, op in ops.items()}
    for threads in (2, 3):
        pytconv.set_num_threads(threads)
        assert pytconv.get_num_threads() == threads
        for name, op in ops.items():
            assert _same_bits(_run(op), one[name]), f"{name}: {threads} threads differ from 1"


def test_concurrent_calls_give_the_serial_bits():
    """Several Python threads calling the core at once (it releases the GIL)."""
    ops = {}
    for dtype in (np.float32, np.float64):
        for name, op in _operations(dtype, seed=9).items():
            ops[(name, np.dtype(dtype).name)] = op
    for name, op in _operations(np.float32, seed=10, big=True).items():
        ops[(name, "big")] = op
    serial = {key: _run(op) for key, op in ops.items()}
    keys = list(ops) * 4
    np.random.default_rng(0).shuffle(keys)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda key: (key, _run(ops[key])), keys))
    for key, got in results:
        assert _same_bits(got, serial[key]), key


def _python(code, **env):
    """Runs code in a fresh interpreter (the core reads its environment once)."""
    full = dict(os.environ)
    for k in ("PYTCONV_NUM_THREADS", "PYTCONV_SIMD"):
        full.pop(k, None)
    full.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("value,expected", [("1", 1), ("3", 3), ("", None), ("zero", None), ("0", None)])
def test_pytconv_num_threads_environment_variable(value, expected):
    out = _python("import os, pytconv; print(pytconv.get_num_threads(), os.cpu_count())",
                  PYTCONV_NUM_THREADS=value)
    threads, cpus = map(int, out.split())
    assert threads == (expected if expected is not None else cpus)


def test_environment_thread_count_gives_the_same_bits(tmp_path):
    code = f"""
        import sys, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_core_layout import _operations, _run
        np.savez({str(tmp_path)!r} + "/" + sys.argv[0] + ".npz",
                 **{{name: _run(op) for name, op in _operations(np.float32, seed=3, big=True).items()}})
    """
    for threads in ("1", "2"):
        _python(code.replace("sys.argv[0]", repr(threads)), PYTCONV_NUM_THREADS=threads)
    one, two = np.load(tmp_path / "1.npz"), np.load(tmp_path / "2.npz")
    for name in one.files:
        assert _same_bits(one[name], two[name]), name


def _cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


@pytest.mark.parametrize("simd", ["generic", "avx2", "avx512"])
def test_every_simd_path_matches_the_reference(simd, tmp_path):
    code = f"""
        import sys, json, numpy as np, pytconv, pytconv._core
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_core_layout import _operations, _run
        results = {{}}
        for dtype in (np.float32, np.float64):
            for name, op in _operations(dtype, seed=4, big=True).items():
                results[name + "_" + np.dtype(dtype).name] = _run(op)
        np.savez({str(tmp_path / "out.npz")!r}, **results)
        print(json.dumps(pytconv._core.simd_level()))
    """
    level = json.loads(_python(code, PYTCONV_SIMD=simd).strip().splitlines()[-1])
    supported = {"generic": True, "avx2": _cpu_has("avx2") and _cpu_has("fma"), "avx512": _cpu_has("avx512f")}
    if supported[simd] and simd != "avx512":
        assert level == simd
    else:
        assert level in ("generic", "avx2", "avx512") and (simd == "avx512" or level == "generic")
    got = np.load(tmp_path / "out.npz")
    for dtype in (np.float32, np.float64):
        for name, (ref, scale) in _big_references(dtype).items():
            assert_close(got[name + "_" + np.dtype(dtype).name], ref, scale, dtype, f"{simd} {name}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through ctypes: Linux")
@pytest.mark.parametrize("simd", ["generic", "avx2", "avx512"])
def test_strided_unfolding_reads_nothing_past_the_input(simd):
    """The unfolding of stride-2 windows reads its rows two vectors at a time,
    the last ones masked; the last window of the last row ends on the input's
    last element, which here lies just before a page that may not be read: a
    read past it would kill the process."""
    code = """
        import ctypes, mmap, numpy as np, pytconv
        page = mmap.PAGESIZE
        buf = mmap.mmap(-1, 3 * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        assert libc.mprotect(base + 2 * page, page, 0) == 0, ctypes.get_errno()
        rng = np.random.default_rng(5)
        for dtype in (np.float32, np.float64):
            # rows of 15, 16 (whole vectors) and 17 windows
            for shape, w_shape in (((1, 2, 9, 31), (3, 2, 3, 3)), ((1, 2, 5, 33), (3, 2, 3, 3)),
                                   ((1, 3, 5, 37), (2, 3, 1, 5))):
                n = int(np.prod(shape))
                size = n * np.dtype(dtype).itemsize
                x = np.frombuffer(buf, dtype, n, 2 * page - size).reshape(shape)
                x[...] = rng.standard_normal(shape)
                w = rng.standard_normal(w_shape).astype(dtype)
                y = pytconv.conv(x, w, stride=2)
                assert y.shape[-1] == (shape[-1] - w_shape[-1]) // 2 + 1
                pytconv.conv_weight_grad(x, w.shape, np.ones_like(y), stride=2)
                assert np.allclose(y, pytconv.conv(x.copy(), w, stride=2))
        print("ok")
    """
    assert _python(code, PYTCONV_SIMD=simd).strip().endswith("ok")


@functools.lru_cache(maxsize=None)
def _big_references(dtype):
    return {name: _reference(*op) for name, op in _operations(dtype, seed=4, big=True).items()}


def _reference(fn, args, kw):
    """The float64 reference of one of _operations' calls, and its error scale."""
    from pytconv._args import conv_problem, transposed_problem

    def absolute(a):
        return np.abs(a.astype(np.float64)) if isinstance(a, np.ndarray) else a

    def compute(args):
        if fn is pytconv.conv:
            return reference.conv(*args, **kw)
        if fn is pytconv.conv_transpose:
            return reference.conv_transpose(*args, **kw)
        if fn is pytconv.conv_input_grad:
            shape, w, dy = args
            return reference.backward_data(conv_problem("ref", shape, w.shape, **kw), dy, w)
        if fn is pytconv.conv_weight_grad:
            x, w_shape, dy = args
            return reference.backward_filter(conv_problem("ref", x.shape, w_shape, **kw), x, dy)
        if fn is pytconv.conv_transpose_input_grad:
            shape, w, dt = args
            p = transposed_problem("ref", shape, w.shape, output_shape=dt.shape[2:], **kw)
            return reference.forward(p, dt, w)
        if fn is pytconv.conv_transpose_weight_grad:
            t, w_shape, dt = args
            p = transposed_problem("ref", t.shape, w_shape, output_shape=dt.shape[2:], **kw)
            return reference.backward_filter(p, dt, t)
        if fn is pytconv.bias_grad:
            (dy,) = args
            return dy.astype(np.float64).sum(axis=(0,) + tuple(range(2, dy.ndim)))
        raise AssertionError(fn)

    return compute(args), compute([absolute(a) for a in args])


# ---- memory of results ------------------------------------------------------------


def test_large_results_are_aligned_writable_arrays_from_a_bounded_pool():
    from pytconv import _core

    x = np.ones((2, 8, 32, 32))
    w = np.ones((8, 4, 2, 2))
    for _ in range(3):
        y = pytconv.conv_transpose(x, w, stride=2)
        assert y.shape == (2, 4, 64, 64) and y.dtype == np.float64
        assert y.flags.c_contiguous and y.flags.writeable and y.flags.aligned
        assert y.ctypes.data % 64 == 0
        np.testing.assert_array_equal(y, 8.0)
        y += 1  # an ordinary array
        np.testing.assert_array_equal(y, 9.0)
        del y
    # Many results of many sizes released: at most 4 blocks, 256 MiB, kept.
    for n in range(1, 40):
        z = pytconv.conv_transpose(np.ones((1, 1, 64 * n, 32)), np.ones((1, 1, 2, 2)), stride=2)
        del z
    assert 0 < _core.pooled_bytes() <= 256 << 20


def test_a_view_keeps_a_released_result_memory():
    """Memory goes back to the pool only when no array uses it."""
    x = np.ones((1, 4, 64, 64))
    w = np.ones((4, 4, 2, 2))
    y = pytconv.conv_transpose(x, w, stride=2)
    view = y[0, 1]
    del y
    again = pytconv.conv_transpose(2 * x, w, stride=2)  # same size: would take the block
    np.testing.assert_array_equal(view, 4.0)
    np.testing.assert_array_equal(again, 8.0)
    assert not np.shares_memory(view, again)
