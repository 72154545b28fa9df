"""n-bit quantizers for tfmot's ``QuantizeConfig`` API.

Each quantizer is a thin, serializable shell over pure functions. The forward
pass always ends in TensorFlow's ``FakeQuantWithMinMaxVars[PerChannel]`` op, the
op the TFLite converter reads its quantization parameters from, so what is
trained is what gets converted (below 8 bits, 4 aside, the converter would re-grid a
kernel on its own int8 scale: :func:`embed_in_int8` gives it the trained grid inside
an int8 one). The range fed to that op is an exact function of
the quantizer's stored variables, mirrored in NumPy by :mod:`tfmot_ext.qmath`
(extraction relies on this):

* :class:`MinMaxQuantizer` — range from observed min/max (``last_value``,
  ``moving_average`` or ``all_values``), symmetric or asymmetric, per tensor or per
  channel, 2..16 bits.
* :class:`FixedRangeQuantizer` — a constant range (e.g. ``[-1, 1]`` or ReLU6's ``[0, 6]``).
* :class:`PowerOfTwoQuantizer` — like MinMax, but the scale is rounded up to ``2**k``.
* :class:`LSQQuantizer` — learned step size (Esser et al. 2019, arXiv 1902.08153).

The stored min/max variables hold the *raw* tracked range; the effective range is
``symmetric_range`` / ``widen_range`` / ``power_of_two_range`` of it, computed at use.
Gradients are straight-through: ``d out / d x = 1`` inside the nudged range, 0 outside.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from tfmot_ext import qmath
from tfmot_ext._compat import keras, own_trainable_weights, tf, tfmot
from tfmot_ext.errors import ConfigError
from tfmot_ext.fakequant import (
    batch_range,
    fake_quant_tf,
    power_of_two_range_tf,
    symmetric_range_tf,
    to_channels_last,
    widen_range_tf,
)
from tfmot_ext.qmath import normalize_axis
from tfmot_ext.quantspec import (
    FixedRangeSpec,
    LSQSpec,
    MinMaxSpec,
    PowerOfTwoSpec,
    QuantSpec,
)
from tfmot_ext.rules import EXACT_WEIGHT_BITS

__all__ = [
    "FixedRangeQuantizer",
    "LSQQuantizer",
    "MinMaxQuantizer",
    "PowerOfTwoQuantizer",
    "QuantizerBase",
    "activation_quantizer",
    "embed_in_int8",
    "weight_quantizer",
]

Quantizer: Any = tfmot.quantization.keras.quantizers.Quantizer
register = keras.utils.register_keras_serializable(package="tfmot_ext")

Axis = int | tuple[int, ...] | None


# --------------------------------------------------------------------------- math


#: ids of the weight quantizers whose b-bit grid (b < 8, not 4) a conversion embeds in
#: int8 (:func:`embed_in_int8`); a quantizer reads it when traced (:meth:`QuantizerBase.embeds`)
_EMBED_IDS: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "tfmot_ext_embed_ids", default=frozenset())


@contextlib.contextmanager
def embed_in_int8(quantizers: Iterable[Any]) -> Iterator[None]:
    """Trace ``quantizers`` (weight quantizers) with their grid embedded in int8.

    Inside, each of them at a width ``b < 8`` other than 4 (the widths the TFLite
    converter would re-grid on its own int8 scale) follows its ``b``-bit FakeQuant with
    an 8-bit one on the range of :func:`tfmot_ext.qmath.int8_embedding_range`: the values do
    not move, and the converter stores them as the int8 integers ``2**(8-b) * q`` on
    the scale ``s / 2**(8-b)``. :func:`tfmot_ext.to_tflite` converts inside it.
    """
    ids = frozenset(id(q) for q in quantizers
                    if (b := getattr(q, "bits", None)) is not None and b < 8
                    and b not in EXACT_WEIGHT_BITS)
    token = _EMBED_IDS.set(_EMBED_IDS.get() | ids)
    try:
        yield
    finally:
        _EMBED_IDS.reset(token)


# --------------------------------------------------------------------------- classes


class QuantizerBase(Quantizer):
    """Shared plumbing: config round trip, equality, validation.

    Subclasses list their constructor arguments in ``_CONFIG_KEYS`` and store each
    as an attribute of the same name; ``get_config`` returns exactly those.
    """

    _CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()
    spec: QuantSpec

    def _set_spec(self, spec: QuantSpec) -> None:
        """Keep the NumPy twin (validated on construction) and its fields as attributes."""
        self.spec = spec
        for k in self._CONFIG_KEYS:
            setattr(self, k, getattr(spec, k))

    def stored_range(self, stored: Any, prefix: str, value: Any = None,
                     axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The one NumPy twin protocol: the range FakeQuant receives, from the stored
        variables (short name -> value) and the weight's value
        (:meth:`tfmot_ext.quantspec.QuantSpec.stored_range`)."""
        return self.spec.stored_range(stored, prefix, value, axes)

    def embeds(self) -> bool:
        """Whether this quantizer is traced with its grid embedded in int8 now
        (inside :func:`embed_in_int8` naming it)."""
        return id(self) in _EMBED_IDS.get()

    def get_config(self) -> dict[str, Any]:
        cfg = {k: getattr(self, k) for k in self._CONFIG_KEYS}
        if isinstance(cfg.get("axis"), tuple):
            cfg["axis"] = list(cfg["axis"])
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuantizerBase:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def with_axis(self, axis: Axis) -> QuantizerBase:
        """A copy with ``axis`` set (used by configs to resolve the layer's channel axis)."""
        cfg = self.get_config()
        cfg["axis"] = axis
        return type(self).from_config(cfg)

    @property
    def is_per_channel(self) -> bool:
        return bool(getattr(self, "per_channel", False))


