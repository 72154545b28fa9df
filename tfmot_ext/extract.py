"""Extraction: integer weights, int32 biases, scales, zero points and multipliers.

``extract(model_or_h5_path)`` works from a live QAT model or from an H5 checkpoint
read with ``h5py`` only: the stored model-config JSON gives the graph and the
quantizer settings, the weight datasets give the values. Nothing stored in the
file is executed (no ``load_model``, no custom objects, no unpickling; class names
only select among the quantizers tfmot_ext and tfmot define). Both paths feed the
same parser, so they give identical results, except for a user-written QuantizeConfig
whose stored config says nothing: the live model's config object describes it, an H5
file needs its class (``custom_objects``).

The arithmetic (Jacob et al. 2017, arXiv 1712.05877, section 2):

* weights: ``q_w = quantize_to_int(w, nudge(effective_range(vars)))``, so that
  ``(q_w - zp_w) * s_w`` is the quantizer's fake-quant output bit for bit;
* bias: ``s_b = s_in * s_w`` (per channel), ``q_b = round(b / s_b)`` as int32;
* requantization: ``M = s_in * s_w / s_out`` (float64, per channel), written as
  ``M = M0 * 2**(shift - 31)`` with ``M0`` a Q31 int32 in ``[2**30, 2**31)``, the way
  TFLite's ``QuantizeMultiplier`` does.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfmot_ext import qmath
from tfmot_ext.errors import ExtractionError
from tfmot_ext.params import (
    LayerQuantParams,
    QuantizedModelParams,
    TensorQuant,
    bias_and_requant,
    channels_last,
    from_channels_last,
)
from tfmot_ext.quantspec import (
    KNOWN_CONFIGS,
    FixedRangeSpec,
    QuantSpec,
    TfmotSpec,
    UnknownQuantizerError,
    WrapperQuant,
    spec_from_config,
    wrapper_quant,
)
from tfmot_ext.records import (
    WRAPPER_CLASSES,
    LayerRecord,
    class_name,
    records_from_config,
    records_from_h5,
    short_name,
)
from tfmot_ext.rules import (
    FOLDABLE_KERNEL_ATTR,
    FOLDED_KINDS,
    KERNEL_RANKS,
    NO_RANGE_OF_THEIR_OWN,
    PASS_THROUGH_OPS,
    REMOVED_AT_INFERENCE,
    SAME_SCALE_LAYERS,
    WEIGHT_ATTRS,
    channel_axis_of_kind,
    deploys_as_reshape,
    output_channels,
    passes_input_scale,
)

__all__ = ["extract"]

logger = logging.getLogger(__name__)

def _records_from_model(model: Any) -> list[LayerRecord]:
    from tfmot_ext._compat import check_keras2  # a live model: TensorFlow is loaded
    from tfmot_ext.userconfig import read_live_config

    check_keras2(model, "model")
    records = records_from_config({"class_name": type(model).__name__,
                                    "config": model.get_config()}, f"model '{model.name}'")
    by_name = {r.name: r for r in records}
    for layer in model.layers:
        rec = by_name.get(layer.name)
        if rec is not None:
            rec.weights = {short_name(w.name): np.asarray(w.numpy()) for w in layer.weights}
            read_live_config(layer, rec)
    return records


def _tensor_quant(spec: QuantSpec, stored: Mapping[str, np.ndarray], prefix: str) -> TensorQuant:
    lo, hi = spec.stored_range(stored, prefix)
    return _range_quant(spec, lo, hi, prefix)


def _range_quant(spec: QuantSpec, lo: np.ndarray, hi: np.ndarray, prefix: str) -> TensorQuant:
    """The deployed quantization of a tensor FakeQuant'ed on ``[lo, hi]`` by ``spec``."""
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
        cls, cfg = class_name(act), act.get("config", {})
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
    if isinstance(spec, TfmotSpec):
        return (rank - 1,)
    axis = spec.axis if spec.axis is not None else channel_axis_of_kind(kind, attr, rank)
    return qmath.normalize_axis(axis, rank, attr)


class _NotInTheModelError(ExtractionError):
    """A layer whose deployed integers are not in the QAT model (the converter computes
    them after training): reported float with this reason, the other layers extracted."""


