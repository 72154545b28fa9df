"""Graph preparation for tfmot: flatten nested models, make TF-op layers wrappable.

**Nested models.**
tfmot's ``quantize_apply`` refuses "a keras Model inside another keras Model"
(ConvNeXt's stem is a ``Sequential`` inside the functional model, and so is every
backbone-plus-head model built from ``keras.applications``). :func:`flatten` splices
the inner models' layers into the outer graph, through the models' configs (public
``get_config`` / ``from_config``), and copies every weight, so the result computes
exactly what the nested model computes (same layers, same order, same weights).

A tensor reference in a functional config is a list ``[layer_name, node_index,
tensor_index(, kwargs)]``; it appears in ``inbound_nodes`` either as such lists or,
for TF-op layers, as one list whose kwargs hold further references. Flattening
rewrites every reference: to an inner model's input it becomes the outer tensor fed
to it, to an inner model's output the inner layer producing it.

**TF-op layers.** ``x + 3.0``, ``tf.concat(...)``, ``x[:, 1:]`` in a functional model
become ``TFOpLambda`` / ``SlicingOpLambda`` layers, whose serialized call (first
argument and keyword arguments, tensors among them) tfmot's wrappers cannot replay
("'list' object has no attribute 'dtype'"). :func:`replace_tf_ops` turns each into a
:class:`TensorOp`: the same op, called the same way, with every tensor argument
passed as an ordinary input, so it can be wrapped and its output quantized. A
two-tensor ``x + y`` of equal shapes becomes a Keras ``Add`` (:func:`tensor_adds_as_add`),
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
from tfmot_ext.errors import UnsupportedModelError
from tfmot_ext.rules import KEPT_ACTIVATIONS

__all__ = [
    "FLOAT_FOR_CONVERTER",
    "TENSOR_ADDS",
    "Fixed",
    "TensorOp",
    "batchnorm_as_depthwise",
    "dense_to_rank2",
    "flatten",
    "has_nested_models",
    "has_tf_ops",
    "is_tensor_ref",
    "layer_classes",
    "map_tensor_refs",
    "mean_without_keepdims",
    "merge_duplicate_activations",
    "normalization_affine",
    "prepare",
    "range_after_float_layers",
    "replace_normalization",
    "replace_tf_ops",
    "rescaling_as_depthwise",
    "scale_layers_as_add",
    "split_activations",
    "split_separable",
    "tensor_adds_as_add",
]

logger = logging.getLogger(__name__)
register = keras.utils.register_keras_serializable(package="tfmot_ext")
_TF_OP_CLASSES = ("TFOpLambda", "SlicingOpLambda")

_MODEL_CLASSES = ("Functional", "Model", "Sequential")

#: Left float in QAT, quantized by the converter from the representative data: layers
#: called with several tensor arguments (query, value, ...), which tfmot's wrapper
#: cannot pass, and recurrent layers, whose wrapped form the converter cannot fuse
#: into its sequence op ("Failed to duplicate values for the stateful op").
FLOAT_FOR_CONVERTER: tuple[type, ...] = (
    keras.layers.MultiHeadAttention, keras.layers.Attention, keras.layers.AdditiveAttention,
    keras.layers.RNN, keras.layers.Bidirectional)


def is_tensor_ref(obj: Any) -> bool:
    """Whether ``obj`` is a ``[layer_name, node_index, tensor_index(, kwargs)]`` reference.

    >>> is_tensor_ref(["conv", 0, 0, {}]), is_tensor_ref(["conv", "x"])
    (True, False)
    """
    return (isinstance(obj, list) and len(obj) in (3, 4) and isinstance(obj[0], str)
            and isinstance(obj[1], int) and isinstance(obj[2], int)
            and (len(obj) == 3 or isinstance(obj[3], dict)))


def map_tensor_refs(obj: Any, fn: Callable[[list[Any]], list[Any]]) -> Any:
    """A copy of ``obj`` with every tensor reference ``r`` (at any depth, kwargs
    included) replaced by ``fn(r)``; ``fn`` gets and returns the ``[name, node,
    tensor]`` part, the kwargs of a 4-element reference are mapped and kept."""
    if is_tensor_ref(obj):
        head = fn(list(obj[:3]))
        return [*head, map_tensor_refs(obj[3], fn)] if len(obj) == 4 else head
    if isinstance(obj, list):
        return [map_tensor_refs(v, fn) for v in obj]
    if isinstance(obj, dict):
        return {k: map_tensor_refs(v, fn) for k, v in obj.items()}
    return obj


def has_nested_models(model: Any) -> bool:
    """Whether any layer of ``model`` is itself a Model."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def _functional_config(class_name: str, cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """A functional config for a nested model's config (a Sequential becomes a chain)."""
    if class_name != "Sequential":
        return copy.deepcopy(cfg)
    entries = copy.deepcopy(cfg["layers"])
    if not entries:
        raise UnsupportedModelError(f"nested Sequential '{where}' has no layers")
    layers: list[dict[str, Any]] = []
    if entries[0]["class_name"] == "InputLayer":
        first = entries.pop(0)
        first["name"] = first["config"]["name"]
        first["inbound_nodes"] = []
        layers.append(first)
    else:
        shape = entries[0]["config"].get("batch_input_shape")
        if shape is None:
            raise UnsupportedModelError(
                f"nested Sequential '{where}' has no input shape; build it with an Input")
        layers.append({"class_name": "InputLayer", "name": f"{where}_input", "inbound_nodes": [],
                       "config": {"batch_input_shape": shape, "name": f"{where}_input"}})
    prev = layers[0]["name"]
    for e in entries:
        e["name"] = e["config"]["name"]
        e["inbound_nodes"] = [[[prev, 0, 0, {}]]]
        layers.append(e)
        prev = e["name"]
    return {"name": cfg["name"], "layers": layers, "input_layers": [[layers[0]["name"], 0, 0]],
            "output_layers": [[prev, 0, 0]]}


