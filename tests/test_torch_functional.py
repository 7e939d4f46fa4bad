"""The PyTorch adapter's functional API and operators: values and every
gradient against torch.nn.functional (n = 1..3) and pytconv.reference (any n,
every padding form and mode), gradcheck/gradgradcheck, the operators'
registration (torch.library.opcheck), bitwise agreement with the NumPy API,
memory layouts, meta tensors and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import pytconv
from pytconv import _args, reference

from core_cases import assert_close, conv_cases, transposed_cases, transposed_size
from frameworks import require

F64 = (np.float64,)
EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


@pytest.fixture(scope="module")
def torch():
    return require("torch")


@pytest.fixture(scope="module")
def ptc(torch):
    return pytconv.adapter("torch")


def _t(torch, a, grad=False):
    return None if a is None else torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def _np(t):
    return None if t is None else t.detach().numpy()


def _grads(fn, tensors, cotangent):
    """fn(*tensors) and the gradients of <fn(*tensors), cotangent> with respect
    to each tensor (None stays None)."""
    import torch

    out = fn(*tensors)
    leaves = [t for t in tensors if t is not None]
    grads = iter(torch.autograd.grad((out * cotangent).sum(), leaves))
    return out, [None if t is None else next(grads) for t in tensors]


def _check_all(what, got, got_grads, ref, ref_grads, scale, scale_grads):
    assert_close(_np(got), _np(ref), _np(scale), np.float64, f"{what}: value")
    for name, g, r, s in zip(("input", "weight", "bias"), got_grads, ref_grads, scale_grads):
        if r is not None:
            assert_close(_np(g), _np(r), _np(s), np.float64, f"{what}: {name} gradient")


def _abs(torch, arrays):
    return [None if a is None else _t(torch, np.abs(a), True) for a in arrays]


# ---- values and gradients against torch.nn.functional --------------------------


def _torch_conv(torch, case):
    """torch.nn.functional's conv{n}d on the input padded explicitly by F.pad
    (every mode, per-side paddings): a function of (x, w, b)."""
    F = torch.nn.functional
    widths = [p for lo_hi in reversed(case.pads) for p in lo_hi]  # F.pad: last dimension first
    conv = getattr(F, f"conv{case.ndim}d")

    def fn(x, w, b):
        padded = F.pad(x, widths, mode=_TORCH_PAD_MODE[case.padding_mode])
        return conv(padded, w, b, stride=case.strides, dilation=case.dilations, groups=case.groups)

    return fn


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_values_and_gradients_match_torch(torch, ptc, ndim):
    @EXAMPLES
    @given(conv_cases(ndims=(ndim,), dtypes=F64))
    def check(case):
        x, w, b, dy = case.arrays()
        ref_fn = _torch_conv(torch, case)
        ours = lambda x, w, b: ptc.conv(x, w, b, **case.kwargs())  # noqa: E731
        cot = _t(torch, dy)
        got, got_grads = _grads(ours, [_t(torch, a, True) for a in (x, w, b)], cot)
        ref, ref_grads = _grads(ref_fn, [_t(torch, a, True) for a in (x, w, b)], cot)
        scale, scale_grads = _grads(ref_fn, _abs(torch, (x, w, b)), _t(torch, np.abs(dy)))
        _check_all(f"conv {case}", got, got_grads, ref, ref_grads, scale, scale_grads)

    check()


def _torch_output_padding(tcase):
    c = tcase.conv
    return tuple(
        size - transposed_size(o, k, s, d, lo, hi, 0)
        for size, o, k, s, d, (lo, hi) in zip(
            tcase.out_size, c.out_size, c.kernel, c.strides, c.dilations, tcase.pads
        )
    )


def _size_kwargs(tcase):
    """tcase.kwargs() in the adapter's spelling (output_size)."""
    kw = tcase.kwargs()
    if "output_shape" in kw:
        kw["output_size"] = kw.pop("output_shape")
    return kw


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_transpose_values_and_gradients_match_torch(torch, ptc, ndim):
    @EXAMPLES
    @given(transposed_cases(ndims=(ndim,), modes=("zeros",), paddings=("int", "per_dim", "valid"), dtypes=F64))
    def check(tcase):
        c = tcase.conv
        output_padding = _torch_output_padding(tcase)
        if any(op >= max(s, d) or op < 0 for op, s, d in zip(output_padding, c.strides, c.dilations)):
            return  # an output size PyTorch cannot express
        t, w, b, dout = tcase.arrays()
        F = torch.nn.functional

        def ref_fn(t, w, b):
            return getattr(F, f"conv_transpose{c.ndim}d")(
                t, w, b, stride=c.strides, padding=tuple(lo for lo, _ in tcase.pads),
                output_padding=output_padding, groups=c.groups, dilation=c.dilations,
            )

        ours = lambda t, w, b: ptc.conv_transpose(t, w, b, **_size_kwargs(tcase))  # noqa: E731
        cot = _t(torch, dout)
        got, got_grads = _grads(ours, [_t(torch, a, True) for a in (t, w, b)], cot)
        ref, ref_grads = _grads(ref_fn, [_t(torch, a, True) for a in (t, w, b)], cot)
        scale, scale_grads = _grads(ref_fn, _abs(torch, (t, w, b)), _t(torch, np.abs(dout)))
        _check_all(f"conv_transpose {tcase}", got, got_grads, ref, ref_grads, scale, scale_grads)

    check()