class _Parser:
    def __init__(self, records: list[LayerRecord], source: str) -> None:
        self.records = records
        self.by_name = {r.name: r for r in records}
        self.source = source
        self.consumers: dict[str, list[str]] = {r.name: [] for r in records}
        for r in records:
            for i in r.inbound:
                self.consumers.setdefault(i, []).append(r.name)
        self._out_cache: dict[str, TensorQuant | None] = {}
        self.notes: dict[str, str] = {}
        self._quant: dict[str, WrapperQuant | None] = {}

    def where(self, name: str) -> str:
        return f"{self.source}: layer '{name}'"

    def wrapper_quant(self, rec: LayerRecord) -> WrapperQuant | None:
        if rec.name not in self._quant:
            q = None
            if rec.class_name in WRAPPER_CLASSES:
                qc = rec.config.get("quantize_config")
                if isinstance(qc, Mapping) and class_name(qc) not in KNOWN_CONFIGS:
                    self.notes[rec.name] = (
                        f"QuantizeConfig '{class_name(qc)}' is not one tfmot_ext can read "
                        "without its code; the layer is reported with its float weights "
                        "(extract the live model, tfmot_ext.extract(model), or pass the "
                        f"class: tfmot_ext.extract(path, custom_objects={{'{class_name(qc)}': "
                        "cls}) or tfmot-ext extract --custom-objects MODULE:ATTR)")
                    logger.warning("%s: %s", self.where(rec.name), self.notes[rec.name])
                else:
                    try:
                        q = wrapper_quant(qc, self.where(rec.name))
                    except UnknownQuantizerError as e:
                        self.notes[rec.name] = (
                            f"{str(e).split(': ', 1)[-1]}; its quantized values cannot be "
                            "recovered without its code, the layer is reported with its "
                            "float weights")
                        logger.warning("%s", self.notes[rec.name])
            self._quant[rec.name] = q
        return self._quant[rec.name]

    def own_output(self, rec: LayerRecord) -> TensorQuant | None:
        """Quantization of the tensor this layer outputs, if the layer sets one."""
        if rec.name in self._out_cache:
            return self._out_cache[rec.name]
        try:
            return self._own_output(rec)
        except _NotInTheModelError as e:
            # that layer alone is not extractable: reported float, with the reason
            self.notes[rec.name] = str(e)
            self._out_cache[rec.name] = None
            logger.warning("%s: %s", self.where(rec.name), e)
            return None
        except ExtractionError as e:
            if self.source in str(e):
                raise
            raise ExtractionError(f"{self.where(rec.name)}: {e}") from e

    def _own_output(self, rec: LayerRecord) -> TensorQuant | None:
        out: TensorQuant | None = None
        if rec.class_name == "QuantizeLayer":
            spec = spec_from_config(rec.config.get("quantizer"), self.where(rec.name))
            if spec is not None:  # variables are named "<layer name>_min" / "_max"
                out = _tensor_quant(spec, rec.weights, rec.name)
        elif self._inner_kind(rec) == "Embedding" and (wq := self.wrapper_quant(rec)) \
                and "embeddings" in wq.weights and "embeddings" in rec.weights:
            # TFLite's GATHER returns rows of the int8 table: the output is at its scale
            table = np.asarray(rec.weights["embeddings"], np.float32)
            spec = wq.weights["embeddings"]
            lo, hi = spec.stored_range(rec.weights, "embeddings", table, None)
            out = _range_quant(spec, lo, hi, rec.name)
        else:
            wq = self.wrapper_quant(rec)
            if wq is not None and wq.output is not None and not (
                    wq.optional_output and "output_min" not in rec.weights):
                out = _tensor_quant(wq.output, rec.weights, "output")
            elif wq is not None and wq.activation is not None:
                # tfmot quantizes after linear/relu/swish/gelu, before softmax/sigmoid/tanh
                # (the op's own output, which TFLite feeds to the activation op)
                if "post_activation_min" in rec.weights or isinstance(wq.activation,
                                                                      FixedRangeSpec):
                    out = _tensor_quant(wq.activation, rec.weights, "post_activation")
                elif "pre_activation_min" in rec.weights:
                    out = _tensor_quant(wq.activation, rec.weights, "pre_activation")
                else:
                    raise _NotInTheModelError(
                        "its output has no quantizer (no 'post_activation_min'): tfmot's "
                        "default scheme leaves a Conv/Dense followed by BatchNormalization "
                        "unquantized and the BN unfolded, and the converter folds the BN and "
                        "re-quantizes the kernel, so the deployed integers are not in this "
                        "model. Quantize with tfmot_ext.quantize (BatchNorm folded in QAT)")
        self._out_cache[rec.name] = out
        return out

    def _inner_kind(self, rec: LayerRecord) -> str:
        if rec.class_name in WRAPPER_CLASSES:
            layer = rec.config.get("layer", {})
            return class_name(layer) if isinstance(layer, Mapping) else "?"
        return rec.class_name

    def _tensor_op(self, rec: LayerRecord) -> Any:
        """The TF function of a TensorOp record (None for any other layer)."""
        if self._inner_kind(rec).split(">")[-1] != "TensorOp":
            return None
        cfg = (rec.config.get("layer", {}).get("config", {})
               if rec.class_name in WRAPPER_CLASSES else rec.config)
        op = cfg.get("op", {}) if isinstance(cfg, Mapping) else {}
        return op.get("config", {}).get("function") if isinstance(op, Mapping) else None

    def _passes_through(self, rec: LayerRecord) -> bool:
        """A scale-preserving layer (:func:`tfmot_ext.rules.passes_input_scale`), or a
        TensorOp of a pass-through op."""
        return passes_input_scale(self._inner_kind(rec)) or (
            self._tensor_op(rec) in PASS_THROUGH_OPS)

    def _is_reshape(self, rec: LayerRecord) -> bool:
        """A layer that deploys as a RESHAPE (:func:`tfmot_ext.rules.deploys_as_reshape`)."""
        return deploys_as_reshape(self._inner_kind(rec), self._tensor_op(rec))

    def _deployed_output(self, rec: LayerRecord) -> TensorQuant | None:
        """A layer's own output range, or the one the converter requantizes a
        pass-through layer to (:meth:`requantized_after`)."""
        return self.own_output(rec) or self.requantized_after(rec)

    def _same_scale_reader(self, rec: LayerRecord) -> TensorQuant | None:
        """The deployed scale of the first quantized Concatenate/Maximum/Minimum reading
        ``rec``'s output (:meth:`output_quant`: its own, or that of the one it feeds)."""
        for name in self.consumers.get(rec.name, []):
            cat = self.by_name[name]
            if self._inner_kind(cat) in SAME_SCALE_LAYERS and self.own_output(cat) is not None:
                return self.output_quant(cat)
        return None

    def input_quant(self, rec: LayerRecord, depth: int = 0) -> TensorQuant | None:
        """Walk upstream through scale-preserving layers to the producing range."""
        if not rec.inbound or depth > 64:
            return None
        up = self.by_name.get(rec.inbound[0])
        if up is None:
            return None
        if self._is_reshape(rec) and self._is_reshape(up):
            # a reshape of a reshape reads the first one's input (rules.RESHAPE_LAYERS)
            return self.input_quant(up, depth + 1)
        q = self._deployed_output(up)
        if q is not None:
            return q
        if not self._passes_through(up):
            return None
        # a pass-through tensor a quantized Concatenate also reads has the Concatenate's
        # scale: the converter propagates it back (same-scale rule) and requantizes
        # after the first pass-through layer of the chain (DenseNet's pooled stem)
        return self._same_scale_reader(up) or self.input_quant(up, depth + 1)

    def requantized_after(self, rec: LayerRecord) -> TensorQuant | None:
        """The scale the converter requantizes a pass-through layer's output to, if any.

        The converter gives a same-scale operator's scale to the pass-through tensors that
        lead to it and, walking back, meets the quantized tensor they come from: it puts
        a QUANTIZE after the first deployed pass-through operator on that tensor, and
        every operator after it runs at the new scale (measured: an average pooling
        between an upsampling and a Concatenate). ``rec`` is such a first operator when
        its deployed input (past a reshape it folds into, :data:`rules.RESHAPE_LAYERS`)
        has a range of its own and a quantized Concatenate/Maximum/Minimum reads its
        output, directly or through pass-through layers.
        """
        kind = self._inner_kind(rec)
        if (not self._passes_through(rec) or kind in NO_RANGE_OF_THEIR_OWN
                or kind in REMOVED_AT_INFERENCE or self.own_output(rec) is not None):
            return None
        src, up = rec, None
        for _ in range(64):  # past reshapes it folds into, removed and fused layers
            up = self.by_name.get(src.inbound[0]) if src.inbound else None
            if up is None or self.own_output(up) is not None:
                break
            upkind = self._inner_kind(up)
            if not ((self._is_reshape(src) and self._is_reshape(up))
                    or upkind in REMOVED_AT_INFERENCE or upkind in NO_RANGE_OF_THEIR_OWN):
                return None
            src = up
        if up is None or self.own_output(up) is None:
            return None
        seen, todo = set(), collections.deque([rec])
        while todo:  # in reader order
            r = todo.popleft()
            q = self._same_scale_reader(r)
            if q is not None:
                return q
            for name in self.consumers.get(r.name, []):
                c = self.by_name[name]
                if name in seen or (self._is_reshape(r) and self._is_reshape(c)):
                    continue  # a reshape of a reshape reads past ``r``
                seen.add(name)
                if self._passes_through(c) and self.own_output(c) is None:
                    todo.append(c)
        return None

    def output_quant(self, rec: LayerRecord, depth: int = 0) -> TensorQuant | None:
        """The output quantization the converter deploys for this layer.

        A layer whose only consumer is a quantized Concatenate takes the
        Concatenate's (TFLite's concatenation has one scale, which the converter
        propagates to such inputs, overriding their own range); otherwise its own
        output range, or that of the fused chain below it (BN no-op -> ReLU).
        """
        cons = self.consumers.get(rec.name, [])
        nxt = self.by_name[cons[0]] if len(cons) == 1 else None
        same = nxt  # past reshapes read by one layer (ranks.conv1d_as_conv2d's back to 1-D)
        while same is not None and self._inner_kind(same) == "Reshape":
            more = self.consumers.get(same.name, [])
            same = self.by_name[more[0]] if len(more) == 1 else None
        if same is not None and self._inner_kind(same) in SAME_SCALE_LAYERS and depth <= 8:
            cat = self.output_quant(same, depth + 1)  # its own, or that of a Concatenate
            if cat is not None:                      # it alone feeds (InceptionV3's mixed9_0)
                return cat
        q = self.own_output(rec)
        if q is not None or depth > 8 or nxt is None:
            return q
        if self._inner_kind(nxt) not in NO_RANGE_OF_THEIR_OWN - {"InputLayer"}:
            return None
        return self.output_quant(nxt, depth + 1)

    def layer(self, rec: LayerRecord) -> LayerQuantParams:
        kind = self._inner_kind(rec)
        inputs = tuple(rec.inbound)
        floats = {k: v for k, v in rec.weights.items() if not _is_quant_var(k)}
        wq = self.wrapper_quant(rec)
        if rec.class_name == "QuantizeLayer":
            return LayerQuantParams(rec.name, kind, inputs, True, output=self.own_output(rec))
        if wq is not None and rec.class_name in WRAPPER_CLASSES:
            # a layer whose deployed integers are not in the model: reported float with
            # the reason, the rest exact; any other problem is reported where needed
            with contextlib.suppress(ExtractionError):
                self.own_output(rec)
            if rec.name in self.notes:
                return LayerQuantParams(rec.name, kind, inputs, False, weights=floats,
                                        note=self.notes[rec.name])
        if wq is None:
            if rec.class_name not in ("InputLayer",) and rec.weights:
                logger.info("%s: not quantized, reported as float", self.where(rec.name))
            return LayerQuantParams(rec.name, kind, inputs, False, weights=floats,
                                    note=self.notes.get(rec.name, ""))
        layer_cfg = rec.config.get("layer", {}).get("config", {})
        if not isinstance(layer_cfg, Mapping):
            raise ExtractionError(f"{self.where(rec.name)}: wrapped layer config is not an object")
        folded = kind in FOLDED_KINDS
        if folded:
            act = str(layer_cfg.get("activation", "linear"))
            op_kind = FOLDED_KINDS[kind]
            short = FOLDABLE_KERNEL_ATTR[op_kind]
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
            attrs = [a for a in wq.weights if a.split(".")[-1] in WEIGHT_ATTRS]
            if kind == "PReLU" and "alpha" in wq.weights and "alpha" in rec.weights:
                return self._prelu(rec, kind, inputs, wq.weights["alpha"], floats)
            if not attrs:
                out = (self._deployed_output(rec) if passes_input_scale(kind)
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
        k_int, fq_scale, zp, scale64 = self._weight_grid(rec, short, kernel, spec, axes)
        scale = scale64.astype(np.float32)
        inp = self.input_quant(rec)
        out = self.output_quant(rec)
        if bias is not None:
            _check_finite(self.where(rec.name), "bias", np.asarray(bias, np.float32))
            if np.shape(bias) != (n_out,):
                raise ExtractionError(f"{self.where(rec.name)}: bias has shape {np.shape(bias)}, "
                                      f"expected ({n_out},) for {n_out} output channels")
        bias_int, bias_scale, mult, m0, shift = bias_and_requant(
            scale64, kernel.shape, short, axes, op_kind, bias, inp, out)
        return LayerQuantParams(
            rec.name, kind, inputs, True, folded=folded, activation=act, bits=spec.bits,
            symmetric=spec.symmetric, narrow_range=spec.narrow_range, axis=axes,
            kernel_attr=short, kernel_int=k_int, kernel_scale=scale, kernel_zero_point=zp,
            fake_quant_scale=fq_scale,
            bias=None if bias is None else np.asarray(bias, np.float32), bias_int=bias_int,
            bias_scale=bias_scale, input=inp, output=out, multiplier=mult, multiplier_q31=m0,
            shift=shift, weights=floats)

    def _prelu(self, rec: LayerRecord, kind: str, inputs: tuple[str, ...], spec: Any,
               floats: dict[str, np.ndarray]) -> LayerQuantParams:
        """A PReLU whose ``alpha`` QAT quantizes (per tensor): TFLite's PRELU reads it as
        an int8 tensor, ``kernel_*`` here, at the scale the converter derives from the
        stored range."""
        alpha = np.asarray(rec.weights["alpha"], np.float32)
        _check_finite(self.where(rec.name), "alpha", alpha)
        k_int, fq_scale, zp, scale64 = self._weight_grid(rec, "alpha", alpha, spec, None)
        return LayerQuantParams(
            rec.name, kind, inputs, True, bits=spec.bits, symmetric=spec.symmetric,
            narrow_range=spec.narrow_range, kernel_attr="alpha", kernel_int=k_int,
            kernel_scale=scale64.astype(np.float32), kernel_zero_point=zp,
            fake_quant_scale=fq_scale, input=self.input_quant(rec),
            output=self.output_quant(rec), weights=floats)

    def _weight_grid(self, rec: LayerRecord, short: str, value: np.ndarray, spec: Any,
                     axes: tuple[int, ...] | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Weight ``short`` of ``rec`` on its quantizer's grid (per channel along
        ``axes``): its integers, the FakeQuant scale, the zero point, and the deployed
        scale (the converter's float64 derivation from the same range)."""
        lo, hi = spec.stored_range(rec.weights, short, value, axes)
        r = qmath.nudge(lo, hi, spec.bits, spec.narrow_range)
        int_type = np.int8 if spec.bits <= 8 else np.int16
        if axes is None:
            k_int = qmath.quantize_to_int(value, r, dtype=int_type)
        else:
            flat = channels_last(value, axes)
            if np.ndim(r.scale) != 1 or r.scale.shape[0] != flat.shape[-1]:
                raise ExtractionError(
                    f"{self.where(rec.name)}: {short} has {flat.shape[-1]} channels on axes "
                    f"{axes} but its range has shape {np.shape(r.scale)}")
            k_int = from_channels_last(
                qmath.quantize_to_int(flat, r, axis=flat.ndim - 1, dtype=int_type),
                value.shape, axes)
        scale64 = np.asarray(qmath.converter_params(lo, hi, spec.bits, spec.narrow_range)[0],
                             np.float64)
        return (k_int, np.asarray(r.scale, np.float32), np.asarray(r.zero_point, np.int32),
                scale64)

    def _folded_weights(self, rec: LayerRecord, short: str, op_kind: str,
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
        return qmath.fold_batch_norm(w[short], w.get("bias"), w["gamma"], w["beta"],
                                     w["moving_mean"], w["moving_variance"], float(eps),
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


def _check_kernel_shape(where: str, kind: str, attr: str, shape: tuple[int, ...],
                        layer_cfg: Mapping[str, Any]) -> int:
    """Validate a kernel's shape against its layer kind and config; return output channels."""
    rank = KERNEL_RANKS.get(kind)
    if rank is not None and attr in ("kernel", "depthwise_kernel") and len(shape) != rank:
        raise ExtractionError(f"{where}: {attr} has shape {shape}; a {kind} kernel has rank {rank}")
    if len(shape) < 2:
        raise ExtractionError(f"{where}: {attr} has shape {shape}; expected rank >= 2")
    n_out = output_channels(kind, attr, shape)
    declared = layer_cfg.get("units", layer_cfg.get("filters"))
    if isinstance(declared, int) and attr != "depthwise_kernel" and declared != n_out:
        raise ExtractionError(f"{where}: {attr} has {n_out} output channels but the layer "
                              f"config declares {declared}")
    return int(n_out)


def _op_config(rec: LayerRecord) -> dict[str, Any]:
    """The Keras config of the op a record computes (inner layer, folded op)."""
    cfg: Any = rec.config
    if rec.class_name in WRAPPER_CLASSES:
        layer = cfg.get("layer", {})
        cfg = layer.get("config", {}) if isinstance(layer, Mapping) else {}
        if isinstance(layer, Mapping) and class_name(layer) in FOLDED_KINDS and isinstance(
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


def _check_finite(where: str, what: str, x: np.ndarray) -> None:
    # min/max propagate NaN and expose Inf without allocating a boolean array
    if x.size and not (np.isfinite(np.min(x)) and np.isfinite(np.max(x))):
        raise ExtractionError(f"{where}: {what} contains NaN or Inf")


def extract(model_or_path: Any, custom_objects: Mapping[str, Any] | None = None
            ) -> QuantizedModelParams:
    """Recover the integer parameters of a QAT model, live or from an H5 checkpoint.

    Args:
        model_or_path: a tf_keras QAT model (from ``tfmot_ext.quantize`` or tfmot's
            ``quantize_model``/``quantize_apply``), or the path of one saved as H5.
        custom_objects: for an H5 file, the classes of user-written QuantizeConfigs
            (name -> class) whose stored config does not say how they quantize (tfmot's
            guide's return ``{}`` from ``get_config``): each is rebuilt and asked for its
            quantizers (this runs those classes: the user's own code, never the
            file's). A live model needs none: its config objects are asked directly.

    Returns:
        :class:`QuantizedModelParams`: layer name -> :class:`LayerQuantParams`.

    Raises:
        H5FormatError: the file is missing, not HDF5, or not a Keras H5 model.
        ExtractionError: a quantizer variable is missing, a range is NaN/Inf or has
            min > max, a config cannot be read; the message names file and layer.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        records = records_from_h5(path)
        source = f"'{path}'"
        if custom_objects:  # the user's classes: TensorFlow is loaded for them
            from tfmot_ext.userconfig import read_config_with_code

            for rec in records:
                read_config_with_code(rec, custom_objects)
    else:
        records = _records_from_model(model_or_path)
        source = f"model '{model_or_path.name}'"
    if not any(r.class_name in WRAPPER_CLASSES or r.class_name == "QuantizeLayer" for r in records):
        raise ExtractionError(
            f"{source} is not a quantization-aware model (no QuantizeWrapper or QuantizeLayer); "
            "make it one with tfmot_ext.quantize(model) and train or calibrate it first")
    return _Parser(records, source).run()
