"""Model graph surgery: flatten nested models, make TF-op layers wrappable, rebuild.

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
passed as an ordinary input, so it can be wrapped and its output quantized.

The rewrites that use these (:mod:`tfmot_ext.rewrites`) make the graph deploy as
trained; :func:`tfmot_ext.rewrites.prepare` applies them all.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from tfmot_ext._compat import keras, tf
from tfmot_ext.errors import UnsupportedModelError
from tfmot_ext.records import inbound_layer_names

__all__ = [
    "FLOAT_FOR_CONVERTER",
    "Fixed",
    "TensorOp",
    "consumers",
    "flatten",
    "has_nested_models",
    "has_tf_ops",
    "insert_after",
    "insert_before",
    "is_tensor_ref",
    "layer_classes",
    "map_tensor_refs",
    "outer_inputs",
    "rebuild",
    "replace_tf_ops",
    "tensor_op_entry",
    "unique_name",
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


def consumers(model: Any) -> dict[str, list[str]]:
    """Layer name -> names of the layers consuming its output (from the model config)."""
    out: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    if isinstance(model, keras.Sequential):
        names = [la.name for la in model.layers]
        for a, b in itertools.pairwise(names):
            out[a].append(b)
        return out
    for entry in model.get_config()["layers"]:
        for name in inbound_layer_names(entry):
            out.setdefault(name, []).append(entry["name"])
    return out


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


def outer_inputs(entry: dict[str, Any]) -> list[list[Any]]:
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
        feeds = outer_inputs(entry)
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


def rebuild(model: Any, cfg: dict[str, Any], source_of: Callable[[str], Any],
             custom_objects: dict[str, Any] | None = None) -> Any:
    """A new model from the rewritten config ``cfg`` of ``model``; each new layer that
    has weights takes those of ``source_of(name)`` (the original layer, or None).

    A ``Lambda`` layer gets its original layer's live function (the user's own code,
    already in this process) instead of the marshalled bytecode of its config, which
    tf_keras's safe mode refuses to load and which would lose what the function closes
    over; nothing is deserialized from code."""
    objects = {**layer_classes(model), "TensorOp": TensorOp, **(custom_objects or {})}
    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    for entry in cfg.get("layers", []):
        if entry.get("class_name") == "Lambda":
            src = source_of(entry["config"]["name"])
            if isinstance(src, keras.layers.Lambda):
                entry["config"] = {**entry["config"], "function": src.function,
                                   "function_type": "raw"}
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
    return rebuild(model, flat_cfg, lambda name: _layer_at(model, origin[name]),
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
    new = rebuild(model, cfg, model.get_layer, custom_objects)
    logger.info("model '%s': %d TF-op layers made wrappable", model.name,
                sum(isinstance(la, TensorOp) for la in new.layers))
    return new


def insert_after(model: Any, new_entries: dict[str, dict[str, Any]],
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
    return rebuild(model, cfg, model.get_layer)


def insert_before(model: Any, new_entries: dict[str, dict[str, Any]],
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
    new_model = rebuild(model, cfg, lambda n: None)
    for layer in new_model.layers:
        if layer.name in given:
            layer.set_weights(given[layer.name])
        elif layer.weights and layer.name in originals:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new_model


def tensor_op_entry(name: str, function: str, op_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A functional-config entry of a one-input :class:`TensorOp` ``function(x, **op_kwargs)``
    (``function`` as TFOpLambda names it: ``"reshape"``, ``"math.multiply"``); the caller
    sets its inbound nodes."""
    op = {"class_name": "TFOpLambda", "config": {"name": name, "trainable": True,
                                                 "dtype": "float32", "function": function}}
    return {"class_name": keras.utils.get_registered_name(TensorOp), "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", "op": op,
                       "first_arg": {"__input__": 0}, "op_kwargs": op_kwargs}}


def unique_name(model: Any, base: str, taken: set[str]) -> str:
    names = {la.name for la in model.layers} | taken
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


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
