"""Layers written at the rank TFLite runs them at: 1-D convolution segments in 2-D,
Dense on rank > 2 inputs in rank 2.

**Dense on rank > 2.** ``Dense`` on ``(N, H, W, C)`` (ConvNeXt's pointwise layers, a
Dense on a sequence) is a Tensordot, which the converter lowers to a MatMul whose kernel
it re-quantizes per output channel, not the per-tensor grid trained; on ``(N*H*W, C)``
it is TFLite's FULLY_CONNECTED with exactly the trained integers
(:func:`dense_to_rank2`).

**1-D convolutions.**

TFLite has no 1-D convolution: the converter lowers ``Conv1D`` to EXPAND_DIMS ->
CONV_2D -> squeeze. In a QAT model the kernel's per-channel FakeQuant sits in front of
the kernel's ``ExpandDims``, and the converter cannot move a per-channel quantization
through that reshape (measured: every Conv1D QAT model failed conversion with
"'tfl.reshape' op requires 'output' type ... to be cast compatible", per-channel axis 2
against 3). :func:`conv1d_as_conv2d` writes each 1-D segment as its 2-D twin on
``(N, 1, L, C)`` between two ``Reshape`` layers: the same function with the same weights
(each kernel gains a leading axis of 1), deployed as RESHAPE -> CONV_2D (per channel, the
trained integers) -> RESHAPE.

An ``UpSampling1D`` starts a segment too (RESIZE_NEAREST_NEIGHBOR in 2-D; in 1-D Keras's
``repeat_elements`` converts to SPLIT and CONCATENATION), a ``Rescaling`` on a rank-2
or rank-3 tensor as well (in 4-D it becomes
:func:`tfmot_ext.rewrites.rescaling_as_depthwise`'s fixed 1x1 depthwise), and so does a
BatchNormalization on a rank-2 or rank-3 tensor that no Conv/Dense feeds alone: on
``(N, 1, L, C)`` (``(N, 1, 1, C)``) it becomes the folded per-channel affine of
:func:`tfmot_ext.rewrites.batchnorm_as_depthwise` (else the converter writes it as MUL
and ADD with constants it quantizes itself).

A segment starts at a weighted 1-D layer and goes on through the layers that follow it
one to one and have a 2-D twin (BatchNormalization, which then folds into the conv;
activations; 1-D pooling, padding, cropping, up-sampling; more 1-D convolutions), so the
fused patterns tfmot and TFLite see are those of the 2-D model.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from tfmot_ext._compat import keras, tf
from tfmot_ext.graph import consumers, map_tensor_refs, outer_inputs, rebuild, tensor_op_entry
from tfmot_ext.rules import ONE_D_TWINS, WEIGHTED_1D, one_length, twin_2d_config

__all__ = ["conv1d_as_conv2d", "dense_to_rank2"]

logger = logging.getLogger(__name__)


def _static(shape: Any, ranks: tuple[int, ...] = (3,)) -> bool:
    return isinstance(shape, tuple) and len(shape) in ranks and all(d is not None
                                                                     for d in shape[1:])


def _starts_segment(la: Any, cons: dict[str, list[str]]) -> bool:
    """A weighted 1-D layer, or a BatchNormalization on a rank-2/3 tensor that no
    Conv/Dense feeds alone (in 4-D it becomes a folded per-channel affine:
    :func:`tfmot_ext.rewrites.batchnorm_as_depthwise`)."""
    cls = type(la).__name__
    if len(la.inbound_nodes) != 1:
        return False
    if cls in WEIGHTED_1D:
        return _static(la.input_shape)
    if cls == "Rescaling":  # in 4-D, rewrites.rescaling_as_depthwise's trained affine
        return _static(la.input_shape, (2, 3))
    if cls == "UpSampling1D":  # else repeat_elements: SPLIT/CONCATENATION, not a RESIZE
        return _static(la.input_shape)
    if cls != "BatchNormalization" or not _static(la.input_shape, (2, 3)):
        return False
    axis = la.axis if isinstance(la.axis, (list, tuple)) else [la.axis]
    if list(axis) not in ([-1], [len(la.input_shape) - 1]):
        return False
    ups = tf.nest.flatten(la.inbound_nodes[0].inbound_layers)
    return not (len(ups) == 1 and type(ups[0]).__name__ in ("Dense", *WEIGHTED_1D)
                and len(cons.get(ups[0].name, [])) == 1
                and getattr(getattr(ups[0], "activation", None), "__name__", "") == "linear")


def _segments(model: Any) -> list[list[Any]]:
    cons = consumers(model)
    outputs = set(model.output_names)
    seen: set[str] = set()
    found = []
    for la in model.layers:
        if la.name in seen or not _starts_segment(la, cons):
            continue
        seg = [la]
        rank = len(la.input_shape)
        while True:
            last = seg[-1]
            nxt = cons.get(last.name, [])
            if len(nxt) != 1 or last.name in outputs:
                break
            cand = model.get_layer(nxt[0])
            kind = type(cand).__name__
            if (kind not in ONE_D_TWINS or len(cand.inbound_nodes) != 1
                    or not _static(cand.input_shape, (rank,))
                    or (rank == 2 and ONE_D_TWINS[kind] is not None)
                    or getattr(cand, "padding", None) == "causal"):
                break
            seg.append(cand)
        seen.update(x.name for x in seg)
        found.append(seg)
    return found


def _reshape(name: str, src: list[Any], shape: tuple[int, ...]) -> dict[str, Any]:
    return {"class_name": "Reshape", "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32",
                       "target_shape": list(shape)},
            "inbound_nodes": [[[*src[:3], {}]]]}


class _Expanded:
    """A layer's weights with each kernel given a leading axis of 1 (what
    :func:`tfmot_ext.graph.rebuild` copies into the 2-D twin)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    def get_weights(self) -> list[np.ndarray]:
        names = [w.name.rsplit("/", 1)[-1].split(":")[0] for w in self.layer.weights]
        return [w[None] if "kernel" in n else w
                for n, w in zip(names, self.layer.get_weights())]


