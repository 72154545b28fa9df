"""Shared fixtures: seeded RNGs, a clean Keras session, small models."""

from __future__ import annotations

import numpy as np
import pytest

from tfmot_ext._compat import keras, tf

L = keras.layers


@pytest.fixture(autouse=True)
def _clean_session():
    keras.backend.clear_session()
    tf.random.set_seed(0)
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def build_cnn(input_shape=(12, 12, 1), classes=3, bn_momentum=0.9, multiplier=2) -> keras.Model:
    """Conv/BN/ReLU -> DepthwiseConv/BN/ReLU6 -> Conv -> pool -> Dense: every preset kind."""
    inp = keras.Input(input_shape)
    x = L.Conv2D(4, 3, name="conv_first")(inp)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=multiplier, name="dw")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn2")(x)
    x = L.ReLU(6.0, name="relu2")(x)
    x = L.Conv2D(6, 1, activation="relu", name="pw")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(classes, name="head")(x)
    return keras.Model(inp, out, name="cnn")


@pytest.fixture
def cnn() -> keras.Model:
    return build_cnn()


def convert_int8(model, data, int8_io: bool = True) -> bytes:
    """Full-integer TFLite conversion (test helper over tfmot_ext.to_tflite)."""
    from tfmot_ext.tflite import to_tflite

    return to_tflite(model, data, int8_io=int8_io)


def ptq_int8(model, representative) -> bytes:
    """The converter's own full-integer post-training conversion of a float model
    (int8 I/O), calibrated on ``representative()`` (lone-operator test models)."""
    import warnings

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(conv.convert())


def tflite_weight_ops(model_bytes: bytes) -> list[dict]:
    """Conv/DepthwiseConv/FullyConnected ops of a TFLite model (as dicts, for tests)."""
    from dataclasses import asdict

    from tfmot_ext.tflite import weight_tensors

    out = []
    for w in weight_tensors(model_bytes):
        d = asdict(w)
        d["input_scale"] = np.float32([w.input_scale])
        d["input_zero_point"] = np.int32([w.input_zero_point])
        d["output_scale"] = np.float32([w.output_scale])
        d["output_zero_point"] = np.int32([w.output_zero_point])
        out.append(d)
    return out


def keras_layout(op: str, tfl_filter: np.ndarray, keras_shape) -> np.ndarray:
    from tfmot_ext.tflite import keras_layout as layout

    return layout(op, tfl_filter, tuple(keras_shape))


def small_qat(rng, epochs: int = 1):
    """A trained Conv -> Flatten -> Dense QAT model on (6, 6, 2) inputs, and its data."""
    import tfmot_ext as te

    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, activation="relu", name="conv")(inp)
    x = L.Flatten()(x)
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(x)))
    data = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(16, 2)), epochs=epochs, verbose=0)
    return qat, data
