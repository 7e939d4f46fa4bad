"""Cross-framework consistency checks, usable from pytest and behind
``python -m pytconv check``.

A check runs one convolution or transposed convolution (a `Config`) through
several *backends* - pytconv's NumPy API, its PyTorch and TensorFlow adapters,
its GPU path, and the frameworks' own operations - and compares each one's
output and gradients (input, weight and bias, through each framework's
autograd) with pytconv's float64 reference (`pytconv.reference`)::

    >>> from pytconv.testing import Config, check_conv
    >>> report = check_conv(Config("conv_transpose", (2, 4, 5, 5), (4, 3, 3, 3), stride=2,
    ...                            padding="same"), backends=["pytconv[numpy]"])
    >>> report.passed
    True

In a test, ``assert_backends_agree(config)`` raises ``AssertionError`` with the
table of disagreements. ``compare_layers(keras_layer, torch_layer, x)`` checks
that a Keras layer and a PyTorch layer compute the same thing.

Errors are measured as the largest absolute difference, and the same divided by
the largest magnitude of the reference (``max_rel``). pytconv's own backends
must be within `TOLERANCES` ``["pytconv"]`` and bitwise identical to each other
on the CPU (the NumPy API, PyTorch and TensorFlow adapters); the frameworks'
own operations within ``["framework"]``, as their float32 algorithms differ.

More backends can be added with `register_backend` (an object with the
`Backend` interface), e.g. to check a third-party implementation.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import time
import zlib
from typing import Callable, Iterable, NamedTuple

import numpy as np

from . import conventions, reference

__all__ = [
    "TOLERANCES",
    "Config",
    "Inputs",
    "Outputs",
    "NotApplicable",
    "Backend",
    "Cell",
    "Report",
    "register_backend",
    "unregister_backend",
    "backend_names",
    "get_backend",
    "select_backends",
    "backend_states",
    "check_conv",
    "check_configs",
    "assert_backends_agree",
    "compare_layers",
    "LayerComparison",
    "random_config",
]

#: Largest error relative to max|reference| allowed, by kind of backend and dtype.
TOLERANCES = {
    "pytconv": {"float64": 1e-10, "float32": 1e-4},
    "framework": {"float64": 1e-9, "float32": 1e-4},
}

QUANTITIES = ("output", "grad_input", "grad_weight", "grad_bias")


# ---- configurations ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """One convolution (``op="conv"``) or transposed convolution
    (``op="conv_transpose"``) with pytconv's (PyTorch's) arguments: channels-first
    ``input_shape``, ``weight_shape`` in PyTorch's layout, padding in any of
    pytconv's spellings."""

    op: str
    input_shape: tuple
    weight_shape: tuple
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    output_padding: object = 0
    padding_mode: str = "zeros"
    bias: bool = True

    def __post_init__(self):
        if self.op not in ("conv", "conv_transpose"):
            raise ValueError(f"Config: op must be 'conv' or 'conv_transpose', got {self.op!r}")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "weight_shape", tuple(int(s) for s in self.weight_shape))

    @property
    def transposed(self) -> bool:
        return self.op == "conv_transpose"

    @property
    def ndim(self) -> int:
        return len(self.weight_shape) - 2

    def convolution(self) -> conventions.Convolution:
        """The canonical form (raises ValueError/TypeError for invalid arguments)."""
        extra = {"output_padding": self.output_padding} if self.transposed else {}
        return conventions.from_pytconv(
            self.input_shape, self.weight_shape, transposed=self.transposed, stride=self.stride,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
            padding_mode=self.padding_mode, **extra,
        )

    def pytconv_kwargs(self) -> dict:
        """Keyword arguments of pytconv.conv / conv_transpose, as spelled here."""
        kwargs = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                      groups=self.groups, padding_mode=self.padding_mode)
        if self.transposed:
            kwargs["output_padding"] = self.output_padding
        return kwargs

    def label(self) -> str:
        """A short readable description, e.g. ``conv2d x(2,4,7,6) w(6,2,3,3) s=2 p=same g=2``."""
        def fmt(value):
            if isinstance(value, (tuple, list)) and len(value) == 1 and not isinstance(value[0], (tuple, list)):
                return str(value[0])
            if isinstance(value, (tuple, list)):
                return "(" + ",".join(fmt(v) for v in value) + ")"
            return str(value)

        name = ("conv_transpose" if self.transposed else "conv") + f"{self.ndim}d"
        parts = [name, "x" + fmt(self.input_shape), "w" + fmt(self.weight_shape)]
        defaults = (("s", self.stride, 1), ("p", self.padding, 0), ("d", self.dilation, 1),
                    ("g", self.groups, 1), ("op", self.output_padding, 0))
        for short, value, default in defaults:
            if value != default and not (short == "op" and not self.transposed):
                parts.append(f"{short}={fmt(value)}")
        if self.padding_mode != "zeros":
            parts.append(self.padding_mode)
        if not self.bias:
            parts.append("nobias")
        return " ".join(parts)

    def as_dict(self) -> dict:
        def plain(value):
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def random_config(rng: np.random.Generator, ndim: int, op: str | None = None, max_size: int = 7) -> Config:
    """A random valid Config with ``ndim`` spatial dimensions (small sizes),
    exercising strides, per-side padding, "same"/"valid", dilation, groups,
    output_padding and padding modes."""
    for _ in range(1000):
        transposed = (rng.random() < 0.5) if op is None else op == "conv_transpose"
        groups = int(rng.choice([1, 1, 2, 3]))
        cin = groups * int(rng.integers(1, 3))
        cout = groups * int(rng.integers(1, 3))
        batch = int(rng.integers(1, 3))
        kernel = tuple(int(k) for k in rng.integers(1, 4, ndim))
        stride = tuple(int(s) for s in rng.integers(1, 4, ndim))
        dilation = tuple(int(d) for d in rng.choice([1, 1, 2], ndim))
        choice = rng.integers(0, 4)
        if choice == 0:
            padding = "same"
        elif choice == 1:
            padding = "valid"
        elif choice == 2:
            padding = tuple(int(p) for p in rng.integers(0, 3, ndim))
        else:
            padding = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (ndim, 2)))
        mode = str(rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"]))
        size = tuple(int(s) for s in rng.integers(2, max_size + 1, ndim))
        if transposed:
            w_shape = (cout, cin // groups) + kernel  # (in, out / g, *k) of the transposed op
            limit = [max(s, d) for s, d in zip(stride, dilation)]
            output_padding = tuple(int(rng.integers(0, m)) for m in limit) if padding != "same" else 0
            config = Config("conv_transpose", (batch, cout) + size, w_shape, stride, padding, dilation,
                            groups, output_padding, mode, bool(rng.random() < 0.8))
        else:
            config = Config("conv", (batch, cin) + size, (cout, cin // groups) + kernel, stride, padding,
                            dilation, groups, 0, mode, bool(rng.random() < 0.8))
        try:
            config.convolution()
        except ValueError:
            continue
        return config
    raise RuntimeError("random_config: no valid configuration found")  # pragma: no cover


# ---- inputs, outputs, reference ---------------------------------------------------


class Inputs(NamedTuple):
    """The arrays of one run: the op's input, weight (PyTorch layout), bias (or
    None) and the gradient of the loss with respect to the op's output."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray | None
    grad_output: np.ndarray


class Outputs(NamedTuple):
    """What a backend computes: output and gradients, as NumPy arrays in
    pytconv's layouts (channels first, PyTorch weight layout)."""

    output: np.ndarray
    grad_input: np.ndarray
    grad_weight: np.ndarray
    grad_bias: np.ndarray | None


def make_inputs(config: Config, dtype, seed: int) -> Inputs:
    """Deterministic random inputs for (config, dtype, seed)."""
    conv = config.convolution()
    rng = np.random.default_rng([seed, zlib.crc32(config.label().encode())])
    dtype = np.dtype(dtype)

    def draw(shape):
        return rng.standard_normal(shape).astype(dtype)

    b = draw((conv.output_shape[1],)) if config.bias else None
    return Inputs(draw(conv.input_shape), draw(conv.weight_shape), b, draw(conv.output_shape))


def reference_outputs(config: Config, inputs: Inputs) -> Outputs:
    """Output and gradients in float64 from `pytconv.reference`."""
    conv = config.convolution()
    p = conv.problem
    x, w, gy = (np.asarray(a, np.float64) for a in (inputs.x, inputs.w, inputs.grad_output))
    if conv.transposed:
        y = reference.backward_data(p, x, w)
        dx = reference.forward(p, gy, w)
        dw = reference.backward_filter(p, gy, x)
    else:
        y = reference.forward(p, x, w)
        dx = reference.backward_data(p, gy, w)
        dw = reference.backward_filter(p, x, gy)
    db = None
    if inputs.b is not None:
        y = y + np.asarray(inputs.b, np.float64).reshape((1, -1) + (1,) * p.ndim)
        db = gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))
    return Outputs(y, dx, dw, db)


# ---- backends --------------------------------------------------------------------------


class NotApplicable(Exception):
    """Raised by a backend that cannot compute a configuration (with the reason)."""


class Backend:
    """A way of computing a Config; subclass and `register_backend` it.

    ``name``: shown in reports. ``framework``: the framework it needs ("torch",
    "tensorflow", "jax", "gpu", or None), for selection. ``pytconv``: whether it
    is pytconv's own implementation (tighter tolerance; bitwise comparison with
    the NumPy API when ``bitwise`` is true).
    """

    name = "backend"
    framework: str | None = None
    pytconv = False
    bitwise = False
    #: The quantities the backend computes with pytconv (compared bit for bit).
    bitwise_quantities = QUANTITIES

    def status(self) -> tuple:
        """("ok" | "not installed" | "unavailable" | "broken", reason)."""
        return "ok", ""

    def run(self, config: Config, inputs: Inputs) -> Outputs:  # pragma: no cover - interface
        raise NotImplementedError


def _import_status(module: str) -> tuple:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return "not installed", f"{module} ({exc})"
    return "ok", ""


def _bias_shape(n: int) -> tuple:
    return (1, -1) + (1,) * n


class NumPyBackend(Backend):
    """pytconv's NumPy API (C core), gradients from its public gradient functions."""

    name = "pytconv[numpy]"
    pytconv = True

    xp = np

    def _to(self, a):
        return a

    def _from(self, a):
        return a

    def run(self, config, inputs):
        import pytconv

        kw = config.pytconv_kwargs()
        x, w, gy = self._to(inputs.x), self._to(inputs.w), self._to(inputs.grad_output)
        b = None if inputs.b is None else self._to(inputs.b)
        common = (kw["stride"], kw["padding"])
        if config.transposed:
            y = pytconv.conv_transpose(x, w, b, *common, kw["output_padding"], kw["groups"], kw["dilation"],
                                       padding_mode=kw["padding_mode"])
            dx = pytconv.conv_transpose_input_grad(x.shape, w, gy, *common, kw["groups"], kw["dilation"],
                                                   kw["padding_mode"])
            dw = pytconv.conv_transpose_weight_grad(x, w.shape, gy, *common, kw["groups"], kw["dilation"],
                                                    kw["padding_mode"])
        else:
            y = pytconv.conv(x, w, b, *common, kw["dilation"], kw["groups"], kw["padding_mode"])
            dx = pytconv.conv_input_grad(x.shape, w, gy, *common, kw["dilation"], kw["groups"],
                                         kw["padding_mode"])
            dw = pytconv.conv_weight_grad(x, w.shape, gy, *common, kw["dilation"], kw["groups"],
                                          kw["padding_mode"])
        db = None if b is None else pytconv.bias_grad(gy)
        return Outputs(*(None if a is None else self._from(a) for a in (y, dx, dw, db)))


class GPUBackend(NumPyBackend):
    """pytconv's GPU path: CuPy arrays into the NumPy API."""

    name = "pytconv[gpu]"
    framework = "gpu"
    pytconv = True
    bitwise = False  # a different machine's arithmetic: compared, reported, not required

    def status(self):
        try:
            from . import gpu
        except ImportError as exc:
            return "unavailable", f"pytconv.gpu cannot be imported ({exc})"
        try:
            ok, reason = gpu.status()
        except Exception as exc:  # a broken GPU module is a failure, not an absence
            return "broken", f"pytconv.gpu.status() raised {type(exc).__name__}: {exc}"
        return ("ok" if ok else "unavailable"), str(reason)

    def _to(self, a):
        import cupy

        return cupy.asarray(a)

    def _from(self, a):
        import cupy

        return cupy.asnumpy(a)


class _AdapterBackend(Backend):
    adapter_name = ""
    pytconv = True
    bitwise = True

    def status(self):
        state, reason = _import_status(self.framework)
        if state != "ok":
            return state, reason
        import pytconv

        try:
            pytconv.adapter(self.adapter_name)
        except Exception as exc:
            return "broken", f"pytconv.adapter({self.adapter_name!r}) failed: {type(exc).__name__}: {exc}"
        return "ok", ""

    def module(self):
        import pytconv

        return pytconv.adapter(self.adapter_name)


class TorchAdapterBackend(_AdapterBackend):
    """pytconv's PyTorch adapter (functional API), gradients through torch.autograd."""

    name = "pytconv[torch]"
    framework = "torch"
    adapter_name = "torch"

    def run(self, config, inputs):
        import torch

        ptc = self.module()
        x, w, b = (None if a is None else torch.from_numpy(np.array(a)).requires_grad_()
                   for a in (inputs.x, inputs.w, inputs.b))
        kw = config.pytconv_kwargs()
        if config.transposed:
            extra = {} if kw["padding_mode"] == "zeros" else {"padding_mode": kw["padding_mode"]}
            y = ptc.conv_transpose(x, w, b, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                                   kw["dilation"], **extra)
        else:
            y = ptc.conv(x, w, b, kw["stride"], kw["padding"], kw["dilation"], kw["groups"], kw["padding_mode"])
        return _torch_backward(y, x, w, b, inputs.grad_output)


def _torch_backward(y, x, w, b, grad_output) -> Outputs:
    import torch

    y.backward(torch.from_numpy(np.array(grad_output)))
    return Outputs(y.detach().numpy(), x.grad.numpy(), w.grad.numpy(), None if b is None else b.grad.numpy())


class TensorFlowAdapterBackend(_AdapterBackend):
    """pytconv's TensorFlow adapter (functional API), gradients through
    tf.GradientTape; the bias is added with TensorFlow's addition.

    Channels last (TensorFlow's default) for most configurations; 1- to 3-d
    configurations whose label hashes odd run channels first (data_format
    "NC..."), so both layouts of the adapter are checked.
    """

    name = "pytconv[tensorflow]"
    framework = "tensorflow"
    adapter_name = "tensorflow"
    # tf.nn-style functions take no bias: it is added, and its gradient summed, by TensorFlow.
    bitwise_quantities = ("output", "grad_input", "grad_weight")

    def run(self, config, inputs):
        import tensorflow as tf

        ptf = self.module()
        conv = config.convolution()
        p = conv.problem
        n = p.ndim
        last = n > 3 or zlib.crc32(config.label().encode()) % 2 == 0
        data_format = None if last else conventions.tensorflow_data_format(n, channels_last=False)
        if isinstance(config.padding, str):
            padding = config.padding.upper()
        else:
            pairs = [[lo, hi] for lo, hi in zip(p.pad_low, p.pad_high)]
            padding = [[0, 0]] + pairs + [[0, 0]] if last else [[0, 0], [0, 0]] + pairs
        kw = {}
        if p.padding_mode != "zeros":
            fn = ptf.conv_transpose if conv.transposed else ptf.conv
            if "padding_mode" not in inspect.signature(fn).parameters:
                raise NotApplicable("the TensorFlow adapter's functions take no padding_mode")
            kw["padding_mode"] = p.padding_mode
        layout = conventions.to_channels_last if last else np.asarray
        x = tf.constant(layout(inputs.x))
        f = tf.constant(conventions.weight_to_tensorflow(inputs.w))
        b = None if inputs.b is None else tf.constant(inputs.b)
        watched = [x, f] + ([] if b is None else [b])
        with tf.GradientTape() as tape:
            for t in watched:
                tape.watch(t)
            if conv.transposed:
                out_shape = (p.batch,) + p.in_size + (p.in_channels,) if last else p.x_shape
                y = ptf.conv_transpose(x, f, out_shape, strides=p.stride, padding=padding, data_format=data_format,
                                       dilations=p.dilation, groups=p.groups, **kw)
            else:
                y = ptf.conv(x, f, strides=p.stride, padding=padding, data_format=data_format, dilations=p.dilation,
                             groups=p.groups, **kw)
            if b is not None:
                y = y + (b if last else tf.reshape(b, _bias_shape(n)))
        return _tf_gradients(tape, y, watched, inputs.grad_output, last)


def _tf_gradients(tape, y, watched, grad_output, channels_last=True) -> Outputs:
    import tensorflow as tf

    to_tf = conventions.to_channels_last if channels_last else np.asarray
    from_tf = conventions.to_channels_first if channels_last else np.asarray
    grads = tape.gradient(y, watched, output_gradients=tf.constant(to_tf(grad_output)))
    dx, df = grads[0], grads[1]
    db = grads[2].numpy() if len(grads) > 2 else None
    return Outputs(
        from_tf(y.numpy()),
        from_tf(dx.numpy()),
        conventions.weight_from_tensorflow(df.numpy()),
        db,
    )


class TorchBackend(Backend):
    """PyTorch's own torch.nn.functional.conv{n}d / conv_transpose{n}d.

    Padding PyTorch cannot express in the call (per-side, or a padding mode
    in the functional API) is applied with torch.nn.functional.pad first, as
    PyTorch's own layers do for padding modes.
    """

    name = "torch"
    framework = "torch"

    def status(self):
        return _import_status("torch")

    def run(self, config, inputs):
        import torch
        import torch.nn.functional as F

        conv = config.convolution()
        p = conv.problem
        n = p.ndim
        if n > 3:
            raise NotApplicable(f"torch.nn.functional has 1-3 d convolutions only (this is {n}-d)")
        x, w, b = (None if a is None else torch.from_numpy(np.array(a)).requires_grad_()
                   for a in (inputs.x, inputs.w, inputs.b))
        if conv.transposed:
            try:
                args = conventions.to_torch(conv)
            except ValueError as exc:
                raise NotApplicable(str(exc)) from None
            y = getattr(F, f"conv_transpose{n}d")(x, w, b, **args)
        else:
            try:
                args = conventions.to_torch(conv)
                xin = x
            except ValueError:
                # F.pad lists (low, high) from the last dimension backwards.
                pads = [v for lo, hi in reversed(list(zip(p.pad_low, p.pad_high))) for v in (lo, hi)]
                mode = {"zeros": "constant"}.get(p.padding_mode, p.padding_mode)
                xin = F.pad(x, pads, mode=mode)
                args = dict(stride=p.stride, padding=0, dilation=p.dilation, groups=p.groups)
            y = getattr(F, f"conv{n}d")(xin, w, b, **args)
        return _torch_backward(y, x, w, b, inputs.grad_output)


class TensorFlowBackend(Backend):
    """TensorFlow's own tf.nn.convolution / tf.nn.conv2d (explicit padding) /
    tf.nn.conv_transpose, channels last, gradients through tf.GradientTape.

    Per-side padding TensorFlow cannot express (outside 2-d) and padding_mode
    "reflect" are applied with tf.pad first; configurations TensorFlow does not
    support (e.g. groups in conv_transpose, strides with dilations, dilated
    transposed convolutions on the CPU) are reported as not applicable.
    """

    name = "tensorflow"
    framework = "tensorflow"

    def status(self):
        return _import_status("tensorflow")

    def run(self, config, inputs):
        import tensorflow as tf

        conv = config.convolution()
        p = conv.problem
        n = p.ndim
        if n > 3:
            raise NotApplicable(f"tf.nn convolutions have 1-3 spatial dimensions (this is {n}-d)")
        if any(s > 1 for s in p.stride) and any(d > 1 for d in p.dilation):
            raise NotApplicable("TensorFlow does not combine strides > 1 with dilations > 1")
        pre_pad = None
        if conv.transposed:
            try:
                args = conventions.to_tensorflow(conv)
            except ValueError as exc:
                raise NotApplicable(str(exc)) from None
        elif p.padding_mode not in ("zeros", "reflect"):
            raise NotApplicable(f"tf.pad has no mode for padding_mode={p.padding_mode!r}")
        else:
            try:
                if p.padding_mode != "zeros":
                    raise ValueError("padding mode")
                args = conventions.to_tensorflow(conv)
            except ValueError:
                pre_pad = [[0, 0]] + [[lo, hi] for lo, hi in zip(p.pad_low, p.pad_high)] + [[0, 0]]
                args = dict(strides=p.stride, padding="VALID", data_format=conventions.tensorflow_data_format(n),
                            dilations=p.dilation)
        x = tf.constant(conventions.to_channels_last(inputs.x))
        f = tf.constant(conventions.weight_to_tensorflow(inputs.w))
        b = None if inputs.b is None else tf.constant(inputs.b)
        watched = [x, f] + ([] if b is None else [b])
        try:
            with tf.GradientTape() as tape:
                for t in watched:
                    tape.watch(t)
                if conv.transposed:
                    y = tf.nn.conv_transpose(x, f, **args)
                elif pre_pad is not None:
                    mode = "REFLECT" if p.padding_mode == "reflect" else "CONSTANT"
                    y = tf.nn.convolution(tf.pad(x, pre_pad, mode=mode), f, **args)
                elif isinstance(args["padding"], list):
                    y = tf.nn.conv2d(x, f, **args)
                else:
                    y = tf.nn.convolution(x, f, **args)
                if b is not None:
                    y = y + b
            return _tf_gradients(tape, y, watched, inputs.grad_output)
        except tf.errors.OpError as exc:
            # TensorFlow's kernels refusing a configuration (e.g. grouped or
            # dilated cases on the CPU) is a limit of TensorFlow, not a disagreement.
            message = re.sub(r"\{\{[^}]*\}\}\s*", "", exc.message or str(exc)).strip().splitlines()[0]
            raise NotApplicable(f"TensorFlow: {type(exc).__name__}: {message[:200]}") from None


class JAXBackend(Backend):
    """JAX's own jax.lax.conv_general_dilated (transposed: lhs_dilation and the
    flipped kernel), gradients through jax.vjp (jitted); float64 under jax.enable_x64.

    Padding modes: a convolution pads with jax.numpy.pad first; a transposed
    convolution (the adjoint of that) computes the uncropped transposed
    convolution and applies jax.linear_transpose of the same jax.numpy.pad.
    """

    name = "jax"
    framework = "jax"

    def status(self):
        return _import_status("jax")

    def run(self, config, inputs):
        import jax
        import jax.numpy as jnp
        from jax import lax

        conv = config.convolution()
        p = conv.problem
        n = p.ndim
        widths = ((0, 0), (0, 0)) + tuple(zip(p.pad_low, p.pad_high))
        jnp_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}.get(p.padding_mode)
        if jnp_mode is None:
            args = conventions.to_jax(conv)
        else:
            # The same convolution on the explicitly padded input, without padding.
            padded = tuple(i + lo + hi for i, lo, hi in zip(p.in_size, p.pad_low, p.pad_high))
            unpadded = p._replace(in_size=padded, pad_low=(0,) * n, pad_high=(0,) * n, padding_mode="zeros")
            args = conventions.to_jax(conventions.Convolution(unpadded, conv.transposed))
        kernel = conventions.weight_to_jax(inputs.w, conv)

        with jax.enable_x64(True):
            dtype = inputs.x.dtype

            def pad(u):
                return jnp.pad(u, widths, mode=jnp_mode)

            def op(x, k, *b):
                if jnp_mode is not None and not conv.transposed:
                    x = pad(x)
                y = lax.conv_general_dilated(x, k, precision=lax.Precision.HIGHEST, **args)
                if jnp_mode is not None and conv.transposed:
                    (y,) = jax.linear_transpose(pad, jax.ShapeDtypeStruct(p.x_shape, dtype))(y)
                if b:
                    y = y + b[0].reshape(_bias_shape(n))
                return y

            def value_and_grads(grad_output, *arrays):
                y, vjp = jax.vjp(op, *arrays)
                return (y,) + tuple(vjp(grad_output))

            arrays = [jnp.asarray(inputs.x), jnp.asarray(kernel)]
            if inputs.b is not None:
                arrays.append(jnp.asarray(inputs.b))
            # One compiled program per configuration: compiling the primitives
            # one by one (eager mode) takes longer than running them.
            y, *grads = (np.asarray(a) for a in jax.jit(value_and_grads)(jnp.asarray(inputs.grad_output), *arrays))
        dw = conventions.weight_from_jax(grads[1], conv)
        return Outputs(y, grads[0], dw, grads[2] if len(grads) > 2 else None)


