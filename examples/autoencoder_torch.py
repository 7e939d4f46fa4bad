"""Train the same convolutional autoencoder twice from the same initial state,
once with torch.nn's layers and once with pytconv's, and compare.

    python examples/autoencoder_torch.py [--steps 300] [--threads 1]

The model (examples/autoencoder_data.py) encodes 16x16 images with two
strided convolutions and decodes them with two strided transposed
convolutions. Both runs print their loss every few steps; the curves agree
to float32 rounding (the two libraries sum in different orders: a few ulps),
and the final weights by the rounding differences of all the steps
accumulated (about 1e-5 relative after 300 steps). The time per training
step of each run is printed too.
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict

import numpy as np
import torch

import pytconv
from autoencoder_data import LAYERS, LEARNING_RATE, LOG_EVERY, STEPS, initial_weights, make_dataset


def build_model(layers) -> torch.nn.Sequential:
    """The autoencoder from `layers` (a module with Conv2d and
    ConvTranspose2d), with the examples' initial weights."""
    modules = OrderedDict()
    for spec in LAYERS:
        cls = layers.Conv2d if spec.kind == "conv" else layers.ConvTranspose2d
        modules[spec.name] = cls(spec.in_channels, spec.out_channels, spec.kernel, stride=spec.stride,
                                 padding=spec.padding)
        if spec.activation == "relu":
            modules[f"{spec.name}_relu"] = torch.nn.ReLU()
    model = torch.nn.Sequential(modules)
    model.load_state_dict({name: torch.from_numpy(value) for name, value in initial_weights().items()})
    return model


def train(model, images, steps):
    """Gradient descent on the reconstruction error; (losses, seconds per step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(images), images)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses), (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both libraries (default 1: the model is small)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pytconv.set_num_threads(args.threads)

    images = torch.from_numpy(make_dataset())
    runs = OrderedDict()
    for name, layers in (("torch.nn", torch.nn), ("pytconv", pytconv.adapter("torch"))):
        model = build_model(layers)
        losses, seconds = train(model, images, args.steps)
        runs[name] = (model, losses, seconds)

    (ref_model, ref_losses, ref_time), (our_model, our_losses, our_time) = runs.values()
    print(f"{len(images)} images {tuple(images.shape[1:])}, {args.steps} steps of gradient descent "
          f"(lr {LEARNING_RATE}), mean squared error\n")
    print(f"{'step':>6}  {'torch.nn loss':>14}  {'pytconv loss':>14}  {'relative diff':>13}")
    for step in list(range(0, args.steps, LOG_EVERY)) + [args.steps - 1]:
        a, b = ref_losses[step], our_losses[step]
        print(f"{step + 1:>6}  {a:>14.8f}  {b:>14.8f}  {abs(a - b) / abs(a):>13.2e}")

    loss_diff = float(np.max(np.abs(ref_losses - our_losses) / np.abs(ref_losses)))
    weight_diff = max(
        float((p - q).abs().max() / q.abs().max())
        for p, q in zip(our_model.state_dict().values(), ref_model.state_dict().values())
    )
    eps = float(np.finfo(np.float32).eps)
    print(f"\nmax relative loss difference over all steps: {loss_diff:.2e} ({loss_diff / eps:.1f} float32 eps)")
    print(f"max relative difference of the final weights:  {weight_diff:.2e} ({weight_diff / eps:.1f} float32 eps)")
    print(f"time per step: torch.nn {ref_time * 1e3:.2f} ms, pytconv {our_time * 1e3:.2f} ms "
          f"(threads: torch {torch.get_num_threads()}, pytconv {pytconv.get_num_threads()})")


if __name__ == "__main__":
    main()