def _outer_inputs(entry: dict[str, Any]) -> list[list[Any]]:
    """The tensor references fed to a nested model's one call."""
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise UnsupportedModelError(
            f"nested model '{entry['name']}' is called {len(nodes)} times; tfmot_ext flattens "
            "models called once. Build the outer model with the inner layers directly")
    refs: list[list[Any]] = []

    def keep(r: list[Any]) -> list[Any]:
        refs.append(r)
        return r

    map_tensor_refs(nodes[0], keep)
    return refs


def _flatten_config(config: dict[str, Any], path: str
                    ) -> tuple[dict[str, Any], dict[str, str]]:
    """Splice nested model configs into ``config`` (recursively).

    Returns the flat config and, for each of its layers, its path ``outer/inner/...``
    in the original model (for copying weights).
    """
    taken = {e["name"] for e in config["layers"] if e["class_name"] not in _MODEL_CLASSES}
    origin: dict[str, str] = {}
    out_layers: list[dict[str, Any]] = []
    redirect: dict[str, list[list[Any]]] = {}   # nested model name -> its output refs

    def remap(r: list[Any]) -> list[Any]:
        if r[0] in redirect:
            return list(redirect[r[0]][r[2]])
        return r

    for entry in config["layers"]:
        entry = copy.deepcopy(entry)
        entry["inbound_nodes"] = map_tensor_refs(entry.get("inbound_nodes", []), remap)
        if entry["class_name"] not in _MODEL_CLASSES:
            out_layers.append(entry)
            origin[entry["name"]] = f"{path}{entry['name']}"
            continue
        name = entry["name"]
        inner, inner_origin = _flatten_config(
            _functional_config(entry["class_name"], entry["config"], name), f"{path}{name}/")
        feeds = _outer_inputs(entry)
        inputs = [r[0] for r in inner["input_layers"]]
        if len(feeds) != len(inputs):
            raise UnsupportedModelError(
                f"nested model '{name}': {len(inputs)} inputs but called with {len(feeds)} "
                "tensors")
        rename: dict[str, str] = {}
        for e in inner["layers"]:
            if e["name"] not in inputs:
                new = e["name"]
                while new in taken:
                    new = f"{name}_{new}"
                rename[e["name"]] = new
                taken.add(new)
        feed_of = dict(zip(inputs, feeds))

        def inner_ref(r: list[Any], feed_of: dict[str, list[Any]] = feed_of,
                      rename: dict[str, str] = rename) -> list[Any]:
            if r[0] in feed_of:
                return list(feed_of[r[0]][:3])
            return [rename.get(r[0], r[0]), r[1], r[2]]

        for e in inner["layers"]:
            if e["name"] in inputs:
                continue
            old = e["name"]
            e["name"] = rename[old]
            e["config"] = {**e["config"], "name": rename[old]}
            e["inbound_nodes"] = map_tensor_refs(e.get("inbound_nodes", []), inner_ref)
            origin[e["name"]] = inner_origin[old]
            out_layers.append(e)
        redirect[name] = [inner_ref(list(r[:3])) for r in inner["output_layers"]]
        logger.info("flattened nested model '%s' (%d layers)", name,
                    len(inner["layers"]) - len(inputs))
    flat = dict(config)
    flat["layers"] = out_layers
    flat["input_layers"] = map_tensor_refs(copy.deepcopy(config["input_layers"]), remap)
    flat["output_layers"] = map_tensor_refs(copy.deepcopy(config["output_layers"]), remap)
    return flat, origin


