"""Convolution layers with ``torch.nn``'s constructor arguments, defaults,
parameters (``weight``, ``bias``: names, shapes, initialisation) and repr, so a
``state_dict`` moves between them and ``torch.nn``'s layers both ways; plus
N-d versions and every padding form and mode for both kinds of layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import init

from pytconv import _args

from ._functional import conv, conv_transpose

__all__ = [
    "ConvNd",
    "ConvTransposeNd",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
]


def _positive_int(name: str, what: str, value) -> int:
    value = _args._int(name, what, value)
    if value < 1:
        raise ValueError(f"{name}: {what} must be a positive integer, got {value}")
    return value


class _Conv(nn.Module):
    """What the convolution layers and the transposed convolution layers share."""

    __constants__ = [
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
        "output_padding",
        "in_channels",
        "out_channels",
        "kernel_size",
    ]
    transposed = False
    #: Whether repr starts with the number of dimensions (the N-d classes).
    _repr_ndim = False

    def __init__(
        self,
        ndim,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
        output_padding,
        device,
        dtype,
    ):
        super().__init__()
        name = type(self).__name__
        n = _positive_int(name, "ndim", ndim)
        self.in_channels = _positive_int(name, "in_channels", in_channels)
        self.out_channels = _positive_int(name, "out_channels", out_channels)
        self.groups = _positive_int(name, "groups", groups)
        if self.in_channels % self.groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if self.out_channels % self.groups:
            raise ValueError(f"{name}: out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.kernel_size = _args.per_dim(name, "kernel_size", kernel_size, n, 1)
        self.stride = _args.per_dim(name, "stride", stride, n, 1)
        self.dilation = _args.per_dim(name, "dilation", dilation, n, 1)
        self.output_padding = _args.per_dim(name, "output_padding", output_padding, n, 0)
        self.padding = self._padding(name, padding, n)
        self.padding_mode = _args.padding_mode_code(name, padding_mode)
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name}: dtype must be torch.float32 or torch.float64, got {dtype}")

        factory = {"device": device, "dtype": dtype}
        if self.transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @staticmethod
    def _padding(name, padding, n):
        """As torch.nn keeps it: "same"/"valid", or one int per dimension; one
        (low, high) pair per dimension where the sides differ."""
        spec = _args.padding_spec(name, padding, n)
        if isinstance(spec, str):
            return spec
        if all(lo == hi for lo, hi in spec):
            return tuple(lo for lo, _ in spec)
        return spec

    def reset_parameters(self) -> None:
        # torch.nn's scheme, call for call, so that the same seed gives the
        # same parameters as torch.nn's layers.
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.weight.shape[2:])
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    @property
    def ndim(self) -> int:
        return len(self.kernel_size)

    def extra_repr(self) -> str:
        s = f"{self.ndim}, " if self._repr_ndim else ""
        s += f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        n = self.ndim
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class ConvNd(_Conv):
    """N-d convolution layer: ``ConvNd(ndim, in_channels, out_channels, kernel_size, ...)``
    with the arguments of ``torch.nn.Conv2d`` after ``ndim``.

    ``padding`` may also be one (low, high) pair per dimension, and "same"
    works with any stride (TensorFlow's rule). Input (N, C_in, *spatial) or
    (C_in, *spatial).
    """

    _repr_ndim = True

    def __init__(
        self,
        ndim,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            ndim,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            0,
            device,
            dtype,
        )

    def _conv_forward(self, input, weight, bias):
        return conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups, self.padding_mode)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class ConvTransposeNd(_Conv):
    """N-d transposed convolution layer: ``ConvTransposeNd(ndim, in_channels,
    out_channels, kernel_size, ...)`` with the arguments of
    ``torch.nn.ConvTranspose2d`` after ``ndim``; ``forward(input, output_size=None)``.

    Unlike torch.nn, every ``padding_mode`` works: the layer computes the
    adjoint of the convolution with the same arguments (e.g. "circular" folds
    the cropped border back periodically). ``padding`` may also be per-side
    pairs, "valid", or "same" (output ``in * stride``, TensorFlow's rule).
    """

    transposed = True
    _repr_ndim = True

    def __init__(
        self,
        ndim,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            ndim,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            output_padding,
            device,
            dtype,
        )

    def forward(self, input, output_size=None):
        return conv_transpose(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.output_padding if output_size is None else 0,
            self.groups,
            self.dilation,
            output_size,
            self.padding_mode,
        )


class Conv1d(ConvNd):
    """1-d convolution layer, as ``torch.nn.Conv1d`` (see ConvNd for the extensions)."""

    _repr_ndim = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            1, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )


class Conv2d(ConvNd):
    """2-d convolution layer, as ``torch.nn.Conv2d`` (see ConvNd for the extensions)."""

    _repr_ndim = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            2, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )


class Conv3d(ConvNd):
    """3-d convolution layer, as ``torch.nn.Conv3d`` (see ConvNd for the extensions)."""

    _repr_ndim = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            3, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )


class ConvTranspose1d(ConvTransposeNd):
    """1-d transposed convolution layer, as ``torch.nn.ConvTranspose1d`` (see
    ConvTransposeNd for the extensions)."""

    _repr_ndim = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            1, in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
            bias, dilation, padding_mode, device, dtype,
        )


class ConvTranspose2d(ConvTransposeNd):
    """2-d transposed convolution layer, as ``torch.nn.ConvTranspose2d`` (see
    ConvTransposeNd for the extensions)."""

    _repr_ndim = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            2, in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
            bias, dilation, padding_mode, device, dtype,
        )


class ConvTranspose3d(ConvTransposeNd):
    """3-d transposed convolution layer, as ``torch.nn.ConvTranspose3d`` (see
    ConvTransposeNd for the extensions)."""

    _repr_ndim = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            3, in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
            bias, dilation, padding_mode, device, dtype,
        )
