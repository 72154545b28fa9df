"""gemmlowp's fixed-point functions (tfmot_ext.gemmlowp) against the real functions:
closed forms within the fixed point's precision (their bit-exactness against TFLite's
SOFTMAX and TFLite Micro's LOGISTIC/TANH is tests/test_softmax.py's and
tests/test_microkernels.py's)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tfmot_ext import gemmlowp as g

Q31 = 2.0**31
RAW = st.integers(-(2**31) + 1, 2**31 - 1)


@given(st.integers(1, 6), st.integers(-(2**31) + 1, 0))
def test_exp_on_negative_values(integer_bits, raw):
    x = raw * 2.0 ** (integer_bits - 31)
    got = int(g.exp_on_negative_values(raw, integer_bits)) / Q31
    # a Taylor polynomial and up to 7 Q0.31 products, each rounded: a few 1e-7
    assert abs(got - np.exp(x)) <= 1e-6


@given(st.integers(0, 2**31 - 1))
def test_newton_raphson_divisions(raw):
    a = raw / Q31
    assert abs(int(g.one_over_one_plus_x_for_x_in_0_1(raw)) / Q31 - 1 / (1 + a)) <= 1e-8
    assert abs(int(g.one_minus_x_over_one_plus_x_for_x_in_0_1(raw)) / Q31
               - (1 - a) / (1 + a)) <= 1e-8


@given(RAW, st.sampled_from([3, 4, 5]))
def test_logistic_and_tanh(raw, integer_bits):
    x = raw * 2.0 ** (integer_bits - 31)
    assert abs(int(g.logistic(raw, integer_bits)) / Q31 - 1 / (1 + np.exp(-x))) <= 1e-6
    assert abs(int(g.tanh(raw, integer_bits)) / Q31 - np.tanh(x)) <= 2e-6
    # the symmetries gemmlowp builds them with
    assert int(g.logistic(raw, integer_bits)) + int(g.logistic(-raw, integer_bits)) == 2**31 - 1 \
        or raw == 0
    assert int(g.tanh(-raw, integer_bits)) == -int(g.tanh(raw, integer_bits))


def test_saturating_shift_left_saturates_both_ways():
    assert g.saturating_shift_left([2**29, -(2**29), 5], 2).tolist() == [2**31 - 1, -(2**31), 20]
