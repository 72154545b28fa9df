"""Rewrites that make a model deploy as trained: each the same function, same weights.

:func:`prepare` applies them all (after :func:`tfmot_ext.graph.flatten` and
:func:`tfmot_ext.graph.replace_tf_ops`); each is also public on its own.

A two-tensor ``x + y`` of equal shapes becomes a Keras ``Add`` (:func:`tensor_adds_as_add`),
so that tfmot treats a residual written with ``+`` like one written with ``Add`` (no
range of its own in front of a ReLU, which TFLite fuses into the ADD).
InceptionResNetV2's ``CustomScaleLayer`` (``x + up * scale``) becomes an ``Add`` with
the scale folded into the conv producing ``up`` (:func:`scale_layers_as_add`).

**Normalization.** A fixed ``Normalization`` (EfficientNet's, ConvNeXt's input
statistics) computes ``(x - mean) / max(sqrt(var), eps)``; the converter turns that
into SUB then MUL, and in front of an output quantizer it requantizes the model
input through float (DEQUANTIZE/QUANTIZE). :func:`replace_normalization` writes it
as the same per-channel affine ``x * scale + offset`` with a ``Rescaling`` (MUL then
ADD, all integer), equal to it up to float32 rounding.

A ``Rescaling`` on a 4-D tensor (``x * scale + offset``: the input scaling of
EfficientNet, RegNet, MobileNetV3, and the rewritten Normalization) would be MUL and ADD
with constants the converter quantizes itself; :func:`rescaling_as_depthwise` writes it as
the equal 1x1 ``DepthwiseConv2D`` (kernel ``scale``, bias ``offset``, held there by
:class:`Fixed` constraints), deployed as DEPTHWISE_CONV_2D with the integers QAT
fake-quantized.

**Separable convolutions.** TFLite runs ``SeparableConv2D`` as DEPTHWISE_CONV_2D then
CONV_2D; the tensor between them has no range in a QAT model that wraps the layer
whole, so the converter calibrates it, and a BatchNormalization after it cannot fold.
:func:`split_separable` writes it as the two layers (``<name>_depthwise``, then the
1x1 ``Conv2D`` keeping the name), the same function with the same weights.

**Unfusable activations.** TFLite fuses only ReLU/ReLU6 into a conv or matmul; for
``Conv2D(activation="swish")`` (EfficientNet's squeeze-excite) it emits CONV_2D then
LOGISTIC and MUL, and the CONV_2D's int8 output needs a range the QAT model never
learned (tfmot quantizes after the swish). The converter then calibrates that tensor
and quantizes the bias at a scale the kernel does not use: measured, a 92-LSB error at
the layer's output. :func:`split_activations` writes such a layer as the layer with a
linear activation followed by an ``Activation`` layer, so both tensors TFLite has get
trained ranges.

**Standalone BatchNormalization.** A BatchNormalization after no Conv/Dense
(pre-activation ResNetV2, DenseNet, NASNet) is a per-channel affine the converter turns
into MUL and ADD with constants it quantizes itself, untrained.
:func:`batchnorm_as_depthwise` puts a 1x1 ``DepthwiseConv2D`` with a kernel of ones and
no bias in front of it (the same function: ``x * 1.0`` is exact); BatchNorm folding then
turns the pair into one folded layer whose per-channel kernel ``gamma / sigma`` and bias
are fake-quantized in training exactly as TFLite's DEPTHWISE_CONV_2D deploys them.

**Keep-dims mean.** ``GlobalAveragePooling2D(keepdims=True)`` (MobileNetV3's
squeeze-excite) converts to a 4-D MEAN over H, W whose optimized TFLite kernel
requantizes the raw sum and adds the input zero point's share rounded on its own
(measured: 1 LSB off the QAT model on half the elements); :func:`mean_without_keepdims`
writes it as the pooling without keep-dims then a ``Reshape`` to ``(1, 1, C)``, which
TFLite's integer MEAN rounds as the QAT model does.

**Duplicate activations.** NASNet applies ``Activation("relu")`` to one tensor in
several layers (each cell and each separable branch starts with its own). The converter
merges the identical ReLUs into one and fuses it into the conv producing the tensor:
the deployed conv requantizes straight to the ReLU's scale, skipping the conv's own
output range, which QAT trained and clipped at (measured on NASNetMobile: up to 15 LSB
between the QAT model and TFLite, the reference 76 % exact).
:func:`merge_duplicate_activations` keeps one such layer per tensor and function, so the
ReLU is unique, BatchNorm folding fuses it into the conv, and QAT rounds once, as
deployed.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from tfmot_ext._compat import keras, tf
from tfmot_ext.graph import (
    FLOAT_FOR_CONVERTER,
    Fixed,
    TensorOp,
    flatten,
    insert_after,
    insert_before,
    map_tensor_refs,
    rebuild,
    replace_tf_ops,
    tensor_op_entry,
    unique_name,
)
from tfmot_ext.ranks import conv1d_as_conv2d, dense_to_rank2
from tfmot_ext.rules import (
    FOLDED_KINDS,
    KEPT_ACTIVATIONS,
    MOVED_BEFORE_FAKE_QUANT,
    SAME_SCALE_LAYERS,
    TF_ADD_OPS,
    fuses_activations,
)

__all__ = [
    "average_as_add",
    "batchnorm_as_depthwise",
    "dilated_transpose_as_conv",
    "hard_sigmoid_as_ops",
    "hold_same_scale_outputs",
    "mean_without_keepdims",
    "merge_duplicate_activations",
    "normalization_affine",
    "prepare",
    "range_after_float_layers",
    "replace_normalization",
    "rescaling_as_depthwise",
    "scale_layers_as_add",
    "split_activations",
    "split_separable",
    "tensor_adds_as_add",
]

logger = logging.getLogger(__name__)
register = keras.utils.register_keras_serializable(package="tfmot_ext")


def _is_same_shape_tensor_add(layer: Any) -> bool:
    if not (isinstance(layer, TensorOp) and layer.function in TF_ADD_OPS
            and len(layer.inbound_nodes) == 1):
        return False
    xs = tf.nest.flatten(layer.input)
    extra = {k: v for k, v in layer.op_kwargs.items() if k != "y" and v is not None}
    return (len(xs) == 2 and not extra and layer.first_arg == {"__input__": 0}
            and layer.op_kwargs.get("y") == {"__input__": 1}
            and xs[0].shape.as_list() == xs[1].shape.as_list()
            == layer.output.shape.as_list())


def _as_add_layers(model: Any, names: set[str]) -> Any:
    """``model`` rebuilt with the layers ``names`` made Keras ``Add`` layers of the same
    names and inputs (every other layer keeps its weights)."""
    cfg = copy.deepcopy(model.get_config())
    for e in cfg["layers"]:
        if e["config"]["name"] in names:
            c = e["config"]
            _retype(e, "Add", {"name": c["name"], "trainable": c.get("trainable", True),
                               "dtype": c.get("dtype", "float32")})
    return rebuild(model, cfg, model.get_layer)


def tensor_adds_as_add(model: Any) -> Any:
    """``model`` with every :class:`TensorOp` ``x + y`` of two tensors of the same shape
    (RegNet's and MobileNetV3's residuals written with ``+``) replaced by a Keras ``Add``
    layer of the same name: the same sum, and tfmot's transforms then treat it as an
    ``Add`` (one output quantizer, none before a following ReLU: TFLite fuses the ReLU
    into the ADD, and a TensorOp's own output range in front of it was a second rounding
    the deployed model does not do; measured on RegNetX002: 1-15 LSB at every residual)."""
    names = {la.name for la in model.layers if _is_same_shape_tensor_add(la)}
    if not names:
        return model
    new = _as_add_layers(model, names)
    logger.info("model '%s': %d tensor additions made Add layers", model.name, len(names))
    return new


def average_as_add(model: Any) -> Any:
    """``model`` with every two-input ``Average`` written as an ``Add`` of the same name
    then a ``x * 0.5`` :class:`TensorOp` named ``<name>_half``: the same function.

    The converter runs ``Average`` as ADD then MUL by 0.5, and the ADD's int8 output
    needs a range the QAT model never learned (it quantizes after the average): the
    converter calibrated it (measured: scale 0.033 for an output of 0.015, the
    reference unable to replay it). As ``Add`` then ``* 0.5`` both tensors get trained
    ranges, and the constant is exact on the converter's grid
    (:func:`tfmot_ext.kernels.constant_operand`)."""
    names = {la.name for la in model.layers if isinstance(la, keras.layers.Average)
             and len(la.inbound_nodes) == 1 and len(la.input) == 2}
    if not names:
        return model
    base = _as_add_layers(model, names)
    new = insert_after(base, {n: tensor_op_entry(f"{n}_half", "math.multiply", {"y": 0.5})
                              for n in names}, lambda e: None)
    logger.info("model '%s': %d Average layers written as Add * 0.5", model.name, len(names))
    return new


#: Weightless layers that compute a function of their one input and their config only.
_STATELESS_ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU)


def merge_duplicate_activations(model: Any) -> Any:
    """``model`` with every ``Activation`` / ``ReLU`` layer that applies the same function
    (same class and config but the name) to the same tensor as an earlier one removed,
    its readers reading the earlier one (module docstring: NASNet). Same function, bit
    for bit: the layers are stateless."""
    if isinstance(model, keras.Sequential):
        return model
    cfg = copy.deepcopy(model.get_config())
    stateless = {la.name for la in model.layers
                 if type(la) in _STATELESS_ACTIVATIONS and len(la.inbound_nodes) == 1}
    kept: dict[str, str] = {}
    merged: dict[str, str] = {}

    def rename(r: list[Any]) -> list[Any]:
        return [merged[r[0]], 0, r[2]] if r[0] in merged else r

    layers = []
    for e in cfg["layers"]:
        e["inbound_nodes"] = map_tensor_refs(e.get("inbound_nodes") or [], rename)
        if e["config"]["name"] in stateless:
            key = json.dumps([e["class_name"], {k: v for k, v in e["config"].items()
                                                if k != "name"}, e["inbound_nodes"]],
                             sort_keys=True, default=str)
            if key in kept:
                merged[e["config"]["name"]] = kept[key]
                continue
            kept[key] = e["config"]["name"]
        layers.append(e)
    if not merged:
        return model
    cfg["layers"] = layers
    cfg["output_layers"] = map_tensor_refs(cfg["output_layers"], rename)
    new = rebuild(model, cfg, model.get_layer)
    logger.info("model '%s': %d duplicate activation layers merged", model.name, len(merged))
    return new


#: keras.applications' InceptionResNetV2 residual ``inputs[0] + inputs[1] * scale``
_SCALE_LAYER = ("CustomScaleLayer", "inception_resnet_v2")


def _scaled_producer(layer: Any) -> Any:
    """The Conv2D/Dense producing a CustomScaleLayer's scaled input, where its scale can
    be folded into it: linear activation, one call, output read by this layer only.
    None otherwise."""
    cls = type(layer)
    if not (cls.__name__ == _SCALE_LAYER[0] and cls.__module__.endswith(_SCALE_LAYER[1])
            and len(layer.inbound_nodes) == 1 and isinstance(getattr(layer, "scale", None),
                                                               (int, float))):
        return None
    ups = tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
    if len(ups) != 2 or ups[0] is ups[1]:
        return None
    up = ups[1]
    ok = (type(up) in (keras.layers.Conv2D, keras.layers.Dense)
          and getattr(up.activation, "__name__", "") == "linear"
          and len(up.inbound_nodes) == 1 and len(up.outbound_nodes) == 1)
    return up if ok else None


def scale_layers_as_add(model: Any) -> Any:
    """``model`` with InceptionResNetV2's ``CustomScaleLayer`` (``x + up * scale``) made
    an ``Add`` of the same name, its ``scale`` folded into the Conv2D/Dense producing
    ``up``: ``W * scale``, ``b * scale``.

    ``op(x, W * s) + b * s = (op(x, W) + b) * s`` up to float32 rounding, so the model
    computes the same, and tfmot then quantizes a plain residual ``Add`` (+ ReLU) whose
    every tensor has a trained range. Left as a CustomScaleLayer (output-quantized, the
    converter calibrating the MUL by ``scale``) the deployed block had a tensor QAT never
    saw. Layers whose scaled input is not such a producer are kept."""
    targets = {la.name: (up, float(la.scale)) for la in model.layers
               if (up := _scaled_producer(la)) is not None}
    if not targets:
        return model
    new = _as_add_layers(model, set(targets))
    for up, scale in targets.values():
        w = up.get_weights()
        new.get_layer(up.name).set_weights([(v * np.float32(scale)).astype(v.dtype)
                                            for v in w])
    logger.info("model '%s': %d scale layers made Add layers, the scale folded into the "
                "layer before", model.name, len(targets))
    return new


def normalization_affine(mean: Any, variance: Any, epsilon: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` with ``x * scale + offset == (x - mean) / max(sqrt(var), eps)``.

    ``scale = 1 / max(sqrt(var), eps)``, ``offset = -mean * scale`` (float32).

    >>> s, o = normalization_affine([2.0], [4.0], 1e-7)
    >>> float(s[0]), float(o[0])
    (0.5, -1.0)
    """
    m = np.asarray(mean, np.float32).reshape(-1)
    sd = np.maximum(np.sqrt(np.asarray(variance, np.float32).reshape(-1)), np.float32(epsilon))
    scale = (np.float32(1) / sd).astype(np.float32)
    return scale, (-m * scale).astype(np.float32)


