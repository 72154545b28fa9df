"""Loading: custom_objects/quantize_scope, and save/load round trips that lose nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfmot_ext as te
from tfmot_ext._compat import keras
from tfmot_ext.quantizers import (
    FixedRangeQuantizer,
    LSQQuantizer,
    MinMaxQuantizer,
    PowerOfTwoQuantizer,
)

L = keras.layers


def every_object_model() -> keras.Model:
    """A QAT model using every quantizer and config kind of the package."""
    inp = keras.Input((10, 10, 2))
    x = L.Conv2D(4, 3, name="c_minmax4")(inp)
    x = L.BatchNormalization(momentum=0.9, name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw_pot")(x)
    x = L.SeparableConv2D(4, 3, activation="relu", name="sep_lsq")(x)
    x = L.Conv2DTranspose(3, 3, name="tconv")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(8, activation="tanh", name="fixed_out")(x)
    x = L.Dense(8, name="plain")(x)
    out = L.Dense(3, name="head_noop")(x)
    m = keras.Model(inp, out)
    policy = [
        te.Rule(name="c_minmax4", config=te.conv_config(4)),
        te.Rule(name="dw_pot", config=te.depthwise_conv_config(
            weight_q=PowerOfTwoQuantizer(6, per_channel=True),
            activation_q=PowerOfTwoQuantizer(8, symmetric=False,
                                             range_tracking="moving_average"))),
        te.Rule(name="sep_lsq", config=te.separable_conv_config(
            weight_q=LSQQuantizer(4, per_channel=True),
            activation_q=LSQQuantizer(8, signed=False))),
        te.Rule(name="fixed_out", config=te.LayerQuantizeConfig(
            weights={"kernel": MinMaxQuantizer(5, symmetric=True, range_tracking="all_values")},
            output=FixedRangeQuantizer(-1.0, 1.0, 8))),
        te.Rule(name="plain", config=te.output_only_config(8)),
        te.Rule(name="head_noop", config=te.no_op_config()),
    ]
    return te.quantize(m, policy)


def _train_a_little(qat, rng):
    x = rng.normal(size=(16, 10, 10, 2)).astype(np.float32)
    y = rng.normal(size=(16, 3)).astype(np.float32)
    qat.compile(keras.optimizers.Adam(1e-3), "mse")
    qat.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return x


@pytest.mark.slow
# ".keras" is not offered: tfmot 0.8.1's own QuantizeLayer cannot be loaded from it
# (it creates its variables twice; plain tfmot.quantize_model fails the same way).
@pytest.mark.parametrize("fmt", ["h5", "savedmodel"])
def test_round_trip_keeps_predictions_and_every_variable(fmt, tmp_path, rng):
    qat = every_object_model()
    x = _train_a_little(qat, rng)
    path = tmp_path / {"h5": "m.h5", "savedmodel": "sm"}[fmt]
    if fmt == "savedmodel":
        qat.save(str(path), save_traces=False)
    else:
        qat.save(str(path))
    with te.quantize_scope():
        back = keras.models.load_model(str(path))
    # every variable, bit for bit, in the same order (names may be re-uniquified)
    assert len(qat.weights) == len(back.weights)
    for va, vb in zip(qat.weights, back.weights):
        assert va.name.split("/")[-1] == vb.name.split("/")[-1]
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.name)
    np.testing.assert_array_equal(qat.predict(x, verbose=0), back.predict(x, verbose=0))
    # the quantizers and configs come back equal, not just compatible
    for la, lb in zip(qat.layers, back.layers):
        if hasattr(la, "quantize_config"):
            assert la.quantize_config.get_config() == lb.quantize_config.get_config()


def test_custom_objects_lists_every_class():
    objs = te.custom_objects()
    for cls in (MinMaxQuantizer, PowerOfTwoQuantizer, FixedRangeQuantizer, LSQQuantizer,
                te.LayerQuantizeConfig):
        assert objs[cls.__name__] is cls
        assert objs[f"tfmot_ext>{cls.__name__}"] is cls


_WEIGHT_QS = {
    "minmax_pc": lambda bits: MinMaxQuantizer(bits, per_channel=True, symmetric=True,
                                              narrow_range=True),
    "minmax_pt": lambda bits: MinMaxQuantizer(bits, symmetric=True, narrow_range=True),
    "pow2": lambda bits: PowerOfTwoQuantizer(bits, per_channel=True),
    "lsq": lambda bits: LSQQuantizer(bits, per_channel=True),
}
_BLOCKS = ("conv", "conv_bn_relu", "dw_bn_relu6", "conv_relu")


def _random_model(blocks, qnames, bits, seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = inp
    policy = []
    for i, (kind, qname, b) in enumerate(zip(blocks, qnames, bits)):
        name = f"b{i}"
        if kind == "dw_bn_relu6":
            x = L.DepthwiseConv2D(3, padding="same", name=name)(x)
            cfg = te.depthwise_conv_config(weight_q=_WEIGHT_QS[qname](b))
        else:
            x = L.Conv2D(4, 3, padding="same", name=name,
                         activation="relu" if kind == "conv_relu" else None)(x)
            cfg = te.conv_config(weight_q=_WEIGHT_QS[qname](b))
        if kind in ("conv_bn_relu", "dw_bn_relu6"):
            x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
            x = L.ReLU(6.0 if kind == "dw_bn_relu6" else None, name=f"{name}_act")(x)
        policy.append(te.Rule(name=name, config=cfg))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return te.quantize(keras.Model(inp, L.Dense(2, name="fc")(x)), policy)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(_BLOCKS), st.sampled_from(sorted(_WEIGHT_QS)),
                          st.sampled_from([2, 4, 8])), min_size=1, max_size=3),
       st.sampled_from(["h5", "savedmodel"]))
def test_random_models_round_trip_bit_for_bit(spec, fmt):
    """Random small QAT models (plain, folded, depthwise; every weight quantizer; 2-8
    bits): saved and loaded, every variable and every prediction is identical."""
    import tempfile

    blocks, qnames, bits = zip(*spec)
    qat = _random_model(blocks, qnames, bits, seed=len(spec))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
    qat.compile(keras.optimizers.Adam(1e-3), "mse")
    qat.fit(x, rng.normal(size=(8, 2)).astype(np.float32), epochs=1, verbose=0)
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/m.h5" if fmt == "h5" else f"{d}/sm"
        if fmt == "h5":
            qat.save(path)
        else:
            qat.save(path, save_traces=False)
        with te.quantize_scope():
            back = keras.models.load_model(path)
    assert len(qat.weights) == len(back.weights)
    for va, vb in zip(qat.weights, back.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.name)
    np.testing.assert_array_equal(qat.predict(x, verbose=0), back.predict(x, verbose=0))
