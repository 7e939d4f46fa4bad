"""The consistency checker (pytconv.testing, python -m pytconv check): it passes
on the real backends and catches planted disagreements, failures, broken
adapters and missing frameworks."""

import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pytconv
from pytconv import check, testing
from pytconv.testing import Backend, Config, NotApplicable

from frameworks import require

NUMPY = "pytconv[numpy]"
CONFIGS = [
    Config("conv", (2, 4, 7, 6), (6, 2, 3, 2), stride=(2, 1), padding=((1, 0), (0, 2)), groups=2),
    Config("conv_transpose", (2, 4, 4, 3), (4, 3, 3, 3), stride=2, padding="same"),
    Config("conv", (1, 2, 9), (3, 2, 3), padding=2, padding_mode="circular", bias=False),
]


class _Planted(Backend):
    """The NumPy API with one deliberate defect."""

    framework = None

    def __init__(self, name, defect, pytconv_backend=False):
        self.name = name
        self.defect = defect
        self.pytconv = pytconv_backend
        self.bitwise = pytconv_backend

    def run(self, config, inputs):
        out = testing.NumPyBackend().run(config, inputs)
        return self.defect(config, out)


@pytest.fixture
def planted():
    names = []

    def add(name, defect, **kwargs):
        testing.register_backend(_Planted(name, defect, **kwargs))
        names.append(name)
        return name

    yield add
    for name in names:
        testing.unregister_backend(name)


def _statuses(report, backend):
    return [c.status for c in report.cells if c.backend == backend]


def test_numpy_backend_agrees_with_reference():
    report = testing.check_configs(CONFIGS, [NUMPY])
    assert report.passed, report
    assert _statuses(report, NUMPY) == ["pass"] * 6
    assert all(c.max_rel < 1e-6 for c in report.cells)


def test_planted_wrong_backends_are_caught(planted):
    def flipped_kernel(config, out):  # the classic: convolution instead of cross-correlation
        inputs = testing.make_inputs(config, out.output.dtype, 0)
        w = inputs.w[(slice(None), slice(None)) + (slice(None, None, -1),) * config.ndim].copy()
        wrong = testing.NumPyBackend().run(config, inputs._replace(w=w))
        return wrong._replace(grad_weight=out.grad_weight)

    def wrong_grad_bias(config, out):
        return out if out.grad_bias is None else out._replace(grad_bias=out.grad_bias * 1.001)

    def wrong_shape(config, out):
        return out._replace(grad_input=out.grad_input[..., :-1])

    def nan(config, out):
        y = out.output.copy()
        y.flat[0] = np.nan
        return out._replace(output=y)

    def crash(config, out):
        raise RuntimeError("planted crash")

    names = [planted("flipped", flipped_kernel), planted("bias", wrong_grad_bias),
             planted("shape", wrong_shape), planted("nan", nan), planted("crash", crash)]
    report = testing.check_configs(CONFIGS, [NUMPY] + names)
    assert not report.passed
    assert set(_statuses(report, NUMPY)) == {"pass"}
    assert set(_statuses(report, "flipped")) == {"fail"}
    # the third configuration has no bias: nothing to get wrong there
    assert _statuses(report, "bias") == ["fail"] * 4 + ["pass"] * 2
    assert set(_statuses(report, "shape")) == {"fail"}
    assert set(_statuses(report, "nan")) == {"fail"}
    assert set(_statuses(report, "crash")) == {"error"}
    reasons = {c.backend: c.reason for c in report.cells}
    assert "grad_bias error" in reasons["bias"] or reasons["bias"] == ""
    assert "grad_input has shape" in reasons["shape"]
    assert "output is not finite" in reasons["nan"]
    assert "RuntimeError: planted crash" in reasons["crash"]
    table = report.table()
    assert "FAIL" in table and "ERROR" in table and "flipped" in table


