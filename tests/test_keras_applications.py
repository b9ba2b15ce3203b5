"""Public architectures from ``keras.applications`` (built with ``weights=None``, nothing is
downloaded), small variants: every group is found, masked == pruned, the plan replays and the
``.keras`` file reloads. ConvNeXt brings depthwise ``Conv2D(groups=C)``, ``LayerScale`` and
``LayerNormalization`` in its residual streams; MobileNetV2 depthwise convolutions, ReLU6 and
inverted residuals."""

import numpy as np
import pytest

pytest.importorskip("keras")

from keras_models import check_model, keras  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.paths import layer_at  # noqa: E402


def _layer_scale_parameters(layer, axes):
    return len(axes.get("features", range(layer.projection_dim)))


def _small_convnext():
    convnext = pytest.importorskip("keras.src.applications.convnext")
    return convnext.ConvNeXt(depths=[1, 1, 1, 1], projection_dims=[8, 16, 24, 32], input_shape=(32, 32, 3),
                             classes=10, weights=None, include_preprocessing=False, layer_scale_init_value=0.5,
                             name="convnext_small_test")


def _images(seed=0):
    return np.random.default_rng(seed).random((2, 32, 32, 3), dtype=np.float32)


def test_convnext_streams_and_ffns_are_pruned(tmp_path):
    model = _small_convnext()
    weights = [w.copy() for w in model.get_weights()]
    for i, w in enumerate(weights):  # LayerScale starts at one value: make every channel different
        weights[i] = w + np.random.default_rng(i).normal(scale=0.1, size=w.shape).astype(w.dtype)
    model.set_weights(weights)
    graph = discover(model)
    assert len(graph.frozen) == 1 and next(iter(graph.frozen)).endswith("head_dense"), graph.frozen  # the output
    members = {(m.path, m.axis) for g in graph.groups for m in g.members}
    classes = {type(layer_at(model, path)).__name__ for path, axis in members if axis == "features"}
    assert {"Conv2D", "LayerScale", "LayerNormalization"} <= classes
    pruned = check_model(model, _images(), tmp_path=tmp_path, formulas={"LayerScale": _layer_scale_parameters})
    depthwise = [layer for layer in pruned.layers if type(layer).__name__ == "Conv2D" and layer.groups > 1]
    assert depthwise and all(layer.groups == layer.filters < 32 for layer in depthwise[-1:])


def test_mobilenet_v2_is_pruned(tmp_path):
    model = keras().applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    graph = discover(model)
    assert len(graph.groups) >= 20 and set(graph.frozen) <= {"predictions"}, graph.frozen
    check_model(model, _images(), tmp_path=tmp_path)
