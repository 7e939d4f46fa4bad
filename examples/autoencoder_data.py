"""The convolutional autoencoder of the examples, framework-neutral: its
synthetic dataset, its architecture, its initial weights and its training
settings, all as NumPy arrays and plain values, deterministic from a seed, so
that the PyTorch and Keras examples train the same model from the same state.

Weights are in PyTorch's layouts: convolution (out, in, kh, kw), transposed
convolution (in, out, kh, kw), biases (channels,). Every layer has kernel 4,
stride 2 and padding 1, which is also TensorFlow's "SAME" for these sizes
(16 -> 8 -> 4 down, 4 -> 8 -> 16 up).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IMAGE_SIZE = 16
NUM_IMAGES = 64

#: Training settings: plain gradient descent on the whole dataset, mean
#: squared error between the reconstruction and the image.
STEPS = 300
LEARNING_RATE = 0.2
LOG_EVERY = 25


class Layer(NamedTuple):
    name: str
    kind: str  # "conv" or "conv_transpose"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int  # per side; equals "SAME" here (see the module docstring)
    activation: str | None  # "relu" or None


LAYERS = (
    Layer("enc1", "conv", 1, 8, 4, 2, 1, "relu"),
    Layer("enc2", "conv", 8, 16, 4, 2, 1, "relu"),
    Layer("dec1", "conv_transpose", 16, 8, 4, 2, 1, "relu"),
    Layer("dec2", "conv_transpose", 8, 1, 4, 2, 1, None),
)


def make_dataset(seed: int = 0, count: int = NUM_IMAGES, size: int = IMAGE_SIZE) -> np.ndarray:
    """(count, 1, size, size) float32 images in [0, 1]: one to three soft
    blobs and up to two soft line segments each."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.zeros((count, size, size))
    for image in images:
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, size, 2)
            radius = rng.uniform(1.5, 3.5)
            image += np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * radius**2))
        for _ in range(rng.integers(0, 3)):
            cy, cx = rng.uniform(0, size, 2)
            angle = rng.uniform(0, np.pi)
            half_length = rng.uniform(3, size / 2)
            along = (rows - cy) * np.sin(angle) + (cols - cx) * np.cos(angle)
            across = -(rows - cy) * np.cos(angle) + (cols - cx) * np.sin(angle)
            inside = np.abs(along) <= half_length
            image += rng.uniform(0.5, 1.0) * inside * np.exp(-(across**2) / (2 * 0.7**2))
    return np.clip(images, 0.0, 1.0)[:, None].astype(np.float32)


def weight_shape(layer: Layer) -> tuple:
    """PyTorch's layout: (out, in, k, k) for conv, (in, out, k, k) transposed."""
    k = (layer.kernel, layer.kernel)
    if layer.kind == "conv":
        return (layer.out_channels, layer.in_channels) + k
    return (layer.in_channels, layer.out_channels) + k


def initial_weights(seed: int = 0) -> dict:
    """{"<layer>.weight": ..., "<layer>.bias": ...} float32 arrays, drawn as
    torch.nn initialises its layers: uniform in +-1/sqrt(fan_in), fan_in being
    the weight's second dimension times the kernel size."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in LAYERS:
        shape = weight_shape(layer)
        bound = 1.0 / np.sqrt(shape[1] * layer.kernel * layer.kernel)
        weights[f"{layer.name}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        weights[f"{layer.name}.bias"] = rng.uniform(-bound, bound, layer.out_channels).astype(np.float32)
    return weights
