"""Functional TensorFlow operations on pytconv's core: ``conv`` and
``conv_transpose`` with ``tf.nn.convolution`` / ``tf.nn.conv_transpose``'s
arguments, differentiable to any order.

Layout conversion (channels last <-> channels first, TensorFlow's filter
layouts <-> pytconv's) is done with ``tf.transpose``, whose gradient
TensorFlow knows. What is left is a convolution in pytconv's layout, and
three computations on it, each its own ``tf.custom_gradient`` function::

    forward          y  = conv(x, w)
    backward_data    x' = conv^T(y', w)          (the input gradient)
    backward_filter  w' = d<conv(x, w), y'>/dw   (the weight gradient)

The gradient of each of the three is two of the others, so nested
``GradientTape``s differentiate them again to any order. A transposed
convolution is ``backward_data`` of the convolution it is the transpose of.

Each computation runs pytconv's NumPy API: directly in eager mode, through
``tf.numpy_function`` inside ``tf.function``. Tensors on a GPU reach the
CuPy path through DLPack (``pytconv.gpu``), or fail with an error saying why.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

import pytconv
from pytconv import _args

try:  # Private TensorFlow modules, only used to fail early with a clear message.
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext as _in_xla_context
except ImportError:  # pragma: no cover - depends on the TensorFlow version
    _in_xla_context = None
try:
    from tensorflow.python.saved_model.save_context import in_save_context as _in_save_context
except ImportError:  # pragma: no cover - depends on the TensorFlow version
    _in_save_context = None

__all__ = ["conv", "conv_transpose"]

_FLOAT_DTYPES = (tf.float32, tf.float64)


# ---- the convolution a call describes, and its three computations ---------


class _Convolution:
    """``y = conv(x, w)`` with fixed arguments; x: (N, C_in, *in), w: (C_out, C_in / groups, *k)."""

    def __init__(self, fn, stride, padding, dilation, groups, padding_mode):
        self.fn = fn  # the user-facing name, for messages
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.padding_mode = padding_mode

    def forward(self, x, w, y_shape):
        return pytconv.conv(x, w, None, self.stride, self.padding, self.dilation, self.groups, self.padding_mode)

    def backward_data(self, dy, w, x_shape):
        return pytconv.conv_input_grad(
            x_shape, w, dy, self.stride, self.padding, self.dilation, self.groups, self.padding_mode
        )

    def backward_filter(self, x, dy, w_shape):
        return pytconv.conv_weight_grad(
            x, w_shape, dy, self.stride, self.padding, self.dilation, self.groups, self.padding_mode
        )


class _TransposedConvolution:
    """The convolution whose transpose ``conv_transpose`` computes: its ``x`` is
    the transposed op's output, its ``y`` the transposed op's input, and w is
    (C_in of the transposed op, C_out / groups, *k). Sizes follow the
    transposed op's rules (``output_shape``, "same"), so each computation is
    the matching public function of the transposed op."""

    def __init__(self, fn, stride, padding, dilation, groups, padding_mode):
        self.fn = fn
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.padding_mode = padding_mode

    def forward(self, x, w, y_shape):
        return pytconv.conv_transpose_input_grad(
            y_shape, w, x, self.stride, self.padding, self.groups, self.dilation, self.padding_mode
        )

    def backward_data(self, dy, w, x_shape):
        return pytconv.conv_transpose(
            dy, w, None, self.stride, self.padding, 0, self.groups, self.dilation,
            output_shape=None if x_shape is None else x_shape[2:], padding_mode=self.padding_mode,
        )

    def backward_filter(self, x, dy, w_shape):
        return pytconv.conv_transpose_weight_grad(
            dy, w_shape, x, self.stride, self.padding, self.groups, self.dilation, self.padding_mode
        )


def _forward(op, x, w, y_shape, y_static):
    """y = op.forward(x, w); y_shape: runtime shape tensor of y (or None where op derives it)."""

    @tf.custom_gradient
    def forward(x, w):
        y = _run(op, "forward", x, w, y_shape, y_static)

        def grad(dy):
            return (
                _backward_data(op, dy, w, tf.shape(x), x.shape),
                _backward_filter(op, x, dy, w.shape),
            )

        return y, grad

    return forward(x, w)


def _backward_data(op, dy, w, x_shape, x_static):
    """x' = op.backward_data(dy, w); x_shape: runtime shape tensor of x' (None: the op's default)."""

    @tf.custom_gradient
    def backward_data(dy, w):
        dx = _run(op, "backward_data", dy, w, x_shape, x_static)

        def grad(g):
            return (
                _forward(op, g, w, tf.shape(dy), dy.shape),
                _backward_filter(op, g, dy, w.shape),
            )

        return dx, grad

    return backward_data(dy, w)


def _backward_filter(op, x, dy, w_static):
    """w' = op.backward_filter(x, dy), of the (fully known) weight shape w_static."""
    w_shape = tuple(w_static.as_list())

    @tf.custom_gradient
    def backward_filter(x, dy):
        dw = _run(op, "backward_filter", x, dy, w_shape, w_static)

        def grad(g):
            return (
                _backward_data(op, dy, g, tf.shape(x), x.shape),
                _forward(op, x, g, tf.shape(dy), dy.shape),
            )

        return dw, grad

    return backward_filter(x, dy)


# ---- running a computation: eagerly, in a graph, on the GPU ----------------


def _shape_tuple(shape):
    return None if shape is None else tuple(int(s) for s in np.asarray(shape).reshape(-1))


def _run(op, what, a, b, shape, static_shape):
    """op.<what>(a, b, shape) on the arrays of tensors a and b, as a tensor of a's dtype.

    shape: None, a tuple of ints, or an integer tensor (a shape known only when run).
    """
    method = getattr(op, what)
    where = f"{op.fn} ({what.replace('_', ' ')})"
    if tf.executing_eagerly():
        return _run_eagerly(method, where, a, b, shape)
    _check_graph_context(where)
    fixed = shape is None or isinstance(shape, tuple)
    inputs = [a, b] if fixed else [a, b, shape]
    if _gpu_visible():
        # The tensors may live on a GPU: run the eager code on whatever device
        # TensorFlow placed them on.
        def on_device(a, b, runtime_shape=None):
            return _run_eagerly(method, where, a, b, shape if fixed else runtime_shape)

        y = tf.py_function(on_device, inputs, Tout=a.dtype, name=f"pytconv_{what}")
    else:

        def on_host(a, b, runtime_shape=None):
            return method(a, b, shape if fixed else _shape_tuple(runtime_shape))

        y = tf.numpy_function(on_host, inputs, Tout=a.dtype, stateful=False, name=f"pytconv_{what}")
    y.set_shape(static_shape)
    return y


def _as_shape(shape):
    return shape if shape is None or isinstance(shape, tuple) else _shape_tuple(shape)


def _run_eagerly(method, where, a, b, shape):
    devices = {t.device for t in (a, b)}
    on_gpu = [":GPU:" in d.upper() for d in devices]
    if any(on_gpu):
        if len(devices) > 1:
            raise ValueError(
                f"{where}: the tensors are on different devices "
                f"({', '.join(sorted(devices))}); put them on one device"
            )
        return _run_on_gpu(method, where, a, b, shape, devices.pop())
    # np.asarray shares the tensors' memory; pytconv returns a new array.
    result = method(np.asarray(a), np.asarray(b), _as_shape(shape))
    return tf.convert_to_tensor(result)


def gpu_status():
    """(available, reason): whether tensors on a GPU can be computed on, and why not."""
    try:
        from pytconv import gpu
    except ImportError as exc:
        return False, f"pytconv.gpu cannot be imported ({exc})"
    status = getattr(gpu, "status", None)
    if status is None:
        return False, "this pytconv has no GPU support (pytconv.gpu.status is missing)"
    ok, reason = status()
    return bool(ok), str(reason)


def _run_on_gpu(method, where, a, b, shape, device):
    ok, reason = gpu_status()
    if not ok:
        raise RuntimeError(
            f"{where}: the tensors are on {device}, and pytconv's GPU path is "
            f"unavailable: {reason}. Compute on the CPU instead (create the tensors under "
            "`with tf.device('/CPU:0'):`), or install CuPy for this CUDA version."
        )
    import cupy

    # DLPack carries no stream: let TensorFlow's pending work on the inputs
    # finish before CuPy reads them, and CuPy's before TensorFlow reads the result.
    sync_devices = getattr(getattr(tf.test, "experimental", None), "sync_devices", None)
    if sync_devices is not None and tf.executing_eagerly():
        sync_devices()

    def to_cupy(t):
        return cupy.from_dlpack(tf.experimental.dlpack.to_dlpack(t))

    with tf.device(device):
        result = method(to_cupy(a), to_cupy(b), _as_shape(shape))
        cupy.cuda.get_current_stream().synchronize()
        return tf.experimental.dlpack.from_dlpack(result.__dlpack__())


def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


def _check_graph_context(where):
    """Fail while tracing, with the reason, where the Python callback cannot work."""
    graph = tf.compat.v1.get_default_graph()
    if _in_xla_context is not None and _in_xla_context(graph):
        raise RuntimeError(
            f"{where}: pytconv's operations cannot be compiled with XLA "
            "(jit_compile=True): they run pytconv's C core through a Python callback, which XLA "
            "cannot compile. Use tf.function without jit_compile (Keras: compile(jit_compile=False); "
            "pytconv's layers already opt out of jit_compile='auto')."
        )
    if _in_save_context is not None and _in_save_context():
        raise RuntimeError(
            f"{where}: pytconv's operations cannot be exported to a SavedModel "
            "(tf.saved_model.save, model.export): they run through a Python callback, which "
            "TensorFlow cannot serialise. Save Keras models in the .keras format (model.save("
            "'model.keras')), which rebuilds the layers from Python, or replace pytconv's layers "
            "by keras.layers ones (pytconv_tensorflow.to_keras_layer) before exporting."
        )


# ---- argument conversion: TensorFlow's conventions to pytconv's -----------


def float_tensors(fn, **named):
    """Float tensors of one dtype (float32 or float64)."""
    tensors = {}
    for name, value in named.items():
        t = value if isinstance(value, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(value)
        if isinstance(t, tf.Variable):
            t = tf.convert_to_tensor(t)
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{fn}: {name} has dtype {t.dtype.name}; supported dtypes are float32 and float64")
        tensors[name] = t
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:
        given = ", ".join(f"{name} {t.dtype.name}" for name, t in tensors.items())
        raise TypeError(f"{fn}: tensors must share one dtype (float32 or float64), got {given}")
    return tuple(tensors.values())


def _spatial_rank(fn, x, w):
    """n, the number of spatial dimensions, from the filters; checks both ranks."""
    if w.shape.rank is None or not w.shape.is_fully_defined():
        raise ValueError(f"{fn}: filters must have a known shape when the operation is built, got {w.shape}")
    n = w.shape.rank - 2
    if n < 1:
        raise ValueError(
            f"{fn}: filters must have at least 3 dimensions (*kernel, channels, channels), got shape "
            f"{tuple(w.shape)}"
        )
    if x.shape.rank is None:
        raise ValueError(f"{fn}: input must have a known rank when the operation is built")
    if x.shape.rank != n + 2:
        raise ValueError(
            f"{fn}: input of shape {tuple(x.shape)} has rank {x.shape.rank}, but filters of shape "
            f"{tuple(w.shape)} are for {n} spatial dimensions (input rank {n + 2})"
        )
    return n


_CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}
_CHANNELS_FIRST = {1: "NCW", 2: "NCHW", 3: "NCDHW"}


def channels_first(fn, data_format, n):
    """True for TensorFlow's channels-first formats, False for channels last."""
    if data_format is None:
        return False
    if not isinstance(data_format, str):
        raise TypeError(f"{fn}: data_format must be a string or None, got {data_format!r}")
    if data_format in ("N...C", _CHANNELS_LAST.get(n)):
        return False
    if data_format in ("NC...", _CHANNELS_FIRST.get(n)):
        return True
    named = [f for f in (_CHANNELS_LAST.get(n), _CHANNELS_FIRST.get(n)) if f]
    raise ValueError(
        f"{fn}: data_format for {n} spatial dimensions must be one of "
        f"{', '.join(map(repr, named + ['N...C', 'NC...']))}, got {data_format!r}"
    )


def _tf_sizes(fn, name, value, n, first):
    """strides / dilations: None, an int, or 1, n or n + 2 (batch and channels 1) ints."""
    if value is None:
        return (1,) * n
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == n + 2:
        batch, channel = value[0], value[1 if first else -1]
        if batch != 1 or channel != 1:
            raise ValueError(
                f"{fn}: {name} given for every dimension must be 1 for the batch and channel "
                f"dimensions, got {value!r}"
            )
        value = list(value[2:]) if first else list(value[1:-1])
    return _args.per_dim(fn, name, value, n, 1)


def _tf_padding(fn, padding, n, first):
    """"SAME" / "VALID", or TensorFlow's explicit padding: [before, after] for every
    dimension of the input, [0, 0] for the batch and channel dimensions."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"{fn}: padding must be 'SAME', 'VALID' or a list of [before, after] pairs, got {padding!r}"
            )
        return padding.lower()
    try:
        pairs = [tuple(p) for p in padding]
    except TypeError:
        raise TypeError(
            f"{fn}: padding must be 'SAME', 'VALID' or a list of {n + 2} [before, after] pairs (one "
            f"for every dimension of the input), got {padding!r}"
        ) from None
    if len(pairs) != n + 2:
        raise ValueError(
            f"{fn}: explicit padding needs {n + 2} [before, after] pairs (one for every dimension of "
            f"the input, [0, 0] for batch and channels), got {len(pairs)}: {padding!r}"
        )
    channel = 1 if first else n + 1
    for d in (0, channel):
        if any(v != 0 for v in pairs[d]):
            raise ValueError(
                f"{fn}: explicit padding must be [0, 0] for the batch and channel dimensions, got "
                f"{list(pairs[d])} for dimension {d}"
            )
    spatial = [p for d, p in enumerate(pairs) if d not in (0, channel)]
    return _args.padding_spec(fn, spatial, n)


# ---- layouts ----------------------------------------------------------------


def _to_channels_first(t, n):
    return tf.transpose(t, [0, n + 1] + list(range(1, n + 1)))


def _to_channels_last(t, n):
    return tf.transpose(t, [0] + list(range(2, n + 2)) + [1])


def _filters_to_pytconv(w, n):
    """(*k, a, b) -> (b, a, *k): conv filters (*k, in/g, out) -> (out, in/g, *k), and
    transposed filters (*k, out/g, in) -> (in, out/g, *k)."""
    return tf.transpose(w, [n + 1, n] + list(range(n)))


def _channels_first_shape(shape, first):
    """A TensorShape as a list in channels-first order (None where unknown)."""
    dims = shape.as_list()
    return dims if first else [dims[0], dims[-1]] + dims[1:-1]


def from_channels_first_shape(dims, first):
    dims = list(dims)
    return dims if first else [dims[0]] + dims[2:] + [dims[1]]


# ---- shapes known when building a graph -------------------------------------


def _standin(dims, sizes):
    """dims with each unknown entry replaced by sizes[i] (unknown spatial dims by a
    size that every argument accepts: shapes are per dimension, so the known
    dimensions' sizes are what they would be)."""
    return tuple(s if d is None else d for d, s in zip(dims, sizes))


def conv_static_shape(fn, x_dims, w_shape, stride, padding, dilation, groups, padding_mode="zeros",
                      x_name="input", w_name="filters"):
    """The channels-first output shape of conv (None where unknown); validates the arguments."""
    n = len(w_shape) - 2
    spec = _args.padding_spec(fn, padding, n)
    sizes = []
    for d in range(n):
        # Covers the kernel's span, and padding modes' limits (padding < size).
        size = dilation[d] * (w_shape[2 + d] - 1) + 1
        if not isinstance(spec, str):
            size = max(size, spec[d][0] + 1, spec[d][1] + 1)
        sizes.append(size)
    standin = _standin(x_dims, [1, 1] + sizes)
    p = _args.conv_problem(fn, standin, w_shape, stride, padding, dilation, groups, padding_mode,
                           x_name=x_name, w_name=w_name)
    return [None if x_dims[0] is None else p.batch, p.out_channels] + [
        None if x_dims[2 + d] is None else p.out_size[d] for d in range(n)
    ]


def conv_transpose_static_shape(
    fn, x_dims, w_shape, stride, padding, dilation, groups, output_spatial, padding_mode="zeros",
    x_name="input", w_name="filters",
):
    """The channels-first output shape of conv_transpose (None where unknown); validates the
    arguments. output_spatial: None, or a list of spatial sizes (None where unknown)."""
    n = len(w_shape) - 2
    spatial_known = all(d is not None for d in x_dims[2:])
    wanted_known = output_spatial is None or all(o is not None for o in output_spatial)
    if spatial_known and wanted_known:
        standin = _standin(x_dims, [1] * len(x_dims))
        p = _args.transposed_problem(
            fn, standin, w_shape, stride, padding, 0, groups, dilation, output_spatial, padding_mode,
            x_name=x_name, w_name=w_name,
        )
        spatial = list(p.in_size)
    else:
        # Validate what does not depend on the unknown sizes, with input sizes
        # that leave an output whatever the padding.
        spec = _args.padding_spec(fn, padding, n)
        extra = [0] * n if isinstance(spec, str) else [lo + hi for lo, hi in spec]
        standin = _standin(x_dims, [1, 1] + [1 + e for e in extra])
        p = _args.transposed_problem(
            fn, standin, w_shape, stride, padding, 0, groups, dilation, None, "zeros",
            x_name=x_name, w_name=w_name,
        )
        if output_spatial is not None:
            spatial = list(output_spatial)
        else:
            spatial = [None if x_dims[2 + d] is None else p.in_size[d] for d in range(n)]
    return [None if x_dims[0] is None else p.batch, p.in_channels] + spatial


# ---- the operations, in pytconv's terms (layers use these too) ---------------


def _check_groups(fn, groups):
    groups = _args._int(fn, "groups", groups)
    if groups < 1:
        raise ValueError(f"{fn}: groups must be >= 1, got {groups}")
    return groups


def _channel_count(fn, x, first):
    c = x.shape[1 if first else -1]
    if c is None:
        raise ValueError(f"{fn}: the input's channel dimension must be known when the operation is built, "
                         f"got input shape {x.shape}")
    return c


def convolve(fn, x, w, stride, padding, dilation, groups, first, padding_mode="zeros"):
    """conv of tensors in TensorFlow layouts, with pytconv-style arguments:
    stride/dilation n-tuples, padding "same"/"valid"/(low, high) pairs."""
    n = _spatial_rank(fn, x, w)
    groups = _check_groups(fn, groups)
    cin = _channel_count(fn, x, first)
    *kernel, cin_g, cout = w.shape.as_list()
    if cin_g * groups != cin:
        raise ValueError(
            f"{fn}: filters of shape {tuple(w.shape)} (*kernel, in_channels / groups, out_channels) "
            f"expect {cin_g} input channels per group, input of shape {tuple(x.shape)} has {cin} "
            f"(groups={groups})"
        )
    if cout % groups:
        raise ValueError(
            f"{fn}: filters of shape {tuple(w.shape)} have {cout} output channels, not divisible by "
            f"groups={groups}"
        )
    w_pt = _filters_to_pytconv(w, n)
    x_cf = x if first else _to_channels_first(x, n)
    y_dims = conv_static_shape(fn, _channels_first_shape(x.shape, first), tuple(w_pt.shape.as_list()),
                               stride, padding, dilation, groups, padding_mode)
    op = _Convolution(fn, stride, padding, dilation, groups, padding_mode)
    y = _forward(op, x_cf, w_pt, None, tf.TensorShape(y_dims))
    return y if first else _to_channels_last(y, n)


def _output_spatial(output_spatial, n, static_hint=None):
    """(static list with None where unknown, runtime int64 tensor or None)."""
    if output_spatial is None:
        return None, None
    if isinstance(output_spatial, (tf.Tensor, tf.Variable)):
        t = tf.cast(tf.reshape(output_spatial, [-1]), tf.int64)
        partial = tf.get_static_value(t, partial=True) if static_hint is None else static_hint
        static = [None] * n if partial is None else [None if v is None else int(v) for v in partial]
        if all(v is not None for v in static):
            return static, tf.constant(static, tf.int64)
        return static, t
    static = [int(v) for v in output_spatial]
    return static, tf.constant(static, tf.int64)


def transposed_convolve(fn, x, w, stride, padding, dilation, groups, first, output_spatial=None,
                        static_hint=None, padding_mode="zeros"):
    """conv_transpose of tensors in TensorFlow layouts (filters (*k, out/groups, in)), with
    pytconv-style arguments; output_spatial: None (pytconv's default size), n ints, or a
    1-D integer tensor of the n spatial output sizes (static_hint: those known, None for
    the others, where TensorFlow cannot tell them)."""
    n = _spatial_rank(fn, x, w)
    groups = _check_groups(fn, groups)
    cin = _channel_count(fn, x, first)
    *kernel, cout_g, w_cin = w.shape.as_list()
    if w_cin != cin:
        raise ValueError(
            f"{fn}: filters of shape {tuple(w.shape)} (*kernel, out_channels / groups, in_channels) "
            f"expect {w_cin} input channels, input of shape {tuple(x.shape)} has {cin}"
        )
    if cin % groups:
        raise ValueError(f"{fn}: input has {cin} channels, not divisible by groups={groups}")
    static_out, out_tensor = _output_spatial(output_spatial, n, static_hint)
    if static_out is not None and len(static_out) != n:
        raise ValueError(f"{fn}: output_shape needs {n} spatial sizes, got {len(static_out)}")
    w_pt = _filters_to_pytconv(w, n)
    x_cf = x if first else _to_channels_first(x, n)
    y_dims = conv_transpose_static_shape(
        fn, _channels_first_shape(x.shape, first), tuple(w_pt.shape.as_list()), stride, padding,
        dilation, groups, static_out, padding_mode,
    )
    op = _TransposedConvolution(fn, stride, padding, dilation, groups, padding_mode)
    if out_tensor is None:
        y_shape = None
    else:
        batch = tf.shape(x_cf, out_type=tf.int64)[:1]
        y_shape = tf.concat([batch, tf.constant([cout_g * groups], tf.int64), out_tensor], 0)
    y = _backward_data(op, x_cf, w_pt, y_shape, tf.TensorShape(y_dims))
    return y if first else _to_channels_last(y, n)


# ---- the public functions: tf.nn's conventions --------------------------------


# The adapter's code is plain Python that builds no control flow: AutoGraph
# need not (and, for speed of tracing, should not) convert it.
@tf.autograph.experimental.do_not_convert
def conv(input, filters, strides=None, padding="VALID", data_format=None, dilations=None, groups=1,
         padding_mode="zeros", name=None):
    """N-d convolution with ``tf.nn.convolution``'s arguments, any number of spatial dimensions.

    input: ``(N, *spatial, C_in)`` (channels last, the default data_format "NWC"/"NHWC"/"NDHWC"/
    "N...C") or ``(N, C_in, *spatial)`` ("NCW"/"NCHW"/"NCDHW"/"NC..."). filters:
    ``(*kernel, C_in / groups, C_out)``. strides, dilations: an int, or 1, n or n + 2 ints.
    padding: "SAME", "VALID", or explicit ``[[0, 0], [lo, hi], ..., [0, 0]]`` (one pair per
    input dimension, in data_format order). Strides and dilations may both exceed 1.
    Beyond tf.nn: ``groups``, and ``padding_mode`` "zeros", "reflect", "replicate" or
    "circular" (as PyTorch's).
    """
    fn = "conv"
    with tf.name_scope(name or "pytconv_conv"):
        x, w = float_tensors(fn, input=input, filters=filters)
        n = _spatial_rank(fn, x, w)
        first = channels_first(fn, data_format, n)
        stride = _tf_sizes(fn, "strides", strides, n, first)
        dilation = _tf_sizes(fn, "dilations", dilations, n, first)
        pad = _tf_padding(fn, padding, n, first)
        return convolve(fn, x, w, stride, pad, dilation, groups, first, padding_mode)


@tf.autograph.experimental.do_not_convert
def conv_transpose(input, filters, output_shape, strides, padding="SAME", data_format=None, dilations=None,
                   groups=1, padding_mode="zeros", name=None):
    """N-d transposed convolution with ``tf.nn.conv_transpose``'s arguments: the gradient
    of ``conv`` with respect to its input, for any number of spatial dimensions.

    filters: ``(*kernel, C_out / groups, C_in)``. output_shape: the full output shape in
    data_format order (TensorFlow's form; a 1-D tensor whose batch entry may be unknown), or
    only its n spatial sizes, or None for the smallest output (``input * stride`` for "SAME").
    Dilated transposed convolution works on the CPU too. Beyond tf.nn: ``groups``, and
    ``padding_mode`` (the transpose of conv's, so that conv_transpose stays conv's adjoint).
    """
    fn = "conv_transpose"
    with tf.name_scope(name or "pytconv_conv_transpose"):
        x, w = float_tensors(fn, input=input, filters=filters)
        n = _spatial_rank(fn, x, w)
        first = channels_first(fn, data_format, n)
        if strides is None:
            raise TypeError(f"{fn}: strides is required (as in tf.nn.conv_transpose); give 1 for none")
        stride = _tf_sizes(fn, "strides", strides, n, first)
        dilation = _tf_sizes(fn, "dilations", dilations, n, first)
        pad = _tf_padding(fn, padding, n, first)
        out_spatial, static_hint = _tf_output_shape(fn, output_shape, x, w, n, first, groups)
        return transposed_convolve(fn, x, w, stride, pad, dilation, groups, first, out_spatial, static_hint,
                                   padding_mode)


def _tf_output_shape(fn, output_shape, x, w, n, first, groups):
    """The spatial part of TensorFlow's full output_shape (checking its batch and channel
    entries where they are known), or the spatial sizes themselves; and those of them
    known now (None where unknown)."""
    if output_shape is None:
        return None, None
    if isinstance(output_shape, tf.TensorShape):
        output_shape = output_shape.as_list()
    if isinstance(output_shape, (tf.Tensor, tf.Variable)):
        if output_shape.shape.rank != 1 or not output_shape.dtype.is_integer:
            raise TypeError(
                f"{fn}: output_shape must be a 1-D integer tensor or a sequence of ints, got "
                f"{output_shape.dtype.name} tensor of shape {output_shape.shape}"
            )
        length = output_shape.shape[0]
        if length is None:
            raise ValueError(f"{fn}: output_shape must have a known length ({n} or {n + 2})")
        values = tf.get_static_value(output_shape, partial=True)
        entries = [None] * length if values is None else [None if v is None else int(v) for v in values]
    else:
        if isinstance(output_shape, (str, bytes)) or not hasattr(output_shape, "__len__"):
            raise TypeError(
                f"{fn}: output_shape must be a sequence of {n + 2} (or {n}) ints or a 1-D integer "
                f"tensor, got {output_shape!r}"
            )
        entries = list(np.asarray(output_shape).reshape(-1)) if isinstance(output_shape, np.ndarray) else list(
            output_shape
        )
        for v in entries:
            if v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral)):
                raise TypeError(f"{fn}: output_shape must hold ints, got {output_shape!r}")
        entries = [None if v is None else int(v) for v in entries]
        length = len(entries)
        # None stands for an unknown batch size (as in x.shape); spatial sizes must be given.
        spatial_axes = range(n) if length == n else range(2, n + 2) if first else range(1, n + 1)
        if length in (n, n + 2) and any(entries[a] is None for a in spatial_axes):
            raise ValueError(f"{fn}: output_shape must give every spatial size, got {output_shape!r}")
    if length == n:
        return output_shape, entries
    if length != n + 2:
        raise ValueError(
            f"{fn}: output_shape must have {n + 2} entries (the full output shape, in data_format order) "
            f"or {n} (its spatial sizes), got {length}"
        )
    channel = 1 if first else n + 1
    cout = w.shape[-2] * groups
    if entries[channel] is not None and entries[channel] != cout:
        raise ValueError(
            f"{fn}: output_shape {entries} has {entries[channel]} channels, filters of shape "
            f"{tuple(w.shape)} with groups={groups} give {cout}"
        )
    if entries[0] is not None and x.shape[0] is not None and entries[0] != x.shape[0]:
        raise ValueError(f"{fn}: output_shape {entries} has batch {entries[0]}, input has {x.shape[0]}")
    spatial_axes = list(range(2, n + 2)) if first else list(range(1, n + 1))
    spatial = [entries[a] for a in spatial_axes]
    if isinstance(output_shape, (tf.Tensor, tf.Variable)):
        return tf.gather(output_shape, spatial_axes), spatial
    return spatial, spatial
