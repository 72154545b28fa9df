"""NumPy twins of the quantizers, and serialized quantizers/configs read as specs.

A :class:`QuantSpec` is how one tensor is quantized: bit width, granularity, symmetry,
and the map from the quantizer's stored variables to the ``[min, max]`` its FakeQuant
receives (:meth:`QuantSpec.stored_range`). One subclass per quantizer class, each the
bit-exact NumPy twin of the TensorFlow quantizer of the same name
(:mod:`tfmot_ext.quantizers`, whose classes build on these: ``q.spec`` is the twin and
``q.effective_range`` delegates to it), so that extraction computes the trained grid
from an H5 file without TensorFlow. :func:`spec_from_config` reads a serialized
quantizer (only tfmot_ext's and tfmot's classes, selected by class name: nothing is
imported or executed); :func:`wrapper_quant` reads a serialized QuantizeConfig.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from tfmot_ext import qmath
from tfmot_ext.errors import ConfigError, ExtractionError
from tfmot_ext.records import class_name as _class_name

__all__ = [
    "KNOWN_CONFIGS",
    "KNOWN_QUANTIZERS",
    "RANGE_TRACKING",
    "SPECS",
    "FixedRangeSpec",
    "LSQSpec",
    "MinMaxSpec",
    "PowerOfTwoSpec",
    "QuantSpec",
    "TfmotSpec",
    "UnknownQuantizerError",
    "WrapperQuant",
    "spec_from_config",
    "wrapper_quant",
]

RANGE_TRACKING = ("last_value", "moving_average", "all_values")

Axis = Any  # int | tuple[int, ...] | None


def _need(stored: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in stored:
        raise ExtractionError(f"missing quantizer variable '{key}'")
    return np.asarray(stored[key], np.float32)


def _check_range(prefix: str, lo: np.ndarray, hi: np.ndarray) -> None:
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ExtractionError(f"'{prefix}' range has NaN/Inf values: min={lo}, max={hi}")
    if np.any(lo > hi):
        raise ExtractionError(f"'{prefix}' range has min > max: min={lo}, max={hi}")


def _value_range(x: np.ndarray, axes: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    from tfmot_ext.params import channels_last

    if axes is None:
        return np.asarray(x.min(), np.float32), np.asarray(x.max(), np.float32)
    flat = channels_last(x, axes)
    flat = flat.reshape(-1, flat.shape[-1])
    return flat.min(0).astype(np.float32), flat.max(0).astype(np.float32)


def _stored_min_max(stored: Mapping[str, np.ndarray], prefix: str) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    lo, hi = _need(stored, f"{prefix}_min"), _need(stored, f"{prefix}_max")
    _check_range(prefix, lo, hi)
    return lo, hi


def _check_common(who: str, bits: int, per_channel: bool, axis: Any) -> tuple[int, Axis]:
    bits = qmath.validate_bits(bits, who)
    if axis is not None and not per_channel:
        raise ConfigError(f"{who}: axis={axis} given but per_channel=False; set per_channel=True")
    if isinstance(axis, list):
        axis = tuple(int(a) for a in axis)
    return bits, axis


class QuantSpec:
    """How one tensor is quantized, and the NumPy map from stored variables to its range.

    Attributes (every subclass has them): ``bits``, ``per_channel``, ``axis`` (the
    configured channel axis, None for the layer kind's), ``symmetric``,
    ``narrow_range``.

    Invariant: :meth:`stored_range` returns float32 ``(lo, hi)``, scalars per tensor or
    vectors of one entry per channel, bit for bit the range the TensorFlow quantizer
    of class ``QUANTIZER`` hands to FakeQuant (tests/test_quantizers.py).
    """

    QUANTIZER: ClassVar[str] = ""
    #: the constructor arguments of the quantizer class, in order
    CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()

    bits: int
    per_channel: bool
    axis: Axis
    symmetric: bool
    narrow_range: bool

    def config(self) -> dict[str, Any]:
        """The quantizer's constructor arguments (``get_config`` of its class)."""
        cfg = {k: getattr(self, k) for k in self.CONFIG_KEYS}
        if isinstance(cfg.get("axis"), tuple):
            cfg["axis"] = list(cfg["axis"])
        return cfg

    def stored_range(self, stored: Mapping[str, np.ndarray], prefix: str,
                     value: np.ndarray | None = None,
                     axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``[min, max]`` FakeQuant receives, from the variables ``stored`` (short
        name -> value, named ``<prefix>_min`` etc.) and, for a weight, its ``value``
        (channels along ``axes``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class MinMaxSpec(QuantSpec):
    """Twin of :class:`tfmot_ext.quantizers.MinMaxQuantizer` (its docstring has the math).

    Range from the stored raw ``(m, M)``: symmetric
    :func:`~tfmot_ext.qmath.symmetric_range`, else :func:`~tfmot_ext.qmath.widen_range`;
    a ``last_value`` quantizer with a value at hand uses the value's own range (as the
    layer does in inference).
    """

    QUANTIZER: ClassVar[str] = "MinMaxQuantizer"
    CONFIG_KEYS: ClassVar[tuple[str, ...]] = (
        "bits", "per_channel", "axis", "symmetric", "narrow_range", "range_tracking",
        "ema_decay")

    bits: int = 8
    per_channel: bool = False
    axis: Axis = None
    symmetric: bool = False
    narrow_range: bool = False
    range_tracking: str = "last_value"
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        who = self.QUANTIZER
        bits, axis = _check_common(who, self.bits, self.per_channel, self.axis)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "axis", axis)
        if self.range_tracking not in RANGE_TRACKING:
            raise ConfigError(
                f"{who}: range_tracking={self.range_tracking!r} is not one of {RANGE_TRACKING}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ConfigError(f"{who}: ema_decay={self.ema_decay} must be in [0, 1)")
        object.__setattr__(self, "ema_decay", float(self.ema_decay))


    def effective_range(self, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
        """The range handed to FakeQuant, from the raw tracked one."""
        if self.symmetric:
            return qmath.symmetric_range(lo, hi, self.bits, self.narrow_range)
        return qmath.widen_range(lo, hi)

    def stored_range(self, stored: Mapping[str, np.ndarray], prefix: str,
                     value: np.ndarray | None = None,
                     axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.range_tracking == "last_value" and value is not None:
            return self.effective_range(*_value_range(value, axes))
        return self.effective_range(*_stored_min_max(stored, prefix))


@dataclass(frozen=True)
class PowerOfTwoSpec(MinMaxSpec):
    """Twin of :class:`tfmot_ext.quantizers.PowerOfTwoQuantizer`:
    :func:`~tfmot_ext.qmath.power_of_two_range` of the tracked range."""

    QUANTIZER: ClassVar[str] = "PowerOfTwoQuantizer"

    symmetric: bool = True

    def effective_range(self, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
        return qmath.power_of_two_range(lo, hi, self.bits, self.narrow_range, self.symmetric)


@dataclass(frozen=True)
class FixedRangeSpec(QuantSpec):
    """Twin of :class:`tfmot_ext.quantizers.FixedRangeQuantizer`: the constant range."""

    QUANTIZER: ClassVar[str] = "FixedRangeQuantizer"
    CONFIG_KEYS: ClassVar[tuple[str, ...]] = ("min", "max", "bits", "narrow_range")

    min: float = -1.0
    max: float = 1.0
    bits: int = 8
    narrow_range: bool = False
    per_channel: bool = field(init=False, default=False)
    axis: Axis = field(init=False, default=None)
    symmetric: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        who = self.QUANTIZER
        object.__setattr__(self, "bits", qmath.validate_bits(self.bits, who))
        lo, hi = self.min, self.max
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ConfigError(f"{who}: min={lo}, max={hi} must be finite")
        if not (lo <= 0.0 <= hi and lo < hi):
            raise ConfigError(
                f"{who}: need min <= 0 <= max and min < max (got [{lo}, {hi}]): TFLite "
                "requires 0 to be representable")
        object.__setattr__(self, "min", float(lo))
        object.__setattr__(self, "max", float(hi))


    def effective_range(self, lo: Any = None, hi: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.min, np.float32), np.asarray(self.max, np.float32)

    def stored_range(self, stored: Mapping[str, np.ndarray], prefix: str,
                     value: np.ndarray | None = None,
                     axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.effective_range()


@dataclass(frozen=True)
class LSQSpec(QuantSpec):
    """Twin of :class:`tfmot_ext.quantizers.LSQQuantizer`: ``[Q_N * s, Q_P * s]`` of the
    stored step ``s`` (``<prefix>_step``); a step never initialised takes the paper's
    initial value ``2 * mean(|x|) / sqrt(Q_P)`` from the weight's value."""

    QUANTIZER: ClassVar[str] = "LSQQuantizer"
    CONFIG_KEYS: ClassVar[tuple[str, ...]] = ("bits", "per_channel", "axis", "signed",
                                              "narrow_range")

    bits: int = 4
    per_channel: bool = False
    axis: Axis = None
    signed: bool = True
    narrow_range: bool = False
    symmetric: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        bits, axis = _check_common(self.QUANTIZER, self.bits, self.per_channel, self.axis)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "axis", axis)
        if self.narrow_range and not self.signed:
            raise ConfigError("LSQQuantizer: narrow_range applies to signed grids only")
        object.__setattr__(self, "symmetric", bool(self.signed))

    def levels(self) -> tuple[int, int]:
        """``(Q_N, Q_P)``."""
        if self.signed:
            return qmath.integer_range(self.bits, self.narrow_range)
        return 0, (1 << self.bits) - 1

    def effective_range(self, step: Any, _unused: Any = None) -> tuple[np.ndarray, np.ndarray]:
        qn, qp = self.levels()
        s = np.asarray(step, np.float32)
        return (s * np.float32(qn)).astype(np.float32), (s * np.float32(qp)).astype(np.float32)

    def stored_range(self, stored: Mapping[str, np.ndarray], prefix: str,
                     value: np.ndarray | None = None,
                     axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        step = _need(stored, f"{prefix}_step")
        if np.any(step <= 0):
            if value is None:
                raise ExtractionError(f"'{prefix}' LSQ step was never initialised")
            step = np.maximum(2 * np.abs(value).mean() / math.sqrt(self.levels()[1]),
                              np.float32(qmath.MIN_RANGE)).astype(np.float32)
        return self.effective_range(step)


@dataclass(frozen=True)
class TfmotSpec(QuantSpec):
    """tfmot's LastValue/MovingAverage/AllValues quantizers: the stored ``<prefix>_min``
    / ``<prefix>_max`` are the range FakeQuant receives; per axis means the last axis."""

    QUANTIZER: ClassVar[str] = "LastValueQuantizer"

    bits: int = 8
    per_channel: bool = False
    symmetric: bool = False
    narrow_range: bool = False
    name: str = "LastValueQuantizer"
    axis: Axis = field(init=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", qmath.validate_bits(int(self.bits), self.name))

    def stored_range(self, stored: Mapping[str, np.ndarray], prefix: str,
                     value: np.ndarray | None = None,
                     axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = _stored_min_max(stored, prefix)
        return lo.astype(np.float32), hi.astype(np.float32)


#: tfmot_ext's quantizer class names -> their twins (fields: the constructor arguments)
SPECS: dict[str, type[QuantSpec]] = {
    "MinMaxQuantizer": MinMaxSpec,
    "PowerOfTwoQuantizer": PowerOfTwoSpec,
    "FixedRangeQuantizer": FixedRangeSpec,
    "LSQQuantizer": LSQSpec,
}
_TFMOT_QUANTIZERS = frozenset({"LastValueQuantizer", "MovingAverageQuantizer",
                               "AllValuesQuantizer"})
#: Every quantizer class whose serialized form :func:`spec_from_config` reads.
KNOWN_QUANTIZERS = frozenset({*SPECS, *_TFMOT_QUANTIZERS})


class UnknownQuantizerError(ExtractionError):
    """A quantizer class defined by code tfmot_ext does not have (a custom quantizer)."""


def spec_from_config(d: Any, where: str) -> QuantSpec | None:
    """A :class:`QuantSpec` from a serialized quantizer dict (None for None).

    Only tfmot_ext's and tfmot's quantizer classes are recognised; the class name
    selects one, nothing is imported or executed.
    """
    if d is None:
        return None
    if not isinstance(d, Mapping):
        raise ExtractionError(f"{where}: quantizer entry is not an object: {d!r}"[:300])
    name = _class_name(d)
    cfg = d.get("config", {})
    if not isinstance(cfg, Mapping):
        raise ExtractionError(f"{where}: quantizer config is not an object")
    if name in SPECS:
        cls = SPECS[name]
        unknown = set(cfg) - set(cls.CONFIG_KEYS)
        if unknown:
            raise ExtractionError(f"{where}: unknown {name} arguments {sorted(unknown)}")
        try:
            return cls(**cfg)
        except (TypeError, ValueError, ConfigError) as e:
            raise ExtractionError(f"{where}: invalid {name} config: {e}") from e
    if name in _TFMOT_QUANTIZERS:
        try:
            return TfmotSpec(int(cfg.get("num_bits", 8)), bool(cfg.get("per_axis", False)),
                             bool(cfg.get("symmetric", False)),
                             bool(cfg.get("narrow_range", False)), name)
        except (TypeError, ValueError, ConfigError) as e:
            raise ExtractionError(f"{where}: invalid {name} num_bits: {e}") from e
    raise UnknownQuantizerError(
        f"{where}: quantizer class '{name}' is not one tfmot_ext can read (tfmot_ext's "
        "MinMax/PowerOfTwo/FixedRange/LSQ or tfmot's LastValue/MovingAverage/AllValues); "
        "extract the live model or pass the class (custom_objects) to have it replayed, "
        "or train with tfmot_ext.weight_quantizer(bits) in a tfmot_ext.LayerQuantizeConfig"
    )


#: QuantizeConfig classes whose serialized form says how they quantize
KNOWN_CONFIGS = frozenset({
    "LayerQuantizeConfig", "Default8BitQuantizeConfig", "Default8BitConvQuantizeConfig",
    "Default8BitConvTransposeQuantizeConfig", "Default8BitOutputQuantizeConfig",
    "Default8BitActivationQuantizeConfig", "OutputOnlyConfig", "NoOpQuantizeConfig",
})

_T8_WEIGHT = {"class_name": "LastValueQuantizer",
              "config": {"num_bits": 8, "per_axis": False, "symmetric": True,
                         "narrow_range": True}}
_T8_WEIGHT_PC = {"class_name": "LastValueQuantizer",
                 "config": {"num_bits": 8, "per_axis": True, "symmetric": True,
                            "narrow_range": True}}
_T8_ACT = {"class_name": "MovingAverageQuantizer",
           "config": {"num_bits": 8, "per_axis": False, "symmetric": False,
                      "narrow_range": False}}


@dataclass(frozen=True)
class WrapperQuant:
    """The specs of a serialized QuantizeConfig: weight attribute -> spec, the
    activation's, the output's."""

    weights: dict[str, QuantSpec]
    activation: QuantSpec | None
    output: QuantSpec | None
    optional_output: bool = False


def wrapper_quant(qc: Any, where: str) -> WrapperQuant:
    """Read a serialized QuantizeConfig (tfmot_ext's or tfmot's default ones)."""
    if not isinstance(qc, Mapping):
        raise ExtractionError(f"{where}: quantize_config is missing or not an object")
    name = _class_name(qc)
    cfg = qc.get("config", {}) or {}
    if name == "LayerQuantizeConfig":
        weights = {str(k): spec_from_config(v, f"{where}.{k}")
                   for k, v in (cfg.get("weights") or {}).items()}
        acts = cfg.get("activations") or {}
        act = spec_from_config(acts.get("activation"), f"{where}.activation") if acts else None
        out = spec_from_config(cfg.get("output"), f"{where}.output")
        return WrapperQuant({k: v for k, v in weights.items() if v is not None}, act, out)
    if name in ("Default8BitQuantizeConfig", "Default8BitConvQuantizeConfig",
                "Default8BitConvTransposeQuantizeConfig"):
        wq = _T8_WEIGHT_PC if name == "Default8BitConvQuantizeConfig" else _T8_WEIGHT
        w = {str(a): spec_from_config(wq, where) for a in cfg.get("weight_attrs", [])}
        act = spec_from_config(_T8_ACT, where) if cfg.get("activation_attrs") else None
        out = spec_from_config(_T8_ACT, where) if cfg.get("quantize_output") else None
        return WrapperQuant({k: v for k, v in w.items() if v is not None}, act, out)
    if name == "Default8BitOutputQuantizeConfig":
        return WrapperQuant({}, None, spec_from_config(_T8_ACT, where))
    if name == "Default8BitActivationQuantizeConfig":
        # output quantized for relu/swish/gelu/relu6 activations only; the reader
        # checks that the output range variables exist
        out = spec_from_config(_T8_ACT, where) if cfg.get("quantize_output", True) else None
        return WrapperQuant({}, None, out, optional_output=True)
    if name == "OutputOnlyConfig":
        return WrapperQuant({}, None, spec_from_config(_T8_ACT, where))
    if name == "NoOpQuantizeConfig":
        return WrapperQuant({}, None, None)
    raise ExtractionError(
        f"{where}: QuantizeConfig class '{name}' is not one tfmot_ext can read; its "
        "quantized values cannot be recovered without its code"
    )
