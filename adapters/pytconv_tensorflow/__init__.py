"""TensorFlow / Keras 3 adapter for pytconv: ``conv`` and ``conv_transpose`` with
``tf.nn``'s conventions and Keras layers with ``keras.layers``' arguments and
weights, computed by pytconv's core and differentiable to any order.

>>> import tensorflow as tf, pytconv
>>> ptf = pytconv.adapter("tensorflow")
>>> x = tf.ones((1, 8, 8, 3))                      # NHWC
>>> ptf.conv(x, tf.ones((3, 3, 3, 4)), strides=2, padding="SAME").shape
TensorShape([1, 4, 4, 4])
"""

from ._ops import conv, conv_transpose, gpu_status
from ._layers import (
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    ConvND,
    ConvNDTranspose,
    to_keras_layer,
)

__all__ = [
    "conv",
    "conv_transpose",
    "gpu_status",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "ConvND",
    "ConvNDTranspose",
    "to_keras_layer",
]
