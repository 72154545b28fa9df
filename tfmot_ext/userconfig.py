"""QuantizeConfigs and quantizers whose serialized form does not say how they quantize.

tfmot's comprehensive guide writes QuantizeConfigs whose ``get_config`` returns ``{}``
and lets users write their own ``Quantizer`` classes. Extraction (:mod:`tfmot_ext.extract`)
reads them here, with their code, never with code from a file: from the live model's
config objects (:func:`read_live_config`), or from an H5 file with the classes the user
passes (:func:`read_config_with_code`). Each rewrites the layer's record so that its
config reads as a ``LayerQuantizeConfig`` of known quantizers. A weight quantizer of an
unknown class is read by replaying it (:func:`_replay`). Training half: imports
TensorFlow; extraction imports this module only for a live model or ``custom_objects``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfmot_ext.quantspec import KNOWN_CONFIGS, KNOWN_QUANTIZERS
from tfmot_ext.records import WRAPPER_CLASSES, LayerRecord, class_name, short_name

__all__ = ["read_config_with_code", "read_live_config"]

logger = logging.getLogger(__name__)

def _user_config(rec: LayerRecord) -> str | None:
    """The class name of a wrapper's QuantizeConfig that its serialized form does not
    describe (a user-written one), else None."""
    qc = rec.config.get("quantize_config")
    if (rec.class_name not in WRAPPER_CLASSES or not isinstance(qc, Mapping)
            or class_name(qc) in KNOWN_CONFIGS):
        return None
    return class_name(qc)


def read_live_config(wrapper: Any, rec: LayerRecord) -> None:
    """A user-written QuantizeConfig (tfmot's guide: ``get_config`` returns ``{}``, so its
    serialized form says nothing) read from the live object instead: its weight,
    activation and output quantizers, serialized, as a ``LayerQuantizeConfig`` would
    hold them. Quantizers of classes tfmot_ext cannot read still get a note."""
    if _user_config(rec) is not None or _has_unknown_quantizer(rec):
        _describe_config(wrapper.quantize_config, wrapper.layer, rec, wrapper)


def _has_unknown_quantizer(rec: LayerRecord) -> bool:
    """A tfmot_ext LayerQuantizeConfig holding a weight quantizer of a user's class."""
    qc = rec.config.get("quantize_config")
    if rec.class_name not in WRAPPER_CLASSES or not isinstance(qc, Mapping) or class_name(
            qc) != "LayerQuantizeConfig":
        return False
    weights = (qc.get("config") or {}).get("weights") or {}
    return isinstance(weights, Mapping) and any(
        isinstance(v, Mapping) and class_name(v) not in KNOWN_QUANTIZERS
        for v in weights.values())


def read_config_with_code(rec: LayerRecord, objects: Mapping[str, Any]) -> None:
    """A user-written QuantizeConfig of an H5 file, read with its class as the user passed
    it (``custom_objects``): the config and the wrapped layer are rebuilt from their
    stored configs (the layer built from its ``build_config``), and asked for their
    quantizers. Runs the user's class, never code from the file."""
    from tfmot_ext._compat import keras
    from tfmot_ext.configs import LayerQuantizeConfig
    from tfmot_ext.scope import quantize_scope  # tfmot's objects (its activation wrapper)

    name = _user_config(rec)
    if name is not None and name not in objects:
        return
    if name is None and not _has_unknown_quantizer(rec):
        return
    cls = objects[name] if name is not None else LayerQuantizeConfig
    entry = rec.config["quantize_config"]
    layer_entry = rec.config.get("layer", {})
    try:
        with quantize_scope(dict(objects)):  # a user's quantizer class, deserialized
            cfg = cls.from_config(entry.get("config") or {})
            inner = keras.layers.deserialize(dict(layer_entry))
        if isinstance(layer_entry, Mapping) and layer_entry.get("build_config"):
            inner.build_from_config(layer_entry["build_config"])
    except Exception as e:  # the user's code: report, do not guess
        logger.warning("%s: its QuantizeConfig %s could not be rebuilt (%s)", rec.name,
                       name, e)
        return
    _describe_config(cfg, inner, rec)


def _replayed(wrapper: Any, index: int, attr: str, rec: LayerRecord) -> dict[str, Any] | None:
    """A weight quantizer of a class tfmot_ext does not know, read by replaying it: when
    its inference output on the weight equals TF's FakeQuant on the two range variables
    it keeps (bit for bit, at the ``num_bits``/``narrow_range`` of its config, 8 and wide
    by default), it is described as tfmot's LastValueQuantizer on that stored range
    (the variables are copied under ``<attr>_min``/``_max``); else None."""
    from tfmot_ext._compat import weight_quantizer_entries

    entries = weight_quantizer_entries(wrapper)  # the config's order (tfmot builds them so)
    if index >= len(entries):
        return None
    return _replay(*entries[index], attr, rec)


