"""The tfmot comprehensive guide's QAT scenarios, written with tfmot_ext's objects.

Each converts to TFLite with ``tf.lite.Optimize.DEFAULT`` where the guide does, and
checks that the TFLite model computes what the QAT model computes: within one
output quantization step on every element (the converter re-derives nothing; the
only difference allowed is a rounding flip of the final requantization).
"""

from __future__ import annotations

import numpy as np
import pytest

import tfmot_ext as te
from tfmot_ext import qmath
from tfmot_ext._compat import QuantizeWrapper, keras, tf, tfmot
from tfmot_ext.quantizers import FixedRangeQuantizer

L = keras.layers
qk = tfmot.quantization.keras

pytestmark = pytest.mark.slow


def guide_model() -> keras.Model:
    inp = keras.Input((20,))
    x = L.Dense(20, activation="relu", name="d1")(inp)
    x = L.Dense(16, name="d2")(x)
    x = L.ReLU(name="relu")(x)
    return keras.Model(inp, L.Dense(10, name="logits")(x))


def _fit(model, rng, n=64):
    x = rng.normal(size=(n, *model.input_shape[1:])).astype(np.float32)
    y = rng.integers(0, model.output_shape[-1], n)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return x


def _output_scale(qat) -> float:
    last = qat.layers[-1]
    names = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in last.weights}
    lo, hi = names.get("post_activation_min"), names.get("post_activation_max")
    if lo is None:
        lo, hi = names["output_min"], names["output_max"]
    lo, hi = qmath.widen_range(lo, hi)
    return float(qmath.nudge(lo, hi, 8).scale)


def _convert_and_compare(qat, x):
    conv = tf.lite.TFLiteConverter.from_keras_model(qat)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    interp = tf.lite.Interpreter(model_content=conv.convert())
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    got = []
    for row in x:
        interp.set_tensor(inp["index"], row[None])
        interp.invoke()
        got.append(interp.get_tensor(out["index"])[0])
    diff = np.abs(np.asarray(got) - qat.predict(x, verbose=0))
    step = _output_scale(qat)
    # one output step, plus float32 slack of the dequantized comparison
    assert diff.max() <= step * (1 + 1e-4), (diff.max(), step)
    return interp


def test_quantize_whole_model(rng):
    qat = te.quantize(guide_model())
    x = _fit(qat, rng)
    _convert_and_compare(qat, x)


def test_quantize_only_dense_layers(rng):
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(3, 3, activation="relu", name="conv")(inp)
    x = L.Flatten()(x)
    model = keras.Model(inp, L.Dense(4, name="dense")(x))
    policy = [te.Rule(layer_type=L.Dense, config="default"), te.Rule(config="skip")]
    qat = te.quantize(model, policy)
    wrapped = {la.layer.name: la for la in qat.layers if isinstance(la, QuantizeWrapper)}
    quantized_weights = {n for n, w in wrapped.items()
                         if w.quantize_config.get_weights_and_quantizers(w.layer)}
    assert quantized_weights == {"dense"}
    x = _fit(qat, rng)
    _convert_and_compare(qat, x)


def test_annotate_functional_and_sequential_style(rng):
    # functional: annotate while building, with tfmot_ext configs
    inp = keras.Input((20,))
    x = qk.quantize_annotate_layer(L.Dense(20, activation="relu"), te.dense_config(8))(inp)
    out = qk.quantize_annotate_layer(L.Dense(10), te.dense_config(4))(x)
    with te.quantize_scope():
        qat_f = qk.quantize_apply(keras.Model(inp, out))
    # sequential
    seq = qk.quantize_annotate_model(keras.Sequential([
        keras.Input((20,)),
        qk.quantize_annotate_layer(L.Dense(20, activation="relu"), te.dense_config(8)),
        L.Dense(10),
    ]))
    with te.quantize_scope():
        qat_s = qk.quantize_apply(seq)
    for qat in (qat_f, qat_s):
        x = _fit(qat, rng)
        _convert_and_compare(qat, x)


def test_checkpoint_to_h5_and_reload(rng, tmp_path):
    qat = te.quantize(guide_model())
    x = _fit(qat, rng)
    qat.save(str(tmp_path / "qat.h5"))
    with te.quantize_scope():
        back = keras.models.load_model(str(tmp_path / "qat.h5"))
    np.testing.assert_array_equal(back.predict(x, verbose=0), qat.predict(x, verbose=0))


def test_four_bit_weights_on_one_dense(rng):
    qat = te.quantize(guide_model(), [te.Rule(name="d2", config=te.dense_config(4))])
    x = _fit(qat, rng)
    w = qat.get_layer("quant_d2")
    kernel, quantizer, qvars = w._weight_vars[0]
    fq = quantizer(kernel, False, qvars).numpy()
    # per-tensor, symmetric, narrow: at most 15 levels k * s, k in [-7, 7]
    s = np.abs(fq).max() / 7
    assert len(np.unique(fq)) <= 15
    np.testing.assert_allclose(fq / s, np.round(fq / s), atol=1e-4)
    _convert_and_compare(qat, x)


def test_skip_activation_quantization_on_one_layer(rng):
    qat = te.quantize(guide_model(), [te.Rule(name="d1",
                                              config=te.dense_config(activation_bits=None))])
    names = [v.name for v in qat.get_layer("quant_d1").weights]
    assert not any("activation" in n for n in names)
    assert any("kernel_min" in n for n in names)
    _fit(qat, rng)


def test_custom_clip_quantizer(rng):
    # narrow range: TFLite int8 weights are symmetric in [-127, 127]
    cfg = te.LayerQuantizeConfig(weights={"kernel": FixedRangeQuantizer(-1.0, 1.0, 8, True)},
                                 activations={"activation": te.activation_quantizer()})
    model = guide_model()
    model.get_layer("d1").kernel.assign(model.get_layer("d1").kernel * 10.0)
    qat = te.quantize(model, [te.Rule(name="d1", config=cfg)])
    x = _fit(qat, rng)
    kernel, quantizer, qvars = qat.get_layer("quant_d1")._weight_vars[0]
    fq = quantizer(kernel, False, qvars).numpy()
    r = qmath.nudge(-1.0, 1.0, 8, narrow_range=True)
    assert fq.min() >= r.nudged_min and fq.max() <= r.nudged_max
    _convert_and_compare(qat, x)


@keras.utils.register_keras_serializable(package="tfmot_ext_tests")
class CustomDense(L.Dense):
    """The guide's custom layer: a Dense subclass tfmot does not know."""


def test_custom_layer_subclassing_dense(rng, tmp_path):
    inp = keras.Input((20,))
    x = CustomDense(20, activation="relu", name="custom")(inp)
    model = keras.Model(inp, L.Dense(10, name="logits")(x))
    qat = te.quantize(model, [te.Rule(layer_type=CustomDense, config=te.dense_config(8))])
    x = _fit(qat, rng)
    _convert_and_compare(qat, x)
    qat.save(str(tmp_path / "c.h5"))
    with te.quantize_scope({"CustomDense": CustomDense}):
        back = keras.models.load_model(str(tmp_path / "c.h5"))
    np.testing.assert_array_equal(back.predict(x, verbose=0), qat.predict(x, verbose=0))