def _make_range_vars(layer: Any, name: str, shape: Sequence[int]) -> dict[str, tf.Variable]:
    # MEAN aggregation: under a tf.distribute strategy every replica's update is
    # averaged and written to all copies (without it the copies silently diverge)
    init = keras.initializers.Constant(0.0)
    mean = tf.VariableAggregation.MEAN
    return {
        "min_var": layer.add_weight(f"{name}_min", shape=shape, initializer=init,
                                    trainable=False, aggregation=mean),
        "max_var": layer.add_weight(f"{name}_max", shape=shape, initializer=init,
                                    trainable=False, aggregation=mean),
    }


def _range_shape(q: Any, tensor_shape: Any, name: str) -> list[int]:
    """Shape of a quantizer's range variables: ``[]`` per tensor, ``[channels]`` per channel.

    Per channel needs a known tensor shape (weights have one; tfmot builds activation
    quantizers without), else :class:`ConfigError`.
    """
    if not q.per_channel:
        return []
    who = f"{type(q).__name__} '{name}'"
    if tensor_shape is None:
        raise ConfigError(
            f"{who}: per-channel quantization needs a known tensor shape; activation "
            "quantizers get none (use per_channel=False for activations)"
        )
    dims = list(tensor_shape)
    n = 1
    for a in q.resolved_axis(len(dims)):
        if dims[a] is None:
            raise ConfigError(f"{who}: channel axis {a} of shape {dims} is unknown")
        n *= int(dims[a])
    return [n]