def conv1d_as_conv2d(model: Any) -> Any:
    """``model`` with every 1-D convolution segment (and standalone rank-2/3
    BatchNormalization) as its 2-D twin between reshapes
    (module docstring). A causal Conv1D becomes a ``ZeroPadding2D`` of ``(k - 1) * d``
    columns on the left and a valid Conv2D. Layers keep their names; weights are
    unchanged but for the kernels' leading axis of 1."""
    if isinstance(model, keras.Sequential):
        return model
    segments = _segments(model)
    if not segments:
        return model
    cfg = copy.deepcopy(model.get_config())
    first = {seg[0].name: seg for seg in segments}
    last = {seg[-1].name: f"{seg[-1].name}_as_1d" for seg in segments}
    members = {la.name for seg in segments for la in seg}

    def redirect(r: list[Any]) -> list[Any]:
        return [last[r[0]], 0, 0, *r[3:]] if r[0] in last else r

    layers: list[dict[str, Any]] = []
    for e in cfg["layers"]:
        name = e["name"]
        # every reader of a segment's last layer reads its 1-D form (also the first
        # layer of a next segment, which then reshapes it to 2-D again)
        e["inbound_nodes"] = map_tensor_refs(e.get("inbound_nodes", []), redirect)
        if name not in members:
            layers.append(e)
            continue
        if name in first:
            la = first[name][0]
            src = e["inbound_nodes"][0][0]
            into = f"{name}_as_2d"
            layers.append(_reshape(into, src, (1, 1, *la.input_shape[1:])[-3:]))
            e["inbound_nodes"] = [[[into, 0, 0, {}]]]
        c = e["config"]
        if e["class_name"] in WEIGHTED_1D and c.get("padding") == "causal":
            pad = f"{name}_causal_pad"
            left = (one_length(c["kernel_size"]) - 1) * one_length(c.get("dilation_rate", 1))
            layers.append({"class_name": "ZeroPadding2D", "name": pad,
                           "config": {"name": pad, "trainable": True, "dtype": "float32",
                                      "padding": ((0, 0), (left, 0))},
                           "inbound_nodes": e["inbound_nodes"]})
            e["inbound_nodes"] = [[[pad, 0, 0, {}]]]
            c = {**c, "padding": "valid"}
        e["class_name"], e["config"] = twin_2d_config(e["class_name"], c)
        e.pop("module", None)
        e.pop("registered_name", None)
        e.pop("build_config", None)
        layers.append(e)
        if name in last:
            layers.append(_reshape(last[name], [name, 0, 0],
                                   tuple(model.get_layer(name).output_shape[1:])))
    cfg["layers"] = layers
    cfg["output_layers"] = map_tensor_refs(cfg["output_layers"], redirect)
    weighted = {la.name for seg in segments for la in seg if type(la).__name__ in WEIGHTED_1D}
    originals = {la.name for la in model.layers}

    def source(n: str) -> Any:
        if n in weighted:
            return _Expanded(model.get_layer(n))
        return model.get_layer(n) if n in originals else None

    new = rebuild(model, cfg, source)
    logger.info("model '%s': %d 1-D convolution segments written in 2-D", model.name,
                len(segments))
    return new


def _reshape_entry(name: str, src: list[Any], shape: list[int]) -> dict[str, Any]:
    return {**tensor_op_entry(name, "reshape", {"shape": shape}),
            "inbound_nodes": [[[*src[:3], {}]]]}


def dense_to_rank2(model: Any) -> Any:
    """``model`` with every Dense on a rank > 2 input wrapped in reshapes to rank 2
    (module docstring). Same function, same weights."""
    targets: dict[str, tuple[int, ...]] = {}
    for la in model.layers:
        if isinstance(la, keras.layers.Dense) and len(la.inbound_nodes) == 1:
            shape = tuple(la.input_shape)
            if len(shape) > 2 and all(d is not None for d in shape[1:]):
                targets[la.name] = shape
    if not targets:
        return model
    cfg = copy.deepcopy(model.get_config())
    after = {n: f"{n}_rank_restore" for n in targets}

    def redirect(r: list[Any]) -> list[Any]:
        return [after[r[0]], 0, 0] if r[0] in after else r

    layers: list[dict[str, Any]] = []
    for e in cfg["layers"]:
        e["inbound_nodes"] = map_tensor_refs(e.get("inbound_nodes", []), redirect)
        if e["name"] not in targets:
            layers.append(e)
            continue
        shape = targets[e["name"]]
        flat = f"{e['name']}_rank2"
        layers.append(_reshape_entry(flat, outer_inputs(e)[0], [-1, int(shape[-1])]))
        e["inbound_nodes"] = [[[flat, 0, 0, {}]]]
        layers.append(e)
        units = int(e["config"]["units"])
        layers.append(_reshape_entry(after[e["name"]], [e["name"], 0, 0],
                                     [-1, *[int(d) for d in shape[1:-1]], units]))
    cfg["layers"] = layers
    cfg["output_layers"] = map_tensor_refs(cfg["output_layers"], redirect)
    new = rebuild(model, cfg, model.get_layer)
    logger.info("model '%s': %d Dense layers on rank > 2 inputs reshaped to rank 2",
                model.name, len(targets))
    return new
