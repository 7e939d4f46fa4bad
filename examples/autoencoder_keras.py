"""Train the examples' convolutional autoencoder with Keras, once with
keras.layers and once with pytconv's Keras layers, from the same initial
state as the PyTorch example, and compare the loss curves.

    python examples/autoencoder_keras.py [--steps 300] [--threads 2]

The model, data, initial weights and training settings come from
examples/autoencoder_data.py (weights in PyTorch's layouts, converted here to
Keras's). Keras trains with Model.train_on_batch: full-batch gradient descent
(SGD, no momentum) on the mean squared error, one step per call, as
examples/autoencoder_torch.py does.
With PyTorch installed, that example's torch.nn run is repeated here too, and
the three loss curves are printed side by side: they agree to float32
rounding (the libraries sum in different orders).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import pytconv  # noqa: E402
from autoencoder_data import LAYERS, LEARNING_RATE, LOG_EVERY, STEPS, initial_weights, make_dataset  # noqa: E402


def keras_weights(weights: dict) -> list:
    """The examples' weights (PyTorch layouts) in Keras's layouts, in the model's order:
    conv (out, in, kh, kw) -> (kh, kw, in, out); transposed (in, out, kh, kw) -> (kh, kw, out, in)."""
    arrays = []
    for spec in LAYERS:
        arrays.append(np.ascontiguousarray(weights[f"{spec.name}.weight"].transpose(2, 3, 1, 0)))
        arrays.append(weights[f"{spec.name}.bias"])
    return arrays


def build_model(layers, image_shape) -> keras.Model:
    """The autoencoder from `layers` (a module with Conv2D and Conv2DTranspose), channels
    last, with the examples' initial weights. Kernel 4, stride 2, padding 1 per side is
    Keras's padding="same" for these sizes."""
    model = keras.Sequential([keras.Input(image_shape)], name="autoencoder")
    for spec in LAYERS:
        cls = layers.Conv2D if spec.kind == "conv" else layers.Conv2DTranspose
        model.add(cls(spec.out_channels, spec.kernel, strides=spec.stride, padding="same",
                      activation=spec.activation, name=spec.name))
    model.set_weights(keras_weights(initial_weights()))
    return model


def train(model, images, steps):
    """Full-batch gradient descent, one Model.train_on_batch per step;
    (loss before each step, seconds per step)."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE), loss="mse")
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(float(model.train_on_batch(images, images)))
    return np.array(losses), (time.perf_counter() - start) / steps


def torch_losses(steps, threads):
    """The PyTorch example's torch.nn run (None without PyTorch)."""
    try:
        import torch

        import autoencoder_torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    model = autoencoder_torch.build_model(torch.nn)
    losses, _ = autoencoder_torch.train(model, torch.from_numpy(make_dataset()), steps)
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threads", type=int, default=None, help="threads for every library (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        pytconv.set_num_threads(args.threads)
    keras.utils.set_random_seed(0)

    images = np.ascontiguousarray(make_dataset().transpose(0, 2, 3, 1))  # NCHW -> NHWC
    runs = {}
    for name, layers in (("keras.layers", keras.layers), ("pytconv", pytconv.adapter("tensorflow"))):
        model = build_model(layers, images.shape[1:])
        runs[name] = train(model, images, args.steps)
    reference = torch_losses(args.steps, args.threads)

    (keras_curve, keras_time), (ours_curve, ours_time) = runs["keras.layers"], runs["pytconv"]
    print(f"{len(images)} images {images.shape[1:]}, {args.steps} steps of gradient descent "
          f"(lr {LEARNING_RATE}), mean squared error\n")
    header = f"{'step':>6}  {'keras.layers':>13}  {'pytconv':>13}"
    if reference is not None:
        header += f"  {'torch.nn':>13}  {'pytconv vs torch':>16}"
    print(header)
    for step in list(range(0, args.steps, LOG_EVERY)) + [args.steps - 1]:
        line = f"{step + 1:>6}  {keras_curve[step]:>13.8f}  {ours_curve[step]:>13.8f}"
        if reference is not None:
            diff = abs(ours_curve[step] - reference[step]) / abs(reference[step])
            line += f"  {reference[step]:>13.8f}  {diff:>16.2e}"
        print(line)

    eps = float(np.finfo(np.float32).eps)
    first = min(10, args.steps)

    def relative(a, b):
        return float(np.max(np.abs(a - b) / np.abs(b)))

    print(f"\nmax relative loss difference, pytconv vs keras.layers: first {first} steps "
          f"{relative(ours_curve[:first], keras_curve[:first]):.2e}, all steps {relative(ours_curve, keras_curve):.2e} "
          f"(float32 eps {eps:.2e})")
    if reference is not None:
        print(f"max relative loss difference, pytconv vs torch.nn:     first {first} steps "
              f"{relative(ours_curve[:first], reference[:first]):.2e}, all steps {relative(ours_curve, reference):.2e}")
    else:
        print("(PyTorch is not installed: the torch.nn curve of examples/autoencoder_torch.py is not shown)")
    print(f"time per step (train_on_batch): keras.layers {keras_time * 1e3:.2f} ms, pytconv {ours_time * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