@register
class MinMaxQuantizer(QuantizerBase):
    """Fake quantization with a range tracked from observed min/max values.

    Forward: ``FakeQuant(x, lo, hi)`` where ``(lo, hi)`` is the effective range of the
    stored raw range ``(m, M)``:

    * symmetric: ``a = max(|m|, |M|, MIN_RANGE/2)``, ``s = a / qmax``,
      ``(lo, hi) = (qmin * s, qmax * s)`` — zero point 0;
    * asymmetric: ``lo = min(m, 0)``, ``hi = max(M, 0, lo + MIN_RANGE)`` — FakeQuant
      nudges it so real 0 is exact.

    Range tracking in training (``b`` = the batch's min or max):
    ``last_value``: ``m <- b``; ``moving_average``: ``m <- d*m + (1-d)*b``
    (``m <- b`` on the first step, detected by an empty stored range);
    ``all_values``: ``m <- min(m, b)``, ``M <- max(M, b)``. In inference the stored
    range is used, except for ``last_value``, which is meant for weights and always
    uses the current value's range (the stored one is an optimizer step old).

    Args:
        bits: 2..16.
        per_channel: one range per output channel.
        axis: channel axis (int, or contiguous tuple flattened together). None with
            ``per_channel=True`` means the last axis, or — through a tfmot_ext
            ``QuantizeConfig`` — the layer kind's output-channel axis.
        symmetric: zero point fixed at 0.
        narrow_range: drop the lowest level (``[-127, 127]`` at 8 bits).
        range_tracking: ``"last_value"``, ``"moving_average"`` or ``"all_values"``.
        ema_decay: decay ``d`` of ``moving_average``, in ``[0, 1)``.
    """

    _SPEC: ClassVar[type[MinMaxSpec]] = MinMaxSpec
    _CONFIG_KEYS = MinMaxSpec.CONFIG_KEYS
    spec: MinMaxSpec
    bits: int
    per_channel: bool
    axis: Axis
    symmetric: bool
    narrow_range: bool
    range_tracking: str
    ema_decay: float

    def __init__(
        self,
        bits: int = 8,
        per_channel: bool = False,
        axis: Axis = None,
        symmetric: bool = False,
        narrow_range: bool = False,
        range_tracking: str = "last_value",
        ema_decay: float = 0.999,
    ) -> None:
        self._set_spec(self._SPEC(bits, per_channel, axis, symmetric, narrow_range,
                                  range_tracking, ema_decay))

    # -- helpers ------------------------------------------------------------
    def resolved_axis(self, rank: int) -> tuple[int, ...] | None:
        """The channel axes for a rank-``rank`` tensor (None when per tensor)."""
        if not self.per_channel:
            return None
        return normalize_axis(-1 if self.axis is None else self.axis, rank, type(self).__name__)

    def effective_range_tf(self, lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The range handed to FakeQuant, from the raw tracked one (see class docstring)."""
        if self.symmetric:
            return symmetric_range_tf(lo, hi, self.bits, self.narrow_range)
        return widen_range_tf(lo, hi)

    def effective_range(self, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
        """NumPy twin of :meth:`effective_range_tf` (bit-exact): the spec's."""
        return self.spec.effective_range(lo, hi)

    # -- tfmot Quantizer API -----------------------------------------------
    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, tf.Variable]:
        return _make_range_vars(layer, name, _range_shape(self, tensor_shape, name))

    def _track(self, x: tf.Tensor, weights: dict[str, tf.Variable],
               axes: tuple[int, ...] | None) -> tuple[tf.Tensor, tf.Tensor]:
        b_lo, b_hi = batch_range(tf.stop_gradient(x), axes)
        m, big_m = weights["min_var"], weights["max_var"]
        if self.range_tracking == "last_value":
            new_lo, new_hi = b_lo, b_hi
        elif self.range_tracking == "all_values":
            new_lo, new_hi = tf.minimum(m, b_lo), tf.maximum(big_m, b_hi)
        else:
            d = np.float32(self.ema_decay)
            fresh = big_m <= m  # nothing observed yet
            new_lo = tf.where(fresh, b_lo, m * d + b_lo * (1 - d))
            new_hi = tf.where(fresh, b_hi, big_m * d + b_hi * (1 - d))
        with tf.control_dependencies([m.assign(new_lo), big_m.assign(new_hi)]):
            return tf.identity(new_lo), tf.identity(new_hi)

    def _stored(self, x: tf.Tensor, weights: dict[str, tf.Variable],
                axes: tuple[int, ...] | None) -> tuple[tf.Tensor, tf.Tensor]:
        if self.range_tracking == "last_value":
            # Weights: the range of the current value, never one optimizer step stale
            # (the stored variables hold the range seen by the last training step).
            return batch_range(tf.stop_gradient(x), axes)
        return tf.identity(weights["min_var"]), tf.identity(weights["max_var"])

    def __call__(self, inputs: tf.Tensor, training: bool, weights: dict[str, tf.Variable],
                 **kwargs: Any) -> tf.Tensor:
        axes = self.resolved_axis(inputs.shape.rank)
        lo, hi = self._track(inputs, weights, axes) if training else self._stored(
            inputs, weights, axes)
        lo, hi = self.effective_range_tf(tf.stop_gradient(lo), tf.stop_gradient(hi))
        return fake_quant_tf(inputs, lo, hi, self.bits, self.narrow_range, axes, self.embeds())


