"""Real architectures: keras.applications families, a text model, an LSTM model.

The families run through ``benchmarks/zoo.py``'s ``run_family`` (quantize with
folding, one training step, int8 conversion, extraction parity); the full table of
all 18 families is ``python benchmarks/zoo.py`` (docs/zoo.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import tfmot_ext as te
from tfmot_ext._compat import keras
from tfmot_ext.errors import UnsupportedLayerError
from tfmot_ext.graph import flatten
from tfmot_ext.tflite import interpreter

L = keras.layers
_spec = importlib.util.spec_from_file_location(
    "zoo", Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py")
assert _spec is not None and _spec.loader is not None
zoo = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("zoo", zoo)
_spec.loader.exec_module(zoo)


# one family per kind of wall tfmot hits (see the zoo issue), end to end, with every
# TFLite tensor replayed bit for bit by the integer reference (the optimized kernels):
# RegNetX002: TFOpLambda (x + y), Rescaling, grouped convolutions;
# MobileNetV3Small: hard-swish as TF ops with constants, Rescaling (x / 127.5 - 1, every
# pixel a rounding tie), squeeze-excite Multiply layers with keep-dims pooling;
# EfficientNetB0: Rescaling + Normalization front end (the preprocessing tfmot refuses),
# swish convolutions split from their activation, squeeze-excite Multiply layers.
# RegNetY002 (squeeze-excite with a TF-op multiply) and ResNet50V2 (pre-activation BN,
# which the fuzzer's standalone BN cases also cover) ran here too; they take 140 s of
# the CI budget and are in `python benchmarks/zoo.py`'s run of all 18 (docs/zoo.md)
@pytest.mark.slow
@pytest.mark.parametrize("family", ["RegNetX002", "MobileNetV3Small", "EfficientNetB0"])
def test_family_quantizes_trains_converts_with_exact_extraction(family):
    r = zoo.run_family(family, with_tfmot=False)
    assert (r.quantize, r.train, r.convert) == ("ok", "ok", "ok"), r
    assert r.weights_exact and r.weighted_ops > 10, r
    assert r.reference == "100.00% exact", r


def test_mobilenet_v3_plan_covers_every_layer():
    """MobileNetV3Small: hard-swish as TF ops (x + 3.0, * 1/6), Rescaling, Multiply."""
    decisions = te.plan(zoo.build("MobileNetV3Small"))
    kinds = {type(v).__name__ if not isinstance(v, str) else v for v in decisions.values()}
    assert "__pending__" not in kinds
    assert any(name.startswith("tf.__operators__.add") for name in decisions)


@pytest.mark.slow
def test_nested_family_quantizes_trains_converts_with_exact_extraction():
    """ConvNeXtTiny: a Sequential stem nested in the model, LayerNormalization,
    LayerScale, GELU; tfmot refuses it outright ("a keras Model inside another").
    Flattened, it trains, converts and deploys every weighted layer's trained
    integers; the integer reference has no LayerNormalization kernel (docs/zoo.md)."""
    model = zoo.build("ConvNeXtTiny")
    assert any(isinstance(la, keras.Model) for la in model.layers)
    # the first step of te.quantize (run inside run_family)
    assert not any(isinstance(la, keras.Model) for la in flatten(model).layers)
    r = zoo.run_family("ConvNeXtTiny", with_tfmot=False)
    assert (r.quantize, r.train, r.convert) == ("ok", "ok", "ok"), r
    assert r.weights_exact and r.weighted_ops > 10, r
    assert r.reference == "n/a: no LayerNormalization", r


def test_custom_layer_gets_a_message_naming_it_and_the_fix():
    class Scale(L.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(Scale(name="my_scale")(inp)))
    with pytest.raises(UnsupportedLayerError, match=r"'my_scale' \(Scale\).*Rule\(name="):
        te.plan(model)
    assert te.plan(model, unsupported="output_only")["my_scale"].output is not None
    assert te.plan(model, unsupported="skip")["my_scale"] == "skip"


# subclassed models: tests/test_annotate.py::test_subclassed_and_already_quantized_...


def _text_model():
    keras.utils.set_random_seed(0)
    tok = keras.Input((16,), dtype="int32")
    h = L.Embedding(100, 32, name="emb")(tok)
    a = L.MultiHeadAttention(num_heads=2, key_dim=16, name="mha")(h, h)
    h = L.LayerNormalization(name="ln")(L.Add(name="res")([h, a]))
    h = L.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(tok, L.Dense(3, name="fc")(h))


@pytest.mark.slow
def test_text_model_policy_and_int8_conversion():
    """Embedding (8-bit table), MultiHeadAttention (float in QAT, quantized by the
    converter), LayerNormalization (output quantized), Dense: converts to an
    all-integer model with int32 token input; the QAT-quantized Dense is bit-exact."""
    model = _text_model()
    decisions = te.plan(model)
    assert decisions["mha"] == "skip" and decisions["ln"].output is not None
    assert set(decisions["emb"].weights) == {"embeddings"}
    qat = te.quantize(model)
    x = np.random.default_rng(0).integers(0, 100, size=(16, 16)).astype(np.int32)
    qat.compile("sgd", "mse")
    qat.train_on_batch(x, np.zeros((16, 3), np.float32))
    content = te.to_tflite(qat, x)
    interp = interpreter(content)
    assert interp.get_input_details()[0]["dtype"] == np.int32
    ops = {d["op_name"] for d in interp._get_ops_details()}
    assert {"GATHER", "BATCH_MATMUL", "SOFTMAX", "FULLY_CONNECTED"} <= ops
    report = te.verify(qat, content, x[:8])
    fc = [w for w in report.weights if w.layer == "quant_fc"]
    assert len(fc) == 1 and fc[0].exact and not fc[0].calibrated
    # MultiHeadAttention's four projections: quantized by the converter, listed as such
    assert sum(w.calibrated for w in report.weights) == 4


@pytest.mark.slow
def test_lstm_model_converts_to_the_integer_sequence_op():
    """An LSTM stays float in QAT (wrapped, the converter cannot fuse it) and converts,
    with a static batch, to TFLite's integer UNIDIRECTIONAL_SEQUENCE_LSTM. Its output
    gets a trained range (an Identity after it), so the Dense after it deploys the
    trained integers (without it, the converter calibrated that input: bias DIFF)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 4))
    model = keras.Model(inp, L.Dense(2, name="fc")(L.LSTM(8, name="lstm")(inp)))
    decisions = te.plan(model)
    assert decisions["lstm"] == "skip" and decisions["lstm_range"].output is not None
    qat = te.quantize(model)
    x = np.random.default_rng(0).normal(size=(16, 12, 4)).astype(np.float32)
    qat.compile("sgd", "mse")
    qat.train_on_batch(x, np.zeros((16, 2), np.float32))
    content = te.to_tflite(qat, x)
    ops = {d["op_name"] for d in interpreter(content)._get_ops_details()}
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops
    assert te.run_int8(content, x[:4]).shape == (4, 2)
    fc = [w for w in te.verify(qat, content, x[:8]).weights if w.layer == "quant_fc"]
    assert len(fc) == 1 and fc[0].exact


