"""pytconv: N-dimensional convolution and transposed convolution for NumPy,
PyTorch and TensorFlow, from one C core.

>>> import numpy as np, pytconv
>>> x = np.ones((1, 1, 2, 2), np.float32)
>>> w = np.ones((1, 1, 3, 3), np.float32)
>>> pytconv.conv_transpose(x, w, stride=2, padding="same").shape
(1, 1, 4, 4)
"""

from ._api import (
    bias_grad,
    conv,
    conv_input_grad,
    conv_output_shape,
    conv_transpose,
    conv_transpose_input_grad,
    conv_transpose_output_shape,
    conv_transpose_weight_grad,
    conv_weight_grad,
    get_num_threads,
    set_num_threads,
)
from ._matrix import conv_matrix
from ._plugins import adapter, adapters
from ._version import __version__

__all__ = [
    "__version__",
    "conv",
    "conv_transpose",
    "conv_input_grad",
    "conv_weight_grad",
    "conv_transpose_input_grad",
    "conv_transpose_weight_grad",
    "bias_grad",
    "conv_output_shape",
    "conv_transpose_output_shape",
    "set_num_threads",
    "get_num_threads",
    "adapter",
    "adapters",
    "conv_matrix",
]