# ---- against the float64 reference: every n, padding form and mode --------------


def _reference_conv(p, x, w, b, dy):
    """(y, dx, dw, db) of <conv(x, w) + b, dy> from pytconv.reference."""
    y = reference.forward(p, x, w, b)
    db = None if b is None else dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
    return y, reference.backward_data(p, dy, w), reference.backward_filter(p, x, dy), db


def _reference_conv_transpose(p, t, w, b, dout):
    """(out, dt, dw, db) of <conv_transpose(t, w) + b, dout> from pytconv.reference."""
    out = reference.backward_data(p, t, w)
    db = None
    if b is not None:
        out = out + b.reshape((1, -1) + (1,) * p.ndim)
        db = dout.sum(axis=(0,) + tuple(range(2, dout.ndim)))
    return out, reference.forward(p, dout, w), reference.backward_filter(p, dout, t), db


def _check_against(what, got, got_grads, ref, scale):
    for name, g, r, s in zip(("value", "input gradient", "weight gradient", "bias gradient"),
                             [got] + got_grads, ref, scale):
        if r is not None:
            assert_close(_np(g), r, s, np.float64, f"{what}: {name}")


@pytest.mark.parametrize("ndim", [1, 2, 3, 4, 5])
def test_conv_matches_reference(torch, ptc, ndim):
    @settings(max_examples=8 if ndim <= 3 else 5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(conv_cases(ndims=(ndim,), dtypes=F64))
    def check(case):
        x, w, b, dy = case.arrays()
        p = _args.conv_problem("conv", x.shape, w.shape, **case.kwargs())
        ours = lambda x, w, b: ptc.conv(x, w, b, **case.kwargs())  # noqa: E731
        got, got_grads = _grads(ours, [_t(torch, a, True) for a in (x, w, b)], _t(torch, dy))
        ref = _reference_conv(p, x, w, b, dy)
        scale = _reference_conv(p, *(None if a is None else np.abs(a) for a in (x, w, b, dy)))
        _check_against(f"conv {case}", got, got_grads, ref, scale)

    check()


@pytest.mark.parametrize("ndim", [1, 2, 3, 4, 5])
def test_conv_transpose_matches_reference(torch, ptc, ndim):
    """Every padding form ("same", per-side pairs) and mode (the adjoint of
    the padding), which PyTorch's own transposed convolution lacks."""

    @settings(max_examples=8 if ndim <= 3 else 5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(transposed_cases(ndims=(ndim,), dtypes=F64))
    def check(tcase):
        t, w, b, dout = tcase.arrays()
        kw = _size_kwargs(tcase)
        p = _args.transposed_problem(
            "conv_transpose", t.shape, w.shape, kw["stride"], kw["padding"], kw.get("output_padding", 0),
            kw["groups"], kw["dilation"], kw.get("output_size"), kw["padding_mode"],
        )
        ours = lambda t, w, b: ptc.conv_transpose(t, w, b, **kw)  # noqa: E731
        got, got_grads = _grads(ours, [_t(torch, a, True) for a in (t, w, b)], _t(torch, dout))
        ref = _reference_conv_transpose(p, t, w, b, dout)
        scale = _reference_conv_transpose(p, *(None if a is None else np.abs(a) for a in (t, w, b, dout)))
        _check_against(f"conv_transpose {tcase}", got, got_grads, ref, scale)

    check()


# ---- bitwise the NumPy API's results ------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transposed_cases(ndims=(1, 2, 3), dtypes=(np.float32,)))
def test_results_are_bitwise_those_of_the_numpy_api(tcase):
    """One core, one result: the adapter's values and gradients equal the NumPy
    API's bit for bit (CONVENTIONS.md, determinism)."""
    torch = require("torch")
    ptc = pytconv.adapter("torch")
    c = tcase.conv
    x, w, b, dy = c.arrays()
    kw = c.kwargs()
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    tb = None if b is None else torch.from_numpy(b).requires_grad_()
    y = ptc.conv(tx, tw, tb, **kw)
    np.testing.assert_array_equal(y.detach().numpy(), pytconv.conv(x, w, b, **kw))
    y.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(tx.grad.numpy(), pytconv.conv_input_grad(x.shape, w, dy, **kw))
    np.testing.assert_array_equal(tw.grad.numpy(), pytconv.conv_weight_grad(x, w.shape, dy, **kw))
    if b is not None:
        np.testing.assert_array_equal(tb.grad.numpy(), pytconv.bias_grad(dy))

    t, w, b, dout = tcase.arrays()
    tkw = _size_kwargs(tcase)
    np_kw = tcase.kwargs()
    out = ptc.conv_transpose(torch.from_numpy(t), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                             **tkw)
    np.testing.assert_array_equal(out.numpy(), pytconv.conv_transpose(t, w, b, **np_kw))


# ---- gradcheck / gradgradcheck: exact gradients of every order -------------------

GRADCHECK_CASES = [
    # (op, input shape, weight shape, bias, kwargs)
    ("conv", (1, 4, 5, 4), (4, 2, 3, 2), True,
     dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2, padding_mode="circular")),
    ("conv", (1, 2, 9), (3, 2, 3), True, dict(stride=2, padding="same", padding_mode="reflect")),
    ("conv", (1, 2, 4, 3, 5), (2, 1, 2, 2, 3), False, dict(padding=1, groups=2, padding_mode="replicate")),
    ("conv", (1, 1, 3, 4, 3, 3), (2, 1, 2, 2, 2, 2), True, dict(padding=(1, 0, 1, 0), dilation=(1, 2, 1, 1))),
    ("conv_transpose", (1, 4, 3, 3), (4, 1, 3, 2), True,
     dict(stride=2, padding=1, output_padding=(1, 0), groups=2, dilation=(1, 2))),
    ("conv_transpose", (1, 2, 5), (2, 2, 3), True, dict(stride=2, padding=((2, 1),), padding_mode="circular")),
    ("conv_transpose", (1, 2, 3, 4), (2, 1, 3, 3), False, dict(stride=2, padding="same", padding_mode="reflect")),
    ("conv_transpose", (1, 2, 3, 3, 2), (2, 2, 2, 2, 2), True,
     dict(stride=(2, 1, 2), padding=1, output_size=(5, 2, 3), padding_mode="replicate")),
]


@pytest.mark.parametrize("op, x_shape, w_shape, bias, kw", GRADCHECK_CASES)
def test_gradcheck_and_gradgradcheck(torch, ptc, op, x_shape, w_shape, bias, kw):
    gen = torch.Generator().manual_seed(len(x_shape) * 100 + sum(w_shape))
    x = torch.randn(x_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    channels = w_shape[0] if op == "conv" else w_shape[1] * kw.get("groups", 1)
    b = torch.randn(channels, dtype=torch.float64, generator=gen, requires_grad=True) if bias else None
    fn = getattr(ptc, op)
    inputs = (x, w) if b is None else (x, w, b)

    def f(*args):
        return fn(*args, **kw) if b is not None else fn(*args, None, **kw)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_gradgradcheck_through_the_operators(torch, ptc):
    """The autograd formulas as registered on the operators (what compiled
    graphs and dispatch modes use; eager calls record the same formulas
    without the dispatcher)."""
    ops = torch.ops.pytconv
    gen = torch.Generator().manual_seed(7)

    def rand(*shape):
        return torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)

    conv_args = ([2, 1], [1, 0], [0, 1], [1, 2], 2, "reflect")
    x, w, b, dy = rand(1, 4, 5, 6), rand(4, 2, 2, 3), rand(4), rand(1, 4, 3, 3)
    checks = [
        (lambda x, w, b: ops.conv_forward(x, w, b, None, *conv_args), (x, w, b)),
        (lambda dy, w, b: ops.conv_input_grad(dy, w, b, [5, 6], *conv_args), (dy, w, rand(4))),
        (lambda x, dy: ops.conv_weight_grad(x, dy, [2, 3], *conv_args), (x, dy)),
        (lambda dy: ops.bias_grad(dy), (dy,)),
    ]
    for fn, inputs in checks:
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


def test_third_derivatives_stay_on_the_operators(torch, ptc):
    """Gradients of gradients of gradients are the same operators again (a
    closed set under differentiation), and are exact: the third derivative
    of a function cubic in w matches torch.nn.functional's."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, generator=gen)
    w0 = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=gen)

    def third(conv):
        w = w0.clone().requires_grad_()
        y = conv(conv(x, w).sum(1, keepdim=True).expand(-1, 2, -1, -1), w)
        (g1,) = torch.autograd.grad((y * y).sum(), w, create_graph=True)
        (g2,) = torch.autograd.grad(g1.square().sum(), w, create_graph=True)
        (g3,) = torch.autograd.grad(g2.sum(), w)
        return g3

    ours = third(lambda x, w: ptc.conv(x, w, padding=1, padding_mode="zeros"))
    ref = third(lambda x, w: torch.nn.functional.conv2d(x, w, padding=1))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


# ---- torch.func, tracing, export ------------------------------------------------


def test_torch_func_transforms(torch, ptc):
    """grad, jacrev of jacrev (a Hessian), vmap over inputs and weights, and
    vmap of grad (per-sample gradients) against torch.nn.functional's."""
    F = torch.nn.functional
    func = torch.func
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64, generator=gen)
    w = torch.randn(4, 2, 3, 2, dtype=torch.float64, generator=gen)
    kw = dict(stride=(2, 1), padding=1)

    def close(a, b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

    close(func.grad(lambda w: ptc.conv(x, w, **kw).square().sum())(w),
          func.grad(lambda w: F.conv2d(x, w, **kw).square().sum())(w))
    small = x[:1, :, :3, :3]
    hessian = func.jacrev(func.jacrev(lambda a: ptc.conv(a, w, **kw).pow(3).sum()))
    close(hessian(small), func.jacrev(func.jacrev(lambda a: F.conv2d(a, w, **kw).pow(3).sum()))(small))
    close(func.vmap(lambda a: ptc.conv(a, w, **kw))(x.unsqueeze(1)).squeeze(1), F.conv2d(x, w, **kw))
    ws = torch.randn(2, 2, 4, 3, 2, dtype=torch.float64, generator=gen)  # transposed layout, vmapped
    close(func.vmap(lambda w: ptc.conv_transpose(x[:, :2], w, stride=2))(ws),
          torch.stack([F.conv_transpose2d(x[:, :2], wi, stride=2) for wi in ws]))
    per_sample = func.vmap(func.grad(lambda w, a: ptc.conv(a[None], w, **kw).square().sum()), in_dims=(None, 0))
    close(per_sample(w, x), torch.stack([func.grad(lambda w: F.conv2d(a[None], w, **kw).square().sum())(w)
                                          for a in x]))


def test_forward_mode_ad_is_refused(torch, ptc):
    """No forward-mode formulas: refused with a clear error, never a lost tangent."""
    import torch.autograd.forward_ad as forward_ad

    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="forward-mode automatic differentiation"):
        torch.func.jvp(lambda a: ptc.conv(a, w), (x,), (x,))
    with pytest.raises(NotImplementedError, match="forward-mode automatic differentiation"):
        torch.func.jacfwd(lambda a: ptc.conv_transpose(a, w.transpose(0, 1)))(x)
    with forward_ad.dual_level():
        with pytest.raises(NotImplementedError, match="forward-mode automatic differentiation"):
            ptc.conv(forward_ad.make_dual(x, x), w)
        assert ptc.conv(x, w).shape == (1, 3, 3, 3)  # no tangent: computed as usual


