"""Per-layer quantization report: SQNR against closed forms, and the HTML page."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tfmot_ext as te
from tfmot_ext import qmath
from tfmot_ext._compat import keras
from tfmot_ext.report import layer_reports, sqnr_db

L = keras.layers


def test_sqnr_closed_form():
    s = np.array([3.0, 4.0])
    assert sqnr_db(s, s * 0.1) == pytest.approx(20.0)
    assert sqnr_db(s, np.zeros(2)) == math.inf
    assert sqnr_db(np.zeros(2), s) == -math.inf


@pytest.mark.slow
def test_layer_reports_measure_each_quantizer(rng, tmp_path):
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(6, 3, activation="relu", name="c8")(inp)
    x = L.Conv2D(6, 3, activation="relu", name="c4")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(x)),
                      [te.Rule(name="c4", config=te.conv_config(4))])
    data = rng.normal(size=(64, 8, 8, 2)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(64, 2)), epochs=2, verbose=0)
    params = te.extract(qat)
    reps = {r.name: r for r in layer_reports(qat, data, params)}
    # the input quantizer: float input vs its fake-quant, computed here independently
    q = params["quantize_layer"].output
    fq = qmath.fake_quant(data, q.range_min, q.range_max, 8)
    assert reps["quantize_layer"].activation_sqnr_db == pytest.approx(
        sqnr_db(data, data - fq), rel=1e-6)
    # ~6 dB per bit: the 4-bit kernel loses about 24 dB against the 8-bit one
    c8, c4 = reps["quant_c8"].weight_sqnr_db, reps["quant_c4"].weight_sqnr_db
    assert 15 < c8 - c4 < 35, (c8, c4)
    for r in reps.values():
        assert (r.activation_bits is None) == (r.activation_sqnr_db is None) == (
            r.saturated is None)
        if r.activation_sqnr_db is not None:
            assert 0 <= r.saturated <= 1 and r.activation_sqnr_db > 10, r
    # 8-bit activations: roughly 6 dB x 8 minus the crest factor of the signal
    assert reps["quant_c8"].activation_sqnr_db > 25
    te.write_html_report(list(reps.values()), tmp_path / "r.html")
    assert "quant_c4" in (tmp_path / "r.html").read_text()
