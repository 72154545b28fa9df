"""qmath: the NumPy twins are bit-exact with TensorFlow's FakeQuant kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tfmot_ext import qmath
from tfmot_ext._compat import tf
from tfmot_ext.errors import ConfigError

bits_st = st.integers(2, 16)
mag_st = st.sampled_from([1e-4, 1e-2, 1.0, 37.0, 1e3])


@settings(max_examples=60, deadline=None)
@given(bits=bits_st, narrow=st.booleans(), lo=st.floats(0.01, 1.0), hi=st.floats(0.01, 1.0),
       mag=mag_st, seed=st.integers(0, 2**16))
def test_fake_quant_per_tensor_matches_tf_bit_exactly(bits, narrow, lo, hi, mag, seed):
    rng = np.random.default_rng(seed)
    x_min, x_max = np.float32(-lo * mag), np.float32(hi * mag)
    x = (rng.normal(size=512) * mag * 1.3).astype(np.float32)
    ref = tf.quantization.fake_quant_with_min_max_vars(
        x, x_min, x_max, num_bits=bits, narrow_range=narrow).numpy()
    np.testing.assert_array_equal(qmath.fake_quant(x, x_min, x_max, bits, narrow), ref)


@settings(max_examples=40, deadline=None)
@given(bits=bits_st, narrow=st.booleans(), mag=mag_st, seed=st.integers(0, 2**16))
def test_fake_quant_per_channel_matches_tf_bit_exactly(bits, narrow, mag, seed):
    rng = np.random.default_rng(seed)
    c = 7
    x_min = (-rng.uniform(0.01, 1, c) * mag).astype(np.float32)
    x_max = (rng.uniform(0.01, 1, c) * mag).astype(np.float32)
    x = (rng.normal(size=(64, c)) * mag).astype(np.float32)
    ref = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, x_min, x_max, num_bits=bits, narrow_range=narrow).numpy()
    np.testing.assert_array_equal(qmath.fake_quant(x, x_min, x_max, bits, narrow, axis=1), ref)


@settings(max_examples=60, deadline=None)
@given(bits=bits_st, narrow=st.booleans(), mag=mag_st, per_channel=st.booleans(),
       seed=st.integers(0, 2**16))
def test_integers_dequantize_to_fake_quant_and_stay_in_range(bits, narrow, mag, per_channel,
                                                             seed):
    rng = np.random.default_rng(seed)
    shape = (5,) if per_channel else ()
    x_min = (-rng.uniform(0.0, 1, shape) * mag).astype(np.float32)
    x_max = (rng.uniform(0.01, 1, shape) * mag).astype(np.float32)
    axis = 1 if per_channel else None
    x = (rng.normal(size=(40, 5)) * mag).astype(np.float32)
    r = qmath.nudge(x_min, x_max, bits, narrow)
    q = qmath.quantize_to_int(x, r, axis)
    qmin, qmax = qmath.integer_range(bits, narrow)
    assert q.min() >= qmin and q.max() <= qmax
    zp = r.zero_point.reshape(1, -1) if per_channel else r.zero_point
    sc = r.scale.reshape(1, -1) if per_channel else r.scale
    deq = ((q - zp).astype(np.float32) * sc).astype(np.float32)
    np.testing.assert_array_equal(deq, qmath.fake_quant(x, x_min, x_max, bits, narrow, axis))
    # NudgedRange invariants
    assert np.all(r.scale > 0)
    assert np.all((r.zero_point >= qmin) & (r.zero_point <= qmax))


@pytest.mark.parametrize("bits", range(2, 17))
@pytest.mark.parametrize("narrow", [False, True])
def test_integer_range_closed_form(bits, narrow):
    qmin, qmax = qmath.integer_range(bits, narrow)
    assert qmax == 2 ** (bits - 1) - 1
    assert qmin == -(2 ** (bits - 1)) + int(narrow)


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12, 16])
@pytest.mark.parametrize("narrow", [False, True])
def test_symmetric_range_gives_zero_point_zero(bits, narrow, rng):
    lo, hi = np.float32(-0.7), np.float32(1.3)
    smin, smax = qmath.symmetric_range(lo, hi, bits, narrow)
    r = qmath.nudge(smin, smax, bits, narrow)
    assert int(r.zero_point) == 0
    _, qmax = qmath.integer_range(bits, narrow)
    # the grid is scale * [qmin .. qmax] with scale = a / qmax (within float32 rounding)
    assert math.isclose(float(r.scale), 1.3 / qmax, rel_tol=1e-6)
    assert math.isclose(float(r.nudged_max), 1.3, rel_tol=1e-6)


def test_nudge_moves_zero_onto_the_grid():
    # [-0.1, 1.0] at 2 bits: zp_from_min = 0.2727 -> 0, so the range slides to [0, 1.1]
    r = qmath.nudge(-0.1, 1.0, bits=2)
    assert int(r.zero_point) == -2  # unsigned 0 -> signed -2
    assert float(r.nudged_min) == 0.0
    np.testing.assert_allclose(float(r.nudged_max), 1.1, rtol=1e-6)


def test_zero_zero_range_outputs_zero_like_tf():
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    out = qmath.fake_quant(x, 0.0, 0.0, 8)
    ref = tf.quantization.fake_quant_with_min_max_vars(x, 0.0, 0.0).numpy()
    np.testing.assert_array_equal(out, ref)
    assert not np.isnan(out).any()


@pytest.mark.parametrize("value", [0.3, 0.25, 1.0, 3e-9, 7.5, 1e-30 * 1e20])
def test_pow2_ceil_closed_form(value):
    got = float(qmath.pow2_ceil(np.float32(value)))
    v = float(np.float32(value))
    assert got == 2.0 ** math.ceil(math.log2(v))


@settings(max_examples=60, deadline=None)
@given(bits=bits_st, narrow=st.booleans(), sym=st.booleans(), lo=st.floats(0, 50),
       hi=st.floats(1e-3, 50))
@example(bits=2, narrow=True, sym=False, lo=16.0, hi=33.0)  # zero-point rounding fell short
def test_power_of_two_range_has_power_of_two_scale_and_covers(bits, narrow, sym, lo, hi):
    rmin, rmax = qmath.power_of_two_range(-lo, hi, bits, narrow, sym)
    r = qmath.nudge(rmin, rmax, bits, narrow)
    s = float(r.scale)
    assert s == 2.0 ** round(math.log2(s))
    assert float(r.nudged_max) >= np.float32(hi) * (1 - 1e-6)
    if sym:
        assert int(r.zero_point) == 0
        assert float(r.nudged_min) <= -np.float32(lo) * (1 - 1e-6) or (
            narrow is False and float(r.nudged_min) <= -lo)


def test_widen_range_keeps_zero_and_min_width():
    lo, hi = qmath.widen_range(0.5, 0.5)
    assert float(lo) == 0.0 and float(hi) == 0.5
    lo, hi = qmath.widen_range(0.0, 0.0)
    assert float(hi) - float(lo) >= np.float32(qmath.MIN_RANGE) * 0.999


@pytest.mark.parametrize("bad", [1, 17, 0, -3, 8.0, "8", True])
def test_validate_bits_rejects(bad):
    with pytest.raises(ConfigError, match="bits"):
        qmath.validate_bits(bad)


def _converted_quantization(ranges: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """What the TFLite converter stores for FakeQuant'ed activations on each range: a
    graph ``x -> FakeQuant(x + 0, lo_i, hi_i)``, one output per range, int8 I/O."""
    f32 = np.float32

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def fn(x):
        x = tf.quantization.fake_quant_with_min_max_vars(x, -8.0, 8.0)
        return [tf.quantization.fake_quant_with_min_max_vars(x * (i + 2.0), f32(lo), f32(hi))
                for i, (lo, hi) in enumerate(ranges)]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    interp = tf.lite.Interpreter(model_content=conv.convert())
    outs = sorted(interp.get_output_details(), key=lambda d: d["name"])
    by_name = {d["name"]: d["quantization"] for d in outs}
    return [by_name[n] for n in sorted(by_name, key=lambda n: int(n.rsplit("_", 1)[-1])
                                       if n.rsplit("_", 1)[-1].isdigit() else 0)]


def test_converter_params_is_the_converters_on_ties_and_ordinary_ranges():
    """Symmetric ranges put the zero point on a tie (-0.5 in int8 terms): the converter
    nudges on the unsigned range and stores 0 (signed rounding would give -1)."""
    rng = np.random.default_rng(0)
    ranges = [(-a, a) for a in (0.3229931890964508, 1.0, 6.0, 0.0078125)]
    ranges += [(float(-a), float(b)) for a, b in rng.uniform(0.01, 5.0, size=(6, 2))]
    stored = _converted_quantization(ranges)
    for (lo, hi), (scale, zp) in zip(ranges, stored):
        s64, z = qmath.converter_params(lo, hi, 8)
        assert (np.float32(s64), int(z)) == (np.float32(scale), zp), (lo, hi)
    assert all(zp == 0 for _, zp in stored[:4])