def test_jit_trace_and_export_record_the_operators(torch, ptc):
    model = torch.nn.Sequential(ptc.Conv2d(1, 4, 4, stride=2, padding=1, padding_mode="circular"), torch.nn.ReLU(),
                                ptc.ConvTranspose2d(4, 1, 4, stride=2, padding=1))
    x = torch.randn(2, 1, 8, 8)
    with pytest.warns(torch.jit.TracerWarning):  # the example's sizes are kept, as traces do
        traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    exported = torch.export.export(model, (x,))
    targets = {str(n.target) for n in exported.graph_module.graph.nodes if n.op == "call_function"}
    assert {"pytconv.conv_forward.default", "pytconv.conv_input_grad.default"} <= targets
    torch.testing.assert_close(exported.module()(x), model(x), rtol=0, atol=0)


# ---- the operators' registration --------------------------------------------------


def test_operators_pass_opcheck(torch):
    """Schemas, fake (shape) functions, autograd registration and AOT dispatch
    of the four operators, as PyTorch checks custom operators."""
    pytconv.adapter("torch")
    ops = torch.ops.pytconv
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)

    conv_args = ([2, 1], [1, 0], [0, 1], [1, 2], 2, "circular")
    cropped = ([1, 2], [0, 0], [0, 0], [2, 1], 1, "zeros")  # output_padding >= stride: the output ends early
    x, w, b = rand(2, 4, 6, 7), rand(6, 2, 3, 2), rand(6)
    y_shape = (2, 6, 3, 5)
    samples = [
        (ops.conv_forward.default, (x, w, b, None, *conv_args)),
        (ops.conv_forward.default, (rand(1, 2, 5, 4), rand(3, 2, 2, 2), None, [3, 2], *cropped)),
        (ops.conv_input_grad.default, (rand(*y_shape), w, rand(4), [6, 7], *conv_args)),
        (ops.conv_input_grad.default, (rand(1, 3, 3, 2), rand(3, 2, 2, 2), None, [5, 4], *cropped)),
        (ops.conv_weight_grad.default, (x, rand(*y_shape), [3, 2], *conv_args)),
        (ops.conv_weight_grad.default, (rand(1, 2, 5, 4), rand(1, 3, 3, 2), [2, 2], *cropped)),
        (ops.bias_grad.default, (rand(*y_shape),)),
    ]
    # AOT dispatch (the costly check) once per operator.
    seen = set()
    for op, args in samples:
        utils = ("test_schema", "test_autograd_registration", "test_faketensor")
        if op not in seen:
            utils += ("test_aot_dispatch_dynamic",)
            seen.add(op)
        torch.library.opcheck(op, args, test_utils=utils)