def _retype(entry: dict[str, Any], class_name: str, config: dict[str, Any]) -> None:
    """Make a functional-config layer entry a built-in ``class_name`` layer with
    ``config``, dropping the old class's module and registered name."""
    entry["class_name"] = class_name
    entry["config"] = config
    entry.pop("module", None)
    entry.pop("registered_name", None)


def _is_fixed_channel_normalization(layer: Any) -> bool:
    if not isinstance(layer, keras.layers.Normalization) or getattr(layer, "invert", False):
        return False
    axis = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
    rank = len(layer.input_shape) if isinstance(layer.input_shape, tuple) else 0
    return axis in ((-1,), (rank - 1,)) and hasattr(layer, "mean")


def replace_normalization(model: Any) -> Any:
    """``model`` with every channels-last ``Normalization`` replaced by the equivalent
    per-channel ``Rescaling`` (:func:`normalization_affine`; module docstring)."""
    targets = {la.name: la for la in model.layers if _is_fixed_channel_normalization(la)}
    if not targets:
        return model
    cfg = copy.deepcopy(model.get_config())
    for e in cfg["layers"]:
        if e["name"] in targets:
            layer = targets[e["name"]]
            scale, offset = normalization_affine(layer.mean.numpy(), layer.variance.numpy(),
                                                 keras.backend.epsilon())
            _retype(e, "Rescaling", {"name": e["name"], "trainable": False,
                                     "dtype": e["config"].get("dtype", "float32"),
                                     "scale": scale.tolist(), "offset": offset.tolist()})
    new = rebuild(model, cfg, lambda name: None if name in targets else model.get_layer(name))
    logger.info("model '%s': %d Normalization layers written as per-channel Rescaling",
                model.name, len(targets))
    return new