def _layer_at(model: Any, path: str) -> Any:
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def layer_classes(model: Any) -> dict[str, type]:
    """The classes of ``model``'s layers, nested models' included, by bare and registered
    name (rebuilding a model from its config needs every custom layer class in scope;
    the live model already tells which they are)."""
    out: dict[str, type] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(layer_classes(layer))
        cls = type(layer)
        out[cls.__name__] = cls
        out[keras.utils.get_registered_name(cls)] = cls
    return out


def _rebuild(model: Any, cfg: dict[str, Any], source_of: Callable[[str], Any],
             custom_objects: dict[str, Any] | None = None) -> Any:
    """A new model from the rewritten config ``cfg`` of ``model``; each new layer that
    has weights takes those of ``source_of(name)`` (the original layer, or None)."""
    objects = {**layer_classes(model), "TensorOp": TensorOp, **(custom_objects or {})}
    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    with keras.utils.custom_object_scope(objects):
        new = cls.from_config(cfg)
    for layer in new.layers:
        if layer.weights:
            src = source_of(layer.name)
            if src is not None:
                layer.set_weights(src.get_weights())
    return new


def flatten(model: Any, custom_objects: dict[str, Any] | None = None) -> Any:
    """``model`` with every nested Model's layers spliced into one functional graph.

    The result has the same inputs, outputs and weights and computes the same function.
    Inner layer names are kept (prefixed with the nested model's name where they
    would clash). Returns ``model`` itself when nothing is nested.

    Raises:
        UnsupportedModelError: a Sequential outer model holding a model, or a nested
            model called more than once (shared sub-models).
    """
    if not has_nested_models(model):
        return model
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    flat_cfg, origin = _flatten_config(model.get_config(), "")
    return _rebuild(model, flat_cfg, lambda name: _layer_at(model, origin[name]),
                    custom_objects)


@register
class TensorOp(keras.layers.Layer):
    """A ``TFOpLambda``/``SlicingOpLambda`` whose tensor arguments all arrive as inputs.

    Calls the same TF function the same way: ``op(first, **op_kwargs)``, where every
    ``{"__input__": i}`` placeholder in ``first_arg`` / ``op_kwargs`` stands for
    ``inputs[i]``.

    Args:
        op: the original layer's ``{"class_name", "config"}``.
        first_arg: the first argument's structure (a placeholder or a list of them).
        op_kwargs: the other arguments, constants and placeholders.
    """

    def __init__(self, op: dict[str, Any], first_arg: Any, op_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.op = op
        self.first_arg = first_arg
        self.op_kwargs = dict(op_kwargs or {})
        self._fn = keras.layers.deserialize(copy.deepcopy(op))

    @property
    def function(self) -> str:
        """The TF function's API name, e.g. ``"math.multiply"``."""
        return str(self.op["config"].get("function", ""))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "op": self.op, "first_arg": self.first_arg,
                "op_kwargs": self.op_kwargs}

    def call(self, inputs: Any) -> Any:
        xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

        def fill(v: Any) -> Any:
            if isinstance(v, dict):
                if set(v) == {"__input__"}:
                    return xs[v["__input__"]]
                return {k: fill(w) for k, w in v.items()}
            if isinstance(v, list):
                return [fill(w) for w in v]
            return v

        return self._fn(fill(self.first_arg), **fill(self.op_kwargs))


def has_tf_ops(model: Any) -> bool:
    """Whether ``model`` has ``TFOpLambda``/``SlicingOpLambda`` layers."""
    return any(type(layer).__name__ in _TF_OP_CLASSES for layer in model.layers)


