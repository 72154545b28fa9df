"""summary: what a QAT model quantizes, described per layer."""

from __future__ import annotations

import pytest

import tfmot_ext as te
from tfmot_ext._compat import keras, tfmot
from tfmot_ext.summary import describe_quantizer, quantizer_bits, weight_quantizers

L = keras.layers
_TQ = tfmot.quantization.keras.quantizers


@pytest.mark.parametrize("q,text", [
    (te.weight_quantizer(4), "4b per-channel sym narrow MinMax/last_value"),
    (te.activation_quantizer(8), "8b per-tensor asym MinMax/moving_average"),
    (te.FixedRangeQuantizer(0.0, 6.0, bits=8), "8b per-tensor FixedRange[0,6]"),
    (te.PowerOfTwoQuantizer(5), "5b per-tensor sym PowerOfTwo/last_value"),
    (te.LSQQuantizer(3, signed=False), "3b per-tensor unsigned LSQ"),
    (_TQ.LastValueQuantizer(num_bits=6, per_axis=True, symmetric=True, narrow_range=True),
     "6b per-channel sym narrow LastValue"),
])
def test_describe_quantizer_names_bits_granularity_symmetry_and_rule(q, text):
    assert describe_quantizer(q) == text
    assert quantizer_bits(q) == int(text.split("b ")[0])


def test_summary_rows_match_the_wrappers():
    """Invariants of every row: ``quantized`` iff something is quantized; a wrapped
    layer's weight rows are its weight quantizers (a folded layer's kernel first)."""
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(4, 3, use_bias=False)(inp)))
    x = L.Flatten()(x)
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(x)))
    rows = {r.name: r for r in te.summarize(qat)}
    for r in rows.values():
        assert r.quantized == bool(r.weights or r.activations or r.output)
    by_kind = {r.kind: r for r in rows.values()}
    assert by_kind["QuantizeLayer"].output.startswith("8b per-tensor asym")
    folded = by_kind["FoldedConv2DBatchNorm"]
    assert folded.weights[0][0] == "folded kernel" and "per-channel" in folded.weights[0][1]
    wrapper = qat.get_layer("quant_fc")
    assert rows["quant_fc"].weights == tuple(
        (a, describe_quantizer(q)) for a, q in weight_quantizers(wrapper))
    assert not by_kind["Flatten"].quantized
    table = te.format_summary(list(rows.values()))
    assert table.splitlines()[0].split() == ["layer", "type", "weights", "activation",
                                             "output"]
    for line, r in zip(table.splitlines()[2:], rows.values()):
        assert line.startswith(r.name) and line.rstrip().endswith("float") == (not r.quantized)