def _rebuilt_replay(inner: Any, q: Any, attr: str, rec: LayerRecord) -> dict[str, Any] | None:
    """:func:`_replayed` for an H5 file: ``q`` builds its variables on the rebuilt layer
    ``inner``, which take the stored values of the same names, as does the weight."""
    weight = getattr(inner, attr, None)
    if weight is None or attr not in rec.weights:
        return None
    try:
        variables = q.build(weight.shape, attr, inner)
        for v in (weight, *variables.values()):
            v.assign(rec.weights[short_name(v.name)])
    except Exception:  # the user's code, or a variable the file does not hold
        return None
    return _replay(weight, q, variables, attr, rec)


def _replay(weight: Any, q: Any, variables: Mapping[str, Any], attr: str,
            rec: LayerRecord) -> dict[str, Any] | None:
    """The replay of :func:`_replayed` (see there)."""
    from tfmot_ext._compat import tf

    if len(variables) != 2:
        return None
    cfg = q.get_config() if hasattr(q, "get_config") else {}
    bits, narrow = int(cfg.get("num_bits", cfg.get("bits", 8))), bool(cfg.get("narrow_range"))
    try:
        got = np.asarray(q(weight, False, variables))  # it may update its variables: first
        lo, hi = sorted((np.asarray(v.numpy(), np.float32) for v in variables.values()),
                        key=lambda a: float(np.sum(a)))
        if lo.shape != hi.shape or lo.ndim > 1 or not np.all(lo <= hi):
            return None
        if lo.ndim == 0:
            want = tf.quantization.fake_quant_with_min_max_vars(
                weight, lo, hi, num_bits=bits, narrow_range=narrow)
        else:
            want = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                weight, lo, hi, num_bits=bits, narrow_range=narrow)
    except Exception:  # the user's code, or not a FakeQuant: not readable this way
        return None
    if not np.array_equal(got, np.asarray(want)):
        return None
    rec.weights[f"{attr}_min"], rec.weights[f"{attr}_max"] = lo, hi
    return {"class_name": "LastValueQuantizer", "config": {
        "num_bits": bits, "per_axis": lo.ndim == 1,
        "symmetric": bool(np.all(lo == -hi)), "narrow_range": narrow}}


def _describe_config(cfg: Any, inner: Any, rec: LayerRecord, wrapper: Any = None) -> None:
    """Replace ``rec``'s serialized QuantizeConfig by a ``LayerQuantizeConfig``-shaped
    one listing the quantizers the live config object gives for the layer ``inner``
    (a weight quantizer of an unknown class replayed, :func:`_replayed`, where the live
    ``wrapper`` is at hand)."""
    from tfmot_ext._compat import keras, weight_quantizer_entries
    from tfmot_ext.summary import weight_attr_name

    qc = rec.config["quantize_config"]

    def described(i: int, attr: str, q: Any) -> Any:
        out = keras.utils.serialize_keras_object(q)
        if isinstance(out, Mapping) and class_name(out) not in KNOWN_QUANTIZERS:
            out = (_replayed(wrapper, i, attr, rec) if wrapper is not None
                   else _rebuilt_replay(inner, q, attr, rec)) or out
        return out

    try:
        pairs = list(cfg.get_weights_and_quantizers(inner))
        names = [weight_attr_name(inner, w) for w, _ in pairs]
        if wrapper is not None:  # the attribute names of the variables the wrapper holds
            names = [weight_attr_name(inner, e[0]) for e in weight_quantizer_entries(wrapper)
                     ][:len(pairs)] or names
        weights = {a: described(i, a, q) for i, (a, (_, q)) in enumerate(zip(names, pairs))}
        acts = [q for _, q in cfg.get_activations_and_quantizers(inner)]
        outs = list(cfg.get_output_quantizers(inner))
    except Exception as e:  # the user's code: report, do not guess
        logger.warning("%s: its QuantizeConfig %s could not be read (%s)", rec.name,
                       class_name(qc), e)
        return
    rec.config = {**rec.config, "quantize_config": {
        "class_name": "LayerQuantizeConfig", "read_from": class_name(qc), "config": {
            "weights": weights,
            "activations": ({"activation": keras.utils.serialize_keras_object(acts[0])}
                            if acts else {}),
            "output": keras.utils.serialize_keras_object(outs[0]) if outs else None}}}
