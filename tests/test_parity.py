"""parity: the weight comparison and the report's verdict, on constructed inputs.

Each case builds an extracted layer and the TFLite weight tensors it should (or should
not) match, so the judgement is checked against the closed form of each rule: equal
integers and scales, the converter's dropped zero bias, a layer left float in QAT, and
the half-LSB rule for a kernel the converter re-gridded.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import pytest

from tfmot_ext.errors import ParityError
from tfmot_ext.matching import TensorMatch
from tfmot_ext.params import LayerQuantParams, QuantizedModelParams, TensorQuant
from tfmot_ext.parity import OutputParity, ParityReport, WeightParity, weight_parity
from tfmot_ext.tflite import WeightTensor


def _dense(bits: int = 8, bias: bool = True) -> LayerQuantParams:
    rng = np.random.default_rng(0)
    q = (1 << (bits - 1)) - 1
    k = rng.integers(-q, q + 1, (4, 3)).astype(np.int8)
    s = np.float32(0.02)
    return LayerQuantParams(
        "fc", "Dense", ("x",), True, bits=bits, symmetric=True, narrow_range=True,
        kernel_attr="kernel", kernel_int=k, kernel_scale=np.asarray(s),
        kernel_zero_point=np.asarray(0, np.int32), fake_quant_scale=np.asarray(s),
        bias=np.float32([0.1, -0.2, 0.0]) if bias else None,
        bias_int=np.int32([20, -40, 0]) if bias else None,
        bias_scale=np.asarray(np.float32(0.005)) if bias else None,
        input=TensorQuant(0.25, 0, 8, -32.0, 31.75, -32.0, 31.75))


def _params(*layers: LayerQuantParams) -> QuantizedModelParams:
    return QuantizedModelParams(OrderedDict((p.name, p) for p in layers), (), "test")


def _tensor(p: LayerQuantParams, **kw: object) -> WeightTensor:
    assert p.kernel_int is not None
    base = WeightTensor(
        "FULLY_CONNECTED", f"model/{p.name}/MatMul", p.kernel_int.T.copy(),
        np.atleast_1d(np.float32(p.kernel_scale)),
        None if p.bias_int is None else p.bias_int.copy(),
        None if p.bias_scale is None else np.atleast_1d(np.float32(p.bias_scale)),
        0.25, 0, 0.1, 0)
    return dataclasses.replace(base, **kw)


def test_equal_tensors_are_exact():
    p = _dense()
    (w,) = weight_parity(_params(p), [_tensor(p)])
    assert w == WeightParity("FULLY_CONNECTED", "fc", 8, True, True, True, True)
    assert w.exact


def test_one_changed_integer_or_scale_ulp_is_a_difference():
    p = _dense()
    k = p.kernel_int.T.copy()
    k[0, 0] += 1
    (w,) = weight_parity(_params(p), [_tensor(p, filter=k)])
    assert not w.kernel and w.scales and not w.exact
    s = np.nextafter(np.float32(0.02), np.float32(1), dtype=np.float32)
    (w,) = weight_parity(_params(p), [_tensor(p, filter_scales=np.atleast_1d(s))])
    assert w.kernel and not w.scales


def test_the_converter_drops_a_zero_bias_and_adds_one_to_a_biasless_layer():
    zero = dataclasses.replace(_dense(), bias_int=np.int32([0, 0, 0]))
    (w,) = weight_parity(_params(zero), [_tensor(zero, bias=None, bias_scales=None)])
    assert w.bias and w.bias_scales
    (w,) = weight_parity(_params(_dense()), [_tensor(_dense(), bias=None, bias_scales=None)])
    assert not w.bias  # a non-zero bias must be there
    bare = _dense(bias=False)
    (w,) = weight_parity(_params(bare), [_tensor(bare, bias=np.int32([0, 0, 0]),
                                                 bias_scales=np.float32([0.005]))])
    assert w.bias


def test_an_operator_of_a_float_layer_is_listed_not_judged():
    p = _dense()
    (w,) = weight_parity(_params(p), [_tensor(p, filter_name="model/attention/MatMul")])
    assert w.calibrated and w.layer is None and w.exact


def test_a_regridded_kernel_counts_within_half_a_tflite_lsb():
    """A 6-bit kernel the conversion did not embed: TFLite's own int8 grid on
    ``s * 31 / 127``; equal when every dequantized value is within half its step."""
    p = dataclasses.replace(_dense(6), kernel_int=np.int8([[31, -31, 5], [0, 1, -2],
                                                           [3, 4, 5], [6, 7, 8]]))
    s8 = np.float32(0.02 * 31 / 127)
    k8 = np.round(p.kernel_int.astype(np.float64) * 0.02 / float(s8)).astype(np.int8)
    (w,) = weight_parity(_params(p), [_tensor(p, filter=k8.T.copy(),
                                              filter_scales=np.atleast_1d(s8))])
    assert w.kernel and w.scales
    k8[1, 0] -= 2  # two int8 steps off: more than half an LSB
    (w,) = weight_parity(_params(p), [_tensor(p, filter=k8.T.copy(),
                                              filter_scales=np.atleast_1d(s8))])
    assert not w.kernel


def _report(within: float, weights_ok: bool = True, mismatched: int = 0) -> ParityReport:
    return ParityReport(
        (OutputParity("out", 100, 1.0, 0.1, within, 1.0),),
        (WeightParity("FULLY_CONNECTED", "fc", 8, weights_ok, True, True, True),),
        (TensorMatch("t", "FULLY_CONNECTED", "fc", 100, mismatched, min(mismatched, 1)),),
        "builtin")


@pytest.mark.parametrize("within,weights_ok,mismatched,default,strict", [
    (1.0, True, 0, True, True), (0.998, True, 0, False, False),
    (1.0, False, 0, False, False), (1.0, True, 3, True, False)])
def test_the_verdict_follows_its_thresholds(within, weights_ok, mismatched, default, strict):
    r = _report(within, weights_ok, mismatched)
    assert r.passed is default  # a property: ``if report.passed:`` means what it says
    assert dataclasses.replace(r, require_reference=True).passed is strict
    assert str(r).splitlines()[-1] == r.verdict
    assert r.verdict.startswith("PARITY OK" if default else "PARITY FAILED")
    assert r.reference_exact_fraction == pytest.approx(1 - mismatched / 100)
    if not default:
        with pytest.raises(ParityError, match="parity check failed"):
            r.check()