@pytest.mark.slow
def test_inception_resnet_scale_layer_block_deploys_as_trained():
    """InceptionResNetV2's residual ``x + scale * branch`` is its own CustomScaleLayer
    (tfmot has no config for it): it becomes an Add with the scale folded into the
    branch's last conv, so every deployed tensor has a trained range; converted,
    extraction exact, and the integer reference replays every tensor bit for bit. The
    whole family (75x75, about 800 layers) is in benchmarks/zoo.py."""
    scale_layer = sys.modules[keras.applications.InceptionResNetV2.__module__].CustomScaleLayer
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(8, 3, padding="same")(inp)))
    up = L.Conv2D(8, 1, name="up")(L.Conv2D(4, 1, activation="relu", name="branch")(x))
    x = L.Activation("relu")(scale_layer(0.17, name="block_scale")([x, up]))
    model = keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    qat = te.quantize(model)
    assert not any(type(la).__name__ == "CustomScaleLayer" for la in qat.layers)
    x8 = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    qat.compile("sgd", "mse")
    qat.train_on_batch(x8, np.zeros((8, 3), np.float32))
    report = te.verify(qat, te.to_tflite(qat, x8), x8)
    assert report.weights_exact and len(report.weights) == 4
    assert report.reference_exact_fraction == 1.0
