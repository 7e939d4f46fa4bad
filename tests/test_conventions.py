"""pytconv.conventions: arguments and weights between PyTorch, TensorFlow,
Keras, JAX and pytconv; round trips on random configurations, and each
framework's own output shapes and values."""

import numpy as np
import pytest

import pytconv
from pytconv import conventions as cv
from pytconv import reference
from pytconv.testing import random_config

from frameworks import require


def _random_convolutions(seed, count, ndims=(1, 2, 3)):
    rng = np.random.default_rng(seed)
    return [random_config(rng, int(rng.choice(ndims)), max_size=6).convolution() for _ in range(count)]


def _reference(c, x, w):
    return reference.backward_data(c.problem, x, w) if c.transposed else reference.forward(c.problem, x, w)


def _data(c, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(c.input_shape), rng.standard_normal(c.weight_shape)


# ---- round trips (no framework needed) -------------------------------------------------


@pytest.mark.parametrize("target", ["torch", "tensorflow", "keras", "jax"])
def test_round_trip_random_configurations(target):
    expressed = refused = 0
    for c in _random_convolutions(5, 300):
        try:
            if target == "torch":
                a = cv.to_torch(c, module=True)
                back = cv.from_torch(c.input_shape, c.weight_shape, transposed=c.transposed, stride=a["stride"],
                                     padding=a["padding"], output_padding=a.get("output_padding", 0),
                                     dilation=a["dilation"], groups=a["groups"], padding_mode=a["padding_mode"])
            elif target == "tensorflow":
                a = cv.to_tensorflow(c, allow_explicit=True)
                x_shape = cv._shape_in_format(c.input_shape, True)
                f_shape = cv.weight_to_tensorflow(np.empty(c.weight_shape)).shape
                back = cv.from_tensorflow(x_shape, f_shape, transposed=c.transposed, strides=a["strides"],
                                          padding=a["padding"], dilations=a["dilations"],
                                          output_shape=a.get("output_shape"), data_format=a["data_format"])
            elif target == "keras":
                a = cv.to_keras(c)
                x_shape = cv._shape_in_format(c.input_shape, True)
                k_shape = cv.weight_to_tensorflow(np.empty(c.weight_shape)).shape
                back = cv.from_keras(x_shape, k_shape, transposed=c.transposed, strides=a["strides"],
                                     padding=a["padding"], dilation_rate=a["dilation_rate"],
                                     groups=a.get("groups", 1), output_padding=a.get("output_padding"))
            else:
                a = cv.to_jax(c)
                k_shape = cv.weight_to_jax(np.empty(c.weight_shape), c).shape
                back = cv.from_jax(c.input_shape, k_shape, transposed=c.transposed, **a)
        except ValueError as exc:
            refused += 1
            assert str(exc).startswith("to_"), exc  # the converter's own, explained refusal
            continue
        expressed += 1
        assert back.equivalent(c), (target, c, back)
        assert back.output_shape == c.output_shape
    # The random configurations mix expressible and inexpressible ones (Keras
    # has only "same"/"valid" padding, so it expresses the fewest).
    assert expressed >= (20 if target == "keras" else 40) and refused >= 10, (expressed, refused)


def test_pytconv_args_round_trip():
    for c in _random_convolutions(6, 100, ndims=(1, 2, 3, 4)):
        back = cv.from_pytconv(c.input_shape, c.weight_shape, transposed=c.transposed, **c.pytconv_args())
        assert back == c


@pytest.mark.parametrize("transposed", [False, True])
def test_weight_layouts_are_inverse(transposed):
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 4):
        for groups in (1, 2, 3):
            size = (2,) * n if transposed else (6,) * n
            if transposed:
                c = cv.from_pytconv((1, 6) + size, (6, 2) + (3,) * n, transposed=True, groups=groups)
            else:
                c = cv.from_pytconv((1, 6) + size, (6, 6 // groups) + (3,) * n, groups=groups)
            w = rng.standard_normal(c.weight_shape)
            np.testing.assert_array_equal(cv.weight_from_tensorflow(cv.weight_to_tensorflow(w)), w)
            for last in (False, True):
                k = cv.weight_to_jax(w, c, channels_last=last)
                np.testing.assert_array_equal(cv.weight_from_jax(k, c, channels_last=last), w)


def test_refusals_say_why():
    # asymmetric cropping in PyTorch's ConvTranspose2d
    c = cv.from_pytconv((1, 4, 5, 5), (4, 2, 3, 3), transposed=True, stride=2, padding=((0, 1), (1, 1)))
    with pytest.raises(ValueError, match="ConvTranspose2d crops `padding` cells at both ends"):
        cv.to_torch(c)
    # "same" with stride 2 and an odd total padding in PyTorch's Conv2d
    c = cv.from_pytconv((1, 4, 8, 8), (2, 4, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="Conv2d pads both ends of a dimension alike"):
        cv.to_torch(c)
    # groups in TensorFlow's conv_transpose, and in Keras'
    c = cv.from_pytconv((1, 4, 5, 5), (4, 2, 3, 3), transposed=True, stride=2, padding="same", groups=2)
    with pytest.raises(ValueError, match="tf.nn.conv_transpose has no groups"):
        cv.to_tensorflow(c)
    with pytest.raises(ValueError, match="Conv2DTranspose has no groups"):
        cv.to_keras(c)
    # strides with dilations in TensorFlow
    c = cv.from_pytconv((1, 4, 9, 9), (2, 4, 3, 3), stride=2, dilation=2)
    with pytest.raises(ValueError, match="strides > 1 with dilations > 1"):
        cv.to_tensorflow(c)
    # explicit padding outside 2-d in TensorFlow
    c = cv.from_pytconv((1, 4, 9), (2, 4, 3), padding=((2, 0),))
    with pytest.raises(ValueError, match="explicit padding only in 2-d"):
        cv.to_tensorflow(c)
    assert cv.to_tensorflow(c, allow_explicit=True)["padding"] == [[0, 0], [2, 0], [0, 0]]
    # padding modes
    c = cv.from_pytconv((1, 4, 9, 9), (2, 4, 3, 3), padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="jax.numpy.pad"):
        cv.to_jax(c)
    with pytest.raises(ValueError, match="no padding_mode"):
        cv.to_torch(c)
    assert cv.to_torch(c, module=True)["padding_mode"] == "reflect"
    with pytest.raises(ValueError, match="ConvTranspose1d supports only padding_mode='zeros'"):
        cv.to_torch(cv.from_pytconv((1, 2, 5), (2, 2, 3), transposed=True, padding=1, padding_mode="circular"))
    # more than 3 spatial dimensions
    c = cv.from_pytconv((1, 1, 4, 4, 4, 4), (1, 1, 2, 2, 2, 2))
    for to in (cv.to_torch, cv.to_tensorflow, cv.to_keras):
        with pytest.raises(ValueError, match="spatial dimensions"):
            to(c)
    assert cv.to_jax(c)["padding"] == ((0, 0),) * 4


def test_reading_framework_arguments_rejects_their_invalid_forms():
    with pytest.raises(ValueError, match="PyTorch's padding='same' needs stride 1"):
        cv.from_torch((1, 2, 8), (2, 2, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="pairs are pytconv's and JAX's spelling"):
        cv.from_torch((1, 2, 8), (2, 2, 3), padding=((1, 2),))
    with pytest.raises(ValueError, match="integer padding only"):
        cv.from_torch((1, 2, 8), (2, 2, 3), transposed=True, padding="same")
    with pytest.raises(ValueError, match="needs output_shape"):
        cv.from_tensorflow((1, 8, 2), (3, 2, 2), transposed=True, strides=2, padding="SAME")
    with pytest.raises(ValueError, match="batch and channel"):
        cv.from_tensorflow((1, 8, 2), (3, 2, 2), padding=[[1, 1], [1, 1], [0, 0]])
    with pytest.raises(ValueError, match="strides > 1 with dilation_rate > 1"):
        cv.from_keras((1, 8, 8, 2), (3, 3, 2, 2), strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="adds zeros beyond"):
        cv.from_jax((1, 2, 4), (3, 2, 3), padding=((5, 2),), lhs_dilation=(2,))


def test_tensorflow_same_transposed_has_odd_crop_at_the_end():
    """TensorFlow's "SAME" transposed convolution of a 3-tap kernel with stride 2
    crops 0 cells at the start, 1 at the end: PyTorch needs output cropping."""
    c = cv.from_tensorflow((1, 5, 5, 8), (3, 3, 4, 8), transposed=True, strides=2, padding="SAME",
                           output_shape=(1, 10, 10, 4))
    assert c.problem.pad_low == (0, 0) and c.problem.pad_high == (1, 1)
    assert c.output_shape == (1, 4, 10, 10)
    # with a 4-tap kernel the crop is symmetric and PyTorch can express it
    c4 = cv.from_tensorflow((1, 5, 5, 8), (4, 4, 4, 8), transposed=True, strides=2, padding="SAME",
                            output_shape=(1, 10, 10, 4))
    assert cv.to_torch(c4) == dict(stride=(2, 2), padding=(1, 1), output_padding=(0, 0), groups=1, dilation=(1, 1))
    assert cv.to_keras(c4)["padding"] == "same" and cv.to_keras(c4)["output_padding"] is None


# ---- each framework's own shapes and values ---------------------------------------------


def test_torch_reproduces():
    torch = require("torch")
    F = torch.nn.functional
    checked = 0
    for i, c in enumerate(_random_convolutions(7, 150)):
        try:
            a = cv.to_torch(c)
        except ValueError:
            continue
        x, w = _data(c, i)
        fn = getattr(F, f"conv_transpose{c.ndim}d" if c.transposed else f"conv{c.ndim}d")
        y = fn(torch.from_numpy(x), torch.from_numpy(w), None, **a).numpy()
        ref = _reference(c, x, w)
        assert y.shape == c.output_shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10 * max(np.abs(ref).max(), 1))
        checked += 1
    assert checked >= 20


def test_torch_layers_read_back():
    torch = require("torch")
    layer = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                                     dilation=(1, 2), groups=2).double()
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 4))
    c = cv.from_torch(x.shape, layer.weight.shape, transposed=True, stride=layer.stride, padding=layer.padding,
                      output_padding=layer.output_padding, dilation=layer.dilation, groups=layer.groups)
    w = layer.weight.detach().numpy()
    y = pytconv.conv_transpose(x, w, None, **c.pytconv_args())
    with torch.no_grad():
        expected = layer(torch.from_numpy(x)).numpy() - layer.bias.numpy().reshape(1, -1, 1, 1)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    assert cv.to_torch(c, module=True)["out_channels"] == 6