_REGISTRY: dict = {}


def register_backend(backend: Backend, *, replace: bool = False) -> None:
    """Add a backend to every check (`check_conv`, ``python -m pytconv check``)."""
    if not isinstance(getattr(backend, "name", None), str) or not callable(getattr(backend, "run", None)):
        raise TypeError("register_backend: backend needs a str `name` and a `run(config, inputs)` method")
    if backend.name in _REGISTRY and not replace:
        raise ValueError(f"register_backend: a backend named {backend.name!r} exists (pass replace=True)")
    _REGISTRY[backend.name] = backend


def unregister_backend(name: str) -> None:
    """Remove the backend named ``name`` (ValueError if there is none)."""
    if name not in _REGISTRY:
        raise ValueError(f"unregister_backend: no backend named {name!r}; known: {', '.join(_REGISTRY)}")
    del _REGISTRY[name]


def backend_names() -> list:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"get_backend: no backend named {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


for _backend in (NumPyBackend(), TorchAdapterBackend(), TensorFlowAdapterBackend(), GPUBackend(),
                 TorchBackend(), TensorFlowBackend(), JAXBackend()):
    register_backend(_backend)
del _backend

BASELINE = NumPyBackend.name


# ---- running and comparing ------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    """One backend on one (config, dtype, seed): status "pass", "fail", "n/a" or
    "error"; per-quantity (max abs, max rel) errors; bitwise equality with the
    NumPy API (pytconv backends only)."""

    config: Config
    dtype: str
    seed: int
    backend: str
    status: str
    errors: dict = dataclasses.field(default_factory=dict)
    tolerance: float | None = None
    bitwise: bool | None = None
    reason: str = ""
    seconds: float = 0.0

    @property
    def max_abs(self) -> float | None:
        return max((e[0] for e in self.errors.values()), default=None)

    @property
    def max_rel(self) -> float | None:
        return max((e[1] for e in self.errors.values()), default=None)

    def as_dict(self) -> dict:
        return {
            "config": self.config.as_dict(),
            "label": self.config.label(),
            "dtype": self.dtype,
            "seed": self.seed,
            "backend": self.backend,
            "status": self.status,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "errors": {q: {"max_abs": a, "max_rel": r} for q, (a, r) in self.errors.items()},
            "tolerance": self.tolerance,
            "bitwise": self.bitwise,
            "reason": self.reason,
            "seconds": self.seconds,
        }


@dataclasses.dataclass
class Report:
    """Cells of a check, and the backends that could not run at all."""

    cells: list = dataclasses.field(default_factory=list)
    backends: dict = dataclasses.field(default_factory=dict)  # name -> (state, reason)

    @property
    def broken_backends(self) -> dict:
        return {k: v for k, v in self.backends.items() if v[0] == "broken"}

    @property
    def failures(self) -> list:
        return [c for c in self.cells if c.status in ("fail", "error")]

    @property
    def passed(self) -> bool:
        return not self.failures and not self.broken_backends

    def extend(self, other: "Report") -> None:
        self.cells.extend(other.cells)
        self.backends.update(other.backends)

    def table(self, cells: Iterable[Cell] | None = None) -> str:
        return format_table(self.cells if cells is None else list(cells))

    def summary(self) -> str:
        return format_summary(self)

    def __str__(self) -> str:
        return self.table() + "\n" + self.summary()

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "backends": {k: {"state": s, "reason": r} for k, (s, r) in self.backends.items()},
            "cells": [c.as_dict() for c in self.cells],
        }


def _compare(out: Outputs, ref: Outputs) -> tuple:
    """Per-quantity (max abs, max rel) errors and a list of problems (shapes, NaNs)."""
    errors, problems = {}, []
    for q, got, want in zip(QUANTITIES, out, ref):
        if want is None:
            continue
        if got is None:
            problems.append(f"{q} missing")
            continue
        got = np.asarray(got)
        if got.shape != want.shape:
            problems.append(f"{q} has shape {got.shape}, expected {want.shape}")
            continue
        diff = np.abs(got.astype(np.float64) - want)
        if not np.all(np.isfinite(diff)):
            problems.append(f"{q} is not finite")
            continue
        scale = float(np.abs(want).max()) if want.size else 0.0
        err = float(diff.max()) if diff.size else 0.0
        errors[q] = (err, err / scale if scale > 0 else err)
    return errors, problems


def _differing(a: Outputs, b: Outputs, quantities) -> list:
    """The quantities (of those named) that are not bitwise identical in a and b."""
    differ = []
    for q, u, v in zip(QUANTITIES, a, b):
        if q not in quantities:
            continue
        if (u is None) != (v is None) or (
            u is not None and (u.dtype != v.dtype or u.shape != v.shape or not np.array_equal(u, v))
        ):
            differ.append(q)
    return differ


def select_backends(backends=None, frameworks=None) -> list:
    """The `Backend` objects of ``backends`` (names or objects; default: every
    registered one), keeping those of ``frameworks`` (and those needing none)."""
    if backends is None:
        chosen = list(_REGISTRY.values())
    else:
        chosen = []
        for b in backends:
            chosen.append(get_backend(b) if isinstance(b, str) else b)
    if frameworks is not None:
        frameworks = set(frameworks)
        chosen = [b for b in chosen if b.framework is None or b.framework in frameworks]
    return chosen


def backend_states(backends: list) -> dict:
    """name -> (state, reason) for each backend."""
    states = {}
    for b in backends:
        try:
            states[b.name] = tuple(b.status())
        except Exception as exc:
            states[b.name] = ("broken", f"status() raised {type(exc).__name__}: {exc}")
    return states


def check_conv(config: Config, backends=None, *, dtypes=("float32", "float64"), seeds=(0,),
               frameworks=None, states: dict | None = None) -> Report:
    """Run ``config`` through ``backends`` (names or `Backend` objects; default:
    every registered one, limited to ``frameworks`` if given) for each dtype and
    seed and compare with the float64 reference. Returns a `Report`."""
    chosen = select_backends(backends, frameworks)
    states = backend_states(chosen) if states is None else states
    report = Report(backends={b.name: states[b.name] for b in chosen})
    config.convolution()  # invalid configurations raise here, not as backend errors
    for dtype in _dtype_names("check_conv", dtypes):
        for seed in seeds:
            report.cells.extend(_check_one(config, dtype, seed, chosen, states))
    return report


def _dtype_names(fn: str, dtypes) -> list:
    names = []
    for dtype in dtypes:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
        if name not in ("float32", "float64"):
            raise ValueError(f"{fn}: dtypes must be float32 or float64, got {dtype!r}")
        names.append(name)
    return names


def _check_one(config, dtype, seed, chosen, states) -> list:
    inputs = make_inputs(config, dtype, seed)
    ref = reference_outputs(config, inputs)
    cells, results = [], {}
    for backend in chosen:
        state, reason = states[backend.name]
        kind = "pytconv" if backend.pytconv else "framework"
        tol = TOLERANCES[kind][dtype]
        cell = Cell(config, dtype, seed, backend.name, "n/a", tolerance=tol)
        cells.append(cell)
        if state != "ok":
            cell.status = "error" if state == "broken" else "n/a"
            cell.reason = f"{state}: {reason}"
            continue
        started = time.perf_counter()
        try:
            out = backend.run(config, inputs)
        except NotApplicable as exc:
            cell.reason = str(exc)
            continue
        except Exception as exc:
            cell.status = "error"
            cell.reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            continue
        finally:
            cell.seconds = time.perf_counter() - started
        out = Outputs(*(None if a is None else np.asarray(a) for a in out))
        results[backend.name] = out
        cell.errors, problems = _compare(out, ref)
        bad = [q for q, (_, rel) in cell.errors.items() if not rel <= tol]
        if backend.pytconv and any(a is not None and a.dtype != np.dtype(dtype) for a in out):
            problems.append(f"result dtype is not {dtype}")
        if problems or bad:
            cell.status = "fail"
            cell.reason = "; ".join(problems + [f"{q} error {cell.errors[q][1]:.2e} > {tol:.0e}" for q in bad])
        else:
            cell.status = "pass"
    baseline = results.get(BASELINE)
    for backend, cell in zip(chosen, cells):
        if not backend.pytconv or backend.name == BASELINE or backend.name not in results or baseline is None:
            continue
        differ = _differing(results[backend.name], baseline, backend.bitwise_quantities)
        cell.bitwise = not differ
        if differ:
            note = f"{', '.join(differ)} not bitwise identical to {BASELINE}"
            if backend.bitwise and cell.status == "pass":
                cell.status = "fail"
                cell.reason = note
            elif not cell.reason:
                cell.reason = note
    return cells


def check_configs(configs: Iterable[Config], backends=None, *, dtypes=("float32", "float64"), seeds=(0,),
                  frameworks=None, progress: Callable | None = None, states: dict | None = None) -> Report:
    """`check_conv` over many configurations; ``progress(done, total, label)`` is
    called after each (config, dtype, seed). ``states``: `backend_states` of
    the backends, when already known."""
    configs = list(configs)
    dtypes = _dtype_names("check_configs", dtypes)
    chosen = select_backends(backends, frameworks)
    states = backend_states(chosen) if states is None else states
    report = Report(backends={b.name: states[b.name] for b in chosen})
    total = len(configs) * len(dtypes) * len(seeds)
    done = 0
    for config in configs:
        config.convolution()
        for dtype in dtypes:
            for seed in seeds:
                report.cells.extend(_check_one(config, dtype, seed, chosen, states))
                done += 1
                if progress is not None:
                    progress(done, total, config.label())
    return report


def assert_backends_agree(config: Config, backends=None, **kwargs) -> Report:
    """`check_conv`, raising AssertionError with the failing rows when any
    backend disagrees, fails or is broken. Returns the report otherwise."""
    report = check_conv(config, backends, **kwargs)
    if not report.passed:
        lines = [f"backends disagree on {config.label()}:"]
        if report.failures:
            lines.append(report.table(report.failures))
        for name, (state, reason) in report.broken_backends.items():
            lines.append(f"{name}: {state}: {reason}")
        raise AssertionError("\n".join(lines))
    return report


# ---- formatting ------------------------------------------------------------------------


def _num(value) -> str:
    return "" if value is None else f"{value:.1e}"


def format_table(cells: list) -> str:
    """A fixed-width table, one row per cell, the configuration shown once per group."""
    header = ("configuration", "dtype", "seed", "backend", "max abs", "max rel", "bitwise", "result")
    rows = []
    previous = None
    for c in cells:
        key = (c.config.label(), c.dtype, c.seed)
        label = c.config.label() if key != previous else ""
        dtype, seed = (c.dtype, str(c.seed)) if key != previous else ("", "")
        previous = key
        bitwise = "" if c.bitwise is None else ("same" if c.bitwise else "differs")
        if c.backend == BASELINE and c.status == "pass":
            bitwise = "baseline"
        result = c.status.upper() if c.status in ("fail", "error") else c.status
        if c.reason and c.status != "pass":
            result += f"  {c.reason}"
        rows.append((label, dtype, seed, c.backend, _num(c.max_abs), _num(c.max_rel), bitwise, result))
    widths = [len(h) for h in header]
    for row in rows:
        for i, v in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(v))
    fmt_row = lambda r: "  ".join(v.ljust(widths[i]) for i, v in enumerate(r[:-1])) + "  " + r[-1]  # noqa: E731
    lines = [fmt_row(header), "  ".join("-" * w for w in widths[:-1]) + "  " + "-" * len(header[-1])]
    lines.extend(fmt_row(r).rstrip() for r in rows)
    return "\n".join(lines)


def format_summary(report: Report) -> str:
    lines = []
    for name, (state, reason) in report.backends.items():
        if state != "ok":
            lines.append(f"{state}: {name}: {reason}")
    per = {}
    for c in report.cells:
        stats = per.setdefault(c.backend, {"pass": 0, "fail": 0, "error": 0, "n/a": 0, "worst": 0.0, "bitwise": None})
        stats[c.status] += 1
        if c.max_rel is not None:
            stats["worst"] = max(stats["worst"], c.max_rel)
        if c.bitwise is not None:
            stats["bitwise"] = (stats["bitwise"] is not False) and c.bitwise
    for name, s in per.items():
        bit = "" if s["bitwise"] is None else ("; bitwise identical to " + BASELINE if s["bitwise"]
                                              else "; NOT always bitwise identical to " + BASELINE)
        lines.append(f"{name:20s} pass {s['pass']:4d}  fail {s['fail']:3d}  error {s['error']:3d}  "
                     f"n/a {s['n/a']:4d}  worst rel {s['worst']:.1e}{bit}")
    lines.append("PASSED" if report.passed else f"FAILED: {len(report.failures)} failing cells"
                 + (f", broken backends: {', '.join(report.broken_backends)}" if report.broken_backends else ""))
    return "\n".join(lines)


# ---- layers ------------------------------------------------------------------------------


@dataclasses.dataclass
class LayerComparison:
    """Result of `compare_layers`: whether the two layers compute the same
    convolution with the same weights and agree on the input."""

    agree: bool
    reason: str
    keras_convolution: conventions.Convolution | None = None
    torch_convolution: conventions.Convolution | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    max_rel_keras_vs_reference: float | None = None
    max_rel_torch_vs_reference: float | None = None

    def __bool__(self) -> bool:
        return self.agree

    def __str__(self) -> str:
        return ("agree" if self.agree else "disagree") + f": {self.reason}"


def compare_layers(keras_layer, torch_layer, x, *, rtol: float | None = None) -> LayerComparison:
    """Does a Keras convolution layer compute what a PyTorch one does?

    ``x``: a channels-first NumPy input (N, C, *spatial) (given to the Keras
    layer in its data_format). Both layers are read into the canonical form
    (`pytconv.conventions`); the comparison reports the first difference among
    the configurations, the weights (converted between layouts) and the
    outputs, which are also compared with the float64 reference of the PyTorch
    layer's weights. Works for keras.layers.Conv{n}D/Conv{n}DTranspose and
    torch.nn.Conv{n}d/ConvTranspose{n}d, and for pytconv's adapters' layers.
    """
    import torch

    x = np.asarray(x)
    dtype = x.dtype.name
    if rtol is None:
        rtol = TOLERANCES["framework"].get(dtype, 1e-4)
    cfg = keras_layer.get_config()
    transposed_k = "Transpose" in type(keras_layer).__name__ or "output_padding" in cfg
    last = cfg.get("data_format", "channels_last") != "channels_first"
    kernel = np.asarray(keras_layer.kernel)
    keras_bias = np.asarray(keras_layer.bias) if getattr(keras_layer, "bias", None) is not None else None
    x_keras_shape = (x.shape[0],) + x.shape[2:] + (x.shape[1],) if last else x.shape
    try:
        ck = conventions.from_keras(x_keras_shape, kernel.shape, transposed=transposed_k, strides=cfg["strides"],
                                    padding=cfg["padding"], dilation_rate=cfg["dilation_rate"],
                                    groups=cfg.get("groups", 1), output_padding=cfg.get("output_padding"),
                                    data_format=cfg.get("data_format", "channels_last"))
    except ValueError as exc:
        return LayerComparison(False, f"the Keras layer cannot be read: {exc}")
    transposed_t = bool(getattr(torch_layer, "transposed", "Transpose" in type(torch_layer).__name__))
    weight = torch_layer.weight.detach().cpu().numpy()
    torch_bias = None if torch_layer.bias is None else torch_layer.bias.detach().cpu().numpy()
    try:
        ct = conventions.from_torch(x.shape, weight.shape, transposed=transposed_t, stride=torch_layer.stride,
                                    padding=torch_layer.padding,
                                    output_padding=torch_layer.output_padding if transposed_t else 0,
                                    dilation=torch_layer.dilation, groups=torch_layer.groups,
                                    padding_mode=getattr(torch_layer, "padding_mode", "zeros"))
    except ValueError as exc:
        return LayerComparison(False, f"the PyTorch layer cannot be read: {exc}", ck)
    if not ck.equivalent(ct):
        return LayerComparison(False, "the layers compute different convolutions: Keras "
                               f"{_describe(ck)} vs PyTorch {_describe(ct)}", ck, ct)
    kernel_as_torch = conventions.weight_from_tensorflow(kernel)
    if kernel_as_torch.shape != weight.shape or not np.allclose(kernel_as_torch, weight, rtol=0, atol=0):
        worst = (float(np.abs(kernel_as_torch - weight).max()) if kernel_as_torch.shape == weight.shape
                 else float("inf"))
        return LayerComparison(False, f"the weights differ (max abs {worst:.2e} after converting the Keras "
                               f"kernel {kernel.shape} to PyTorch's layout {weight.shape})", ck, ct)
    if (keras_bias is None) != (torch_bias is None) or (
            keras_bias is not None and not np.array_equal(keras_bias, torch_bias)):
        return LayerComparison(False, "the biases differ", ck, ct)
    x_keras = conventions.to_channels_last(x) if last else x
    y_keras = np.asarray(keras_layer(x_keras))
    y_keras = conventions.to_channels_first(y_keras) if last else y_keras
    with torch.no_grad():
        y_torch = torch_layer(torch.from_numpy(np.array(x))).cpu().numpy()
    p = ct.problem
    ref = reference.backward_data(p, x, weight) if ct.transposed else reference.forward(p, x, weight)
    if torch_bias is not None:
        ref = ref + torch_bias.astype(np.float64).reshape(_bias_shape(p.ndim))
    if y_keras.shape != y_torch.shape:
        return LayerComparison(False, f"output shapes differ: Keras {y_keras.shape}, PyTorch {y_torch.shape}", ck, ct)
    scale = float(np.abs(ref).max()) or 1.0
    diff = float(np.abs(y_keras.astype(np.float64) - y_torch).max())
    rk = float(np.abs(y_keras - ref).max()) / scale
    rt = float(np.abs(y_torch - ref).max()) / scale
    agree = diff / scale <= rtol and rk <= rtol and rt <= rtol
    reason = (f"outputs differ by {diff:.2e} (relative {diff / scale:.2e}, tolerance {rtol:.0e}); "
              f"vs float64 reference: Keras {rk:.2e}, PyTorch {rt:.2e}")
    return LayerComparison(agree, reason, ck, ct, diff, diff / scale, rk, rt)


def _describe(c: conventions.Convolution) -> str:
    p = c.problem
    kind = "transposed" if c.transposed else "conv"
    return (f"{kind} in {c.input_shape} out {c.output_shape} k={p.kernel} s={p.stride} d={p.dilation} "
            f"g={p.groups} pad_low={p.pad_low} mode={p.padding_mode}")

