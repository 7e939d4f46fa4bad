"""PyTorch adapter of pytconv: differentiable N-d convolution and transposed
convolution on torch tensors, and drop-in layers for ``torch.nn``'s, computed
by pytconv's core (CPU) or its GPU path (CUDA tensors).

>>> import torch, pytconv
>>> ptc = pytconv.adapter("torch")
>>> x = torch.randn(2, 3, 8, 8, requires_grad=True)
>>> layer = ptc.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
>>> layer(x).shape
torch.Size([2, 4, 8, 8])

The operators are ``torch.library`` custom ops (``torch.ops.pytconv.*``), so
autograd to any order, FakeTensor/meta shapes, ``torch.compile(fullgraph=True)``
and DistributedDataParallel work as with PyTorch's own convolutions.
"""

from ._functional import conv, conv_transpose
from ._layers import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvNd,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    ConvTransposeNd,
)

__all__ = [
    "conv",
    "conv_transpose",
    "ConvNd",
    "ConvTransposeNd",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
]
