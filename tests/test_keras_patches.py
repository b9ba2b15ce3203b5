"""im2col on numpy (neuroprune.keras.patches): patches times the kernel equal the Keras convolution."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from keras_models import keras, outputs  # noqa: E402

from neuroprune.core.errors import PlanError  # noqa: E402
from neuroprune.keras.patches import ConvSpec, conv_patches, positions  # noqa: E402

CASES = [  # (layer class, input spatial shape, kernel, strides, dilation, padding)
    ("Conv1D", (9,), 3, 2, 1, "same"), ("Conv1D", (9,), 3, 1, 2, "valid"), ("Conv1D", (8,), 3, 1, 2, "causal"),
    ("Conv2D", (7, 6), 3, 2, 1, "same"), ("Conv2D", (7, 6), 3, 2, 1, "valid"), ("Conv2D", (8, 8), 2, 1, 2, "same"),
    ("Conv2D", (6, 5), (1, 3), (2, 1), 1, "same"), ("Conv3D", (5, 4, 6), 3, 2, 1, "same"),
]


@pytest.mark.parametrize("kind, spatial, kernel, strides, dilation, padding", CASES)
def test_patches_times_the_kernel_equal_the_convolution(kind, spatial, kernel, strides, dilation, padding):
    k = keras()
    layer = getattr(k.layers, kind)(4, kernel, strides=strides, dilation_rate=dilation, padding=padding)
    x = np.random.default_rng(0).normal(size=(3, *spatial, 5)).astype("float32")
    model = k.Sequential([k.Input(x.shape[1:]), layer])
    weights, bias = layer.get_weights()
    spec = ConvSpec.of(layer)
    rows = conv_patches(x.astype(np.float64), spec)
    assert rows.shape == (positions(x, spec), weights.size // 4)
    np.testing.assert_allclose(rows @ weights.reshape(-1, 4) + bias, outputs(model, x).reshape(-1, 4), rtol=1e-4, atol=1e-5)
    picked = np.array([rows.shape[0] - 1, 0, 4])  # only the rows asked for, in the order asked
    np.testing.assert_array_equal(conv_patches(x, spec, picked), rows[picked].astype("float32"))


def test_channels_first_inputs_give_the_same_rows():
    spec = ConvSpec(kernel=(3, 3), strides=(2, 2), dilation=(1, 1), padding="same")
    first = ConvSpec(kernel=(3, 3), strides=(2, 2), dilation=(1, 1), padding="same", channels_first=True)
    x = np.random.default_rng(1).normal(size=(2, 6, 5, 3))
    np.testing.assert_array_equal(conv_patches(np.moveaxis(x, -1, 1), first), conv_patches(x, spec))


def test_an_unknown_padding_is_named():
    class Fake:
        name = "odd"

        def get_config(self):
            return {"kernel_size": (3,), "strides": (1,), "padding": "reflect"}

    with pytest.raises(PlanError, match="odd: padding 'reflect' is not one of"):
        ConvSpec.of(Fake())