def _tf_op_entry(entry: dict[str, Any]) -> dict[str, Any]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise UnsupportedModelError(
            f"TF-op layer '{entry['name']}' is called {len(nodes)} times; expected once")
    node = nodes[0]
    refs: list[list[Any]] = []

    def collect(r: list[Any]) -> dict[str, int]:
        refs.append(list(r[:3]))
        return {"__input__": len(refs) - 1}

    def placeholders(obj: Any) -> Any:
        if is_tensor_ref(obj) and len(obj) == 3:
            return collect(obj)
        if isinstance(obj, list):
            return [placeholders(v) for v in obj]
        if isinstance(obj, dict):
            return {k: placeholders(v) for k, v in obj.items()}
        return obj

    if is_tensor_ref(node):          # the first argument is one tensor
        first: Any = collect(node)
        kwargs = node[3] if len(node) == 4 else {}
    elif isinstance(node, list) and node and all(is_tensor_ref(r) for r in node):
        first = [collect(r) for r in node]
        kwargs = node[0][3] if len(node[0]) == 4 else {}
    else:
        raise UnsupportedModelError(
            f"TF-op layer '{entry['name']}': unrecognised call structure {node!r:.200}")
    op_kwargs = placeholders(copy.deepcopy(kwargs))
    name = entry["name"]
    op = {"class_name": entry["class_name"], "config": copy.deepcopy(entry["config"])}
    return {"class_name": keras.utils.get_registered_name(TensorOp), "name": name,
            "config": {"name": name, "trainable": entry["config"].get("trainable", True),
                       "dtype": entry["config"].get("dtype", "float32"), "op": op,
                       "first_arg": first, "op_kwargs": op_kwargs},
            "inbound_nodes": [[[*r, {}] for r in refs]]}


def replace_tf_ops(model: Any, custom_objects: dict[str, Any] | None = None) -> Any:
    """``model`` with every ``TFOpLambda``/``SlicingOpLambda`` replaced by a
    :class:`TensorOp` computing the same thing (returns ``model`` when there is none).

    The model must be functional without nested models (see :func:`flatten`).
    """
    if not has_tf_ops(model):
        return model
    cfg = copy.deepcopy(model.get_config())
    cfg["layers"] = [_tf_op_entry(e) if e["class_name"] in _TF_OP_CLASSES else e
                     for e in cfg["layers"]]
    new = _rebuild(model, cfg, model.get_layer, custom_objects)
    logger.info("model '%s': %d TF-op layers made wrappable", model.name,
                sum(isinstance(la, TensorOp) for la in new.layers))
    return new


#: TF functions of a two-tensor ``x + y`` (TFOpLambda's serialized names).
TENSOR_ADDS = frozenset({"__operators__.add", "math.add", "math.add_v2"})


def _is_same_shape_tensor_add(layer: Any) -> bool:
    if not (isinstance(layer, TensorOp) and layer.function in TENSOR_ADDS
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
    return _rebuild(model, cfg, model.get_layer)


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
    new = _rebuild(model, cfg, model.get_layer)
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
    new = _rebuild(model, cfg, lambda name: None if name in targets else model.get_layer(name))
    logger.info("model '%s': %d Normalization layers written as per-channel Rescaling",
                model.name, len(targets))
    return new


@register
class Fixed(keras.constraints.Constraint):
    """Holds a weight at fixed values after every optimizer step.

    For the constants of a rewritten preprocessing layer: tfmot's ``QuantizeWrapper``
    lists every weight it quantizes as trainable, even in a non-trainable layer, so
    ``trainable=False`` alone would let training move them.

    Args:
        value: the values (nested lists or a scalar), reshaped to the weight's shape.
    """

    def __init__(self, value: Any) -> None:
        self.value = np.asarray(value, np.float32).tolist()

    def __call__(self, w: Any) -> Any:
        return tf.reshape(tf.constant(self.value, w.dtype), tf.shape(w))

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


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
    new = _rebuild(model, cfg, lambda n: None if n in targets else model.get_layer(n))
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
        dw_name = _unique(model, f"{name}_depthwise", taken)
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

    new = _insert_before(model, entries, pointwise, weights)
    logger.info("model '%s': %d SeparableConv2D layers split into depthwise + pointwise",
                model.name, len(targets))
    return new


def _reshape_entry(name: str, src: list[Any], shape: list[int]) -> dict[str, Any]:
    op = {"class_name": "TFOpLambda", "config": {"name": name, "trainable": True,
                                                 "dtype": "float32", "function": "reshape"}}
    return {"class_name": keras.utils.get_registered_name(TensorOp), "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", "op": op,
                       "first_arg": {"__input__": 0}, "op_kwargs": {"shape": shape}},
            "inbound_nodes": [[[*src[:3], {}]]]}


