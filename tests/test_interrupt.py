"""Ctrl-C during a long call: KeyboardInterrupt reaches Python promptly, and the
process stays healthy (the next calls are correct).

Each case runs in a subprocess, which sizes its call to take about five seconds on
this machine, starts it, and is sent SIGINT after about half a second. The
latency is the time from the signal to the KeyboardInterrupt being caught.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess is POSIX only")

MAX_LATENCY_S = 1.5

CHILD = textwrap.dedent(
    r"""
    import json, signal, sys, time
    import numpy as np
    import pytconv
    from pytconv import reference

    # A shell starting the tests in the background hands its children SIGINT
    # ignored, and Python then installs no handler of its own: restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    op, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if threads:
        pytconv.set_num_threads(threads)
    rng = np.random.default_rng(0)

    def make(length):
        # A 1-d problem whose cost grows linearly with `length`: heavy in
        # arithmetic (2.3 MFLOP per position), light in memory (1.5 KiB).
        x = np.ones((1, 192, length), np.float32)
        w = np.full((192, 192, 31), 1e-3, np.float32)
        kw = dict(padding=15, padding_mode=mode)
        if op == "conv":
            return lambda: pytconv.conv(x, w, **kw)
        if op == "conv_transpose":
            return lambda: pytconv.conv_transpose(x, w, **kw)
        g = np.ones((1, 192, length), np.float32)
        return lambda: pytconv.conv_weight_grad(x, w.shape, g, **kw)

    # Size the call to take about 5 s: time a small one, scale linearly.
    length = 2**10
    call = make(length)
    call()
    start = time.perf_counter(); call(); small = time.perf_counter() - start
    # At most 2**18 positions (200 MB per array) however fast the machine.
    length = int(length * min(5.0 / max(small, 1e-4), 2**8))
    call = make(length)
    print(json.dumps({"ready": time.time(), "length": length, "estimate_s": small * length / 2**10}), flush=True)
    started = time.time()
    try:
        call()
        print(json.dumps({"finished": time.time() - started}), flush=True)
        sys.exit(3)
    except KeyboardInterrupt:
        caught = time.time()
    # The process must still compute correctly.
    x = rng.standard_normal((2, 4, 9, 7))
    w = rng.standard_normal((6, 2, 3, 2))
    ok = np.allclose(pytconv.conv(x, w, groups=2, padding=1, padding_mode=mode),
                     reference.conv(x, w, groups=2, padding=1, padding_mode=mode), rtol=1e-12, atol=1e-12)
    wt = rng.standard_normal((4, 3, 3, 2))
    ok = ok and np.allclose(pytconv.conv_transpose(x, wt, stride=2, padding=1, padding_mode=mode),
                            reference.conv_transpose(x, wt, stride=2, padding=1, padding_mode=mode),
                            rtol=1e-12, atol=1e-12)
    # And run a long call again to completion (a short version of it).
    make(2**8)()
    print(json.dumps({"caught": caught, "started": started, "correct_after": bool(ok)}), flush=True)
    """
)


def _run_child(op, mode, threads):
    env = dict(os.environ)
    env.pop("PYTCONV_NUM_THREADS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, op, mode, str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ready = json.loads(proc.stdout.readline() or "{}")
        assert "ready" in ready, f"the child did not start: {proc.stderr.read()}"
        time.sleep(0.5)
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"child exited with {proc.returncode}: {lines} {err[-2000:]}"
    result = lines[-1]
    return ready, sent, result


@pytest.mark.parametrize(
    "op, mode, threads",
    [
        ("conv", "zeros", 0),
        ("conv_transpose", "circular", 2),
        ("conv_weight_grad", "zeros", 0),
        ("conv", "reflect", 1),
    ],
)
def test_ctrl_c_interrupts_a_long_call(op, mode, threads):
    ready, sent, result = _run_child(op, mode, threads)
    latency = result["caught"] - sent
    print(f"{op} mode={mode} threads={threads or 'default'}: call sized to ~{ready['estimate_s']:.1f} s, "
          f"KeyboardInterrupt {latency * 1000:.0f} ms after SIGINT")
    assert result["correct_after"], "results after the interrupt are wrong"
    assert latency < MAX_LATENCY_S, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
    assert result["caught"] - result["started"] < ready["estimate_s"] * 0.8, "the call ran to (nearly) the end"