def test_one_ulp_difference_fails_the_bitwise_requirement(planted):
    """A pytconv backend within tolerance but not bitwise identical to the NumPy API fails."""
    def one_ulp(config, out):
        y = out.output.copy()
        y.flat[3] = np.nextafter(y.flat[3], np.inf)
        return out._replace(output=y)

    name = planted("ulp", one_ulp, pytconv_backend=True)
    report = testing.check_configs(CONFIGS[:1], [NUMPY, name])
    cells = [c for c in report.cells if c.backend == name]
    assert all(c.status == "fail" and c.bitwise is False and c.max_rel < 1e-6 for c in cells)
    assert "output not bitwise identical" in cells[0].reason


def test_tolerance_is_relative_to_the_reference_scale(planted):
    # 5e-5 relative is within float32's tolerance, not float64's
    def small_error(config, out):
        scale = np.abs(out.output).max()
        return out._replace(output=out.output + (5e-5 * scale).astype(out.output.dtype))

    name = planted("small", small_error)
    report = testing.check_configs(CONFIGS[:1], [NUMPY, name])
    assert {c.dtype: c.status for c in report.cells if c.backend == name} == {"float32": "pass", "float64": "fail"}


def test_not_applicable_and_unavailable_backends_are_reported(planted):
    class Missing(Backend):
        name = "missingfw"
        framework = "missingfw"

        def status(self):
            return "not installed", "missingfw (No module named 'missingfw')"

    class Picky(Backend):
        name = "picky"

        def run(self, config, inputs):
            raise NotApplicable("only 2-d")

    testing.register_backend(Missing())
    testing.register_backend(Picky())
    try:
        report = testing.check_configs(CONFIGS[:1], [NUMPY, "missingfw", "picky"])
        assert report.passed
        assert set(_statuses(report, "missingfw")) == {"n/a"}
        assert "not installed: missingfw (No module named 'missingfw')" in report.cells[1].reason
        assert report.cells[2].reason == "only 2-d"
        assert "not installed: missingfw" in report.summary()
    finally:
        testing.unregister_backend("missingfw")
        testing.unregister_backend("picky")


def test_adapter_that_fails_to_import_is_a_failure():
    class BrokenAdapter(testing._AdapterBackend):
        name = "pytconv[broken]"
        framework = "numpy"  # installed, so the adapter itself is at fault
        adapter_name = "no-such-adapter"

    report = testing.check_conv(CONFIGS[0], [NUMPY, BrokenAdapter()])
    assert not report.passed
    assert report.broken_backends["pytconv[broken]"][0] == "broken"
    assert "no pytconv adapter named 'no-such-adapter'" in report.broken_backends["pytconv[broken]"][1]
    assert set(_statuses(report, "pytconv[broken]")) == {"error"}


def test_assert_backends_agree(planted):
    report = testing.assert_backends_agree(CONFIGS[1], [NUMPY], dtypes=("float64",), seeds=(0, 1))
    assert len(report.cells) == 2
    name = planted("off", lambda config, out: out._replace(grad_input=out.grad_input * 1.01))
    with pytest.raises(AssertionError, match="(?s)backends disagree on conv_transpose2d.*off.*FAIL"):
        testing.assert_backends_agree(CONFIGS[1], [NUMPY, name])


def test_invalid_configuration_is_a_value_error_not_a_backend_failure():
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        testing.check_conv(Config("conv_transpose", (1, 2, 4), (2, 2, 3), output_padding=1), [NUMPY])
    with pytest.raises(ValueError, match="check_conv: dtypes must be float32 or float64"):
        testing.check_conv(CONFIGS[0], [NUMPY], dtypes=["float16"])
    with pytest.raises(ValueError, match="Config: op must be"):
        Config("deconv", (1, 2, 4), (2, 2, 3))


def test_random_configs_are_valid_and_pass_on_numpy():
    rng = np.random.default_rng(0)
    configs = [testing.random_config(rng, n) for n in (1, 2, 3, 4) for _ in range(5)]
    report = testing.check_configs(configs, [NUMPY], dtypes=("float64",))
    assert report.passed, report.table(report.failures)


