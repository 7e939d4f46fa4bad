"""Thread safety: many Python threads calling every operation at once on shared
read-only inputs get the same bits as a single call, and changing the core's
thread count from another thread meanwhile neither crashes nor changes a bit
(the core's results do not depend on its thread count)."""

from __future__ import annotations

import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pytconv

PYTHON_THREADS = 8
ROUNDS = 3  # calls of every operation per Python thread


def _read_only(a):
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _operations():
    """(name, call) pairs covering every public operation on shared read-only
    inputs. Most are large enough (10-30 MFLOP) for the core to split them
    between its own threads, so its pool is exercised concurrently too."""
    rng = np.random.default_rng(1234)
    ops = []
    for dtype in (np.float32, np.float64):
        def arr(*shape):
            return _read_only(rng.standard_normal(shape).astype(dtype))

        x2 = arr(2, 8, 64, 64)
        w2 = arr(16, 4, 3, 3)  # groups=2
        b2 = arr(16)
        y2 = pytconv.conv(x2, w2, groups=2, padding=1)
        g2 = arr(*y2.shape)
        t2 = arr(2, 12, 32, 32)
        wt2 = arr(12, 8, 3, 3)
        yt2 = pytconv.conv_transpose(t2, wt2, stride=2, padding=1, output_padding=1, groups=3)
        gt2 = arr(*yt2.shape)
        x1 = arr(3, 8, 8000)
        w1 = arr(8, 8, 7)
        x3 = arr(1, 8, 20, 20, 20)
        w3 = arr(8, 8, 3, 3, 3)
        tag = np.dtype(dtype).name
        ops += [
            (f"conv2d {tag}", lambda x2=x2, w2=w2, b2=b2: pytconv.conv(x2, w2, b2, padding=1, groups=2)),
            (f"conv2d reflect {tag}",
             lambda x2=x2, w2=w2: pytconv.conv(x2, w2, padding=(1, 2), groups=2, padding_mode="reflect")),
            (f"conv1d circular dilated {tag}",
             lambda x1=x1, w1=w1: pytconv.conv(x1, w1, padding="same", dilation=3, padding_mode="circular")),
            (f"conv3d replicate strided {tag}",
             lambda x3=x3, w3=w3: pytconv.conv(x3, w3, stride=2, padding=1, padding_mode="replicate")),
            (f"conv_transpose2d {tag}",
             lambda t2=t2, wt2=wt2: pytconv.conv_transpose(t2, wt2, stride=2, padding=1, output_padding=1, groups=3)),
            (f"conv_transpose3d same {tag}",
             lambda x3=x3, w3=w3: pytconv.conv_transpose(x3, w3, stride=2, padding="same")),
            (f"conv_input_grad {tag}",
             lambda x2=x2, w2=w2, g2=g2: pytconv.conv_input_grad(x2.shape, w2, g2, padding=1, groups=2)),
            (f"conv_weight_grad {tag}",
             lambda x2=x2, w2=w2, g2=g2: pytconv.conv_weight_grad(x2, w2.shape, g2, padding=1, groups=2)),
            (f"conv_transpose_input_grad {tag}",
             lambda t2=t2, wt2=wt2, gt2=gt2: pytconv.conv_transpose_input_grad(
                 t2.shape, wt2, gt2, stride=2, padding=1, groups=3)),
            (f"conv_transpose_weight_grad {tag}",
             lambda t2=t2, wt2=wt2, gt2=gt2: pytconv.conv_transpose_weight_grad(
                 t2, wt2.shape, gt2, stride=2, padding=1, groups=3)),
            (f"bias_grad {tag}", lambda g2=g2: pytconv.bias_grad(g2)),
        ]
    return ops


@pytest.fixture(scope="module")
def operations():
    return _operations()


@pytest.fixture
def restore_threads():
    before = pytconv.get_num_threads()
    yield
    pytconv.set_num_threads(before)


def _expected(ops, threads):
    pytconv.set_num_threads(threads)
    return {name: call() for name, call in ops}


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_results_do_not_depend_on_the_thread_count(operations, restore_threads):
    one = _expected(operations, 1)
    for threads in (2, 3, 8):
        other = _expected(operations, threads)
        different = [name for name in one if not _same_bits(one[name], other[name])]
        assert not different, f"{threads} threads change the bits of {different}"


def _hammer(ops, expected, seed, stop_flag=None):
    """Calls every operation ROUNDS times in a random order; returns the names
    of those whose result differed from `expected`."""
    order = [name for name in expected for _ in range(ROUNDS)]
    random.Random(seed).shuffle(order)
    calls = dict(ops)
    wrong = []
    for name in order:
        if not _same_bits(calls[name](), expected[name]):
            wrong.append(name)
    return wrong


def test_concurrent_calls_give_the_bits_of_a_single_call(operations, restore_threads):
    expected = _expected(operations, 2)
    inputs_before = [a.copy() for a in _input_arrays(operations)]
    with ThreadPoolExecutor(PYTHON_THREADS) as pool:
        results = list(pool.map(lambda seed: _hammer(operations, expected, seed), range(PYTHON_THREADS)))
    wrong = sorted({name for r in results for name in r})
    assert not wrong, f"concurrent calls changed the results of {wrong}"
    for before, after in zip(inputs_before, _input_arrays(operations)):
        assert _same_bits(before, after), "an input array was modified"


def test_set_num_threads_while_calls_run(operations, restore_threads):
    expected = _expected(operations, 1)
    stop = threading.Event()
    changes = []

    def change_thread_count():
        rng = random.Random(99)
        while not stop.is_set():
            n = rng.choice([1, 2, 3, 4, 7, 16])
            pytconv.set_num_threads(n)
            changes.append(n)
            assert pytconv.get_num_threads() >= 1

    changer = threading.Thread(target=change_thread_count)
    changer.start()
    try:
        with ThreadPoolExecutor(PYTHON_THREADS // 2) as pool:
            results = list(pool.map(lambda seed: _hammer(operations, expected, seed), range(PYTHON_THREADS // 2)))
    finally:
        stop.set()
        changer.join()
    assert len(changes) > 10, "the thread count barely changed during the calls"
    wrong = sorted({name for r in results for name in r})
    assert not wrong, f"changing the thread count during calls changed the results of {wrong}"


def _input_arrays(ops):
    """The read-only arrays the operations close over."""
    seen = {}
    for _, call in ops:
        for value in (call.__defaults__ or ()):
            if isinstance(value, np.ndarray):
                seen[id(value)] = value
    return list(seen.values())


def test_inputs_are_read_only(operations):
    arrays = _input_arrays(operations)
    assert arrays and all(not a.flags.writeable for a in arrays)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
@pytest.mark.parametrize("confine", ["one CPU", "every CPU"])
def test_a_caller_confined_to_some_cpus(operations, restore_threads, confine):
    """The core starts its workers off the caller's CPU where it can (Linux);
    a caller confined to fewer CPUs than threads, or to one, gets the same
    bits, and its own CPU set is what it was."""
    allowed = os.sched_getaffinity(0)
    expected = _expected(operations, 1)
    mask = {min(allowed)} if confine == "one CPU" else allowed
    try:
        os.sched_setaffinity(0, mask)
        for threads in (2, len(allowed) + 1):
            got = _expected(operations, threads)
            different = [name for name in expected if not _same_bits(expected[name], got[name])]
            assert not different, f"{threads} threads on {confine} change the bits of {different}"
            assert os.sched_getaffinity(0) == mask
    finally:
        os.sched_setaffinity(0, allowed)
