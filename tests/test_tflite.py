"""to_tflite: full-integer conversion, float-op detection, input validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_qat

import tfmot_ext as te
from tfmot_ext._compat import keras, tfmot
from tfmot_ext.errors import ConversionError, UnsupportedModelError
from tfmot_ext.tflite import interpreter, regridded_weights, unset_ranges, wide_activations

L = keras.layers


@pytest.fixture
def qat_and_data(rng):
    return small_qat(rng)


@pytest.mark.slow
@pytest.mark.parametrize("int8_io", [True, False])
def test_full_integer_conversion_has_no_float_ops(qat_and_data, int8_io):
    qat, data = qat_and_data
    content = te.to_tflite(qat, data, int8_io=int8_io)
    assert te.float_ops(content, allow_io=not int8_io) == []
    interp = interpreter(content)
    assert interp.get_input_details()[0]["dtype"] == (np.int8 if int8_io else np.float32)
    if not int8_io:  # float I/O: the edges are QUANTIZE/DEQUANTIZE, found when not allowed
        assert te.float_ops(content)


@pytest.mark.slow
def test_float_model_needs_ranges_and_bad_data_is_named(qat_and_data):
    qat, data = qat_and_data
    with pytest.raises(ConversionError, match=r"shape \(16, 6, 6\)"):
        te.to_tflite(qat, data[..., 0])
    with pytest.raises(ConversionError, match="empty"):
        te.to_tflite(qat, data[:0])
    bad = data.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ConversionError, match="NaN"):
        te.to_tflite(qat, bad)


def test_keras3_model_is_rejected():
    import keras as keras3

    m3 = keras3.Sequential([keras3.Input((3,)), keras3.layers.Dense(2)])
    with pytest.raises(UnsupportedModelError, match="Keras 3"):
        te.to_tflite(m3, np.zeros((1, 3), np.float32))


class _TfmotSixBitDense(tfmot.quantization.keras.QuantizeConfig):
    """A user's tfmot config: tfmot's own LastValueQuantizer at 6 bits on the kernel."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, tfmot.quantization.keras.quantizers.LastValueQuantizer(
            num_bits=6, per_axis=False, symmetric=True, narrow_range=True))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


@pytest.mark.slow
def test_low_widths_deploy_embedded_and_foreign_ones_are_named(rng, caplog):
    """tfmot_ext's 6-bit kernel (a folded Conv+BN here) deploys as trained, embedded in
    int8 (test_extract.py::test_parity_with_tflite checks every integer): no warning.
    A tfmot quantizer at 6 bits is not embedded; the converter re-grids it, and
    conversion names that layer."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, use_bias=False, name="c")(inp)))
    model = keras.Model(inp, L.Dense(3, name="fc")(L.Flatten()(x)))
    data = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    with tfmot.quantization.keras.quantize_scope({"_TfmotSixBitDense": _TfmotSixBitDense}):
        for foreign in (False, True):
            policy = [te.Rule(name="c", config=te.conv_config(6))]
            if foreign:
                policy.append(te.Rule(name="fc", config=_TfmotSixBitDense()))
            qat = te.quantize(model, policy)
            qat(data, training=True)
            caplog.clear()
            with caplog.at_level("WARNING", logger="tfmot_ext.tflite"):
                content = te.to_tflite(qat, data)
            named = regridded_weights(qat)
            warned = [r.getMessage() for r in caplog.records if "re-grids" in r.getMessage()]
            judged = {w.layer: w for w in te.verify(qat, content, data, reference=False).weights}
            assert judged["quant_c"].exact and judged["quant_c"].bits == 6, judged
            if foreign:
                assert named == ["quant_fc: kernel (6 bits)"]
                assert len(warned) == 1 and "quant_fc: kernel (6 bits)" in warned[0]
            else:
                assert named == [] and warned == []


@pytest.mark.slow
def test_run_int8_runs_the_kernels_verify_compares_against(qat_and_data):
    """``run_int8``'s default kernels are the builtin ones, which ``verify`` uses and the
    reference reproduces with ``rounding="optimized"``: equal, bit for bit."""
    qat, data = qat_and_data
    content = te.to_tflite(qat, data)
    ref = te.run_reference(te.extract(qat), data, rounding="optimized").output.values
    np.testing.assert_array_equal(te.run_int8(content, data), ref)


def _conv_model() -> keras.Model:
    inp = keras.Input((6, 6, 2))
    x = L.Flatten()(L.Conv2D(3, 3, activation="relu", name="conv")(inp))
    return keras.Model(inp, L.Dense(2, name="fc")(x))


def test_an_uncalibrated_model_is_refused_naming_its_ranges(rng):
    """What a post-training user tries first: quantize, then convert without training.
    The converter would deploy the initial [0, 0] ranges (measured before: int8
    accuracy 0.13 against 0.52 float); now the conversion stops and says why."""
    qat = te.quantize(_conv_model())
    data = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    assert unset_ranges(qat)  # every activation range: nothing trained yet
    with pytest.raises(ConversionError, match=r"quant_conv: post_activation.*never set.*fit"):
        te.to_tflite(qat, data)
    qat(data, training=True)  # one training-mode pass sets them
    assert unset_ranges(qat) == []
    assert te.float_ops(te.to_tflite(qat, data)) == []


def test_sixteen_bit_activations_are_refused_before_the_converter_runs(rng):
    """``conv_config(8, activation_bits=16)`` trains, but int8 TFLite cannot deploy it;
    the error names the layer and the fix instead of the converter's INT16 != INT8."""
    policy = [te.Rule(name="conv", config=te.conv_config(8, activation_bits=16))]
    qat = te.quantize(_conv_model(), policy)
    data = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    qat(data, training=True)
    assert wide_activations(qat) == ["quant_conv: activation (16 bits)"]
    with pytest.raises(ConversionError, match=r"quant_conv: activation \(16 bits\).*"
                                              r"activation_bits=8"):
        te.to_tflite(qat, data)


