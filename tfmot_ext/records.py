"""Layer records of a Keras model: from an H5 file (h5py only) or a live model's config.

A :class:`LayerRecord` is one layer of a functional or sequential model: its name,
class name, config, inbound layer names and weights by short name. Reading an H5 file
runs no code from it (no ``load_model``, no custom objects, no unpickling): the
``model_config`` JSON attribute and the weight datasets are parsed with guards against
damaged or hostile input (sizes, dtypes, shapes), every failure an
:class:`~tfmot_ext.errors.H5FormatError` naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfmot_ext.errors import H5FormatError

__all__ = [
    "MAX_CONFIG_CHARS",
    "MAX_DATASET_ELEMENTS",
    "WRAPPER_CLASSES",
    "LayerRecord",
    "class_name",
    "inbound_layer_names",
    "read_model_config",
    "records_from_config",
    "records_from_h5",
    "short_name",
]


#: Class names of tfmot's quantize wrappers in a serialized model config.
WRAPPER_CLASSES = frozenset({"QuantizeWrapper", "QuantizeWrapperV2"})


def class_name(d: Mapping[str, Any]) -> str:
    """The class name of a serialized Keras object, without a ``package>`` prefix."""
    return str(d.get("class_name", "")).split(">")[-1]


@dataclass
class LayerRecord:
    """One layer of a model config (weights filled in by the reader)."""

    name: str
    class_name: str
    config: dict[str, Any]
    inbound: list[str]
    weights: dict[str, np.ndarray]


def short_name(name: str) -> str:
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


def records_from_config(model_config: Mapping[str, Any], where: str) -> list[LayerRecord]:
    if not isinstance(model_config, Mapping) or "config" not in model_config:
        raise H5FormatError(f"{where}: model config has no 'config' entry")
    cfg = model_config["config"]
    layers = cfg.get("layers") if isinstance(cfg, Mapping) else None
    if not isinstance(layers, list):
        raise H5FormatError(f"{where}: model config lists no layers")
    sequential = model_config.get("class_name") == "Sequential"
    records: list[LayerRecord] = []
    prev: str | None = None
    for i, entry in enumerate(layers):
        if not isinstance(entry, Mapping):
            raise H5FormatError(f"{where}: layer #{i} of the model config is not an object")
        lc = entry.get("config", {})
        name = entry.get("name") or (lc.get("name") if isinstance(lc, Mapping) else None)
        if not isinstance(name, str):
            raise H5FormatError(f"{where}: layer #{i} has no name")
        inbound = ([prev] if prev else []) if sequential else inbound_layer_names(entry)
        records.append(LayerRecord(name, class_name(entry), dict(lc) if isinstance(lc, Mapping)
                               else {}, inbound, {}))
        prev = name
    return records


#: Largest dataset tfmot_ext reads from an H5 file (elements, 256 Mi = 1 GiB of
#: float32); a guard against corrupted or hostile declared shapes.
MAX_DATASET_ELEMENTS = 1 << 28
#: Largest model-config JSON accepted (characters).
MAX_CONFIG_CHARS = 64 << 20

#: What h5py/HDF5 and json raise on damaged input; mapped to H5FormatError.
_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError,
                RecursionError, UnicodeDecodeError, IndexError, OverflowError)


def records_from_h5(path: str) -> list[LayerRecord]:
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


def _read_h5(path: str) -> list[LayerRecord]:
    import h5py

    if not os.path.exists(path):
        raise H5FormatError(f"'{path}': no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise H5FormatError(f"'{path}' is not a readable HDF5 file ({e}); pass a Keras H5 "
                            "checkpoint saved with model.save('x.h5')") from e
    with f:
        records = records_from_config(_model_config(f, path), f"'{path}'")
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
                    rec.weights[short_name(wname)] = np.asarray(ds[()])
                except (OSError, ValueError) as e:
                    raise H5FormatError(f"'{path}': cannot read '{rec.name}/{wname}': {e}") from e
    return records