def dense_to_rank2(model: Any) -> Any:
    """``model`` with every Dense on a rank > 2 input wrapped in reshapes to rank 2.

    ``Dense`` on ``(N, H, W, C)`` (ConvNeXt's pointwise layers) is a Tensordot, which
    the converter lowers to a MatMul whose kernel it re-quantizes per output channel,
    not the per-tensor grid trained; on ``(N*H*W, C)`` it is TFLite's
    FULLY_CONNECTED with exactly the trained integers. Same function, same weights.
    """
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
        layers.append(_reshape_entry(flat, _outer_inputs(e)[0], [-1, int(shape[-1])]))
        e["inbound_nodes"] = [[[flat, 0, 0, {}]]]
        layers.append(e)
        units = int(e["config"]["units"])
        layers.append(_reshape_entry(after[e["name"]], [e["name"], 0, 0],
                                     [-1, *[int(d) for d in shape[1:-1]], units]))
    cfg["layers"] = layers
    cfg["output_layers"] = map_tensor_refs(cfg["output_layers"], redirect)
    new = _rebuild(model, cfg, model.get_layer)
    logger.info("model '%s': %d Dense layers on rank > 2 inputs reshaped to rank 2",
                model.name, len(targets))
    return new


def _insert_after(model: Any, new_entries: dict[str, dict[str, Any]],
                  edit: Callable[[dict[str, Any]], None]) -> Any:
    """``model`` rebuilt with ``new_entries[name]`` (a layer config entry without inbound
    nodes) inserted after each layer ``name``, whose entry ``edit`` rewrites; every
    consumer of ``name`` (and the model outputs) now reads the inserted layer."""
    cfg = copy.deepcopy(model.get_config())
    layers: list[dict[str, Any]] = []
    after = {n: e["config"]["name"] for n, e in new_entries.items()}

    def redirect(r: list[Any]) -> list[Any]:
        return [after[r[0]], 0, 0, *r[3:]] if r[0] in after else r

    sequential = isinstance(model, keras.Sequential)
    for e in cfg["layers"]:
        name = e["config"]["name"]
        if not sequential:
            e["inbound_nodes"] = map_tensor_refs(e.get("inbound_nodes", []), redirect)
        layers.append(e)
        if name in new_entries:
            edit(e)
            new = copy.deepcopy(new_entries[name])
            if not sequential:
                new["name"] = new["config"]["name"]
                new["inbound_nodes"] = [[[name, 0, 0, {}]]]
            layers.append(new)
    cfg["layers"] = layers
    if not sequential:
        cfg["output_layers"] = map_tensor_refs(cfg["output_layers"], redirect)
    return _rebuild(model, cfg, model.get_layer)


def _insert_before(model: Any, new_entries: dict[str, dict[str, Any]],
                   edit: Callable[[dict[str, Any]], None],
                   weights: dict[str, list[np.ndarray]] | None = None) -> Any:
    """``model`` rebuilt with ``new_entries[name]`` (a layer config entry without inbound
    nodes) inserted in front of each layer ``name``, whose entry ``edit`` rewrites (and
    whose stale build config is dropped); ``weights`` by layer name, the original
    layers' otherwise (the inserted layers keep their initializers)."""
    cfg = copy.deepcopy(model.get_config())
    sequential = isinstance(model, keras.Sequential)
    layers: list[dict[str, Any]] = []
    for e in cfg["layers"]:
        name = e["config"]["name"]
        if name in new_entries:
            new = copy.deepcopy(new_entries[name])
            if not sequential:
                new["name"] = new["config"]["name"]
                new["inbound_nodes"] = e["inbound_nodes"]
                e["inbound_nodes"] = [[[new["name"], 0, 0, {}]]]
            layers.append(new)
            edit(e)
            e.pop("build_config", None)
        layers.append(e)
    cfg["layers"] = layers
    given = weights or {}
    originals = {la.name for la in model.layers}
    new_model = _rebuild(model, cfg, lambda n: None)
    for layer in new_model.layers:
        if layer.name in given:
            layer.set_weights(given[layer.name])
        elif layer.weights and layer.name in originals:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new_model


