"""``python -m pytconv``: info, demo and the delegation to check."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import pytconv
from pytconv import __main__ as cli


def _run(*args, env=None):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "pytconv", *args], capture_output=True, text=True, timeout=300,
                          env=full)


def test_info():
    proc = _run("info", env={"PYTCONV_NUM_THREADS": "3"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"pytconv {pytconv.__version__}\n")
    assert re.search(r"SIMD level\s+(avx512|avx2|generic)\b", out)
    assert re.search(r"threads\s+3 \(\d+ CPUs online, PYTCONV_NUM_THREADS=3\)", out)
    assert "BLAS        none: built-in packed micro-kernels" in out
    assert re.search(r"^  CPU\s+\S", out, re.M)
    assert re.search(r"^  GPU\s+(available: |not available: |GPU path not installed)", out, re.M)


def test_info_reports_the_simd_cap():
    proc = _run("info", env={"PYTCONV_SIMD": "generic"})
    assert proc.returncode == 0, proc.stderr
    assert "SIMD level  generic (PYTCONV_SIMD=generic)" in proc.stdout


def test_info_without_the_gpu_module(monkeypatch):
    """info works whether or not the GPU path is installed."""
    monkeypatch.setitem(sys.modules, "pytconv.gpu", None)  # import fails with ImportError
    monkeypatch.delattr(pytconv, "gpu", raising=False)  # and the package has no such attribute
    assert cli._gpu_status() == "GPU path not installed"


def test_demo_prints_the_worked_examples():
    proc = _run("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "MISMATCH" not in out
    assert "all results agree with the examples" in out
    # the lecture notes' 1-d examples and their size arithmetic
    assert "out = floor((10 + 0 + 0 - 1*(4-1) - 1) / 1) + 1 = 7" in out
    assert "conv_transpose(x, kernel) = [ 2,  7,  4, -4, -2,  1]" in out
    assert "conv(x, kernel) = [3, 2, 1, 0, 0]" in out
    assert "conv_transpose(x, kernel) = [0, 0, 1, 2, 3, 0, 0, 0, 0]" in out
    assert "conv_transpose(x, kernel) = [ 1,  2,  1,  0, -1, -2, -1]" in out
    assert "out = s*(W - 1) + w = (4 - 1)*2 - 0 - 0 + 1*(3-1) + 1 + 0 = 9" in out
    assert "conv_transpose(x, kernel, stride=2) = [ 2,  4,  1,  6, -3,  0, -1, -2,  1]" in out
    # the 3x3 input / 2x2 kernel convolution matrix
    assert "[[1, 2, 0, 2, 1, 0, 0, 0, 0]," in out
    # 2x2 -> 4x4 with ones(3, 3), stride 2, "same"
    assert ("[[1, 1, 2, 1],\n     [1, 1, 2, 1],\n     [2, 2, 4, 2],\n     [1, 1, 2, 1]]") in out
    assert "out = in * stride = 2*2 = 4" in out
    assert out.count("[ok]") == 10


def test_demo_fails_when_a_result_differs(monkeypatch, capsys):
    """The demo's own check can fail: a wrong transposed convolution is reported."""
    real = pytconv.conv_transpose
    monkeypatch.setattr(pytconv, "conv_transpose", lambda *a, **k: real(*a, **k) * 2)
    assert cli.main(["demo"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_check_receives_every_further_argument(monkeypatch):
    import types

    seen = []
    fake = types.ModuleType("pytconv.check")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "pytconv.check", fake)
    monkeypatch.setattr(pytconv, "check", fake, raising=False)
    assert cli.main(["check", "--quick", "--frameworks", "torch", "--help"]) == 3
    assert seen == [["--quick", "--frameworks", "torch", "--help"]]


def test_check_help_is_checks_own():
    proc = _run("check", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m pytconv check")


def test_unknown_command():
    proc = _run("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    proc = _run()
    assert proc.returncode == 2


def test_readme_usage_runs_and_prints_what_it_says(capsys):
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no Python example"
    checked = 0
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
        capsys.readouterr()
        # one-line prints whose result is written in the comment after them
        for expr, shown in re.findall(r"^print\((.*)\)\s*#[^\[]*(\[\[\[.*\]\]\])\s*$", block, re.M):
            got = str(eval(expr, namespace))
            assert " ".join(got.split()) == " ".join(shown.split()), expr
            checked += 1
    assert checked >= 4