@register
class PowerOfTwoQuantizer(MinMaxQuantizer):
    """MinMax range tracking with the scale rounded up to a power of two, ``s = 2**k``.

    For shift-only hardware: requantization by ``2**k`` is a bit shift. The effective
    range is :func:`tfmot_ext.qmath.power_of_two_range` of the tracked range.
    Same arguments as :class:`MinMaxQuantizer`; symmetric by default.
    """

    _SPEC = PowerOfTwoSpec

    def __init__(
        self,
        bits: int = 8,
        per_channel: bool = False,
        axis: Axis = None,
        symmetric: bool = True,
        narrow_range: bool = False,
        range_tracking: str = "last_value",
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__(bits, per_channel, axis, symmetric, narrow_range, range_tracking,
                         ema_decay)

    def effective_range_tf(self, lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return power_of_two_range_tf(lo, hi, self.bits, self.narrow_range, self.symmetric)



@register
class FixedRangeQuantizer(QuantizerBase):
    """Fake quantization on a constant range: ``FakeQuant(x, min, max)``.

    Use it where the range is known (tanh: ``[-1, 1]``, ReLU6: ``[0, 6]``) or for a
    clip-to-range quantizer. FakeQuant still nudges the range so 0 is exact; no
    variables are created.

    Args:
        min: range minimum, ``<= 0``.
        max: range maximum, ``> min`` and ``>= 0``.
        bits: 2..16.
        narrow_range: drop the lowest level.
    """

    _CONFIG_KEYS = FixedRangeSpec.CONFIG_KEYS
    spec: FixedRangeSpec
    min: float
    max: float
    bits: int
    narrow_range: bool

    def __init__(self, min: float = -1.0, max: float = 1.0, bits: int = 8,
                 narrow_range: bool = False) -> None:
        self._set_spec(FixedRangeSpec(min, max, bits, narrow_range))

    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, tf.Variable]:
        return {}

    def effective_range(self, lo: Any = None, hi: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The constant range (the spec's)."""
        return self.spec.effective_range()

    def __call__(self, inputs: tf.Tensor, training: bool, weights: dict[str, tf.Variable],
                 **kwargs: Any) -> tf.Tensor:
        return fake_quant_tf(inputs, np.float32(self.min), np.float32(self.max),
                             self.bits, self.narrow_range, None, self.embeds())


def _keep_weight_order(wrapper: Any) -> None:
    """Register the wrapped layer's trainable weights on the wrapper before ours.

    QuantizeWrapperV2 orders its trainable weights as "inner layer's, then the
    quantizers'" only when the inner layer was built before the wrapper, which is
    not the case when a model is loaded from H5 or .keras. A trainable quantizer
    variable would then be loaded into the wrong slot. Listing the inner weights
    first (tfmot de-duplicates them) makes the order the same in both cases.
    """
    inner = getattr(wrapper, "layer", None)
    own = own_trainable_weights(wrapper)
    if inner is None or own is None:
        return
    if not inner.built:
        return
    for w in inner.trainable_weights:
        if not any(w is x for x in own):
            own.append(w)


def lsq_grad_scale(n: int, bits: int, signed: bool) -> float:
    """LSQ's step-size gradient scale ``g = 1 / sqrt(N * Q_P)`` (Esser et al. §2.2).

    ``N`` is the number of elements sharing one step, ``Q_P`` the largest level.

    >>> round(lsq_grad_scale(1000, 8, True), 6)
    0.002806
    """
    qp = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return 1.0 / math.sqrt(max(n, 1) * qp)


@register
class LSQQuantizer(QuantizerBase):
    """Learned step size quantization (LSQ, Esser et al. 2019, arXiv 1902.08153).

    Forward: ``out = clamp(round(x / s), Q_N, Q_P) * s`` with a trainable step ``s``,
    computed by FakeQuant on ``[Q_N * s, Q_P * s]`` so the converter sees the op.
    Backward (the paper's eq. 3, 5): ``d out / d x = 1`` for ``Q_N <= x/s <= Q_P`` else 0;
    ``d out / d s = (round(x/s) - x/s)`` inside, ``Q_N`` below, ``Q_P`` above, times the
    gradient scale ``g = 1/sqrt(N * Q_P)``. The step is initialised on the first
    training call to ``2 * mean(|x|) / sqrt(Q_P)``.

    Signed: ``[Q_N, Q_P] = [-2**(b-1) (+1 if narrow), 2**(b-1) - 1]``; unsigned (for
    non-negative activations): ``[0, 2**b - 1]``.

    Args:
        bits: 2..16.
        per_channel: one step per channel (weights).
        axis: channel axis, as for :class:`MinMaxQuantizer`.
        signed: signed or unsigned grid.
        narrow_range: drop the lowest signed level.
    """

    _CONFIG_KEYS = LSQSpec.CONFIG_KEYS
    spec: LSQSpec
    bits: int
    per_channel: bool
    axis: Axis
    signed: bool
    narrow_range: bool

    def __init__(self, bits: int = 4, per_channel: bool = False, axis: Axis = None,
                 signed: bool = True, narrow_range: bool = False) -> None:
        self._set_spec(LSQSpec(bits, per_channel, axis, signed, narrow_range))

    def levels(self) -> tuple[int, int]:
        """``(Q_N, Q_P)``."""
        return self.spec.levels()

    def resolved_axis(self, rank: int) -> tuple[int, ...] | None:
        if not self.per_channel:
            return None
        return normalize_axis(-1 if self.axis is None else self.axis, rank, "LSQQuantizer")

    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, tf.Variable]:
        shape = _range_shape(self, tensor_shape, name)
        _keep_weight_order(layer)
        step = layer.add_weight(f"{name}_step", shape=shape,
                                initializer=keras.initializers.Constant(0.0), trainable=True,
                                aggregation=tf.VariableAggregation.MEAN)
        return {"step": step}

    def effective_range(self, step: Any, _unused: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``[Q_N * s, Q_P * s]`` of the step ``s`` (the spec's)."""
        return self.spec.effective_range(step)

    def __call__(self, inputs: tf.Tensor, training: bool, weights: dict[str, tf.Variable],
                 **kwargs: Any) -> tf.Tensor:
        axes = self.resolved_axis(inputs.shape.rank)
        qn, qp = self.levels()
        step_var = weights["step"]
        flat, undo = (inputs, None) if axes is None else to_channels_last(inputs, axes)
        reduce = None if axes is None else list(range(flat.shape.rank - 1))
        init = 2.0 * tf.reduce_mean(tf.abs(tf.stop_gradient(flat)), axis=reduce) / math.sqrt(qp)
        init = tf.maximum(init, np.float32(qmath.MIN_RANGE))
        if training:
            # First training call: initialise the step from the data (the paper's rule).
            fresh = step_var <= 0.0
            with tf.control_dependencies([step_var.assign(tf.where(fresh, init, step_var))]):
                step = tf.identity(step_var)
        else:
            step = tf.where(step_var <= 0.0, init, step_var)
        n = int(np.prod(flat.shape[:-1])) if axes is not None else int(
            np.prod([d or 1 for d in flat.shape]))
        g = lsq_grad_scale(n, self.bits, self.signed)
        y = _lsq_fake_quant(flat, step, qn, qp, g, self.bits, self.narrow_range,
                            axes is not None, reduce, self.embeds())
        return y if undo is None else undo(y)


def _lsq_fake_quant(x: tf.Tensor, step: tf.Tensor, qn: int, qp: int, g: float, bits: int,
                    narrow: bool, per_channel: bool, reduce: list[int] | None,
                    embed: bool) -> tf.Tensor:
    @tf.custom_gradient
    def _fq(x: tf.Tensor, s: tf.Tensor) -> Any:
        lo, hi = s * np.float32(qn), s * np.float32(qp)
        y = fake_quant_tf(x, lo, hi, bits, narrow, (x.shape.rank - 1,) if per_channel else None,
                          embed)

        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            xs = x / s
            inside = tf.logical_and(xs >= qn, xs <= qp)
            dx = dy * tf.cast(inside, dy.dtype)
            ds_el = tf.where(inside, tf.round(xs) - xs,
                             tf.where(xs < qn, np.float32(qn), np.float32(qp)))
            ds = tf.reduce_sum(dy * ds_el, axis=reduce) * np.float32(g)
            return dx, tf.reshape(ds, tf.shape(s))

        return y, grad

    return _fq(x, step)


# --------------------------------------------------------------------------- presets


def weight_quantizer(bits: int = 8, per_channel: bool = True, symmetric: bool = True,
                     narrow_range: bool = True) -> MinMaxQuantizer:
    """The usual weight quantizer: last-value range, symmetric, narrow range, per channel.

    These are TFLite's int8 weight conventions (zero point 0, ``[-127, 127]``).

    >>> q = weight_quantizer(4)
    >>> q.bits, q.per_channel, q.symmetric, q.narrow_range, q.range_tracking
    (4, True, True, True, 'last_value')
    """
    return MinMaxQuantizer(bits=bits, per_channel=per_channel, symmetric=symmetric,
                           narrow_range=narrow_range, range_tracking="last_value")


def activation_quantizer(bits: int = 8, ema_decay: float = 0.999) -> MinMaxQuantizer:
    """The usual activation quantizer: moving-average range, asymmetric, per tensor."""
    return MinMaxQuantizer(bits=bits, symmetric=False, narrow_range=False,
                           range_tracking="moving_average", ema_decay=ema_decay)