def _unique(model: Any, base: str, taken: set[str]) -> str:
    names = {la.name for la in model.layers} | taken
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


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
        if (isinstance(la, _WEIGHTED) and act not in KEPT_ACTIVATIONS
                and len(la.inbound_nodes) == 1 and not (keep is not None and keep(la))):
            serialized = la.get_config()["activation"]
            targets[la.name] = {"class_name": "Activation", "config": {
                "name": _unique(model, f"{la.name}_{act}", taken), "trainable": la.trainable,
                "dtype": la.get_config().get("dtype", "float32"), "activation": serialized}}
    if not targets:
        return model

    def edit(e: dict[str, Any]) -> None:
        e["config"]["activation"] = "linear"

    new = _insert_after(model, targets, edit)
    logger.info("model '%s': %d unfusable activations split into Activation layers (%s)",
                model.name, len(targets), ", ".join(sorted(targets)))
    return new


def mean_without_keepdims(model: Any) -> Any:
    """``model`` with every ``GlobalAveragePooling2D(keepdims=True)`` written as the
    pooling without keep-dims followed by ``Reshape((1, 1, C))`` named
    ``<layer>_keepdims``. Same function (module docstring)."""
    targets: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for la in model.layers:
        if (isinstance(la, keras.layers.GlobalAveragePooling2D) and la.keepdims
                and la.data_format == "channels_last" and len(la.inbound_nodes) == 1):
            channels = int(la.input_shape[-1])
            targets[la.name] = {"class_name": "Reshape", "config": {
                "name": _unique(model, f"{la.name}_keepdims", taken), "trainable": False,
                "dtype": la.get_config().get("dtype", "float32"),
                "target_shape": [1, 1, channels]}}
    if not targets:
        return model

    def edit(e: dict[str, Any]) -> None:
        e["config"]["keepdims"] = False

    new = _insert_after(model, targets, edit)
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
                "name": _unique(model, f"{la.name}_range", taken), "trainable": False,
                "dtype": la.get_config().get("dtype", "float32")}}
    if not targets:
        return model
    new = _insert_after(model, targets, lambda e: None)
    logger.info("model '%s': output ranges added after %d float layers (%s)",
                model.name, len(targets), ", ".join(sorted(targets)))
    return new


_FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _is_standalone_batchnorm(la: Any) -> bool:
    if not isinstance(la, keras.layers.BatchNormalization) or len(la.inbound_nodes) != 1:
        return False
    shape = la.input_shape
    axis = la.axis if isinstance(la.axis, (list, tuple)) else [la.axis]
    if not (isinstance(shape, tuple) and len(shape) == 4 and list(axis) in ([-1], [3])
            and la.center and la.scale and shape[-1] is not None):
        return False
    ups = tf.nest.flatten(la.inbound_nodes[0].inbound_layers)
    return not (len(ups) == 1 and isinstance(ups[0], _FOLDABLE)
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
        "name": _unique(model, f"{name}_affine", taken), "trainable": bn.trainable,
        "dtype": bn.get_config().get("dtype", "float32"), "kernel_size": [1, 1],
        "strides": [1, 1], "padding": "valid", "depth_multiplier": 1, "activation": "linear",
        "use_bias": False, "depthwise_initializer": {"class_name": "Ones", "config": {}}}}
        for name, bn in targets.items()}
    new_model = _insert_before(model, entries, lambda e: None)
    logger.info("model '%s': %d standalone BatchNormalization layers get a 1x1 depthwise "
                "in front (folded into a quantized per-channel affine)", model.name,
                len(targets))
    return new_model


def prepare(model: Any, custom_objects: dict[str, Any] | None = None,
            keep: Callable[[Any], bool] | None = None) -> Any:
    """:func:`flatten`, :func:`replace_tf_ops`, :func:`merge_duplicate_activations`,
    :func:`tensor_adds_as_add`,
    :func:`scale_layers_as_add`, :func:`replace_normalization`,
    :func:`rescaling_as_depthwise`, :func:`dense_to_rank2`,
    :func:`split_separable`, :func:`split_activations`, :func:`mean_without_keepdims`,
    :func:`range_after_float_layers`: a graph tfmot can wrap layer by layer and the
    converter deploys as trained. ``keep(layer)`` true keeps that layer whole (a
    user's rule configures it as one layer): a SeparableConv2D is not split, an
    activation not split off."""
    flat = flatten(model, custom_objects)
    if not isinstance(flat, keras.Sequential):
        flat = dense_to_rank2(rescaling_as_depthwise(replace_normalization(
            scale_layers_as_add(tensor_adds_as_add(merge_duplicate_activations(
                replace_tf_ops(flat, custom_objects)))))))
    return range_after_float_layers(mean_without_keepdims(split_activations(
        split_separable(flat, keep), keep)))