def test_operators_are_seen_by_dispatch_modes(torch, ptc):
    """A call under a dispatch mode (as profilers, tracers and FakeTensor use)
    goes through the operators rather than around them."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)
    with Record() as record:
        ptc.conv(x, w, padding=1)
        ptc.conv_transpose(x, w, stride=2)
    assert "pytconv.conv_forward.default" in record.ops
    assert "pytconv.conv_input_grad.default" in record.ops


def test_operators_called_directly_match_the_functional_api(torch, ptc):
    gen = torch.Generator().manual_seed(1)
    x, w, b = (torch.randn(s, generator=gen) for s in ((2, 3, 8, 7), (4, 3, 3, 3), (4,)))
    y = torch.ops.pytconv.conv_forward(x, w, b, None, [2, 1], [1, 0], [2, 1], [1, 1], 1, "reflect")
    torch.testing.assert_close(y, ptc.conv(x, w, b, stride=(2, 1), padding=((1, 2), (0, 1)), padding_mode="reflect"),
                               rtol=0, atol=0)
    t = torch.ops.pytconv.conv_input_grad(y, w, None, [8, 7], [2, 1], [1, 0], [2, 1], [1, 1], 1, "reflect")
    torch.testing.assert_close(t, ptc.conv_transpose(y, w, stride=(2, 1), padding=((1, 2), (0, 1)),
                                                     output_size=(8, 7), padding_mode="reflect"), rtol=0, atol=0)


def test_operators_called_directly_check_their_arguments(torch, ptc):
    ops = torch.ops.pytconv
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    plain = ([1, 1], [0, 0], [0, 0], [1, 1], 1, "zeros")
    with pytest.raises(ValueError, match="pytconv::conv_forward: weight expects 3 input channels"):
        ops.conv_forward(torch.randn(1, 2, 6, 6), w, None, None, *plain)
    with pytest.raises(TypeError, match="pytconv::conv_forward: tensors must share one dtype"):
        ops.conv_forward(x, w.double(), None, None, *plain)
    with pytest.raises(ValueError, match=r"pytconv::conv_input_grad: grad_output must have shape \(1, 4, 4, 4\)"):
        ops.conv_input_grad(torch.randn(1, 5, 4, 4), w, None, [6, 6], *plain)
    with pytest.raises(ValueError, match="pytconv::conv_weight_grad: input has 3 channels, not divisible by groups"):
        ops.conv_weight_grad(x, torch.randn(1, 4, 4, 4), [3, 3], *plain[:4], 2, "zeros")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        ops.conv_forward(x, w, None, None, *plain[:5], "mirror")
    with pytest.raises(ValueError, match=r"spatial size \(5, 4\) does not fit this convolution, whose output has "
                                         r"at most \(4, 4\)"):
        ops.conv_forward(x, w, None, [5, 4], *plain)


# ---- memory layouts, fresh results, meta tensors, unbatched input -------------------


def test_any_memory_layout_gives_the_contiguous_result(torch, ptc):
    """Transposed, sliced, channels-last, expanded (stride 0) and negated views
    give the results of their contiguous copies, and so do such gradients."""
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(2, 3, 9, 8, dtype=torch.float64, generator=gen)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=gen)
    views = {
        "transposed": base.transpose(2, 3),
        "sliced": base[:, :, ::2, 1:],
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "expanded": base[:1, :, :1, :].expand(2, 3, 9, 8),
        "negated": torch._neg_view(base),
    }
    for name, view in views.items():
        for wv in (w, w.transpose(2, 3).contiguous().transpose(2, 3), w[:, :, :, :].expand(4, 3, 3, 3)):
            got = ptc.conv(view, wv, stride=2, padding=1, padding_mode="reflect")
            ref = ptc.conv(view.contiguous().resolve_neg(), wv.contiguous(), stride=2, padding=1,
                           padding_mode="reflect")
            torch.testing.assert_close(got, ref, rtol=0, atol=0, msg=name)
            assert got.is_contiguous()
    # An expanded gradient (what sum() sends back) and a transposed one.
    x = base.clone().requires_grad_()
    y = ptc.conv_transpose(x, w.transpose(0, 1).contiguous(), stride=2, padding=1)
    (gx,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
    (ref,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(gx, ref, rtol=0, atol=0)


def test_results_are_fresh_tensors(torch, ptc):
    x, w = torch.randn(1, 2, 1, 1), torch.ones(2, 2, 1, 1)
    b = torch.zeros(2)
    for y in (ptc.conv(x, w, b), ptc.conv_transpose(x, w, b)):
        assert y.data_ptr() not in (x.data_ptr(), w.data_ptr(), b.data_ptr())
        y += 1  # writable, and the inputs do not change
    torch.testing.assert_close(b, torch.zeros(2))


def test_an_empty_batch_like_torch(torch, ptc):
    x = torch.randn(0, 2, 5, 5, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = ptc.conv(x, w, b, padding=1)
    assert y.shape == (0, 3, 5, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape and not w.grad.any() and not b.grad.any()
    t = ptc.conv_transpose(torch.randn(0, 3, 4, 4), w, b[:2], stride=2)
    assert t.shape == (0, 2, 9, 9)


def test_meta_tensors_give_shapes(torch, ptc):
    x, w = torch.empty(2, 4, 9, 7, device="meta"), torch.empty(6, 2, 3, 2, device="meta")
    y = ptc.conv(x, w, stride=2, padding=((1, 0), (2, 1)), groups=2)
    assert y.device.type == "meta"
    assert tuple(y.shape) == pytconv.conv_output_shape((2, 4, 9, 7), (6, 2, 3, 2), 2, ((1, 0), (2, 1)), 1, 2)
    t = ptc.conv_transpose(y, w, stride=2, padding=((1, 0), (2, 1)), groups=2, output_size=(9, 7))
    assert tuple(t.shape) == (2, 4, 9, 7)


def test_unbatched_input_like_torch(torch, ptc):
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(4)
    x, w = torch.randn(3, 7, 6, dtype=torch.float64, generator=gen), torch.randn(4, 3, 2, 3, dtype=torch.float64,
                                                                                   generator=gen)
    torch.testing.assert_close(ptc.conv(x, w, stride=2), F.conv2d(x, w, stride=2), rtol=1e-12, atol=1e-12)
    wt = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=gen)
    got = ptc.conv_transpose(x, wt, stride=2, output_size=(3, 15, 13))  # (C, *spatial), as torch.nn takes it
    torch.testing.assert_close(got, F.conv_transpose2d(x, wt, stride=2, output_padding=(0, 0)), rtol=1e-12,
                               atol=1e-12)


# ---- bad inputs ---------------------------------------------------------------------


def test_bad_inputs_give_clear_errors(torch, ptc):
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    cases = [
        (TypeError, "conv: input must be a torch.Tensor, got ndarray", lambda: ptc.conv(x.numpy(), w)),
        (TypeError, r"conv: input has dtype torch.int64; supported dtypes are torch.float32 and torch.float64",
         lambda: ptc.conv(x.long(), w)),
        (TypeError, "conv_transpose: weight has dtype torch.float16",
         lambda: ptc.conv_transpose(x, w.half().transpose(0, 1))),
        (TypeError, "conv: tensors must share one dtype .*input torch.float32 on cpu, weight torch.float64 on cpu",
         lambda: ptc.conv(x, w.double())),
        (TypeError, "conv: tensors must share one dtype .*bias torch.float64",
         lambda: ptc.conv(x, w, torch.zeros(4, dtype=torch.float64))),
        (ValueError, "conv: tensors must share one device, got input torch.float32 on cpu, weight torch.float32 "
                     "on meta",
         lambda: ptc.conv(x, w.to("meta"))),
        (ValueError, r"conv: input of shape \(6, 6\) has 2 dimensions; a weight of shape \(4, 3, 3, 3\) \(2 spatial "
                     r"dimensions\) needs input \(batch, channels, \*spatial\) with 4 dimensions",
         lambda: ptc.conv(x[0, 0], w)),
        (ValueError, "conv: weight must have at least 3 dimensions", lambda: ptc.conv(x, w[0, 0])),
        (ValueError, "conv: weight expects 3 input channels per group, input has 2 channels",
         lambda: ptc.conv(x[:, :2], w)),
        (ValueError, r"conv: bias must have shape \(4,\), got \(3,\)", lambda: ptc.conv(x, w, torch.zeros(3))),
        (ValueError, "conv: padding_mode must be one of", lambda: ptc.conv(x, w, padding_mode="mirror")),
        (ValueError, "conv: padding_mode='reflect' needs padding < the input size",
         lambda: ptc.conv(x, w, padding=6, padding_mode="reflect")),
        (TypeError, "conv: stride must be an int", lambda: ptc.conv(x, w, stride=(1.5, 1))),
        (ValueError, r"conv_transpose: output_shape \(13, 11\) cannot be reached in dimension 1: reachable sizes "
                     r"are 13..14", lambda: ptc.conv_transpose(x, w.transpose(0, 1), stride=2, output_size=(13, 11))),
        (ValueError, r"conv_transpose: output_size needs 2 spatial sizes \(or 4 with the batch and channel sizes",
         lambda: ptc.conv_transpose(x, w.transpose(0, 1), output_size=(1, 8, 8))),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()


def test_integer_tensors_cannot_reach_autograd(torch, ptc):
    """An integer input next to a weight that requires grad is refused by dtype
    before any autograd graph is built."""
    w = torch.randn(2, 1, 3, requires_grad=True)
    with pytest.raises(TypeError, match="conv: input has dtype torch.int32"):
        ptc.conv(torch.ones(1, 1, 5, dtype=torch.int32), w)


def test_cuda_tensors_without_the_gpu_path_give_a_clear_error(torch, ptc):
    """Without CuPy or a GPU, CUDA tensors (faked here: no GPU is needed to
    build them) are refused with the reason, before any work."""
    from pytconv import gpu
    from torch._subclasses.fake_tensor import FakeTensorMode

    available, reason = gpu.status()
    if available:
        pytest.skip("the GPU path is available here (tests/test_torch_gpu.py runs it)")
    with FakeTensorMode():
        x, w = torch.empty(1, 2, 5, 5, device="cuda"), torch.empty(3, 2, 3, 3, device="cuda")
        with pytest.raises(RuntimeError, match="conv: CUDA tensors need pytconv's GPU path, which is not available"):
            ptc.conv(x, w)
        with pytest.raises(RuntimeError, match="conv_transpose: CUDA tensors need pytconv's GPU path"):
            ptc.conv_transpose(x, w.transpose(0, 1))
