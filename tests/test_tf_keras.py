"""The TensorFlow adapter's Keras 3 layers: same outputs, output shapes,
weights and configuration as keras.layers (weights and weight files
interchangeable both ways), N-d layers against pytconv.reference,
get_config/from_config, .keras save and load, model.fit, unknown sizes,
conversion to keras.layers, the autoencoder example, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import pytconv
from pytconv import _args, reference

from frameworks import require


@pytest.fixture(scope="module")
def keras():
    require("tensorflow")
    return require("keras")


@pytest.fixture(scope="module")
def ptf(keras):
    return pytconv.adapter("tensorflow")


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# (class name, constructor arguments, input shape)
LAYER_CASES = [
    ("Conv1D", dict(filters=4, kernel_size=3, strides=2, padding="same"), (2, 11, 3)),
    ("Conv1D", dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2, activation="relu"), (2, 10, 3)),
    ("Conv2D", dict(filters=6, kernel_size=(3, 2), dilation_rate=2, groups=2, use_bias=False), (2, 9, 8, 4)),
    ("Conv2D", dict(filters=5, kernel_size=3, strides=2, padding="same", data_format="channels_first"), (2, 3, 9, 8)),
    ("Conv3D", dict(filters=3, kernel_size=2, strides=(1, 2, 1), padding="valid"), (1, 5, 6, 4, 2)),
    ("Conv1DTranspose", dict(filters=4, kernel_size=3, strides=2, padding="same"), (2, 7, 3)),
    ("Conv2DTranspose", dict(filters=5, kernel_size=4, strides=2, padding="same", output_padding=1), (2, 6, 5, 3)),
    ("Conv2DTranspose", dict(filters=5, kernel_size=2, strides=3, data_format="channels_first"), (2, 3, 4, 5)),
    ("Conv2DTranspose", dict(filters=2, kernel_size=3, dilation_rate=2, activation="tanh"), (1, 5, 4, 3)),
    ("Conv3DTranspose", dict(filters=2, kernel_size=3, strides=2, padding="valid", output_padding=1), (1, 3, 4, 3, 2)),
]


@pytest.mark.parametrize("name, kwargs, shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_matches_keras_layer(keras, ptf, name, kwargs, shape):
    rng = np.random.default_rng(len(shape) + kwargs["filters"])
    x = _rand(rng, shape)
    ours, theirs = getattr(ptf, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
    y = ours(x)
    theirs.build(shape)

    # Same weight names, shapes and order; weights move both ways.
    assert [(v.name, tuple(v.shape)) for v in ours.weights] == [(v.name, tuple(v.shape)) for v in theirs.weights]
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(y.numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5 * np.abs(y).max())
    new = [_rand(rng, w.shape) for w in theirs.get_weights()]
    theirs.set_weights(new)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5 * np.abs(y).max() * 10)

    # Same output shapes, also with unknown batch; same configuration (Keras's keys and values).
    for s in (shape, (None,) + shape[1:]):
        assert tuple(ours.compute_output_shape(s)) == tuple(theirs.compute_output_shape(s))
    assert y.shape == tuple(theirs.compute_output_shape(shape))
    ours_config, their_config = ours.get_config(), theirs.get_config()
    for key in their_config:
        if key != "name":
            assert ours_config[key] == their_config[key], key
    assert set(ours_config) - set(their_config) <= {"groups"}


def test_default_arguments_match_keras(keras, ptf):
    import inspect

    for name in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        theirs = inspect.signature(getattr(keras.layers, name)).parameters
        ours = inspect.signature(getattr(ptf, name)).parameters
        for arg, p in theirs.items():
            if arg not in ("lora_rank", "lora_alpha"):
                assert arg in ours and ours[arg].default == p.default, (name, arg)
        # Positional order as Keras's, extensions after it.
        common = [a for a in ours if a in theirs]
        assert common == [a for a in theirs if a in ours], name


def test_config_round_trip(ptf):
    for layer in (
        ptf.Conv2D(8, 3, strides=2, padding="same", kernel_regularizer="l2", bias_constraint="non_neg"),
        ptf.Conv1DTranspose(3, 4, strides=2, output_padding=1, activation="relu"),
        ptf.ConvND(4, 2, 3, dilation_rate=(1, 2, 1, 1), groups=1),
        ptf.ConvNDTranspose(4, 2, 2, strides=2, groups=2),
    ):
        config = layer.get_config()
        again = type(layer).from_config(config)
        assert again.get_config() == config
    assert "rank" not in ptf.Conv3D(2, 2).get_config()
    assert ptf.ConvND(5, 2, 2).get_config()["rank"] == 5


@pytest.mark.parametrize("transposed", [False, True])
def test_nd_layers_match_reference(keras, ptf, transposed):
    """A 4-d layer (which Keras lacks), float64, against pytconv.reference."""
    rng = np.random.default_rng(21)
    x = _rand(rng, (2, 5, 4, 3, 4, 4), np.float64)  # channels last
    x_cf = np.moveaxis(x, -1, 1)
    if transposed:
        layer = ptf.ConvNDTranspose(4, filters=4, kernel_size=(2, 3, 2, 2), strides=(2, 1, 1, 2), padding="same",
                                    groups=2, dtype="float64")
        y = layer(x).numpy()
        w = layer.get_weights()[0]  # (*k, out / groups, in)
        w_pt = np.transpose(w, (5, 4, 0, 1, 2, 3))
        p = _args.transposed_problem("test", x_cf.shape, w_pt.shape, (2, 1, 1, 2), "same", 0, 2, 1)
        ref = reference.backward_data(p, x_cf, w_pt)
    else:
        layer = ptf.ConvND(4, filters=6, kernel_size=(3, 2, 2, 3), padding="same", dilation_rate=(1, 2, 1, 1),
                           groups=2, dtype="float64")
        y = layer(x).numpy()
        w = layer.get_weights()[0]  # (*k, in / groups, out)
        w_pt = np.transpose(w, (5, 4, 0, 1, 2, 3))
        p = _args.conv_problem("test", x_cf.shape, w_pt.shape, 1, "same", (1, 2, 1, 1), 2)
        ref = reference.forward(p, x_cf, w_pt)
    ref = np.moveaxis(ref, 1, -1)
    assert y.dtype == np.float64 and y.shape == ref.shape
    assert tuple(layer.compute_output_shape((None,) + x.shape[1:])) == (None,) + ref.shape[1:]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def _autoencoder(keras, layers):
    inputs = keras.Input((None, None, 2))
    h = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    outputs = layers.Conv2DTranspose(2, 3, strides=2, padding="same", output_padding=1)(h)
    return keras.Model(inputs, outputs)


def test_model_save_load_fit_and_unknown_sizes(keras, ptf, tmp_path):
    rng = np.random.default_rng(8)
    keras.utils.set_random_seed(8)
    model = _autoencoder(keras, ptf)
    reference_model = _autoencoder(keras, keras.layers)
    reference_model.set_weights(model.get_weights())
    # Unknown spatial sizes: one model serves several input sizes, as Keras's own.
    for size in ((8, 6), (7, 9)):
        x = _rand(rng, (3,) + size + (2,))
        y = model.predict(x, verbose=0)
        np.testing.assert_allclose(y, reference_model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)

    # .keras: architecture and weights come back as pytconv's layers.
    path = tmp_path / "autoencoder.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers[1:]] == ["Conv2D", "Conv2DTranspose"]
    assert all(type(layer).__module__.startswith("pytconv_tensorflow") for layer in loaded.layers[1:])
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), y)

    # Weight files move between these layers and Keras's, both ways.
    model.save_weights(tmp_path / "ours.weights.h5")
    keras_model = _autoencoder(keras, keras.layers)
    keras_model.load_weights(tmp_path / "ours.weights.h5")
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), y, rtol=1e-5, atol=1e-5)
    keras_model.set_weights([_rand(rng, w.shape) for w in keras_model.get_weights()])
    keras_model.save_weights(tmp_path / "keras.weights.h5")
    loaded.load_weights(tmp_path / "keras.weights.h5")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), keras_model.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-4)

    # fit lowers the loss; Keras turns XLA off for these layers (asked for, or by "auto").
    data = _rand(rng, (32, 8, 8, 2))
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    assert model.jit_compile is False
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    assert model.jit_compile is False
    history = model.fit(data, data, batch_size=8, epochs=4, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses


def test_to_keras_layer(keras, ptf):
    rng = np.random.default_rng(9)
    x = _rand(rng, (2, 7, 6, 3))
    for layer in (ptf.Conv2D(4, 3, strides=2, padding="same"), ptf.Conv2DTranspose(2, 3, strides=2)):
        y = layer(x)
        converted = ptf.to_keras_layer(layer)
        assert type(converted) is getattr(keras.layers, type(layer).__name__)
        np.testing.assert_allclose(converted(x).numpy(), y.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no 4-d convolution layer"):
        layer = ptf.ConvND(4, 2, 2)
        layer(_rand(rng, (1, 3, 3, 3, 3, 2)))
        ptf.to_keras_layer(layer)
    with pytest.raises(ValueError, match="not built"):
        ptf.to_keras_layer(ptf.Conv1D(2, 2))
    with pytest.raises(TypeError, match="expects a pytconv_tensorflow layer"):
        ptf.to_keras_layer(keras.layers.Conv1D(2, 2))


BAD_LAYERS = [
    (ValueError, "filters must be a positive int", lambda ptf: ptf.Conv2D(0, 3)),
    (ValueError, "filters=6 is not divisible by groups=4", lambda ptf: ptf.Conv2D(6, 3, groups=4)),
    (ValueError, "kernel_size needs 1 or 2 values", lambda ptf: ptf.Conv2D(2, (3, 3, 3))),
    (ValueError, "strides must be >= 1", lambda ptf: ptf.Conv1D(2, 3, strides=0)),
    (ValueError, "padding must be one of 'valid', 'same'", lambda ptf: ptf.Conv2D(2, 3, padding="causal")),
    (ValueError, "data_format must be", lambda ptf: ptf.Conv2D(2, 3, data_format="NHWC")),
    (ValueError, "output_padding must be", lambda ptf: ptf.Conv2DTranspose(2, 3, output_padding=-1)),
    (ValueError, "not divisible by groups=2",
     lambda ptf: ptf.Conv2D(4, 3, groups=2)(np.zeros((1, 5, 5, 3), "float32"))),
    (ValueError, "kernel is larger", lambda ptf: ptf.Conv2D(4, 5)(np.zeros((1, 3, 3, 3), "float32"))),
    (ValueError, "output_padding must be smaller than max(strides, dilation_rate) = 2",
     lambda ptf: ptf.Conv1DTranspose(2, 3, strides=2, output_padding=2)),
    (TypeError, "supported dtypes are float32 and float64",
     lambda ptf: ptf.Conv1D(2, 3, dtype="float16")(np.zeros((1, 5, 2), "float16"))),
]


@pytest.mark.parametrize("error, words, make", BAD_LAYERS, ids=[c[1][:40] for c in BAD_LAYERS])
def test_bad_layer_arguments(ptf, error, words, make):
    import re

    with pytest.raises(error, match=re.escape(words)):
        make(ptf)


def test_autoencoder_example_matches_torch(keras, ptf, monkeypatch):
    """examples/autoencoder_keras.py: its first steps' losses equal the PyTorch
    example's (same data, same initial weights) to float32 rounding."""
    import os
    import sys

    require("torch")
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    monkeypatch.syspath_prepend(examples)
    import autoencoder_keras
    from autoencoder_data import make_dataset

    steps = 4
    images = np.ascontiguousarray(make_dataset().transpose(0, 2, 3, 1))
    ours, _ = autoencoder_keras.train(autoencoder_keras.build_model(ptf, images.shape[1:]), images, steps)
    theirs, _ = autoencoder_keras.train(autoencoder_keras.build_model(keras.layers, images.shape[1:]), images, steps)
    reference = autoencoder_keras.torch_losses(steps, None)
    assert reference is not None and "autoencoder_torch" in sys.modules
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(ours, reference, rtol=8 * eps, atol=0)
    np.testing.assert_allclose(ours, theirs, rtol=8 * eps, atol=0)
    assert ours[-1] < ours[0]
