"""QuantizeConfigs: presets, channel axes per layer kind, round trips, bad input."""

from __future__ import annotations

import pytest

import tfmot_ext as te
from tfmot_ext._compat import keras
from tfmot_ext.configs import LayerQuantizeConfig, output_channel_axis
from tfmot_ext.errors import ConfigError
from tfmot_ext.quantizers import FixedRangeQuantizer, LSQQuantizer

L = keras.layers


def _built(layer, shape):
    layer.build((None, *shape))
    return layer


@pytest.mark.parametrize("layer,shape,attrs,axis", [
    (L.Dense(5), (7,), ("kernel",), -1),
    (L.Conv1D(4, 3), (10, 2), ("kernel",), -1),
    (L.Conv2D(4, 3), (8, 8, 2), ("kernel",), -1),
    (L.Conv3D(4, 3), (5, 5, 5, 2), ("kernel",), -1),
    (L.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 3), ("depthwise_kernel",), (2, 3)),
    (L.SeparableConv2D(4, 3), (8, 8, 3), ("depthwise_kernel", "pointwise_kernel"), None),
    (L.Conv2DTranspose(4, 3), (8, 8, 3), ("kernel",), 2),
])
def test_presets_quantize_the_right_weights_on_the_right_axis(layer, shape, attrs, axis):
    layer = _built(layer, shape)
    cfg = te.default_config_for(layer, per_channel=True)
    pairs = cfg.get_weights_and_quantizers(layer)
    assert [a for a in cfg.weights] == list(attrs)
    for (w, q), attr in zip(pairs, attrs):
        assert w is getattr(layer, attr)
        exp = output_channel_axis(layer, attr, len(w.shape))
        assert q.axis == exp
        if axis is not None:
            assert exp == (axis if axis != -1 else len(w.shape) - 1)
    assert list(cfg.activations) == ["activation"]


def test_depthwise_output_channels_are_c_times_m():
    layer = _built(L.DepthwiseConv2D(3, depth_multiplier=3), (8, 8, 4))
    cfg = te.depthwise_conv_config()
    (w, q), = cfg.get_weights_and_quantizers(layer)
    holder = keras.layers.Layer()
    v = q.build(w.shape, "depthwise_kernel", holder)
    assert v["min_var"].shape == (12,)


def test_dense_and_transpose_default_per_tensor():
    assert not te.default_config_for(_built(L.Dense(3), (4,))).weights["kernel"].per_channel
    assert te.default_config_for(_built(L.Conv2D(3, 1), (4, 4, 2))).weights["kernel"].per_channel


def test_unwrappable_activation_gets_output_quantizer():
    cfg = te.default_config_for(_built(L.Dense(3, activation="elu"), (4,)))
    assert cfg.activations == {} and cfg.output is not None


@pytest.mark.parametrize("cfg", [
    te.dense_config(4, 8),
    te.conv_config(weight_q=LSQQuantizer(4, per_channel=True)),
    te.separable_conv_config(3, None),
    te.output_only_config(6),
    te.no_op_config(),
    LayerQuantizeConfig(weights={"kernel": FixedRangeQuantizer(-1, 1, 4)},
                        activations={"activation": te.activation_quantizer(8)},
                        output=FixedRangeQuantizer(0, 6, 8)),
])
def test_config_round_trip(cfg):
    c = cfg.get_config()
    assert set(c) == {"weights", "activations", "output"}
    back = LayerQuantizeConfig.from_config(c)
    assert back == cfg and back.get_config() == c
    ser = keras.utils.serialize_keras_object(cfg)
    assert keras.utils.deserialize_keras_object(ser) == cfg


def test_missing_attribute_names_layer_and_attr():
    layer = _built(L.Dense(3, name="head"), (4,))
    cfg = LayerQuantizeConfig(weights={"depthwise_kernel": te.weight_quantizer()})
    with pytest.raises(ConfigError, match=r"'head'.*depthwise_kernel"):
        cfg.get_weights_and_quantizers(layer)


def test_rejects_non_quantizers_and_per_channel_activations():
    with pytest.raises(ConfigError, match="not a tfmot Quantizer"):
        LayerQuantizeConfig(weights={"kernel": 8})
    with pytest.raises(ConfigError, match="per channel"):
        LayerQuantizeConfig(activations={"activation": te.weight_quantizer()})


@pytest.mark.parametrize("act, scale, zero_point", [("sigmoid", 1 / 256, -128),
                                                    ("tanh", 1 / 128, 0)])
def test_sigmoid_and_tanh_outputs_train_on_tflites_fixed_grid(act, scale, zero_point):
    """TFLite's int8 LOGISTIC/TANH output is fixed at (1/256, -128) / (1/128, 0); the
    preset's FakeQuant range has exactly that grid: scale (max - min) / 255 and
    zero point qmin - min / scale."""
    import numpy as np

    cfg = te.default_config_for(keras.layers.Activation(act))
    assert cfg is not None and isinstance(cfg.output, FixedRangeQuantizer) and not cfg.weights
    q = cfg.output
    assert (q.max - q.min) / 255 == scale and -128 - q.min / scale == zero_point
    x = np.linspace(-1.5, 1.5, 2001, dtype=np.float32)
    y = np.asarray(q(x, training=False, weights={}))
    np.testing.assert_array_equal(y / scale, np.round(y / scale))  # on the grid
    assert y.min() == q.min and y.max() == q.max
    assert te.default_config_for(keras.layers.Activation("relu")) is None
