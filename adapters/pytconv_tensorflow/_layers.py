"""Keras 3 layers on pytconv's core, with ``keras.layers``' arguments, defaults,
weight names and weight layouts: ``get_weights``/``set_weights`` (and the
variables of a ``.keras`` file) move between these layers and Keras's own.

``ConvND`` and ``ConvNDTranspose`` take the number of spatial dimensions
first and work for any number; ``Conv1D`` ... ``Conv3DTranspose`` are them
with the rank fixed. Beyond Keras: strides and dilation_rate may both exceed
1, and the transposed layers take ``groups`` (kernel
``(*kernel_size, filters / groups, in_channels)``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pytconv import _args

from . import _ops

__all__ = [
    "ConvND",
    "ConvNDTranspose",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "to_keras_layer",
]

_serializable = keras.saving.register_keras_serializable(package="pytconv")


def _data_format(fn, value):
    if value is None:
        value = keras.config.image_data_format()
    if not isinstance(value, str) or value.lower() not in ("channels_last", "channels_first"):
        raise ValueError(f"{fn}: data_format must be 'channels_last' or 'channels_first', got {value!r}")
    return value.lower()


def _padding(fn, value, allowed):
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{fn}: padding must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value.lower()


def _positive(fn, name, value):
    value = _args._int(fn, name, value)
    if value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value}")
    return value


class _Base(keras.layers.Layer):
    """Arguments, weights and configuration shared by the convolution layers."""

    _transposed = False
    _rank_in_config = True  # the fixed-rank layers' configs have no "rank", as Keras's

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides,
        padding,
        data_format,
        dilation_rate,
        groups,
        activation,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        activity_regularizer,
        kernel_constraint,
        bias_constraint,
        allowed_padding,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        fn = type(self).__name__
        self.rank = _positive(fn, "rank", rank)
        self.filters = _positive(fn, "filters", filters)
        self.groups = _positive(fn, "groups", groups)
        if self.filters % self.groups:
            raise ValueError(f"{fn}: filters={self.filters} is not divisible by groups={self.groups}")
        self.kernel_size = _args.per_dim(fn, "kernel_size", kernel_size, self.rank, 1)
        self.strides = _args.per_dim(fn, "strides", strides, self.rank, 1)
        self.dilation_rate = _args.per_dim(fn, "dilation_rate", dilation_rate, self.rank, 1)
        self.padding = _padding(fn, padding, allowed_padding)
        self.data_format = _data_format(fn, data_format)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)
        # The computation is a Python callback, which XLA cannot compile: this
        # keeps Keras's jit_compile="auto" off for models holding the layer.
        self.supports_jit = False

    @property
    def _channels_first(self):
        return self.data_format == "channels_first"

    def _channel_axis(self):
        return 1 if self._channels_first else -1

    def _input_channels(self, input_shape):
        channels = tuple(input_shape)[self._channel_axis()]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__}: the channel dimension of the input must be known, got input "
                f"shape {tuple(input_shape)}"
            )
        return channels

    def build(self, input_shape):
        fn = type(self).__name__
        input_shape = tuple(input_shape)
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"{fn}: expects inputs of rank {self.rank + 2} (batch, {self.rank} spatial dimensions, "
                f"channels), got shape {input_shape}"
            )
        channels = self._input_channels(input_shape)
        if channels % self.groups:
            raise ValueError(
                f"{fn}: the input has {channels} channels, not divisible by groups={self.groups} "
                f"(input shape {input_shape})"
            )
        self.compute_output_shape(input_shape)  # validates the sizes before creating weights
        self.kernel = self.add_weight(
            name="kernel",
            shape=self._kernel_shape(channels),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
            dtype=self.dtype,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
                dtype=self.dtype,
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2, axes={self._channel_axis(): channels})
        self._built_input_shape = input_shape
        self.built = True

    def _finish(self, outputs):
        if self.use_bias:
            bias = tf.convert_to_tensor(self.bias)
            outputs = tf.nn.bias_add(outputs, bias, data_format="NC..." if self._channels_first else "N...C")
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _channels_first_dims(self, input_shape):
        """The input shape in channels-first order, an unknown channel count standing in as groups."""
        dims = list(input_shape)
        if len(dims) != self.rank + 2:
            raise ValueError(
                f"{type(self).__name__}: expects inputs of rank {self.rank + 2}, got shape {tuple(dims)}"
            )
        if not self._channels_first:
            dims = [dims[0], dims[-1]] + dims[1:-1]
        if dims[1] is None:
            dims[1] = self.groups
        return dims

    def _to_input_order(self, dims):
        return tuple(_ops.from_channels_first_shape(dims, self._channels_first))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rank": self.rank,
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "groups": self.groups,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        if not self._rank_in_config:
            del config["rank"]
        return config


@_serializable
class ConvND(_Base):
    """N-d convolution layer with ``keras.layers.Conv2D``'s arguments and weights
    (kernel ``(*kernel_size, in_channels / groups, filters)``, bias ``(filters,)``),
    for any ``rank`` >= 1. ``padding``: "valid", "same", or "causal" (rank 1)."""

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(
            rank, filters, kernel_size, strides, padding, data_format, dilation_rate, groups, activation,
            use_bias, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            activity_regularizer, kernel_constraint, bias_constraint,
            allowed_padding=("valid", "same", "causal") if rank == 1 else ("valid", "same"),
            **kwargs,
        )

    def _kernel_shape(self, channels):
        return self.kernel_size + (channels // self.groups, self.filters)

    def _pytconv_padding(self):
        if self.padding == "causal":
            # Keras's causal padding: everything before the first element.
            return tuple((d * (k - 1), 0) for k, d in zip(self.kernel_size, self.dilation_rate))
        return self.padding

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs):
        fn = type(self).__name__
        x, w = _ops.float_tensors(fn, input=inputs, filters=self.kernel)
        y = _ops.convolve(fn, x, w, self.strides, self._pytconv_padding(), self.dilation_rate, self.groups,
                          self._channels_first)
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        dims = self._channels_first_dims(input_shape)
        w_shape = (self.filters, dims[1] // self.groups) + self.kernel_size
        out = _ops.conv_static_shape(
            type(self).__name__, dims, w_shape, self.strides, self._pytconv_padding(), self.dilation_rate,
            self.groups, "zeros", x_name="input", w_name="kernel",
        )
        return self._to_input_order(out)


@_serializable
class ConvNDTranspose(_Base):
    """N-d transposed convolution layer with ``keras.layers.Conv2DTranspose``'s
    arguments, output sizes and weights (kernel ``(*kernel_size, filters / groups,
    in_channels)``, bias ``(filters,)``), for any ``rank`` >= 1.

    Output size per dimension, as Keras's: ``(in - 1) * stride + offset`` with
    offset ``span + max(stride - span, 0)`` ("valid"), ``stride`` ("same"), or,
    given output_padding, ``span + output_padding`` ("valid") and
    ``span % 2 + output_padding`` ("same"); span = dilation * (kernel - 1) + 1.
    """

    _transposed = True

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        groups=1,
        **kwargs,
    ):
        super().__init__(
            rank, filters, kernel_size, strides, padding, data_format, dilation_rate, groups, activation,
            use_bias, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            activity_regularizer, kernel_constraint, bias_constraint, allowed_padding=("valid", "same"),
            **kwargs,
        )
        fn = type(self).__name__
        self.output_padding = (
            None if output_padding is None else _args.per_dim(fn, "output_padding", output_padding, self.rank, 0)
        )
        for d, op in enumerate(self.output_padding or ()):
            limit = max(self.strides[d], self.dilation_rate[d])
            if op >= limit:
                raise ValueError(
                    f"{fn}: output_padding must be smaller than max(strides, dilation_rate) = {limit} in "
                    f"dimension {d}, got {self.output_padding}"
                )

    def _kernel_shape(self, channels):
        return self.kernel_size + (self.filters // self.groups, channels)

    def _size_offsets(self):
        """Keras's output size is (in - 1) * stride + offset; the offset per dimension."""
        offsets = []
        for d in range(self.rank):
            k, s, dl = self.kernel_size[d], self.strides[d], self.dilation_rate[d]
            op = None if self.output_padding is None else self.output_padding[d]
            span = dl * (k - 1) + 1
            if self.padding == "valid":
                offsets.append(span + (max(span, s) - span if op is None else op))
            else:
                offsets.append(s if op is None else span % 2 + op)
        return offsets

    def _output_spatial(self, in_spatial):
        offsets = self._size_offsets()
        return [None if i is None else (i - 1) * s + c for i, s, c in zip(in_spatial, self.strides, offsets)]

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs):
        fn = type(self).__name__
        x, w = _ops.float_tensors(fn, input=inputs, filters=self.kernel)
        axes = list(range(2, self.rank + 2)) if self._channels_first else list(range(1, self.rank + 1))
        in_spatial = [x.shape[a] for a in axes]
        if all(i is not None for i in in_spatial):
            out_spatial = self._output_spatial(in_spatial)
        else:
            sizes = tf.gather(tf.shape(x, out_type=tf.int64), axes)
            out_spatial = (sizes - 1) * tf.constant(self.strides, tf.int64) + tf.constant(
                self._size_offsets(), tf.int64
            )
        y = _ops.transposed_convolve(fn, x, w, self.strides, self.padding, self.dilation_rate, self.groups,
                                     self._channels_first, out_spatial)
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        dims = self._channels_first_dims(input_shape)
        w_shape = (dims[1], self.filters // self.groups) + self.kernel_size
        out = _ops.conv_transpose_static_shape(
            type(self).__name__, dims, w_shape, self.strides, self.padding, self.dilation_rate, self.groups,
            self._output_spatial(dims[2:]), "zeros", x_name="input", w_name="kernel",
        )
        return self._to_input_order(out)

    def get_config(self):
        config = super().get_config()
        config["output_padding"] = self.output_padding
        return config


@_serializable
class Conv1D(ConvND):
    """1-d convolution layer: ``keras.layers.Conv1D`` on pytconv's core."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(1, filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, **kwargs)

    _rank_in_config = False


@_serializable
class Conv2D(ConvND):
    """2-d convolution layer: ``keras.layers.Conv2D`` on pytconv's core."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(2, filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, **kwargs)

    _rank_in_config = False


@_serializable
class Conv3D(ConvND):
    """3-d convolution layer: ``keras.layers.Conv3D`` on pytconv's core."""

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(3, filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, **kwargs)

    _rank_in_config = False


@_serializable
class Conv1DTranspose(ConvNDTranspose):
    """1-d transposed convolution layer: ``keras.layers.Conv1DTranspose`` on pytconv's core."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None,
                 data_format=None, dilation_rate=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, groups=1, **kwargs):
        super().__init__(1, filters, kernel_size, strides, padding, output_padding, data_format,
                         dilation_rate, activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint,
                         bias_constraint, groups, **kwargs)

    _rank_in_config = False


@_serializable
class Conv2DTranspose(ConvNDTranspose):
    """2-d transposed convolution layer: ``keras.layers.Conv2DTranspose`` on pytconv's core."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, groups=1, **kwargs):
        super().__init__(2, filters, kernel_size, strides, padding, output_padding, data_format,
                         dilation_rate, activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint,
                         bias_constraint, groups, **kwargs)

    _rank_in_config = False


@_serializable
class Conv3DTranspose(ConvNDTranspose):
    """3-d transposed convolution layer: ``keras.layers.Conv3DTranspose`` on pytconv's core
    (whose data_format comes before output_padding, unlike the 1-d and 2-d layers')."""

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 output_padding=None, dilation_rate=(1, 1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, groups=1, **kwargs):
        super().__init__(3, filters, kernel_size, strides, padding, output_padding, data_format,
                         dilation_rate, activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint,
                         bias_constraint, groups, **kwargs)

    _rank_in_config = False


def to_keras_layer(layer):
    """The ``keras.layers`` layer equivalent to a built pytconv layer, with its weights:
    for exporting a model as a SavedModel, or running it under XLA, with
    TensorFlow's own kernels. Only for what Keras has (rank 1 to 3, and for the
    transposed layers groups=1)."""
    if not isinstance(layer, _Base):
        raise TypeError(f"to_keras_layer: expects a pytconv_tensorflow layer, got {type(layer).__name__}")
    if not layer.built:
        raise ValueError(f"to_keras_layer: layer {layer.name!r} is not built (call it on an input first)")
    if not 1 <= layer.rank <= 3:
        raise ValueError(f"to_keras_layer: Keras has no {layer.rank}-d convolution layer")
    config = layer.get_config()
    config.pop("rank", None)
    if layer._transposed:
        if layer.groups != 1:
            raise ValueError("to_keras_layer: Keras's transposed convolution layers have no groups")
        del config["groups"]
        cls = getattr(keras.layers, f"Conv{layer.rank}DTranspose")
    else:
        cls = getattr(keras.layers, f"Conv{layer.rank}D")
    keras_layer = cls.from_config(config)
    keras_layer.build(layer._built_input_shape)
    keras_layer.set_weights(layer.get_weights())
    return keras_layer
