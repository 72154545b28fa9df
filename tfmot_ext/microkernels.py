"""TFLite Micro's int8 kernels where they compute differently from TFLite's, in NumPy.

``run_reference(params, x, rounding="micro")`` runs TFLite Micro's arithmetic
(tflite-micro ``tensorflow/lite/micro/kernels/``, with its copies of TFLite's
``kernels/internal/reference/``); most operators share TFLite's reference kernels, and
the differences are (docs/integer_inference.md, each measured against the
``tflite-micro`` interpreter):

* FULLY_CONNECTED requantizes with the double-rounding ``MultiplyByQuantizedMultiplier``
  (:func:`tfmot_ext.fixedpoint.mbqm`);
* LOGISTIC and TANH compute in gemmlowp fixed point (:func:`logistic_int8`,
  :func:`tanh_int8`) where TFLite looks up a float-built table (they agree on all
  but 13 of 768,000 LOGISTIC inputs of random quantizations, and all TANH ones);
* RELU6 clamps the input integers without requantizing (:func:`relu6_int8`);
* SUB's multipliers come from float32 quotients (:func:`sub_multipliers`), PRELU's from
  double ones (TFLite: float32).

TFLite Micro has no GELU kernel.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tfmot_ext.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
)
from tfmot_ext.gemmlowp import logistic, tanh
from tfmot_ext.qmath import round_half_away
from tfmot_ext.rules import fused_activation_range

__all__ = ["TANH_LOGISTIC_INPUT_BITS", "fixed_point_input", "logistic_int8", "relu6_int8",
           "sub_multipliers", "tanh_int8"]

#: Integer bits of the gemmlowp input of TFLite Micro's int8 LOGISTIC and TANH (Q4.27).
TANH_LOGISTIC_INPUT_BITS = 4


def fixed_point_input(input_scale: float) -> tuple[int, int, int]:
    """``(multiplier, left_shift, radius)`` of TFLite Micro's int8 LOGISTIC/TANH prepare.

    ``q, left_shift = frexp(double(s_in) * 2**27)``, ``multiplier =
    round_half_away(q * 2**31)``, and ``radius = floor(15 * 2**27 / 2**left_shift)``
    (``CalculateInputRadius(4, left_shift, 31)``): inputs with ``|q - z| >= radius``
    saturate.

    >>> fixed_point_input(1 / 16)  # 2**23: q = 1/2, shift 24; radius 15 * 2**3
    (1073741824, 24, 120)
    """
    real = float(np.float32(input_scale)) * float(1 << (31 - TANH_LOGISTIC_INPUT_BITS))
    q, left_shift = math.frexp(real)
    multiplier = int(round_half_away(np.float64(q * 2.0**31)))
    max_rescaled = (((1 << TANH_LOGISTIC_INPUT_BITS) - 1)
                    * float(1 << (31 - TANH_LOGISTIC_INPUT_BITS)) / float(2.0**left_shift))
    return multiplier, left_shift, math.floor(max_rescaled)


def _fixed_point(q: npt.ArrayLike, input_scale: float, input_zero_point: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    multiplier, left_shift, radius = fixed_point_input(input_scale)
    d = np.asarray(q, np.int64) - input_zero_point
    inside = np.abs(d) < radius
    x_q4 = multiply_by_quantized_multiplier(np.where(inside, d, 0), multiplier, left_shift)
    return d, x_q4, np.asarray(radius)


def logistic_int8(q: npt.ArrayLike, input_scale: float, input_zero_point: int
                  ) -> npt.NDArray[np.int8]:
    """TFLite Micro's int8 LOGISTIC (``reference_integer_ops::Logistic``), output at
    (1/256, -128).

    With ``d = q - z_in`` and :func:`fixed_point_input`: ``-128`` for ``d <= -radius``,
    ``127`` for ``d >= radius``, else
    ``clamp(RDBPOT(logistic(MBQM(d, M, shift)), 23) - 128, -128, 127)``, gemmlowp's
    :func:`tfmot_ext.gemmlowp.logistic` of the Q4.27 input.

    >>> logistic_int8([-128, 0, 127], 0.1, 0).tolist()  # 1 / (1 + exp(-12.7)) = 1 - 3e-6
    [-128, 0, 127]
    """
    d, x_q4, radius = _fixed_point(q, input_scale, input_zero_point)
    y = rounding_divide_by_pot(logistic(x_q4, TANH_LOGISTIC_INPUT_BITS), 31 - 8) - 128
    y = np.where(d <= -radius, -128, np.where(d >= radius, 127, y))
    return np.clip(y, -128, 127).astype(np.int8)


def tanh_int8(q: npt.ArrayLike, input_scale: float, input_zero_point: int
              ) -> npt.NDArray[np.int8]:
    """TFLite Micro's int8 TANH (``reference_integer_ops::Tanh``), output at (1/128, 0).

    As :func:`logistic_int8` with gemmlowp's :func:`tfmot_ext.gemmlowp.tanh` and
    ``clamp(RDBPOT(tanh(MBQM(d, M, shift)), 24), -128, 127)``: no output zero point is
    added (TFLite Micro assumes 0, which the converter's fixed TANH output has).

    >>> tanh_int8([-128, 0, 127], 0.1, 0).tolist()
    [-128, 0, 127]
    """
    d, x_q4, radius = _fixed_point(q, input_scale, input_zero_point)
    y = rounding_divide_by_pot(tanh(x_q4, TANH_LOGISTIC_INPUT_BITS), 31 - 7)
    y = np.where(d <= -radius, -128, np.where(d >= radius, 127, y))
    return np.clip(y, -128, 127).astype(np.int8)


def relu6_int8(q: npt.ArrayLike, input_scale: float, input_zero_point: int
               ) -> npt.NDArray[np.int8]:
    """TFLite Micro's int8 RELU6 (``Relu6Quantized``): the input integers clamped to
    ``[z_in, clamp(z_in + round_half_away(f32(6) / f32(s_in)), -128, 127)]``, with no
    requantization: the output tensor's own scale and zero point are not read (TFLite
    requantizes to them; the two agree when they equal the input's).

    >>> relu6_int8([-5, 3, 100], 0.1, -2).tolist()  # six = -2 + 60
    [-2, 3, 58]
    """
    lo, hi = fused_activation_range("relu6", input_scale, input_zero_point)
    return np.clip(np.asarray(q, np.int64), lo, hi).astype(np.int8)


I32 = npt.NDArray[np.int32]


def sub_multipliers(s1: float, s2: float, s_out: float, left_shift: int = 20
                    ) -> tuple[tuple[I32, I32], tuple[I32, I32], tuple[I32, I32]]:
    """``(M1, M2, M_out)`` (each ``(m0, shift)``) of TFLite Micro's int8 SUB prepare:
    the quotients in float32, ``t = 2 * max(s1, s2)``, ``s1 / t``, ``s2 / t`` and
    ``t / (2**20 * s_out)`` (TFLite computes them in double, as for ADD).

    >>> [int(v) for v in sub_multipliers(0.5, 0.25, 1.0)[0]]  # 0.5 / 1.0
    [1073741824, 0]
    """
    f32 = np.float32
    twice_max = f32(2) * max(f32(s1), f32(s2))
    m1, m2, m_out = (quantize_multiplier(np.float64(f32(real))) for real in (
        f32(s1) / twice_max, f32(s2) / twice_max,
        twice_max / (f32(1 << left_shift) * f32(s_out))))
    return m1, m2, m_out
