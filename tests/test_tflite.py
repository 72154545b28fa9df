"""to_tflite: full-integer conversion, float-op detection, input validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_qat

import tfmot_ext as te
from tfmot_ext._compat import keras
from tfmot_ext.errors import ConversionError, UnsupportedModelError

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
    interp = te.interpreter(content)
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
