"""The autoencoder example (examples/autoencoder_torch.py) on a few steps:
its data and initial weights are deterministic, and torch.nn's layers and
pytconv's train to the same losses."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import pytconv

from frameworks import require

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def example():
    require("torch")
    sys.path.insert(0, EXAMPLES)
    try:
        import autoencoder_torch

        yield autoencoder_torch
    finally:
        sys.path.remove(EXAMPLES)


def test_data_and_initial_weights_are_deterministic(example):
    import autoencoder_data as data

    images = data.make_dataset(0)
    assert images.shape == (data.NUM_IMAGES, 1, data.IMAGE_SIZE, data.IMAGE_SIZE)
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(images, data.make_dataset(0))
    assert not np.array_equal(images, data.make_dataset(1))
    weights = data.initial_weights(0)
    for name, value in data.initial_weights(0).items():
        np.testing.assert_array_equal(value, weights[name])


def test_torch_nn_and_pytconv_train_alike(example):
    torch = require("torch")
    images = torch.from_numpy(example.make_dataset())
    losses = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is tiny; spare the shared cores
    try:
        for name, layers in (("torch.nn", torch.nn), ("pytconv", pytconv.adapter("torch"))):
            model = example.build_model(layers)  # loads the examples' initial weights
            losses[name], _ = example.train(model, images, 40)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(losses["pytconv"], losses["torch.nn"], rtol=1e-5)
    assert losses["pytconv"][-1] < 0.8 * losses["pytconv"][0]