def test_tensorflow_reproduces():
    tf = require("tensorflow")
    checked = 0
    for i, c in enumerate(_random_convolutions(8, 120)):
        p = c.problem
        if c.transposed and any(d > 1 for d in p.dilation):
            continue  # TensorFlow's CPU kernels do not implement dilated transposed convolutions
        if not c.transposed and p.groups > 1 and c.ndim == 3:
            continue  # nor grouped 3-d convolutions
        try:
            a = cv.to_tensorflow(c)
        except ValueError:
            continue
        x, w = _data(c, i)
        xt = tf.constant(cv.to_channels_last(x))
        f = tf.constant(cv.weight_to_tensorflow(w))
        if c.transposed:
            y = tf.nn.conv_transpose(xt, f, **a)
        elif isinstance(a["padding"], list):
            y = tf.nn.conv2d(xt, f, **a)
        else:
            y = tf.nn.convolution(xt, f, **a)
        y = cv.to_channels_first(y.numpy())
        ref = _reference(c, x, w)
        assert y.shape == c.output_shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10 * max(np.abs(ref).max(), 1))
        checked += 1
    assert checked >= 15


def test_keras_layers_reproduce():
    require("tensorflow")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    cases = [
        (keras.layers.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same")),
        (keras.layers.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same", output_padding=0)),
        (keras.layers.Conv2DTranspose, dict(filters=3, kernel_size=(2, 3), strides=(3, 2), padding="valid")),
        (keras.layers.Conv1DTranspose, dict(filters=2, kernel_size=4, strides=3, padding="valid", output_padding=2)),
        (keras.layers.Conv2D, dict(filters=4, kernel_size=3, strides=2, padding="same", groups=2)),
        (keras.layers.Conv1D, dict(filters=2, kernel_size=3, dilation_rate=2, padding="causal")),
    ]
    for cls, kwargs in cases:
        transposed = "Transpose" in cls.__name__
        n = int(cls.__name__[4])
        x = rng.standard_normal((2,) + (5,) * n + (4,)).astype(np.float64)
        layer = cls(dtype="float64", use_bias=False, **kwargs)
        y = layer(x).numpy()
        cfg = layer.get_config()
        c = cv.from_keras(x.shape, layer.kernel.shape, transposed=transposed, strides=cfg["strides"],
                          padding=cfg["padding"], dilation_rate=cfg["dilation_rate"], groups=cfg.get("groups", 1),
                          output_padding=cfg.get("output_padding"))
        w = cv.weight_from_tensorflow(layer.kernel.numpy())
        ref = _reference(c, cv.to_channels_first(x), w)
        assert cv.to_channels_first(y).shape == c.output_shape, (cls.__name__, kwargs)
        np.testing.assert_allclose(cv.to_channels_first(y), ref, rtol=0, atol=1e-10)
        back = cv.to_keras(c)
        assert back["padding"] == cfg["padding"] or cfg["padding"] == "causal"
        again = cv.from_keras(x.shape, layer.kernel.shape, transposed=transposed, strides=back["strides"],
                              padding=back["padding"], dilation_rate=back["dilation_rate"],
                              groups=back.get("groups", 1), output_padding=back.get("output_padding"))
        assert again.equivalent(c)


def test_jax_reproduces():
    jax = require("jax")
    from jax import lax

    checked = 0
    with jax.enable_x64(True):
        for i, c in enumerate(_random_convolutions(9, 40, ndims=(1, 2, 3, 4))):
            try:
                a = cv.to_jax(c)
            except ValueError:
                continue
            x, w = _data(c, i)
            k = cv.weight_to_jax(w, c)
            y = np.asarray(lax.conv_general_dilated(x, k, precision=lax.Precision.HIGHEST, **a))
            ref = _reference(c, x, w)
            assert y.shape == c.output_shape
            np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10 * max(np.abs(ref).max(), 1))
            # and reading the JAX call back gives the same convolution and weight
            back = cv.from_jax(x.shape, k.shape, transposed=c.transposed, **a)
            assert back.equivalent(c)
            np.testing.assert_array_equal(cv.weight_from_jax(k, back), w)
            checked += 1
    assert checked >= 15


def test_jax_channels_last():
    jax = require("jax")
    from jax import lax

    c = cv.from_pytconv((2, 4, 5, 6), (4, 3, 3, 2), transposed=True, stride=(2, 1), padding=((1, 0), (0, 1)),
                        output_padding=(1, 0))
    x, w = _data(c)
    a = cv.to_jax(c, channels_last=True)
    assert a["dimension_numbers"] == ("NHWC", "HWIO", "NHWC")
    with jax.enable_x64(True):
        y = np.asarray(lax.conv_general_dilated(cv.to_channels_last(x), cv.weight_to_jax(w, c, channels_last=True),
                                                **a))
    np.testing.assert_allclose(cv.to_channels_first(y), _reference(c, x, w), rtol=0, atol=1e-12)