def _rescaling_affine(layer: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, offset)`` per channel of an image ``Rescaling``, or None where the
    rewrite does not apply: not 4-D, or one offset for all channels with per-channel
    scales (the converter quantizes such a splat bias with the first channel's scale)."""
    shape = getattr(layer, "input_shape", None)
    if not (isinstance(layer, keras.layers.Rescaling) and len(layer.inbound_nodes) == 1
            and isinstance(shape, tuple) and len(shape) == 4 and shape[-1] is not None):
        return None
    c = int(shape[-1])
    scale = np.broadcast_to(np.asarray(layer.scale, np.float32), (c,)).copy()
    offset = np.broadcast_to(np.asarray(layer.offset, np.float32), (c,)).copy()
    if np.ptp(offset) == 0 and offset[0] != 0 and np.ptp(scale) != 0:
        return None
    return scale, offset


def rescaling_as_depthwise(model: Any) -> Any:
    """``model`` with every ``Rescaling`` on a 4-D channels-last tensor written as the
    equal 1x1 ``DepthwiseConv2D`` of the same name: kernel ``scale`` and bias ``offset``,
    broadcast per channel, held there by :class:`Fixed` constraints (module docstring).
    Same function up to float32 rounding of ``x * scale + offset``."""
    targets = {la.name: a for la in model.layers if (a := _rescaling_affine(la)) is not None}
    if not targets:
        return model
    cfg = copy.deepcopy(model.get_config())
    weights: dict[str, list[np.ndarray]] = {}
    for e in cfg["layers"]:
        name = e["config"]["name"]
        if name not in targets:
            continue
        scale, offset = targets[name]
        kernel = scale.reshape(1, 1, -1, 1)
        weights[name] = [kernel, offset]
        _retype(e, "DepthwiseConv2D", {
            "name": name, "trainable": False, "dtype": e["config"].get("dtype", "float32"),
            "kernel_size": [1, 1], "strides": [1, 1], "padding": "valid",
            "depth_multiplier": 1, "activation": "linear", "use_bias": True,
            "depthwise_constraint": keras.constraints.serialize(Fixed(kernel)),
            "bias_constraint": keras.constraints.serialize(Fixed(offset))})
    new = rebuild(model, cfg, lambda n: None if n in targets else model.get_layer(n))
    for name, w in weights.items():
        new.get_layer(name).set_weights(w)
    logger.info("model '%s': %d Rescaling layers written as 1x1 depthwise convolutions",
                model.name, len(targets))
    return new


def _is_splittable_separable(layer: Any) -> bool:
    return (isinstance(layer, keras.layers.SeparableConv2D) and len(layer.inbound_nodes) == 1
            and layer.data_format == "channels_last")


def split_separable(model: Any, keep: Callable[[Any], bool] | None = None) -> Any:
    """``model`` with every channels-last ``SeparableConv2D`` (but those ``keep`` says to
    keep whole) written as a ``DepthwiseConv2D`` named ``<layer>_depthwise`` (no bias, no
    activation) followed by a 1x1 ``Conv2D`` with the layer's name, bias and activation
    (module docstring): the same function, with the same weights."""
    targets = {la.name: la for la in model.layers
               if _is_splittable_separable(la) and not (keep and keep(la))}
    if not targets:
        return model
    taken: set[str] = set()
    entries: dict[str, dict[str, Any]] = {}
    weights: dict[str, list[np.ndarray]] = {}
    for name, sep in targets.items():
        c = sep.get_config()
        dw_name = unique_name(model, f"{name}_depthwise", taken)
        entries[name] = {"class_name": "DepthwiseConv2D", "config": {
            "name": dw_name, "trainable": c["trainable"], "dtype": c.get("dtype", "float32"),
            "kernel_size": c["kernel_size"], "strides": c["strides"], "padding": c["padding"],
            "depth_multiplier": c["depth_multiplier"], "dilation_rate": c["dilation_rate"],
            "activation": "linear", "use_bias": False}}
        w = sep.get_weights()
        weights[dw_name], weights[name] = [w[0]], [w[1], *w[2:]]

    def pointwise(e: dict[str, Any]) -> None:
        c = targets[e["config"]["name"]].get_config()
        _retype(e, "Conv2D", {"name": c["name"], "trainable": c["trainable"],
                              "dtype": c.get("dtype", "float32"), "filters": c["filters"],
                              "kernel_size": [1, 1], "strides": [1, 1], "padding": "valid",
                              "activation": c["activation"], "use_bias": c["use_bias"]})

    new = insert_before(model, entries, pointwise, weights)
    logger.info("model '%s': %d SeparableConv2D layers split into depthwise + pointwise",
                model.name, len(targets))
    return new


#: Sigmoid and tanh are split off too: as Activation layers their outputs get the fixed
#: int8 ranges of TFLite's LOGISTIC / TANH (:func:`tfmot_ext.configs.default_config_for`),
#: which tfmot's fused activation leaves unquantized in training.
_WEIGHTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
             keras.layers.Conv3D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv1D,
             keras.layers.SeparableConv2D, keras.layers.Conv1DTranspose,
             keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def split_activations(model: Any, keep: Callable[[Any], bool] | None = None) -> Any:
    """``model`` with every Conv/Dense whose activation TFLite cannot fuse (swish, gelu,
    elu, sigmoid, tanh, ...; not linear, ReLU, ReLU6, softmax) written as the layer with
    a linear activation followed by an ``Activation`` layer named
    ``<layer>_<activation>``. Same function, same weights (module docstring). Layers
    for which ``keep(layer)`` is true stay whole."""
    targets: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for la in model.layers:
        act = getattr(getattr(la, "activation", None), "__name__", "linear")
        if (isinstance(la, _WEIGHTED) and (act not in KEPT_ACTIVATIONS or (
                act != "linear" and not fuses_activations(type(la).__name__, la.get_config())))
                and len(la.inbound_nodes) == 1 and not (keep is not None and keep(la))):
            serialized = la.get_config()["activation"]
            targets[la.name] = {"class_name": "Activation", "config": {
                "name": unique_name(model, f"{la.name}_{act}", taken), "trainable": la.trainable,
                "dtype": la.get_config().get("dtype", "float32"), "activation": serialized}}
    if not targets:
        return model

    def edit(e: dict[str, Any]) -> None:
        e["config"]["activation"] = "linear"

    new = insert_after(model, targets, edit)
    logger.info("model '%s': %d unfusable activations split into Activation layers (%s)",
                model.name, len(targets), ", ".join(sorted(targets)))
    return new


def mean_without_keepdims(model: Any) -> Any:
    """``model`` with every ``GlobalAveragePooling1D/2D(keepdims=True)`` written as the
    pooling without keep-dims followed by ``Reshape((1, C))`` / ``((1, 1, C))`` named
    ``<layer>_keepdims``. Same function (module docstring)."""
    targets: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for la in model.layers:
        if (isinstance(la, (keras.layers.GlobalAveragePooling1D,
                            keras.layers.GlobalAveragePooling2D)) and la.keepdims
                and la.data_format == "channels_last" and len(la.inbound_nodes) == 1):
            channels = int(la.input_shape[-1])
            ones = [1] * (len(la.input_shape) - 2)
            targets[la.name] = {"class_name": "Reshape", "config": {
                "name": unique_name(model, f"{la.name}_keepdims", taken), "trainable": False,
                "dtype": la.get_config().get("dtype", "float32"),
                "target_shape": [*ones, channels]}}
    if not targets:
        return model

    def edit(e: dict[str, Any]) -> None:
        e["config"]["keepdims"] = False

    new = insert_after(model, targets, edit)
    logger.info("model '%s': %d keep-dims average poolings written as pooling + Reshape",
                model.name, len(targets))
    return new


def _is_float_layer(layer: Any) -> bool:
    return isinstance(layer, FLOAT_FOR_CONVERTER)


def range_after_float_layers(model: Any) -> Any:
    """``model`` with an ``Identity`` layer named ``<layer>_range`` after every layer left
    float for the converter (:data:`FLOAT_FOR_CONVERTER`) that has one output tensor.

    :func:`tfmot_ext.annotate.builtin_choice` quantizes that identity's output: the
    float layer's output tensor then has a trained range, which the converter keeps
    as its int8 scale, so the quantized layer after it (a Dense after an LSTM) is
    deployed with the trained input scale instead of one calibrated by the converter.
    """
    targets: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for la in model.layers:
        if (_is_float_layer(la) and len(la.inbound_nodes) == 1
                and not isinstance(la.output, (list, tuple))
                and not any(isinstance(n.outbound_layer, keras.layers.Identity)
                            for n in la.outbound_nodes)):  # done already
            targets[la.name] = {"class_name": "Identity", "config": {
                "name": unique_name(model, f"{la.name}_range", taken), "trainable": False,
                "dtype": la.get_config().get("dtype", "float32")}}
    if not targets:
        return model
    new = insert_after(model, targets, lambda e: None)
    logger.info("model '%s': output ranges added after %d float layers (%s)",
                model.name, len(targets), ", ".join(sorted(targets)))
    return new


#: what a BatchNormalization folds into, by exact class (a Conv2DTranspose is a Conv2D
#: subclass that does not fold)
_FOLDABLE = frozenset(FOLDED_KINDS.values())


def _is_standalone_batchnorm(la: Any) -> bool:
    if not isinstance(la, keras.layers.BatchNormalization) or len(la.inbound_nodes) != 1:
        return False
    shape = la.input_shape
    axis = la.axis if isinstance(la.axis, (list, tuple)) else [la.axis]
    if not (isinstance(shape, tuple) and len(shape) == 4 and list(axis) in ([-1], [3])
            and la.center and la.scale and shape[-1] is not None):
        return False
    ups = tf.nest.flatten(la.inbound_nodes[0].inbound_layers)
    return not (len(ups) == 1 and type(ups[0]).__name__ in _FOLDABLE
                and getattr(ups[0].activation, "__name__", "") == "linear")


def batchnorm_as_depthwise(model: Any) -> Any:
    """``model`` with a 1x1 ``DepthwiseConv2D`` named ``<bn>_affine`` (kernel of ones, no
    bias) in front of every channels-last BatchNormalization on a 4-D tensor that no
    Conv2D/DepthwiseConv2D/Dense precedes, so BatchNorm folding turns each into a
    trained, quantized per-channel affine (module docstring). Same function."""
    targets = {la.name: la for la in model.layers if _is_standalone_batchnorm(la)}
    if not targets:
        return model
    taken: set[str] = set()
    entries = {name: {"class_name": "DepthwiseConv2D", "config": {
        "name": unique_name(model, f"{name}_affine", taken), "trainable": bn.trainable,
        "dtype": bn.get_config().get("dtype", "float32"), "kernel_size": [1, 1],
        "strides": [1, 1], "padding": "valid", "depth_multiplier": 1, "activation": "linear",
        "use_bias": False, "depthwise_initializer": {"class_name": "Ones", "config": {}}}}
        for name, bn in targets.items()}
    new_model = insert_before(model, entries, lambda e: None)
    logger.info("model '%s': %d standalone BatchNormalization layers get a 1x1 depthwise "
                "in front (folded into a quantized per-channel affine)", model.name,
                len(targets))
    return new_model


def _is_dilated_transpose(layer: Any) -> bool:
    return (type(layer) is keras.layers.Conv2DTranspose and len(layer.inbound_nodes) == 1
            and tuple(layer.dilation_rate) != (1, 1) and tuple(layer.strides) == (1, 1)
            and layer.output_padding is None and layer.data_format == "channels_last")


def _transposed_padding(k: int, d: int, padding: str) -> tuple[int, int]:
    """Zero padding ``(before, after)`` of the correlation equal to a stride-1 transposed
    convolution of kernel ``k`` and dilation ``d`` (extent ``e = (k - 1) d + 1``):
    ``(e - 1, e - 1)`` for ``valid``; for ``same`` the forward conv's ``same`` padding
    ``(p, e - 1 - p)``, ``p = (e - 1) // 2``, mirrored."""
    e = (k - 1) * d + 1
    if padding == "valid":
        return e - 1, e - 1
    before = (e - 1) // 2
    return e - 1 - before, before


def dilated_transpose_as_conv(model: Any) -> Any:
    """``model`` with every dilated stride-1 ``Conv2DTranspose`` written as the equal
    dilated ``Conv2D`` of the same name: kernel ``W[::-1, ::-1]`` with its two channel
    axes swapped, on the input zero-padded by :func:`_transposed_padding` (no padding
    layer where that is ``same``'s own). The same function up to float32 summation order.

    The converter lowers a dilated transposed convolution to a dynamic-shape graph
    (SHAPE, STRIDED_SLICE, SPACE_TO_BATCH_ND, TRANSPOSE_CONV, ...); as a ``Conv2D`` it
    deploys as one dilated CONV_2D (:mod:`tfmot_ext.dilation`) with the bias fused and
    a BatchNormalization after it folded."""
    if isinstance(model, keras.Sequential):
        return model
    targets = {la.name: la for la in model.layers if _is_dilated_transpose(la)}
    if not targets:
        return model
    cfg = copy.deepcopy(model.get_config())
    taken: set[str] = set()
    weights: dict[str, list[np.ndarray]] = {}
    layers = []
    for e in cfg["layers"]:
        name = e["config"]["name"]
        layer = targets.get(name)
        if layer is None:
            layers.append(e)
            continue
        (kh, kw), (dh, dw) = layer.kernel_size, layer.dilation_rate
        pads = (_transposed_padding(kh, dh, layer.padding),
                _transposed_padding(kw, dw, layer.padding))
        own_same = layer.padding == "same" and all(a == b for a, b in pads)
        conv_cfg = {k: v for k, v in e["config"].items() if k != "output_padding"}
        conv_cfg["padding"] = "same" if own_same else "valid"
        if not own_same:
            pad_name = unique_name(model, f"{name}_pad", taken)
            layers.append({"class_name": "ZeroPadding2D", "name": pad_name,
                           "config": {"name": pad_name, "trainable": False,
                                      "dtype": e["config"].get("dtype", "float32"),
                                      "padding": [list(pads[0]), list(pads[1])]},
                           "inbound_nodes": e["inbound_nodes"]})
            e["inbound_nodes"] = [[[pad_name, 0, 0, {}]]]
        _retype(e, "Conv2D", conv_cfg)
        kernel = np.transpose(layer.kernel.numpy()[::-1, ::-1], (0, 1, 3, 2))
        weights[name] = [kernel] + ([layer.bias.numpy()] if layer.use_bias else [])
        layers.append(e)
    cfg["layers"] = layers
    new = rebuild(model, cfg, lambda n: None if n in targets or n in taken
                  else model.get_layer(n))
    for name, w in weights.items():
        new.get_layer(name).set_weights(w)
    logger.info("model '%s': %d dilated Conv2DTranspose layers written as dilated Conv2D",
                model.name, len(targets))
    return new


def _is_hard_sigmoid(layer: Any) -> bool:
    return (isinstance(layer, keras.layers.Activation) and len(layer.inbound_nodes) == 1
            and getattr(layer.activation, "__name__", "") == "hard_sigmoid")


def hard_sigmoid_as_ops(model: Any) -> Any:
    """``model`` with every ``Activation("hard_sigmoid")`` written as MobileNetV3's
    form, ``clip(0.2 x + 0.5, 0, 1) = relu6(1.2 x + 3) / 6``: a ``x * 1.2``
    :class:`TensorOp` named ``<name>_scaled``, a ``+ 3`` one named ``<name>_shifted``, a
    ``ReLU(max_value=6)`` named ``<name>_relu6`` and a ``* (1/6)`` TensorOp of the same
    name. The same function up to float32 rounding.

    The converter lowers ``clip(0.2 x + 0.5, 0, 1)`` to MUL, ADD, MINIMUM, RELU, whose
    MUL and ADD outputs need ranges a QAT model quantizing only after the activation
    never learned (calibrated by the converter, the reference unable to replay them),
    and it re-ranges a tensor clamped to ``[0, 1]`` by the MINIMUM/RELU pair to that
    interval whatever QAT trained. Written as MobileNetV3's form every tensor has a
    trained range, the ReLU6 fuses into the ADD (as in that model, which deploys
    exactly), and the constants are exact on the converter's grid
    (:func:`tfmot_ext.kernels.constant_operand`)."""
    if isinstance(model, keras.Sequential):
        return model
    targets = {la.name for la in model.layers if _is_hard_sigmoid(la)}
    if not targets:
        return model
    cfg = copy.deepcopy(model.get_config())
    taken: set[str] = set()
    layers = []
    for e in cfg["layers"]:
        name = e["config"]["name"]
        if name not in targets:
            layers.append(e)
            continue
        scaled = tensor_op_entry(unique_name(model, f"{name}_scaled", taken),
                                 "math.multiply", {"y": 1.2})
        shifted = tensor_op_entry(unique_name(model, f"{name}_shifted", taken),
                                  "math.add", {"y": 3.0})
        relu_name = unique_name(model, f"{name}_relu6", taken)
        relu6: dict[str, Any] = {"class_name": "ReLU", "name": relu_name, "config": {
            "name": relu_name, "trainable": e["config"].get("trainable", True),
            "dtype": e["config"].get("dtype", "float32"), "max_value": 6.0,
            "negative_slope": 0.0, "threshold": 0.0}}
        sixth = tensor_op_entry(name, "math.multiply", {"y": 1.0 / 6.0})
        scaled["inbound_nodes"] = e["inbound_nodes"]
        shifted["inbound_nodes"] = [[[scaled["name"], 0, 0, {}]]]
        relu6["inbound_nodes"] = [[[shifted["name"], 0, 0, {}]]]
        sixth["inbound_nodes"] = [[[relu_name, 0, 0, {}]]]
        layers += [scaled, shifted, relu6, sixth]
    cfg["layers"] = layers
    new = rebuild(model, cfg, lambda n: None if n in targets or n in taken
                  else model.get_layer(n))
    logger.info("model '%s': %d hard_sigmoid activations written as relu6(1.2 x + 3) / 6",
                model.name, len(targets))
    return new


def _after_same_scale(layer: Any) -> bool:
    """A Flatten or Permute (:data:`tfmot_ext.rules.MOVED_BEFORE_FAKE_QUANT`) reading a
    same-scale operator."""
    if type(layer).__name__ not in MOVED_BEFORE_FAKE_QUANT:
        return False
    producers = [la for node in layer.inbound_nodes
                 for la in tf.nest.flatten(node.inbound_layers)]
    return any(type(la).__name__ in SAME_SCALE_LAYERS for la in producers)


def hold_same_scale_outputs(model: Any, keep: Callable[[Any], bool] | None = None) -> Any:
    """``model`` with every channels-last Flatten that reads a Concatenate, Maximum or
    Minimum written as a ``Reshape((prod,))`` of the same name, and a ``Reshape`` to the
    same shape ending in ``-1`` (named ``<layer>_hold``) put in front of every Permute
    that reads one. Same function. ``keep(layer)`` true leaves that layer alone.

    The converter moves a static RESHAPE (a Flatten) or a TRANSPOSE in front of the
    FakeQuant before it (:data:`tfmot_ext.rules.MOVED_BEFORE_FAKE_QUANT`); a same-scale
    operator whose output quantizer moved away deploys at the scale of its first input
    with a range of its own, its other inputs requantized to it and a QUANTIZE to its
    trained scale after it (measured: 26 LSB off the QAT model where those ranges
    differ). A Keras ``Reshape`` computes its shape at run time and keeps the FakeQuant
    where QAT put it (a reshape to its input's own static shape would be folded away,
    hence the ``-1``); a Flatten followed by one would fold into one static RESHAPE, so
    the Flatten itself becomes the ``Reshape``. Not rewritten, with a warning (they
    deploy as described): a layer called more than once, a channels-first Flatten, a
    shape with an unknown dimension."""
    if isinstance(model, keras.Sequential):
        return model
    targets: dict[str, tuple[Any, list[int]]] = {}
    for la in model.layers:
        if not _after_same_scale(la) or (keep is not None and keep(la)):
            continue
        raw: list[Any] = list(la.input_shape[1:]) if len(la.inbound_nodes) == 1 else [None]
        if (None in raw or getattr(la, "data_format", "channels_last") != "channels_last"):
            logger.warning("model '%s': layer '%s' reads a same-scale operator but is not "
                           "rewritten (called more than once, channels first or an unknown "
                           "dimension); the operator deploys at its first quantized input's "
                           "scale (docs/parity_matrix.md)", model.name, la.name)
            continue
        targets[la.name] = (la, [int(d) for d in raw])
    if not targets:
        return model
    taken: set[str] = set()
    permutes = {n: {"class_name": "Reshape", "config": {
        "name": unique_name(model, f"{n}_hold", taken), "trainable": False,
        "dtype": la.get_config().get("dtype", "float32"), "target_shape": [*dims[:-1], -1]}}
        for n, (la, dims) in targets.items() if isinstance(la, keras.layers.Permute)}
    flats = {n: [int(np.prod(dims))] for n, (la, dims) in targets.items() if n not in permutes}
    cfg = copy.deepcopy(model.get_config())
    for e in cfg["layers"]:
        c = e["config"]
        if c["name"] in flats:
            _retype(e, "Reshape", {"name": c["name"], "trainable": c.get("trainable", True),
                                   "dtype": c.get("dtype", "float32"),
                                   "target_shape": flats[c["name"]]})
    new = rebuild(model, cfg, lambda n: None if n in flats else model.get_layer(n))
    if permutes:
        new = insert_before(new, permutes, lambda e: None)
    logger.info("model '%s': %d outputs of same-scale operators held before a Flatten or "
                "Permute", model.name, len(targets))
    return new


def prepare(model: Any, custom_objects: dict[str, Any] | None = None,
            keep: Callable[[Any], bool] | None = None) -> Any:
    """:func:`flatten`, :func:`replace_tf_ops`, :func:`merge_duplicate_activations`,
    :func:`tensor_adds_as_add`, :func:`average_as_add`, :func:`scale_layers_as_add`,
    :func:`replace_normalization`,
    :func:`tfmot_ext.ranks.dense_to_rank2`, :func:`tfmot_ext.ranks.conv1d_as_conv2d`,
    :func:`dilated_transpose_as_conv`, :func:`rescaling_as_depthwise`,
    :func:`split_separable`, :func:`split_activations`, :func:`hard_sigmoid_as_ops`,
    :func:`mean_without_keepdims`, :func:`hold_same_scale_outputs`,
    :func:`range_after_float_layers`: a graph tfmot can wrap layer by layer and the
    converter deploys as trained. ``keep(layer)`` true keeps that layer whole (a
    user's rule configures it as one layer): a SeparableConv2D is not split, an
    activation not split off."""
    flat = flatten(model, custom_objects)
    if not isinstance(flat, keras.Sequential):
        for rewrite in (lambda m: replace_tf_ops(m, custom_objects),
                        merge_duplicate_activations, tensor_adds_as_add, average_as_add,
                        scale_layers_as_add, replace_normalization, dense_to_rank2,
                        conv1d_as_conv2d, dilated_transpose_as_conv, rescaling_as_depthwise):
            flat = rewrite(flat)
    split = split_activations(split_separable(flat, keep), keep)
    if not isinstance(split, keras.Sequential):
        split = hard_sigmoid_as_ops(split)
    held = hold_same_scale_outputs(mean_without_keepdims(split), keep)
    return range_after_float_layers(held)