def test_check_matrix_covers_the_features():
    configs = check.configurations("default", (1, 2, 3, 4))
    labels = " ".join(c.label() for c in configs)
    for feature in ("conv1d", "conv2d", "conv3d", "conv4d", "conv_transpose1d", "conv_transpose3d",
                    "conv_transpose4d", "p=same", "p=valid", "d=", "g=", "op=", "reflect", "replicate",
                    "circular", "nobias"):
        assert feature in labels, feature
    for c in configs + check.configurations("full", (1, 2, 3, 4), seeds=(0, 1)):
        c.convolution()  # every one is valid
    assert len(check.configurations("quick", (1, 2, 3))) < len(configs)


def test_cli_catches_a_planted_backend(planted, tmp_path, capsys):
    name = planted("wrong", lambda config, out: out._replace(output=out.output * 1.1))
    path = tmp_path / "report.json"
    rc = check.main(["--quick", "--dims", "2", "--backends", f"{NUMPY},{name}", "--json", str(path), "--no-progress"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "DISAGREEMENT" in printed
    data = json.loads(path.read_text())
    assert data["passed"] is False
    statuses = {(c["backend"], c["status"]) for c in data["cells"]}
    assert statuses == {(NUMPY, "pass"), (name, "fail")}
    assert data["options"]["dims"] == [2]


def test_cli_passes_and_reports_missing_frameworks(capsys):
    rc = check.main(["--quick", "--dims", "1", "--frameworks", "none", "--no-progress", "--show", "summary"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "all agree" in out


def test_cli_fails_when_a_requested_framework_cannot_run(capsys):
    class Absent(Backend):
        name = "absentfw"
        framework = "gpu"

        def status(self):
            return "unavailable", "no device"

    testing.register_backend(Absent())
    try:
        rc = check.main(["--quick", "--dims", "1", "--backends", f"{NUMPY},absentfw", "--no-progress",
                         "--show", "summary"])
        assert rc == 0  # listed, not required
        assert "unavailable: absentfw: no device" in capsys.readouterr().out
        gpu_ok = testing.get_backend("pytconv[gpu]").status()[0] == "ok"
        rc = check.main(["--quick", "--dims", "1", "--frameworks", "gpu", "--no-progress", "--show", "summary"])
        if not gpu_ok:
            assert rc == 1
            assert "FAILED: not available: gpu (requested with --frameworks)" in capsys.readouterr().out
    finally:
        testing.unregister_backend("absentfw")


def test_cli_bad_options_exit_2(capsys):
    for argv in (["--frameworks", "mxnet"], ["--dtypes", "float16"], ["--seeds", "x"], ["--backends", "nope"]):
        with pytest.raises(SystemExit) as exc:
            check.main(argv)
        assert exc.value.code == 2
    capsys.readouterr()


def test_progress_bar_plain_text():
    stream = io.StringIO()
    bar = check._Progress(stream, True, width=10)
    for i in range(1, 21):
        bar(i, 20, f"config {i}")
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("[##########] 20/20")
    assert 10 <= len(lines) <= 11  # a line per 10% off a terminal


def test_real_backends_agree_on_the_quick_matrix():
    """Every installed backend, on the quick matrix (the full default matrix runs in CI
    as `python -m pytconv check`)."""
    installed = [f for f in ("torch", "tensorflow", "jax") if importlib.util.find_spec(f) is not None]
    for name in ("torch", "tensorflow", "jax"):
        if os.environ.get("CI") or os.environ.get("PYTCONV_REQUIRE_FRAMEWORKS") == "1":
            require(name)
    configs = check.configurations("quick", (1, 2, 3, 4) if "jax" in installed else (1, 2, 3))
    report = testing.check_configs(configs, frameworks=installed + ["gpu"])
    assert report.passed, report.table(report.failures) + "\n" + report.summary()
    ran = {c.backend for c in report.cells if c.status == "pass"}
    assert NUMPY in ran
    for name in installed:
        assert name in ran


def test_compare_layers_keras_and_torch():
    torch = require("torch")
    require("tensorflow")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)

    # Keras "same" with a 4-tap kernel and stride 2 is PyTorch's padding=1
    k_layer = keras.layers.Conv2DTranspose(4, 4, strides=2, padding="same")
    k_layer.build((None, 5, 6, 3))
    t_layer = torch.nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)
    with torch.no_grad():
        t_layer.weight.copy_(torch.from_numpy(pytconv.conventions.weight_from_tensorflow(k_layer.kernel.numpy())))
        t_layer.bias.copy_(torch.from_numpy(rng.standard_normal(4).astype(np.float32)))
    k_layer.bias.assign(t_layer.bias.detach().numpy())
    result = testing.compare_layers(k_layer, t_layer, x)
    assert result.agree, result
    assert result.max_rel < 1e-5

    # a 3-tap kernel: Keras crops (0, 1), PyTorch's padding=1, output_padding=1 crops (1, 0)
    k3 = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")
    k3.build((None, 5, 6, 3))
    t3 = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, bias=False)
    k3.bias.assign(np.zeros(4, np.float32))
    with torch.no_grad():
        t3.weight.copy_(torch.from_numpy(pytconv.conventions.weight_from_tensorflow(k3.kernel.numpy())))
    t3.bias = None
    result = testing.compare_layers(k3, t3, x)
    assert not result.agree
    assert "different convolutions" in result.reason and "pad_low=(0, 0)" in result.reason

    # same configuration, different weights
    t_layer2 = torch.nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)
    result = testing.compare_layers(k_layer, t_layer2, x)
    assert not result.agree and "weights differ" in result.reason

    # a Conv2D whose "same" pads (1, 1) in one dimension and (0, 1) in the other
    k_conv = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)
    k_conv.build((None, 5, 6, 3))
    t_conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        t_conv.weight.copy_(torch.from_numpy(pytconv.conventions.weight_from_tensorflow(k_conv.kernel.numpy())))
    result = testing.compare_layers(k_conv, t_conv, x)
    assert not result.agree and "pad_low=(1, 0)" in result.reason and "pad_low=(1, 1)" in result.reason