@pytest.mark.slow
def test_verify_says_when_the_tflite_belongs_to_another_model(qat_and_data, rng):
    """As the user met it: a .tflite of another model gave '(float in QAT) ... quantized
    by the converter' rows and exit 1; now verify says the two do not belong together."""
    qat, data = qat_and_data
    inp = keras.Input((6, 6, 2))  # same input shape, other layer names
    other = te.quantize(keras.Model(inp, L.Dense(2, name="d9")(L.Flatten()(
        L.Conv2D(3, 3, name="c9")(inp)))))
    other_data = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    other(other_data, training=True)
    with pytest.raises(te.TfmotExtError, match=r"does not belong to model.*none of its 2 "
                                               r"weighted operators.*to_tflite"):
        te.verify(qat, te.to_tflite(other, other_data), data)
    inp = keras.Input((4, 4, 2))
    small = te.quantize(keras.Model(inp, L.Dense(2)(L.Flatten()(L.Conv2D(2, 3)(inp)))))
    x4 = rng.normal(size=(4, 4, 4, 2)).astype(np.float32)
    small(x4, training=True)
    with pytest.raises(te.TfmotExtError, match=r"input has shape \(4, 4, 2\), the model's "
                                               r"\(6, 6, 2\)"):
        te.verify(qat, te.to_tflite(small, x4), data)


def test_a_dead_relu_in_a_trained_model_is_warned_not_refused(rng, caplog):
    """A trained model whose one ReLU never fires keeps a [0, 0] range; that is not an
    uncalibrated model (found by review: the conversion was refused)."""
    inp = keras.Input((6, 6, 2))
    dead = L.Conv2D(3, 3, activation="relu", name="dead",
                    bias_initializer=keras.initializers.Constant(-100.0))(inp)
    live = L.Conv2D(3, 3, activation="relu", name="live")(inp)
    x = L.Concatenate()([L.Flatten()(dead), L.Flatten()(live)])
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(x)))
    data = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    qat(data, training=True)
    assert unset_ranges(qat) == ["quant_dead: post_activation"]
    with caplog.at_level("WARNING", logger="tfmot_ext.tflite"):
        te.to_tflite(qat, data)
    assert "quant_dead: post_activation" in caplog.text and "dead ReLU" in caplog.text
