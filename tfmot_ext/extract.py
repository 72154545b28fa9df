"""Extraction: integer weights, int32 biases, scales, zero points and multipliers.

``extract(model_or_h5_path)`` works from a live QAT model or from an H5 checkpoint
read with ``h5py`` only: the stored model-config JSON gives the graph and the
quantizer settings, the weight datasets give the values. Nothing stored in the
file is executed (no ``load_model``, no custom objects, no unpickling; class names
only select among the quantizers tfmot_ext and tfmot define). Both paths feed the
same parser, so they give identical results.

The arithmetic (Jacob et al. 2017, arXiv 1712.05877, section 2):

* weights: ``q_w = quantize_to_int(w, nudge(effective_range(vars)))``, so that
  ``(q_w - zp_w) * s_w`` is the quantizer's fake-quant output bit for bit;
* bias: ``s_b = s_in * s_w`` (per channel), ``q_b = round(b / s_b)`` as int32;
* requantization: ``M = s_in * s_w / s_out`` (float64, per channel), written as
  ``M = M0 * 2**(shift - 31)`` with ``M0`` a Q31 int32 in ``[2**30, 2**31)``, the way
  TFLite's ``QuantizeMultiplier`` does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tfmot_ext import qmath
from tfmot_ext._compat import check_keras2
from tfmot_ext.configs import channel_axis_of_kind
from tfmot_ext.errors import ExtractionError, H5FormatError
from tfmot_ext.folding import fold_numpy
from tfmot_ext.graph import PASS_THROUGH_OPS
from tfmot_ext.quantizers import (
    EXACT_WEIGHT_BITS,
    FixedRangeQuantizer,
    LSQQuantizer,
    MinMaxQuantizer,
    PowerOfTwoQuantizer,
    normalize_axis,
)

__all__ = [
    "PASS_THROUGH",
    "LayerQuantParams",
    "QuantSpec",
    "QuantizedModelParams",
    "TensorQuant",
    "extract",
    "inbound_layer_names",
    "int8_embedded",
    "quantize_multiplier",
    "read_model_config",
    "requant_multiplier",
]

logger = logging.getLogger(__name__)

#: Layers that pass their input's quantization through unchanged (no own range).
PASS_THROUGH = frozenset({
    "Flatten", "Reshape", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "Permute", "ZeroPadding2D", "Cropping2D",
    "InputLayer", "Activation", "ReLU", "BatchNormalization", "GlobalMaxPooling2D",
    "GlobalMaxPooling1D", "UpSampling2D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "Identity",
})
_WRAPPERS = frozenset({"QuantizeWrapper", "QuantizeWrapperV2"})
_WEIGHT_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings",
                 "recurrent_kernel")


# --------------------------------------------------------------------------- math


def quantize_multiplier(m: npt.ArrayLike) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """TFLite's ``QuantizeMultiplier``: ``m = M0 * 2**(shift - 31)``, ``M0`` a Q31 int32.

    ``(q, shift) = frexp(m)`` with ``q`` in ``[0.5, 1)``; ``M0 = round_half_away(q * 2**31)``
    (``M0 == 2**31`` becomes ``2**30`` with ``shift + 1``); ``shift < -31`` gives
    ``(0, 0)``; ``shift > 30`` saturates to ``(2**31 - 1, 30)``; ``m == 0`` gives ``(0, 0)``.

    >>> quantize_multiplier(0.25)
    (array(1073741824, dtype=int32), array(-1, dtype=int32))
    """
    mm = np.asarray(m, np.float64)
    q, shift = np.frexp(mm)
    m0 = qmath.round_half_away(q * 2.0**31)
    over = m0 == 2.0**31
    m0 = np.where(over, m0 / 2, m0)
    shift = np.where(over, shift + 1, shift)
    tiny = shift < -31
    m0 = np.where(tiny, 0, m0)
    shift = np.where(tiny, 0, shift)
    big = shift > 30
    m0 = np.where(big, 2.0**31 - 1, m0)
    shift = np.where(big, 30, shift)
    zero = mm == 0
    return (np.where(zero, 0, m0).astype(np.int32),
            np.where(zero, 0, shift).astype(np.int32))


def requant_multiplier(input_scale: float, kernel_scale: npt.ArrayLike, output_scale: float,
                       per_tensor_fc: bool = False) -> npt.NDArray[np.float64]:
    """The real multiplier ``M = s_in * s_w / s_out`` the way TFLite's kernels compute it.

    From the float32 scales stored in the model, in float64:
    ``double(s_in) * double(s_w) / double(s_out)`` per output channel (Conv2D,
    DepthwiseConv2D, per-channel FullyConnected); a per-tensor FullyConnected takes the
    product in float32 first, ``double(float(s_in * s_w)) / double(s_out)``
    (``GetQuantizedConvolutionMultipler``).

    >>> float(requant_multiplier(0.5, 0.25, 0.0625))
    2.0
    """
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    s_w = np.asarray(kernel_scale, np.float32)
    if per_tensor_fc:
        prod = (s_in * s_w).astype(np.float32).astype(np.float64)
    else:
        prod = np.float64(s_in) * s_w.astype(np.float64)
    return np.asarray(prod / np.float64(s_out), np.float64)


def _round_to_int32(x: np.ndarray) -> npt.NDArray[np.int32]:
    """``round_half_away(x)`` saturated to int32 (how the converter quantizes biases)."""
    return np.clip(qmath.round_half_away(x), -(2**31), 2**31 - 1).astype(np.int32)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized, as read from a (serialized) quantizer.

    ``effective_range(stored)`` maps the quantizer's stored variables to the
    ``[min, max]`` handed to FakeQuant; for tfmot's own quantizers the stored range
    *is* that range.
    """

    kind: str  # "minmax", "pow2", "fixed", "lsq", "tfmot"
    bits: int
    per_channel: bool
    axis: Any
    symmetric: bool
    narrow_range: bool
    quantizer: Any = field(default=None, compare=False)

    def effective_range(self, stored: Mapping[str, np.ndarray], prefix: str,
                        value: np.ndarray | None,
                        axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = self.quantizer
        if self.kind == "fixed":
            return q.effective_range()
        if self.kind == "lsq":
            step = _need(stored, f"{prefix}_step")
            if np.any(step <= 0):
                if value is None:
                    raise ExtractionError(f"'{prefix}' LSQ step was never initialised")
                step = np.maximum(2 * np.abs(value).mean() / math.sqrt(q.levels()[1]),
                                  np.float32(qmath.MIN_RANGE)).astype(np.float32)
            return q.effective_range(step)
        if self.kind != "tfmot" and q.range_tracking == "last_value" and value is not None:
            lo, hi = _value_range(value, axes)
            return q.effective_range(lo, hi)
        lo, hi = _need(stored, f"{prefix}_min"), _need(stored, f"{prefix}_max")
        _check_range(prefix, lo, hi)
        if self.kind == "tfmot":
            return lo.astype(np.float32), hi.astype(np.float32)
        return q.effective_range(lo, hi)


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
    if axes is None:
        return np.asarray(x.min(), np.float32), np.asarray(x.max(), np.float32)
    flat = _channels_last(x, axes)
    flat = flat.reshape(-1, flat.shape[-1])
    return flat.min(0).astype(np.float32), flat.max(0).astype(np.float32)


def _channels_last(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    rank = x.ndim
    perm = [i for i in range(rank) if i not in axes] + list(axes)
    moved = np.transpose(x, perm)
    return moved.reshape(*moved.shape[: rank - len(axes)], -1)


def _from_channels_last(y: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    rank = len(shape)
    perm = [i for i in range(rank) if i not in axes] + list(axes)
    moved_shape = tuple(shape[p] for p in perm)
    return np.transpose(y.reshape(moved_shape), np.argsort(perm))


_OUR_QUANTIZERS: dict[str, type] = {
    "MinMaxQuantizer": MinMaxQuantizer,
    "PowerOfTwoQuantizer": PowerOfTwoQuantizer,
    "FixedRangeQuantizer": FixedRangeQuantizer,
    "LSQQuantizer": LSQQuantizer,
}
_TFMOT_QUANTIZERS = frozenset({"LastValueQuantizer", "MovingAverageQuantizer",
                               "AllValuesQuantizer"})


def _class_name(d: Mapping[str, Any]) -> str:
    return str(d.get("class_name", "")).split(">")[-1]


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
    if name in _OUR_QUANTIZERS:
        cls = _OUR_QUANTIZERS[name]
        allowed = set(cls._CONFIG_KEYS)  # type: ignore[attr-defined]
        unknown = set(cfg) - allowed
        if unknown:
            raise ExtractionError(f"{where}: unknown {name} arguments {sorted(unknown)}")
        try:
            q = cls(**cfg)
        except (TypeError, ValueError) as e:
            raise ExtractionError(f"{where}: invalid {name} config: {e}") from e
        kind = {"MinMaxQuantizer": "minmax", "PowerOfTwoQuantizer": "pow2",
                "FixedRangeQuantizer": "fixed", "LSQQuantizer": "lsq"}[name]
        sym = bool(getattr(q, "symmetric", kind == "lsq" and q.signed))
        if kind == "fixed":
            sym = False
        return QuantSpec(kind, q.bits, bool(getattr(q, "per_channel", False)),
                         getattr(q, "axis", None), sym, bool(q.narrow_range), q)
    if name in _TFMOT_QUANTIZERS:
        try:
            bits = qmath.validate_bits(int(cfg.get("num_bits", 8)), where)
        except (TypeError, ValueError) as e:
            raise ExtractionError(f"{where}: invalid {name} num_bits: {e}") from e
        per_axis = bool(cfg.get("per_axis", False))
        return QuantSpec("tfmot", bits, per_axis, None, bool(cfg.get("symmetric", False)),
                         bool(cfg.get("narrow_range", False)), None)
    raise _UnknownQuantizerError(
        f"{where}: quantizer class '{name}' is not one tfmot_ext can read (tfmot_ext's "
        "MinMax/PowerOfTwo/FixedRange/LSQ or tfmot's LastValue/MovingAverage/AllValues)"
    )


class _UnknownQuantizerError(ExtractionError):
    """A quantizer class defined by code tfmot_ext does not have (a custom quantizer)."""


_KNOWN_CONFIGS = frozenset({
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
class _WrapperQuant:
    weights: dict[str, QuantSpec]
    activation: QuantSpec | None
    output: QuantSpec | None
    optional_output: bool = False


def _wrapper_quant(qc: Any, where: str) -> _WrapperQuant:
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
        return _WrapperQuant({k: v for k, v in weights.items() if v is not None}, act, out)
    if name in ("Default8BitQuantizeConfig", "Default8BitConvQuantizeConfig",
                "Default8BitConvTransposeQuantizeConfig"):
        wq = _T8_WEIGHT_PC if name == "Default8BitConvQuantizeConfig" else _T8_WEIGHT
        w = {str(a): spec_from_config(wq, where) for a in cfg.get("weight_attrs", [])}
        act = spec_from_config(_T8_ACT, where) if cfg.get("activation_attrs") else None
        out = spec_from_config(_T8_ACT, where) if cfg.get("quantize_output") else None
        return _WrapperQuant({k: v for k, v in w.items() if v is not None}, act, out)
    if name == "Default8BitOutputQuantizeConfig":
        return _WrapperQuant({}, None, spec_from_config(_T8_ACT, where))
    if name == "Default8BitActivationQuantizeConfig":
        # output quantized for relu/swish/gelu/relu6 activations only; the reader
        # checks that the output range variables exist
        out = spec_from_config(_T8_ACT, where) if cfg.get("quantize_output", True) else None
        return _WrapperQuant({}, None, out, optional_output=True)
    if name == "OutputOnlyConfig":
        return _WrapperQuant({}, None, spec_from_config(_T8_ACT, where))
    if name == "NoOpQuantizeConfig":
        return _WrapperQuant({}, None, None)
    raise ExtractionError(
        f"{where}: QuantizeConfig class '{name}' is not one tfmot_ext can read; its "
        "quantized values cannot be recovered without its code"
    )


# --------------------------------------------------------------------------- records


@dataclass
class _Record:
    name: str
    class_name: str
    config: dict[str, Any]
    inbound: list[str]
    weights: dict[str, np.ndarray]


def _short(name: str) -> str:
    return name.split("/")[-1].split(":")[0]


def inbound_layer_names(entry: Mapping[str, Any]) -> list[str]:
    """Names of the layers feeding one layer entry of a functional model config."""
    out: list[str] = []
    for node in entry.get("inbound_nodes", []) or []:
        items = node if isinstance(node, list) else (node.get("args", []) if isinstance(
            node, Mapping) else [])
        for item in items:
            if isinstance(item, list) and item and isinstance(item[0], str):
                out.append(item[0])
            elif isinstance(item, Mapping) and "config" in item:  # keras-3 style history
                hist = item["config"].get("keras_history") if isinstance(
                    item["config"], Mapping) else None
                if isinstance(hist, list) and hist and isinstance(hist[0], str):
                    out.append(hist[0])
    return out


def _records_from_config(model_config: Mapping[str, Any], where: str) -> list[_Record]:
    if not isinstance(model_config, Mapping) or "config" not in model_config:
        raise H5FormatError(f"{where}: model config has no 'config' entry")
    cfg = model_config["config"]
    layers = cfg.get("layers") if isinstance(cfg, Mapping) else None
    if not isinstance(layers, list):
        raise H5FormatError(f"{where}: model config lists no layers")
    sequential = model_config.get("class_name") == "Sequential"
    records: list[_Record] = []
    prev: str | None = None
    for i, entry in enumerate(layers):
        if not isinstance(entry, Mapping):
            raise H5FormatError(f"{where}: layer #{i} of the model config is not an object")
        lc = entry.get("config", {})
        name = entry.get("name") or (lc.get("name") if isinstance(lc, Mapping) else None)
        if not isinstance(name, str):
            raise H5FormatError(f"{where}: layer #{i} has no name")
        inbound = ([prev] if prev else []) if sequential else inbound_layer_names(entry)
        records.append(_Record(name, _class_name(entry), dict(lc) if isinstance(lc, Mapping)
                               else {}, inbound, {}))
        prev = name
    return records


def _records_from_model(model: Any) -> list[_Record]:
    check_keras2(model, "model")
    records = _records_from_config({"class_name": type(model).__name__,
                                    "config": model.get_config()}, f"model '{model.name}'")
    by_name = {r.name: r for r in records}
    for layer in model.layers:
        rec = by_name.get(layer.name)
        if rec is not None:
            rec.weights = {_short(w.name): np.asarray(w.numpy()) for w in layer.weights}
    return records


#: Largest dataset tfmot_ext reads from an H5 file (elements, 256 Mi = 1 GiB of
#: float32); a guard against corrupted or hostile declared shapes.
MAX_DATASET_ELEMENTS = 1 << 28
#: Largest model-config JSON accepted (characters).
MAX_CONFIG_CHARS = 64 << 20

#: What h5py/HDF5 and json raise on damaged input; mapped to H5FormatError.
_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError,
                RecursionError, UnicodeDecodeError, IndexError, OverflowError)


def _records_from_h5(path: str) -> list[_Record]:
    try:
        return _read_h5(path)
    except H5FormatError:
        raise
    except _READ_ERRORS as e:
        raise H5FormatError(f"'{path}' is damaged or not a Keras H5 model "
                            f"({type(e).__name__}: {e})"[:600]) from e


def _model_config(f: Any, path: str) -> Any:
    """The parsed ``model_config`` JSON of an open Keras H5 file (no Keras involved)."""
    raw = f.attrs.get("model_config")
    if raw is None:
        raise H5FormatError(
            f"'{path}' has no 'model_config' attribute: it is a weights-only file or not a "
            "Keras H5 model; save the QAT model with model.save('x.h5')")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or len(raw) > MAX_CONFIG_CHARS:
        raise H5FormatError(f"'{path}': model_config is not a JSON string of sane size")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise H5FormatError(f"'{path}': model_config is not valid JSON ({e})") from e


def read_model_config(path: str | os.PathLike[str]) -> Any:
    """The model config JSON stored in a Keras H5 file, read with h5py only.

    Raises:
        H5FormatError: missing, unreadable or not a Keras H5 model.
    """
    import h5py

    p = os.fspath(path)
    try:
        with h5py.File(p, "r") as f:
            return _model_config(f, p)
    except H5FormatError:
        raise
    except _READ_ERRORS as e:
        raise H5FormatError(f"'{p}' is not a readable Keras H5 file ({e})"[:600]) from e


def _read_h5(path: str) -> list[_Record]:
    import h5py

    if not os.path.exists(path):
        raise H5FormatError(f"'{path}': no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise H5FormatError(f"'{path}' is not a readable HDF5 file ({e}); pass a Keras H5 "
                            "checkpoint saved with model.save('x.h5')") from e
    with f:
        records = _records_from_config(_model_config(f, path), f"'{path}'")
        if "model_weights" not in f:
            raise H5FormatError(f"'{path}' has no 'model_weights' group")
        group = f["model_weights"]
        for rec in records:
            if rec.name not in group:
                continue
            g = group[rec.name]
            if not isinstance(g, h5py.Group):
                raise H5FormatError(f"'{path}': 'model_weights/{rec.name}' is not a group")
            names = g.attrs.get("weight_names", [])
            for wn in np.atleast_1d(names):
                wname = wn.decode() if isinstance(wn, bytes) else str(wn)
                try:
                    ds = g[wname]
                except KeyError as e:
                    raise H5FormatError(
                        f"'{path}': layer '{rec.name}' lists weight '{wname}' but the dataset "
                        "is missing") from e
                if not isinstance(ds, h5py.Dataset):
                    raise H5FormatError(f"'{path}': '{rec.name}/{wname}' is not a dataset")
                if ds.dtype.kind not in "fiu" or ds.size > MAX_DATASET_ELEMENTS:
                    raise H5FormatError(
                        f"'{path}': '{rec.name}/{wname}' has dtype {ds.dtype} and shape "
                        f"{ds.shape}; expected a numeric weight tensor")
                try:
                    rec.weights[_short(wname)] = np.asarray(ds[()])
                except (OSError, ValueError) as e:
                    raise H5FormatError(f"'{path}': cannot read '{rec.name}/{wname}': {e}") from e
    return records


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TensorQuant:
    """Scale and zero point of a tensor between layers (per tensor).

    ``scale`` and ``zero_point`` are the deployed ones: the TFLite converter's
    float64 derivation from the trained range (:func:`tfmot_ext.qmath.converter_params`),
    stored as float32, exactly what the ``.tflite`` file holds. ``min``/``max`` are the
    range TF's FakeQuant used in training after nudging; ``range_min``/``range_max``
    the range handed to it (trained, before nudging).

    Invariants: ``qmin <= zero_point <= qmax`` of ``bits``; ``scale > 0``;
    ``range_min <= min <= 0 <= max`` up to one step; ``scale`` is within one float32
    ulp of TF's training scale ``(max - min) / (2**bits - 1)``.
    """

    scale: float
    zero_point: int
    bits: int
    min: float
    max: float
    range_min: float
    range_max: float

    @property
    def exact_scale(self) -> float:
        """The converter's float64 scale (``scale`` is its float32 rounding)."""
        return float(qmath.converter_params(self.range_min, self.range_max, self.bits)[0])


@dataclass(frozen=True)
class LayerQuantParams:
    """The quantized parameters of one layer.

    Invariants (asserted by ``tests/test_extract.py``):

    * ``kernel_int`` has the Keras layout of the kernel, dtype int8 for ``bits <= 8``
      and int16 up to 16, every value in ``[qmin, qmax]`` of ``bits``/``narrow_range``;
    * ``(kernel_int - kernel_zero_point) * fake_quant_scale`` (float32, broadcast along
      ``axis``) equals the layer's weight quantizer's fake-quant output bit for bit;
    * ``kernel_scale`` is the deployed scale (the TFLite converter's float64 derivation
      from the trained range, as float32: what the ``.tflite`` stores) and is within one
      float32 ulp of ``fake_quant_scale`` (TF's float32 arithmetic in training);
    * ``bias_scale == float32(input.exact_scale * exact kernel scale)`` (within one ulp
      of ``input_scale * output_channel_scale``) and
      ``|bias_int * bias_scale - bias| <= bias_scale / 2`` unless int32 saturates;
    * ``multiplier == requant_multiplier(input_scale, output_channel_scale,
      output_scale)`` (float64, TFLite's formula) and ``multiplier_q31 * 2**(shift - 31)``
      equals it within ``2**-31`` relative.

    Fields that do not apply are None (a float layer has only ``weights``).

    Attributes:
        name: layer name in the QAT model.
        kind: class name of the (inner) layer.
        inputs: names of the layers feeding it.
        quantized: whether any tensor of the layer is quantized.
        folded: whether BatchNormalization is folded into the kernel.
        activation: the fused activation ("linear", "relu", "relu6", ...).
        bits, symmetric, narrow_range, axis: the kernel quantizer's settings; ``axis``
            is the channel axis tuple in the Keras layout, None per tensor.
        kernel_attr: which weight attribute is the kernel.
        kernel_int, kernel_scale, kernel_zero_point: the integer kernel (deployed scale).
        fake_quant_scale: the scale TF's FakeQuant used in training (float32).
        bias, bias_int, bias_scale: float bias and its int32 form.
        input, output: quantization of the input and output tensors.
        multiplier, multiplier_q31, shift: requantization, per output channel.
        weights: every float weight of the layer, by short name.
        note: why a wrapped layer is reported as float (e.g. an unreadable config).
        config: the Keras config of the op (strides, padding, pool size, ...); for a
            folded layer, that of the Conv/Depthwise/Dense it folds into plus
            ``batchnorm_epsilon``.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    quantized: bool
    folded: bool = False
    activation: str = "linear"
    bits: int | None = None
    symmetric: bool | None = None
    narrow_range: bool | None = None
    axis: tuple[int, ...] | None = None
    kernel_attr: str | None = None
    kernel_int: np.ndarray | None = None
    kernel_scale: np.ndarray | None = None
    kernel_zero_point: np.ndarray | None = None
    fake_quant_scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    bias_int: np.ndarray | None = None
    bias_scale: np.ndarray | None = None
    input: TensorQuant | None = None
    output: TensorQuant | None = None
    multiplier: np.ndarray | None = None
    multiplier_q31: np.ndarray | None = None
    shift: np.ndarray | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_scale(self) -> float | None:
        return None if self.input is None else self.input.scale

    @property
    def input_zero_point(self) -> int | None:
        return None if self.input is None else self.input.zero_point

    @property
    def output_scale(self) -> float | None:
        return None if self.output is None else self.output.scale

    @property
    def output_zero_point(self) -> int | None:
        return None if self.output is None else self.output.zero_point

    @property
    def output_channel_scale(self) -> np.ndarray | None:
        """``kernel_scale`` indexed by output channel (bias and multiplier use this).

        Equal to ``kernel_scale`` except for a depthwise kernel quantized per
        multiplier index only (tfmot's per-axis quantizer), whose ``M`` scales repeat
        over the ``C`` input channels.
        """
        if self.kernel_scale is None or self.kernel_int is None or self.kernel_attr is None:
            return None
        return _per_output_channel(self.kernel_scale, self.kernel_int.shape, self.kernel_attr,
                                   self.axis)

    def dequantized_kernel(self) -> np.ndarray:
        """``(kernel_int - zero_point) * fake_quant_scale`` in float32, along ``axis``.

        Bit for bit the weight quantizer's fake-quant output (what training used).
        """
        if (self.kernel_int is None or self.fake_quant_scale is None
                or self.kernel_zero_point is None):
            raise ExtractionError(f"layer '{self.name}' has no quantized kernel")
        k = self.kernel_int.astype(np.int64)
        s = self.fake_quant_scale
        if self.axis is None:
            return ((k - self.kernel_zero_point).astype(np.float32) * s).astype(np.float32)
        flat = _channels_last(k, self.axis)
        deq = ((flat - self.kernel_zero_point).astype(np.float32) * s).astype(np.float32)
        return _from_channels_last(deq, k.shape, self.axis)


def _bias_and_requant(scale64: np.ndarray, kernel_shape: tuple[int, ...], attr: str,
                      axes: tuple[int, ...] | None, op_kind: str, bias: Any,
                      inp: TensorQuant | None, out: TensorQuant | None) -> tuple[Any, ...]:
    """``(bias_int, bias_scale, multiplier, multiplier_q31, shift)`` on the deployed
    kernel scale ``scale64`` (float64): ``bias_scale = float32(s_in_f64 * s_w_f64)``,
    ``bias_int = round(b / (s_in_f64 * s_w_f64))``, the multipliers from the float32
    scales (:func:`requant_multiplier`); None where the input or output is unknown."""
    bias_int = bias_scale = mult = m0 = shift = None
    if inp is not None:
        bias64 = inp.exact_scale * _per_output_channel(scale64, kernel_shape, attr, axes)
        bias_scale = bias64.astype(np.float32)
        if bias is not None:
            bias_int = _round_to_int32(np.asarray(bias, np.float64) / bias64)
        if out is not None:
            scale = _per_output_channel(scale64.astype(np.float32), kernel_shape, attr, axes)
            mult = requant_multiplier(inp.scale, scale, out.scale,
                                      per_tensor_fc=op_kind == "Dense" and axes is None)
            m0, shift = quantize_multiplier(mult)
    return bias_int, bias_scale, mult, m0, shift


def int8_embedded(p: LayerQuantParams) -> LayerQuantParams:
    """The layer as TFLite deploys it: ``p`` itself, except for a kernel trained at a
    width ``b < 8`` other than 4, whose grid :func:`tfmot_ext.to_tflite` embeds in int8
    (:func:`tfmot_ext.quantizers.int8_embedding`).

    There, with ``f = 2**(8 - b)``: ``kernel_int * f`` and ``kernel_zero_point * f`` at
    ``bits = 8``; ``kernel_scale`` the converter's float64 derivation from the embedded
    range (:func:`tfmot_ext.qmath.int8_embedding` of ``fake_quant_scale`` and the zero
    point), as float32, about ``kernel_scale / f``; ``fake_quant_scale`` TF's float32
    scale of that range; the int32 bias and the multipliers recomputed on that scale
    as :func:`extract` computes them.

    Invariants (asserted by ``tests/test_extract.py::test_parity_with_tflite``, with the
    TFLite tensors): ``kernel_int`` is in the 8-bit range; ``dequantized_kernel()``
    equals ``p``'s within 2 float32 ulp (the same real values, ``s / f`` and ``s``
    rendered in float32); ``|bias_int * bias_scale - bias| <= bias_scale / 2``; the
    multipliers are :func:`requant_multiplier` of the new scale.
    """
    if (p.kernel_int is None or p.bits is None or p.bits >= 8 or p.bits in EXACT_WEIGHT_BITS
            or p.fake_quant_scale is None or p.kernel_zero_point is None
            or p.kernel_attr is None or p.narrow_range is None):
        return p
    f = 1 << (8 - p.bits)
    lo8, hi8 = qmath.int8_embedding(p.fake_quant_scale, p.kernel_zero_point, p.bits,
                                    p.narrow_range)
    scale64 = qmath.converter_params(lo8, hi8, 8, p.narrow_range)[0]
    scale = scale64.astype(np.float32)
    kernel = (p.kernel_int.astype(np.int64) * f).astype(np.int8)
    bias_int, bias_scale, mult, m0, shift = _bias_and_requant(
        scale64, kernel.shape, p.kernel_attr, p.axis, _FOLDED_KINDS.get(p.kind, p.kind),
        p.bias, p.input, p.output)
    return dataclasses.replace(
        p, bits=8, kernel_int=kernel, kernel_scale=scale,
        kernel_zero_point=(np.asarray(p.kernel_zero_point, np.int64) * f).astype(np.int32),
        fake_quant_scale=qmath.nudge(lo8, hi8, 8, p.narrow_range).scale, bias_int=bias_int,
        bias_scale=bias_scale, multiplier=mult, multiplier_q31=m0, shift=shift)


@dataclass(frozen=True)
class QuantizedModelParams(Mapping[str, LayerQuantParams]):
    """Ordered mapping layer name -> :class:`LayerQuantParams`, plus the graph.

    Invariant: ``edges`` only name layers of the mapping; the order is the model's.
    """

    layers: OrderedDict[str, LayerQuantParams]
    edges: tuple[tuple[str, str], ...]
    source: str

    def __getitem__(self, key: str) -> LayerQuantParams:
        return self.layers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def quantized_layers(self) -> list[LayerQuantParams]:
        """Layers that carry an integer kernel."""
        return [p for p in self.layers.values() if p.kernel_int is not None]


# --------------------------------------------------------------------------- parser


def _tensor_quant(spec: QuantSpec, stored: Mapping[str, np.ndarray], prefix: str) -> TensorQuant:
    lo, hi = spec.effective_range(stored, prefix, None)
    r = qmath.nudge(lo, hi, spec.bits, spec.narrow_range)
    if np.ndim(r.scale) != 0:
        raise ExtractionError(f"'{prefix}': per-channel activation ranges are not supported")
    if not float(r.scale) > 0:
        raise ExtractionError(
            f"'{prefix}' has an empty range [{float(lo)}, {float(hi)}]: the quantizer never saw "
            "data; train or calibrate the QAT model before extracting")
    scale64, zp = qmath.converter_params(lo, hi, spec.bits, spec.narrow_range)
    return TensorQuant(float(np.float32(scale64)), int(zp), spec.bits, float(r.nudged_min),
                       float(r.nudged_max), float(lo), float(hi))


def _activation_name(layer_cfg: Mapping[str, Any]) -> str:
    """The layer's activation name, seen through tfmot's activation wrappers."""
    act: Any = layer_cfg.get("activation", "linear")
    for _ in range(4):
        if not isinstance(act, Mapping):
            break
        cls, cfg = _class_name(act), act.get("config", {})
        if cls == "NoOpActivation":
            return "linear"
        if cls == "QuantizeAwareActivation" and isinstance(cfg, Mapping):
            act = cfg.get("activation", "linear")
            continue
        act = cfg.get("name") if isinstance(cfg, Mapping) and cfg.get("name") else cls
    return str(act)


def _channel_axis(kind: str, attr: str, rank: int, spec: QuantSpec) -> tuple[int, ...] | None:
    if not spec.per_channel:
        return None
    if spec.kind == "tfmot":
        return (rank - 1,)
    axis = spec.axis if spec.axis is not None else channel_axis_of_kind(kind, attr, rank)
    return normalize_axis(axis, rank, attr)


class _Parser:
    def __init__(self, records: list[_Record], source: str) -> None:
        self.records = records
        self.by_name = {r.name: r for r in records}
        self.source = source
        self.consumers: dict[str, list[str]] = {r.name: [] for r in records}
        for r in records:
            for i in r.inbound:
                self.consumers.setdefault(i, []).append(r.name)
        self._out_cache: dict[str, TensorQuant | None] = {}
        self.notes: dict[str, str] = {}
        self._quant: dict[str, _WrapperQuant | None] = {}

    def where(self, name: str) -> str:
        return f"{self.source}: layer '{name}'"

    def wrapper_quant(self, rec: _Record) -> _WrapperQuant | None:
        if rec.name not in self._quant:
            q = None
            if rec.class_name in _WRAPPERS:
                qc = rec.config.get("quantize_config")
                if isinstance(qc, Mapping) and _class_name(qc) not in _KNOWN_CONFIGS:
                    self.notes[rec.name] = (
                        f"QuantizeConfig '{_class_name(qc)}' is not one tfmot_ext can read "
                        "without its code; the layer is reported with its float weights")
                    logger.warning("%s: %s", self.where(rec.name), self.notes[rec.name])
                else:
                    try:
                        q = _wrapper_quant(qc, self.where(rec.name))
                    except _UnknownQuantizerError as e:
                        self.notes[rec.name] = (
                            f"{str(e).split(': ', 1)[-1]}; its quantized values cannot be "
                            "recovered without its code, the layer is reported with its "
                            "float weights")
                        logger.warning("%s", self.notes[rec.name])
            self._quant[rec.name] = q
        return self._quant[rec.name]

    def own_output(self, rec: _Record) -> TensorQuant | None:
        """Quantization of the tensor this layer outputs, if the layer sets one."""
        if rec.name in self._out_cache:
            return self._out_cache[rec.name]
        try:
            return self._own_output(rec)
        except ExtractionError as e:
            if self.source in str(e):
                raise
            raise ExtractionError(f"{self.where(rec.name)}: {e}") from e

    def _own_output(self, rec: _Record) -> TensorQuant | None:
        out: TensorQuant | None = None
        if rec.class_name == "QuantizeLayer":
            spec = spec_from_config(rec.config.get("quantizer"), self.where(rec.name))
            if spec is not None:  # variables are named "<layer name>_min" / "_max"
                out = _tensor_quant(spec, rec.weights, rec.name)
        else:
            wq = self.wrapper_quant(rec)
            if wq is not None and wq.output is not None and not (
                    wq.optional_output and "output_min" not in rec.weights):
                out = _tensor_quant(wq.output, rec.weights, "output")
            elif wq is not None and wq.activation is not None:
                # tfmot quantizes after linear/relu/swish/gelu, before softmax/sigmoid/tanh
                # (the op's own output, which TFLite feeds to the activation op)
                if "post_activation_min" in rec.weights:
                    out = _tensor_quant(wq.activation, rec.weights, "post_activation")
                elif "pre_activation_min" in rec.weights:
                    out = _tensor_quant(wq.activation, rec.weights, "pre_activation")
                else:
                    raise ExtractionError(
                        "its output has no quantizer (no 'post_activation_min'): tfmot's "
                        "default scheme leaves a Conv/Dense followed by BatchNormalization "
                        "unquantized and the BN unfolded, and the converter folds the BN and "
                        "re-quantizes the kernel, so the deployed integers are not in this "
                        "model. Quantize with tfmot_ext.quantize (BatchNorm folded in QAT)")
        self._out_cache[rec.name] = out
        return out

    def _inner_kind(self, rec: _Record) -> str:
        if rec.class_name in _WRAPPERS:
            layer = rec.config.get("layer", {})
            return _class_name(layer) if isinstance(layer, Mapping) else "?"
        return rec.class_name

    def _passes_through(self, rec: _Record) -> bool:
        """A scale-preserving layer: PASS_THROUGH, or a TensorOp of a pass-through op."""
        kind = self._inner_kind(rec)
        if kind in PASS_THROUGH:
            return True
        if kind.split(">")[-1] == "TensorOp":
            cfg = rec.config.get("layer", {}).get("config", {}) if rec.class_name in _WRAPPERS \
                else rec.config
            op = cfg.get("op", {}) if isinstance(cfg, Mapping) else {}
            fn = op.get("config", {}).get("function") if isinstance(op, Mapping) else None
            return fn in PASS_THROUGH_OPS
        return False

    def input_quant(self, rec: _Record, depth: int = 0) -> TensorQuant | None:
        """Walk upstream through scale-preserving layers to the producing range."""
        if not rec.inbound or depth > 64:
            return None
        up = self.by_name.get(rec.inbound[0])
        if up is None:
            return None
        q = self.own_output(up)
        if q is not None:
            return q
        if self._passes_through(up):
            # a pass-through tensor a quantized Concatenate also reads has the
            # Concatenate's scale: the converter propagates it back (same-scale rule)
            # and requantizes before the pass-through chain (DenseNet's pooled stem)
            for name in self.consumers.get(up.name, []):
                cat = self.by_name[name]
                if self._inner_kind(cat) == "Concatenate" and self.own_output(cat) is not None:
                    return self.own_output(cat)
            return self.input_quant(up, depth + 1)
        return None

    def output_quant(self, rec: _Record, depth: int = 0) -> TensorQuant | None:
        """The output quantization the converter deploys for this layer.

        A layer whose only consumer is a quantized Concatenate takes the
        Concatenate's (TFLite's concatenation has one scale, which the converter
        propagates to such inputs, overriding their own range); otherwise its own
        output range, or that of the fused chain below it (BN no-op -> ReLU).
        """
        cons = self.consumers.get(rec.name, [])
        nxt = self.by_name[cons[0]] if len(cons) == 1 else None
        if nxt is not None and self._inner_kind(nxt) == "Concatenate" and depth <= 8:
            cat = self.output_quant(nxt, depth + 1)  # its own, or that of a Concatenate
            if cat is not None:                      # it alone feeds (InceptionV3's mixed9_0)
                return cat
        q = self.own_output(rec)
        if q is not None or depth > 8 or nxt is None:
            return q
        if self._inner_kind(nxt) not in ("BatchNormalization", "ReLU", "Activation"):
            return None
        return self.output_quant(nxt, depth + 1)

    def layer(self, rec: _Record) -> LayerQuantParams:
        kind = self._inner_kind(rec)
        inputs = tuple(rec.inbound)
        floats = {k: v for k, v in rec.weights.items() if not _is_quant_var(k)}
        wq = self.wrapper_quant(rec)
        if rec.class_name == "QuantizeLayer":
            return LayerQuantParams(rec.name, kind, inputs, True, output=self.own_output(rec))
        if wq is None:
            if rec.class_name not in ("InputLayer",) and rec.weights:
                logger.info("%s: not quantized, reported as float", self.where(rec.name))
            return LayerQuantParams(rec.name, kind, inputs, False, weights=floats,
                                    note=self.notes.get(rec.name, ""))
        layer_cfg = rec.config.get("layer", {}).get("config", {})
        if not isinstance(layer_cfg, Mapping):
            raise ExtractionError(f"{self.where(rec.name)}: wrapped layer config is not an object")
        folded = kind in _FOLDED_KINDS
        if folded:
            act = str(layer_cfg.get("activation", "linear"))
            op_kind = _FOLDED_KINDS[kind]
            short = "depthwise_kernel" if op_kind == "DepthwiseConv2D" else "kernel"
            spec_or_none = spec_from_config(layer_cfg.get("weight_quantizer"),
                                            f"{self.where(rec.name)}.weight_quantizer")
            op_cfg = layer_cfg.get("layer_config", {})
            if spec_or_none is None:
                return LayerQuantParams(rec.name, kind, inputs, self.own_output(rec) is not None,
                                        folded=True, activation=act,
                                        output=self.own_output(rec), weights=floats)
            spec = spec_or_none
            kernel, bias_fold = self._folded_weights(rec, short, op_kind, layer_cfg)
            bias: np.ndarray | None = bias_fold
        else:
            act = _activation_name(layer_cfg)
            op_kind, op_cfg = kind, layer_cfg
            attrs = [a for a in wq.weights if a.split(".")[-1] in _WEIGHT_ATTRS]
            if not attrs:
                out = (self.own_output(rec) if kind in PASS_THROUGH
                       else self.output_quant(rec))
                return LayerQuantParams(rec.name, kind, inputs,
                                        out is not None or bool(wq.weights), activation=act,
                                        output=out, weights=floats)
            attr = attrs[0]
            short = attr.split(".")[-1]
            spec = wq.weights[attr]
            if short not in rec.weights:
                raise ExtractionError(f"{self.where(rec.name)}: weight '{short}' is missing")
            kernel = np.asarray(rec.weights[short], np.float32)
            bias = rec.weights.get("bias")
        _check_finite(self.where(rec.name), short, kernel)
        n_out = _check_kernel_shape(self.where(rec.name), op_kind, short, kernel.shape,
                                    op_cfg if isinstance(op_cfg, Mapping) else {})
        axes = _channel_axis(kind, short, kernel.ndim, spec)
        lo, hi = spec.effective_range(rec.weights, short, kernel, axes)
        r = qmath.nudge(lo, hi, spec.bits, spec.narrow_range)
        int_type = np.int8 if spec.bits <= 8 else np.int16
        if axes is None:
            k_int = qmath.quantize_to_int(kernel, r, dtype=int_type)
        else:
            flat = _channels_last(kernel, axes)
            if np.ndim(r.scale) != 1 or r.scale.shape[0] != flat.shape[-1]:
                raise ExtractionError(
                    f"{self.where(rec.name)}: {short} has {flat.shape[-1]} channels on axes "
                    f"{axes} but its range has shape {np.shape(r.scale)}")
            k_int = _from_channels_last(
                qmath.quantize_to_int(flat, r, axis=flat.ndim - 1, dtype=int_type),
                kernel.shape, axes)
        fq_scale = np.asarray(r.scale, np.float32)
        zp = np.asarray(r.zero_point, np.int32)
        # the deployed scale: the converter's float64 derivation from the same range
        scale64 = qmath.converter_params(lo, hi, spec.bits, spec.narrow_range)[0]
        scale = scale64.astype(np.float32)
        inp = self.input_quant(rec)
        out = self.output_quant(rec)
        if bias is not None:
            _check_finite(self.where(rec.name), "bias", np.asarray(bias, np.float32))
            if np.shape(bias) != (n_out,):
                raise ExtractionError(f"{self.where(rec.name)}: bias has shape {np.shape(bias)}, "
                                      f"expected ({n_out},) for {n_out} output channels")
        bias_int, bias_scale, mult, m0, shift = _bias_and_requant(
            scale64, kernel.shape, short, axes, op_kind, bias, inp, out)
        return LayerQuantParams(
            rec.name, kind, inputs, True, folded=folded, activation=act, bits=spec.bits,
            symmetric=spec.symmetric, narrow_range=spec.narrow_range, axis=axes,
            kernel_attr=short, kernel_int=k_int, kernel_scale=scale, kernel_zero_point=zp,
            fake_quant_scale=fq_scale,
            bias=None if bias is None else np.asarray(bias, np.float32), bias_int=bias_int,
            bias_scale=bias_scale, input=inp, output=out, multiplier=mult, multiplier_q31=m0,
            shift=shift, weights=floats)

    def _folded_weights(self, rec: _Record, short: str, op_kind: str,
                        cfg: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The folded kernel and bias, exactly as the folded layer computes them."""
        w = rec.weights
        for name in (short, "gamma", "beta", "moving_mean", "moving_variance"):
            if name not in w:
                raise ExtractionError(f"{self.where(rec.name)}: weight '{name}' is missing")
            if name != short:  # the folded kernel is checked by the caller
                _check_finite(self.where(rec.name), name, np.asarray(w[name], np.float32))
        eps = cfg.get("epsilon", 1e-3)
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise ExtractionError(f"{self.where(rec.name)}: epsilon {eps!r} is not positive")
        if np.any(np.asarray(w["moving_variance"], np.float32) + np.float32(eps) <= 0):
            raise ExtractionError(f"{self.where(rec.name)}: moving_variance + epsilon <= 0")
        return fold_numpy(w[short], w.get("bias"), w["gamma"], w["beta"], w["moving_mean"],
                          w["moving_variance"], float(eps),
                          depthwise=op_kind == "DepthwiseConv2D")

    def run(self) -> QuantizedModelParams:
        layers: OrderedDict[str, LayerQuantParams] = OrderedDict()
        for rec in self.records:
            try:
                layers[rec.name] = dataclasses.replace(self.layer(rec), config=_op_config(rec))
            except ExtractionError as e:
                if self.source in str(e):
                    raise
                raise ExtractionError(f"{self.where(rec.name)}: {e}") from e
            except (KeyError, TypeError, ValueError, AttributeError, IndexError,
                    RecursionError, OverflowError, ZeroDivisionError, FloatingPointError) as e:
                raise ExtractionError(f"{self.where(rec.name)}: unreadable ({e})"[:600]) from e
        edges = tuple((i, r.name) for r in self.records for i in r.inbound if i in layers)
        return QuantizedModelParams(layers, edges, self.source)


_KERNEL_RANKS = {"Dense": 2, "Conv1D": 3, "Conv2D": 4, "Conv3D": 5, "DepthwiseConv2D": 4,
                 "DepthwiseConv1D": 3, "Conv1DTranspose": 3, "Conv2DTranspose": 4,
                 "Conv3DTranspose": 5, "SeparableConv1D": 3, "SeparableConv2D": 4}


def _check_kernel_shape(where: str, kind: str, attr: str, shape: tuple[int, ...],
                        layer_cfg: Mapping[str, Any]) -> int:
    """Validate a kernel's shape against its layer kind and config; return output channels."""
    rank = _KERNEL_RANKS.get(kind)
    if rank is not None and attr in ("kernel", "depthwise_kernel") and len(shape) != rank:
        raise ExtractionError(f"{where}: {attr} has shape {shape}; a {kind} kernel has rank {rank}")
    if len(shape) < 2:
        raise ExtractionError(f"{where}: {attr} has shape {shape}; expected rank >= 2")
    if attr.endswith("depthwise_kernel"):
        n_out = shape[-2] * shape[-1]
    elif kind.endswith("Transpose"):
        n_out = shape[-2]
    else:
        n_out = shape[-1]
    declared = layer_cfg.get("units", layer_cfg.get("filters"))
    if isinstance(declared, int) and attr != "depthwise_kernel" and declared != n_out:
        raise ExtractionError(f"{where}: {attr} has {n_out} output channels but the layer "
                              f"config declares {declared}")
    return int(n_out)


def _per_output_channel(scale: np.ndarray, shape: tuple[int, ...], attr: str,
                        axes: tuple[int, ...] | None) -> np.ndarray:
    """Kernel scales indexed by output channel (what bias and multiplier need).

    A depthwise kernel ``(..., C, M)`` quantized per multiplier index only (tfmot's
    per-axis quantizer) has ``M`` scales; output channel ``c*M + m`` uses ``scale[m]``.
    """
    if scale.ndim == 0 or not attr.endswith("depthwise_kernel"):
        return scale
    c, m = shape[-2], shape[-1]
    if scale.size == c * m:
        return scale
    if axes == (len(shape) - 1,) and scale.size == m:
        return np.tile(scale, c)
    return scale


def _op_config(rec: _Record) -> dict[str, Any]:
    """The Keras config of the op a record computes (inner layer, folded op)."""
    cfg: Any = rec.config
    if rec.class_name in _WRAPPERS:
        layer = cfg.get("layer", {})
        cfg = layer.get("config", {}) if isinstance(layer, Mapping) else {}
        if isinstance(layer, Mapping) and _class_name(layer) in _FOLDED_KINDS and isinstance(
                cfg, Mapping):
            eps = cfg.get("epsilon", 1e-3)
            cfg = cfg.get("layer_config", {})
            cfg = {**cfg, "batchnorm_epsilon": eps} if isinstance(cfg, Mapping) else cfg
    if not isinstance(cfg, Mapping):
        return {}
    # one form for both paths: what the H5 file's JSON would hold (lists, not tuples)
    out = json.loads(json.dumps(cfg, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                else str(o)))
    return out if isinstance(out, dict) else {}


def _is_quant_var(short: str) -> bool:
    return short in ("optimizer_step", "bn_frozen") or short.endswith(("_min", "_max", "_step"))


#: Folded layer classes -> the op they fold BatchNorm into.
_FOLDED_KINDS = {"FoldedConv2DBatchNorm": "Conv2D",
                 "FoldedDepthwiseConv2DBatchNorm": "DepthwiseConv2D",
                 "FoldedDenseBatchNorm": "Dense"}


def _check_finite(where: str, what: str, x: np.ndarray) -> None:
    # min/max propagate NaN and expose Inf without allocating a boolean array
    if x.size and not (np.isfinite(np.min(x)) and np.isfinite(np.max(x))):
        raise ExtractionError(f"{where}: {what} contains NaN or Inf")


def extract(model_or_path: Any) -> QuantizedModelParams:
    """Recover the integer parameters of a QAT model, live or from an H5 checkpoint.

    Args:
        model_or_path: a tf_keras QAT model (from ``tfmot_ext.quantize`` or tfmot's
            ``quantize_model``/``quantize_apply``), or the path of one saved as H5.

    Returns:
        :class:`QuantizedModelParams`: layer name -> :class:`LayerQuantParams`.

    Raises:
        H5FormatError: the file is missing, not HDF5, or not a Keras H5 model.
        ExtractionError: a quantizer variable is missing, a range is NaN/Inf or has
            min > max, a config cannot be read; the message names file and layer.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        records = _records_from_h5(path)
        source = f"'{path}'"
    else:
        records = _records_from_model(model_or_path)
        source = f"model '{model_or_path.name}'"
    if not any(r.class_name in _WRAPPERS or r.class_name == "QuantizeLayer" for r in records):
        raise ExtractionError(
            f"{source} is not a quantization-aware model (no QuantizeWrapper or QuantizeLayer); "
            "make it one with tfmot_ext.quantize(model) and train or calibrate it first")
    return _Parser(records, source).run()