def test_compare_layers_with_pytconv_adapter_layers():
    torch = require("torch")
    require("tensorflow")
    ptc, ptf = pytconv.adapter("torch"), pytconv.adapter("tensorflow")
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 4))
    k_layer = ptf.Conv2DTranspose(2, (3, 2), strides=(1, 2), padding="valid", output_padding=(0, 1),
                                  dtype="float64")
    k_layer.build((None, 5, 4, 3))
    t_layer = ptc.ConvTranspose2d(3, 2, (3, 2), stride=(1, 2), output_padding=(0, 1)).double()
    with torch.no_grad():
        t_layer.weight.copy_(torch.from_numpy(pytconv.conventions.weight_from_tensorflow(k_layer.kernel.numpy())))
        t_layer.bias.copy_(torch.from_numpy(np.asarray(k_layer.bias)))
    result = testing.compare_layers(k_layer, t_layer, x)
    assert result.agree, result
    assert result.max_rel < 1e-12


def test_subprocess_cli(tmp_path):
    """`python -m pytconv check` end to end with a small option set."""
    path = tmp_path / "check.json"
    frameworks = "torch" if importlib.util.find_spec("torch") is not None else "none"
    proc = subprocess.run(
        [sys.executable, "-m", "pytconv", "check", "--quick", "--dims", "2", "--frameworks", frameworks,
         "--json", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "configuration" in proc.stdout and "max rel" in proc.stdout and "all agree" in proc.stdout
    assert "/" in proc.stderr  # the progress bar
    data = json.loads(path.read_text())
    assert data["passed"] and data["cells"]
    assert "not installed: pytconv[gpu]" not in proc.stdout  # the GPU is "unavailable", not a framework
