"""torch.compile(fullgraph=True) of models built from the PyTorch adapter's
layers: one graph, no breaks, the operators in it, forward and backward
values equal to eager execution."""

from __future__ import annotations

import pytest

import pytconv

from frameworks import require

# PyTorch's own compiler stack calls a deprecated torch.jit helper.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def torch():
    return require("torch")


def _model(torch, dtype):
    ptc = pytconv.adapter("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(
        ptc.Conv2d(2, 4, 3, stride=2, padding=1, padding_mode="circular"),
        torch.nn.ReLU(),
        ptc.ConvNd(2, 4, 4, (3, 2), padding=((1, 1), (0, 1)), groups=2),
        torch.nn.ReLU(),
        ptc.ConvTranspose2d(4, 2, 4, stride=2, padding=1, padding_mode="reflect"),
    ).to(dtype)


def _step(torch, model, x):
    """Loss, input gradient and parameter gradients of one training step."""
    x = x.clone().requires_grad_()
    loss = model(x).square().mean()
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    return [loss.detach(), *grads]


def _assert_same(torch, got, expected, tol):
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


def test_inductor_compiles_forward_and_backward_in_one_graph(torch):
    """The default backend (inductor, C++ code generation on the CPU)."""
    model = _model(torch, torch.float32)
    x = torch.randn(2, 2, 12, 10, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(model, fullgraph=True)
    _assert_same(torch, _step(torch, compiled, x), _step(torch, model, x), 1e-6)


def test_graphs_hold_the_operators_forward_and_backward(torch):
    """fullgraph=True raises on any graph break; the forward and backward
    graphs AOTAutograd produces call pytconv's operators (so nothing ran
    behind the compiler's back); the batch size stays symbolic after the
    first recompilation, as for PyTorch's own convolutions."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {"forward": [], "backward": []}

    def keeper(kind):
        def compiler(gm, example_inputs):
            graphs[kind].append(gm)
            return make_boxed_func(gm.forward)

        return compiler

    backend = aot_autograd(fw_compiler=keeper("forward"), bw_compiler=keeper("backward"))
    torch._dynamo.reset()
    model = _model(torch, torch.float64)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    gen = torch.Generator().manual_seed(2)
    for batch in (3, 4, 5):
        x = torch.randn(batch, 2, 9, 11, dtype=torch.float64, generator=gen)
        _assert_same(torch, _step(torch, compiled, x), _step(torch, model, x), 1e-12)
    # Batch 3 compiles with static shapes, batch 4 with a symbolic batch size,
    # which batch 5 reuses.
    assert len(graphs["forward"]) == 2 and len(graphs["backward"]) == 2

    def targets(gm):
        return {str(node.target) for node in gm.graph.nodes if node.op == "call_function"}

    for forward, backward in zip(graphs["forward"], graphs["backward"]):
        assert {"pytconv.conv_forward.default", "pytconv.conv_input_grad.default"} <= targets(forward)
        assert {
            "pytconv.conv_forward.default",
            "pytconv.conv_input_grad.default",
            "pytconv.conv_weight_grad.default",
            "pytconv.bias_grad.default",
        } <= targets(backward)
