"""gemmlowp's fixed-point transcendental functions (``fixedpoint/fixedpoint.h``), in NumPy.

TFLite's reference SOFTMAX and TFLite Micro's int8 LOGISTIC and TANH compute in
gemmlowp's ``FixedPoint<int32_t, k>``: a raw int32 ``r`` meaning ``r * 2**(k - 31)``
(``Qk.(31-k)``). Raw values are held in int64 arrays here; every product is gemmlowp's
``SaturatingRoundingDoublingHighMul`` (SRDHM,
:func:`tfmot_ext.fixedpoint.saturating_rounding_doubling_high_mul`), every change of
``k`` its ``Rescale`` (a saturating shift). ``One()`` of ``Q0.31``
is ``INT32_MAX``.

* :func:`exp_on_negative_values`: ``exp(a)`` for ``a <= 0`` in ``Qk``, to ``Q0.31``;
* :func:`one_over_one_plus_x_for_x_in_0_1` and
  :func:`one_minus_x_over_one_plus_x_for_x_in_0_1`: Newton-Raphson divisions;
* :func:`logistic` and :func:`tanh` of a ``Qk`` input, to ``Q0.31``.

Every function is pure: integers in, int64 out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tfmot_ext.fixedpoint import rounding_divide_by_pot as _rdbpot
from tfmot_ext.fixedpoint import saturating_rounding_doubling_high_mul as _srdhm

__all__ = ["exp_on_negative_values", "logistic", "one_minus_x_over_one_plus_x_for_x_in_0_1",
           "one_over_one_plus_x_for_x_in_0_1", "saturating_shift_left", "tanh"]

I64 = npt.NDArray[np.int64]
_I32_MAX = 2**31 - 1


def saturating_shift_left(x: npt.ArrayLike, exponent: int) -> I64:
    """gemmlowp's ``SaturatingRoundingMultiplyByPOT<exponent>`` for ``exponent > 0``.

    ``x * 2**exponent``, saturated to ``INT32_MAX`` above ``2**(31 - exponent) - 1``
    and to ``INT32_MIN`` below its negation (``Rescale`` to fewer integer bits).

    >>> saturating_shift_left([3, 2**30, -(2**30)], 1).tolist()
    [6, 2147483647, -2147483648]
    """
    v = np.asarray(x, np.int64)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(v > threshold, _I32_MAX, np.where(v < -threshold, -(2**31),
                                                       v * (1 << exponent)))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: I64) -> I64:
    """``exp(a)`` for ``a`` in ``[-1/4, 0)``, Q0.31 in and out.

    Taylor expansion around ``-1/8``: with ``x = a + 1/8``,
    ``exp(-1/8) * (1 + x + x**2/2 + x**3/6 + x**4/24)`` evaluated as
    ``c + c * (x + RDBPOT((x**4/4 + x**3) * 1/3 + x**2, 1))``, every product an SRDHM.
    """
    constant_term = 1895147668  # exp(-1/8) in Q0.31
    constant_1_over_3 = 715827883
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbpot(x4, 2)
    poly = _rdbpot(_srdhm(x4_over_4 + x3, constant_1_over_3) + x2, 1)
    return constant_term + _srdhm(constant_term, x + poly)


#: ``(exponent, exp(-2**exponent) in Q0.31)`` for gemmlowp's barrel shifter.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: npt.ArrayLike, integer_bits: int) -> I64:
    """gemmlowp's ``exp_on_negative_values`` from ``Q<integer_bits>`` (``a <= 0``) to Q0.31.

    ``a = (a mod 1/4 - 1/4) - r``: the first part by a Taylor polynomial around
    ``-1/8`` (rescaled to Q0.31 by ``* 2**integer_bits``, saturating), then one SRDHM
    by ``exp(-2**j)`` for each bit ``2**j`` set in ``r`` (``j = -2..4``, those below
    ``integer_bits``); ``exp(a) = 0`` below ``-32`` (``integer_bits > 5``); ``a == 0``
    gives ``INT32_MAX`` (``One()``).

    >>> int(exp_on_negative_values(0, 5))
    2147483647
    >>> int(exp_on_negative_values(-(1 << 26), 5))  # exp(-1) * 2**31 = 790015084.35
    790015308
    """
    av = np.asarray(a, np.int64)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (av & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_shift_left(a_mod_quarter_minus_one_quarter, integer_bits))
    remainder = a_mod_quarter_minus_one_quarter - av
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where(remainder & bit, _srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(av < -(1 << (36 - integer_bits)), 0, result)
    return np.where(av == 0, _I32_MAX, result)


def _newton_raphson_half_denominator(a: I64) -> I64:
    """``1 / d`` in Q2.29 for ``d = (a + 1) / 2`` (``RoundingHalfSum(a, One())``), ``a``
    in ``[0, 1)`` Q0.31: ``x0 = 48/17 - 32/17 * d``, then three times
    ``x += 4 * (x * (1 - d * x))`` (``Rescale<2>``, saturating)."""
    total = a + _I32_MAX  # RoundingHalfSum: (sum + sign(sum)) / 2, toward zero
    half_denominator = np.where(total >= 0, (total + 1) // 2, -((1 - total) // 2))
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    one_q2 = 1 << 29
    x = constant_48_over_17 + _srdhm(half_denominator, constant_neg_32_over_17)
    for _ in range(3):
        half_denominator_times_x = _srdhm(half_denominator, x)
        one_minus = one_q2 - half_denominator_times_x
        x = x + saturating_shift_left(_srdhm(x, one_minus), 2)
    return x


def one_over_one_plus_x_for_x_in_0_1(a: npt.ArrayLike) -> I64:
    """gemmlowp's ``1 / (1 + a)`` for ``a`` in ``[0, 1)``, Q0.31 in and out: the
    Newton-Raphson ``1 / d`` of ``d = (a + 1) / 2``, halved (``ExactMulByPot<-1>``) and
    rescaled to Q0.31 (``* 2`` saturated).

    >>> int(one_over_one_plus_x_for_x_in_0_1(0))  # 1 / 1, saturated to One()
    2147483647
    """
    return saturating_shift_left(_newton_raphson_half_denominator(np.asarray(a, np.int64)), 1)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: npt.ArrayLike) -> I64:
    """gemmlowp's ``(1 - a) / (1 + a)`` for ``a`` in ``[0, 1)``, Q0.31 in and out:
    ``Rescale<0>(1/d - 1)`` with the Newton-Raphson ``1 / d`` of ``d = (a + 1) / 2``
    (``1/d - 1 = (1 - a) / (1 + a)``).

    >>> int(one_minus_x_over_one_plus_x_for_x_in_0_1(1 << 30))  # (1/3) * 2**31 = 715827882.7
    715827876
    """
    x = _newton_raphson_half_denominator(np.asarray(a, np.int64))
    return saturating_shift_left(x - (1 << 29), 2)


def logistic(a: npt.ArrayLike, integer_bits: int) -> I64:
    """gemmlowp's ``logistic`` of a ``Q<integer_bits>`` input, to Q0.31.

    ``1 / (1 + exp(-|a|))`` (:func:`one_over_one_plus_x_for_x_in_0_1` of
    :func:`exp_on_negative_values`), ``One() - that`` for ``a < 0``, exactly ``2**30``
    (one half) for ``a == 0``.

    >>> int(logistic(0, 4)), int(logistic(1 << 27, 4))  # logistic(1) * 2**31 = 1569936343.3
    (1073741824, 1569936226)
    """
    av = np.asarray(a, np.int64)
    positive = av > 0
    abs_input = np.where(positive, av, -av)
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(-abs_input, integer_bits))
    result = np.where(positive, result_if_positive, _I32_MAX - result_if_positive)
    return np.where(av == 0, 1 << 30, result)


def tanh(a: npt.ArrayLike, integer_bits: int) -> I64:
    """gemmlowp's ``tanh`` of a ``Q<integer_bits>`` input, to Q0.31.

    With ``n = -|a|``: ``t = (1 - exp(2n)) / (1 + exp(2n))``
    (:func:`one_minus_x_over_one_plus_x_for_x_in_0_1` of :func:`exp_on_negative_values`
    of ``2n``, which is ``n``'s raw value read with one more integer bit,
    ``ExactMulByPot<1>``); ``-t`` for ``a < 0``, 0 for ``a == 0``.

    >>> int(tanh(0, 4)), int(tanh(1 << 27, 4))  # tanh(1) * 2**31 = 1635510996.3
    (0, 1635510876)
    """
    av = np.asarray(a, np.int64)
    negative = av < 0
    n = np.where(negative, av, -av)
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return np.where(av == 0, 0, np.where(negative, -t, t))
