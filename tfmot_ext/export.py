"""Write extracted parameters as ``.npz``, a JSON "encodings" file, or a C header.

Every file is written atomically (:func:`atomic_write`): to a temporary file in the
target's folder, flushed and fsynced, then renamed over the target. A crash leaves
either the previous file or the new one, never a partial file.

JSON encodings format, version 1 (``docs/extraction.md`` documents every field)::

    {"format": "tfmot_ext.encodings", "version": 1, "source": "...",
     "convention": "real = scale * (q - zero_point)", "rounding": {...},
     "edges": [[src, dst], ...],
     "layers": [{"name", "kind", "op" (the TFLite operator), "attributes" (strides,
                 padding, dilation, groups / depth_multiplier, pool_size, axis, ...,
                 activation and its int8 "clamp"), "inputs", "quantized", "folded",
                 "activation", "note",
                 "kernel": {"attr", "shape", "bits", "symmetric", "narrow_range",
                            "axis", "scale", "zero_point", "min", "max"} | null,
                 "bias": {"bits": 32, "scale": [...]} | null,
                 "input": {"scale", "zero_point", "bits", "min", "max"} | null,
                 "output": {...} | null,
                 "requant": {"multiplier", "m0", "shift"} | null,
                 "integers": {"kernel": [...], "bias": [...]}}],
     "integers": {"file": "<stem>.integers.npz", ...}  (instead, for large models)}

The layers are in execution order; an implementation runs each ``op`` on its
``inputs`` (requantizing an input whose producer's quantization differs from the
layer's ``input``, as TFLite's QUANTIZE does) and needs nothing else
(``tests/test_export.py`` rebuilds the network from the JSON alone, bit for bit).
The ``.npz`` holds the same document (without the integers) as UTF-8 bytes under
``__encodings__``; the C header states the convention, the rounding and the graph in
a comment and each weighted layer's attributes as constants.

Scales are written with ``repr`` of the float32 value widened to float64, so reading
them back as float32 gives the same bits.

C header: per quantized layer ``int8_t``/``int16_t`` kernel arrays in the Keras
layout, ``int32_t`` biases, ``float`` scales, ``int32_t`` zero points, requantization
``M0`` (Q31) and shifts. With ``pack_low_bits=True`` kernels of 4 bits or fewer are
also emitted as ``uint8_t`` arrays holding two values per byte: element ``2i`` in the
low nibble, ``2i+1`` in the high nibble, each as 4-bit two's complement; an odd
count pads the last high nibble with 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from tfmot_ext import qmath
from tfmot_ext.errors import ExportError, IntegerReferenceError
from tfmot_ext.kernels import hw_pairs, pair
from tfmot_ext.params import LayerQuantParams, QuantizedModelParams, TensorQuant
from tfmot_ext.rules import deployed_kind, fused_activation_range, tflite_op

__all__ = [
    "ENCODINGS_FORMAT",
    "ENCODINGS_VERSION",
    "atomic_path",
    "atomic_write",
    "export",
    "incomplete_layers",
    "pack_int4",
    "to_c_header",
    "to_encodings",
    "to_json",
    "to_npz",
    "unpack_int4",
]

#: How a stored integer means a real number, in every export.
CONVENTION = "real = scale * (q - zero_point)"

#: The requantization of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED outputs in
#: TFLite's two kernel sets and in TFLite Micro's (:mod:`tfmot_ext.fixedpoint`,
#: docs/integer_inference.md).
ROUNDING = {
    "accumulator": "acc = sum((q_x - z_x) * q_w) + q_b (int32; q_b the int32 bias)",
    "output": "q_y = clamp(MBQM(acc, m0, shift) + z_y, clamp_min, clamp_max)",
    "reference": "MBQM(x, m0, s) = RDBPOT(SRDHM(x * 2^max(s, 0), m0), max(-s, 0)); "
                 "SRDHM(a, b) = floor((a * b + 2^30) / 2^31), INT32_MIN * INT32_MIN "
                 "saturating to INT32_MAX; RDBPOT(x, e) = x / 2^e rounded half away from "
                 "zero. FULLY_CONNECTED rounds once: (x * m0 + 2^(30 - s)) >> (31 - s)",
    "optimized": "SRDHM as in reference, then (y + 2^(r - 1)) >> r with r = max(-s, 0) "
                 "(ties up), for all three; a depthwise conv's channels after its last "
                 "full group of 8 round as in reference",
    "micro": "TFLite Micro: MBQM as in reference for all three, FULLY_CONNECTED included "
             "(double rounding)",
}

ENCODINGS_FORMAT = "tfmot_ext.encodings"
ENCODINGS_VERSION = 1


def _final_mode(target: str) -> int:
    """The permissions a plain ``open(target, "w")`` would give (mkstemp makes 0600)."""
    try:
        return os.stat(target).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary file name beside ``path``; renamed over ``path`` on success, removed
    on any error (``path`` is then untouched). For writers that take a name (Keras's
    ``save``, ``numpy.save``); the temporary name keeps ``path``'s extension, by which
    such writers choose their format. The result gets the permissions a plain
    ``open`` would give (or those of the file it replaces).
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise ExportError(f"cannot write '{target}': folder '{folder}' does not exist")
    ext = os.path.splitext(target)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=f".tmp{ext}",
                               dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over
    ``path`` (:func:`atomic_path`). On any exception the temporary file is removed and
    ``path`` is untouched.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def pack_int4(values: np.ndarray) -> np.ndarray:
    """Pack signed 4-bit values (in ``[-8, 7]``) two per byte, low nibble first.

    >>> pack_int4(np.array([1, -1, 7], np.int8)).tolist()
    [241, 7]
    """
    v = np.asarray(values).astype(np.int64).ravel()
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ExportError("pack_int4: values must lie in [-8, 7] (4-bit two's complement)")
    nib = (v & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: the first ``count`` signed values, as int8.

    >>> unpack_int4(np.array([241, 7], np.uint8), 3).tolist()
    [1, -1, 7]
    """
    p = np.asarray(packed, np.uint8)
    nib = np.empty(p.size * 2, np.uint8)
    nib[0::2] = p & 0xF
    nib[1::2] = p >> 4
    out = nib[:count].astype(np.int16)
    return np.where(out >= 8, out - 16, out).astype(np.int8)


def _floats(a: Any) -> list[float] | float:
    arr = np.asarray(a, np.float32).astype(np.float64)
    return float(arr) if arr.ndim == 0 else [float(x) for x in arr.ravel()]


def _ints(a: Any) -> list[int] | int:
    arr = np.asarray(a, np.int64)
    return int(arr) if arr.ndim == 0 else [int(x) for x in arr.ravel()]


def _tensor(t: TensorQuant | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {"scale": _floats(t.scale), "zero_point": int(t.zero_point), "bits": t.bits,
            "min": _floats(t.min), "max": _floats(t.max)}


def op_attributes(p: LayerQuantParams) -> dict[str, Any]:
    """The attributes an implementation of layer ``p``'s operator needs, from its config.

    Convolutions: ``strides``, ``padding`` ("same"/"valid"), ``dilation``, ``groups`` or
    ``depth_multiplier``; pooling: ``pool_size``, ``strides``, ``padding``; ``axis``
    (Concatenate), ``target_shape`` (Reshape), ``padding``/``cropping`` as
    ``[[top, bottom], [left, right]]``, ``keepdims`` (mean), ``function`` (Activation).
    A layer with an output quantization and a fused activation also has
    ``activation`` and ``clamp``: its int8 ``[clamp_min, clamp_max]``
    (:func:`tfmot_ext.rules.fused_activation_range`).

    >>> from tfmot_ext.params import LayerQuantParams
    >>> op_attributes(LayerQuantParams("c", "Conv2D", (), True,
    ...                                config={"strides": [2, 2], "padding": "same"}))
    {'strides': [2, 2], 'padding': 'same', 'dilation': [1, 1], 'groups': 1}
    """
    c, kind = p.config, deployed_kind(p.kind)
    a: dict[str, Any] = {}
    if kind in ("Conv2D", "DepthwiseConv2D"):
        a = {"strides": list(pair(c.get("strides"))),
             "padding": str(c.get("padding", "valid")).lower(),
             "dilation": list(pair(c.get("dilation_rate")))}
        if kind == "Conv2D":
            a["groups"] = int(c.get("groups", 1) or 1)
        else:
            a["depth_multiplier"] = int(c.get("depth_multiplier", 1) or 1)
    elif kind in ("MaxPooling2D", "AveragePooling2D"):
        pool = list(pair(c.get("pool_size"), 2))
        a = {"pool_size": pool, "strides": list(pair(c.get("strides") or pool)),
             "padding": str(c.get("padding", "valid")).lower()}
    elif kind == "Concatenate":
        a = {"axis": int(c.get("axis", -1))}
    elif kind == "Reshape":
        a = {"target_shape": list(c.get("target_shape") or [])}
    elif kind in ("ZeroPadding2D", "Cropping2D"):
        key, default = ("padding", 1) if kind == "ZeroPadding2D" else ("cropping", 0)
        a = {key: [list(x) for x in hw_pairs(c.get(key, default))]}  # as the kernels read it
    elif kind == "GlobalAveragePooling2D":
        a = {"keepdims": bool(c.get("keepdims", False))}
    elif kind == "Activation":
        a = {"function": str(c.get("activation"))}
    if p.output is not None and (p.kernel_int is not None or kind == "Add"):
        try:
            lo, hi = fused_activation_range(p.activation, p.output.scale, p.output.zero_point)
        except IntegerReferenceError:
            pass  # not a fused activation TFLite knows: no clamp to give
        else:
            a.update(activation=p.activation, clamp=[lo, hi])
    return a


def _layer_encoding(p: LayerQuantParams) -> dict[str, Any]:
    kernel = None
    if p.kernel_int is not None and p.kernel_scale is not None:
        zp = p.kernel_zero_point if p.kernel_zero_point is not None else 0
        qmin, qmax = qmath.integer_range(int(p.bits or 8), bool(p.narrow_range))
        s = np.asarray(p.kernel_scale, np.float32)
        z = np.asarray(zp, np.int64)
        kernel = {
            "attr": p.kernel_attr, "shape": list(p.kernel_int.shape), "bits": p.bits,
            "symmetric": p.symmetric, "narrow_range": p.narrow_range,
            "axis": None if p.axis is None else list(p.axis),
            "scale": _floats(s), "zero_point": _ints(z),
            "min": _floats((qmin - z).astype(np.float32) * s),
            "max": _floats((qmax - z).astype(np.float32) * s),
        }
    bias = None if p.bias_scale is None else {"bits": 32, "scale": _floats(p.bias_scale)}
    requant = None
    if p.multiplier is not None and p.multiplier_q31 is not None and p.shift is not None:
        requant = {"multiplier": [float(x) for x in np.atleast_1d(p.multiplier)],
                   "m0": _ints(np.atleast_1d(p.multiplier_q31)),
                   "shift": _ints(np.atleast_1d(p.shift))}
    return {"name": p.name, "kind": p.kind, "op": tflite_op(p.kind, p.config),
            "attributes": op_attributes(p), "inputs": list(p.inputs),
            "quantized": p.quantized, "folded": p.folded, "activation": p.activation,
            "kernel": kernel, "bias": bias, "input": _tensor(p.input),
            "output": _tensor(p.output), "requant": requant, "note": p.note}


def _integers(p: LayerQuantParams) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.kernel_int is not None:
        out["kernel"] = p.kernel_int.astype(np.int64).ravel().tolist()
    if p.bias_int is not None:
        out["bias"] = p.bias_int.astype(np.int64).ravel().tolist()
    return out


def to_encodings(params: QuantizedModelParams, integers: bool = False) -> dict[str, Any]:
    """The JSON-ready encodings document (see module docstring): the operator graph in
    execution order (``layers``, each with its ``op``, ``attributes`` and ``inputs``;
    ``edges``), every tensor's quantization, the :data:`CONVENTION` and the requantization
    :data:`ROUNDING`; with ``integers``, each layer's kernel (flat, Keras layout, shape in
    ``kernel.shape``) and int32 bias under ``"integers"``."""
    doc: dict[str, Any] = {
        "format": ENCODINGS_FORMAT, "version": ENCODINGS_VERSION, "source": params.source,
        "convention": CONVENTION, "rounding": ROUNDING,
        "edges": [list(e) for e in params.edges],
        "layers": [_layer_encoding(p) for p in params.values()]}
    if integers:
        for entry, p in zip(doc["layers"], params.values()):
            entry["integers"] = _integers(p)
    return doc


#: Kernels of more elements than this go to a ``.npz`` beside the ``.json``.
JSON_INLINE_LIMIT = 1 << 20


def to_json(params: QuantizedModelParams, path: str | os.PathLike[str],
            integers: str = "auto") -> None:
    """Write the encodings document as indented JSON (atomically).

    ``integers``: ``"inline"`` (kernels and int32 biases in the JSON), ``"npz"`` (in
    ``<stem>.integers.npz`` beside it, written first, named in the JSON's ``"integers"``), or
    ``"auto"``: inline up to :data:`JSON_INLINE_LIMIT` kernel elements, else ``npz``.
    """
    if integers not in ("auto", "inline", "npz"):
        raise ExportError(f"integers={integers!r}: use 'auto', 'inline' or 'npz'")
    n = sum(p.kernel_int.size for p in params.quantized_layers()
            if p.kernel_int is not None)
    inline = integers == "inline" or (integers == "auto" and n <= JSON_INLINE_LIMIT)
    doc = to_encodings(params, integers=inline)
    if not inline:
        npz = os.path.splitext(os.fspath(path))[0] + ".integers.npz"
        to_npz(params, npz)
        doc["integers"] = {"file": os.path.basename(npz),
                           "keys": "<layer>/kernel_int, <layer>/bias_int (see .npz)"}
    text = json.dumps(doc, indent=1, allow_nan=False)
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


def _npz_arrays(params: QuantizedModelParams) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for p in params.values():
        for field in ("kernel_int", "kernel_scale", "kernel_zero_point", "bias_int",
                      "bias_scale", "multiplier", "multiplier_q31", "shift"):
            v = getattr(p, field)
            if v is not None:
                out[f"{p.name}/{field}"] = np.asarray(v)
        for side in ("input", "output"):
            t = getattr(p, side)
            if t is not None:
                out[f"{p.name}/{side}_scale"] = np.asarray(t.scale, np.float32)
                out[f"{p.name}/{side}_zero_point"] = np.asarray(t.zero_point, np.int32)
        for k, v in p.weights.items():
            if p.kernel_int is None:
                out[f"{p.name}/float/{k}"] = np.asarray(v)
    # the operator graph, attributes, convention and rounding, as UTF-8 JSON bytes
    doc = json.dumps(to_encodings(params), allow_nan=False).encode("utf-8")
    out["__encodings__"] = np.frombuffer(doc, np.uint8)
    return out


def to_npz(params: QuantizedModelParams, path: str | os.PathLike[str]) -> None:
    """Write every array as ``<layer>/<field>`` in one ``.npz`` (atomically)."""
    buf = io.BytesIO()
    np.savez(buf, **_npz_arrays(params))  # type: ignore[arg-type]
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


_C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int16): "int16_t",
            np.dtype(np.int32): "int32_t", np.dtype(np.uint8): "uint8_t",
            np.dtype(np.float32): "float"}


def _c_ident(name: str) -> str:
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return ident if not ident[:1].isdigit() else f"_{ident}"


def _c_values(a: np.ndarray) -> str:
    flat = a.ravel()
    if a.dtype == np.float32:
        items = [f"{float(x):.9g}f" for x in flat]
    else:
        items = [str(int(x)) for x in flat]
    lines = [", ".join(items[i : i + 16]) for i in range(0, len(items), 16)]
    return ",\n    ".join(lines)


def _c_array(name: str, a: np.ndarray, comment: str = "") -> str:
    a = np.asarray(a)
    ctype = _C_TYPES[a.dtype]
    note = f"/* {comment} */\n" if comment else ""
    if a.ndim == 0:
        return f"{note}static const {ctype} {name} = {_c_values(a)};\n"
    return f"{note}static const {ctype} {name}[{a.size}] = {{\n    {_c_values(a)}\n}};\n"


def to_c_header(params: QuantizedModelParams, path: str | os.PathLike[str], *,
                prefix: str = "model", pack_low_bits: bool = False) -> None:
    """Write a C header with the integer parameters of every quantized layer (atomically).

    Args:
        params: the extraction result.
        path: the ``.h`` file to write.
        prefix: prefix of every C identifier (and of the include guard).
        pack_low_bits: also emit ``<layer>_kernel_packed`` (``uint8_t``, two 4-bit
            values per byte, low nibble first) for kernels of 4 bits or fewer.
    """
    pre = _c_ident(prefix)
    guard = f"{pre.upper()}_TFMOT_EXT_H_"
    parts = [f"/* Generated by tfmot_ext from {params.source}. Do not edit. */\n",
             f"#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n",
             _c_graph_comment(params)]
    for p in params.quantized_layers():
        assert p.kernel_int is not None and p.kernel_scale is not None
        base = f"{pre}_{_c_ident(p.name)}"
        shape = "x".join(str(d) for d in p.kernel_int.shape)
        axis = "per tensor" if p.axis is None else f"per channel on axes {list(p.axis)}"
        parts.append(f"/* ---- {p.name} ({p.kind}, {p.bits}-bit {axis}, "
                     f"fused {p.activation}) ---- */\n")
        parts.append(_c_array(f"{base}_kernel", p.kernel_int,
                              f"{p.kernel_attr}, Keras layout {shape}"))
        if pack_low_bits and (p.bits or 8) <= 4:
            packed = pack_int4(p.kernel_int)
            parts.append(_c_array(f"{base}_kernel_packed", packed,
                                  f"{p.kernel_int.size} values, two per byte, low nibble first"))
        parts.append(_c_array(f"{base}_kernel_scale", np.atleast_1d(
            np.asarray(p.kernel_scale, np.float32))))
        parts.append(_c_array(f"{base}_kernel_zero_point", np.atleast_1d(
            np.asarray(p.kernel_zero_point, np.int32))))
        if p.bias_int is not None:
            parts.append(_c_array(f"{base}_bias", np.asarray(p.bias_int, np.int32)))
        if p.multiplier_q31 is not None and p.shift is not None:
            parts.append(_c_array(f"{base}_multiplier", np.atleast_1d(p.multiplier_q31),
                                  "M0, Q31: M = M0 * 2^(shift - 31)"))
            parts.append(_c_array(f"{base}_shift", np.atleast_1d(p.shift)))
        for side in ("input", "output"):
            t = getattr(p, side)
            if t is not None:
                parts.append(_c_array(f"{base}_{side}_scale", np.asarray(t.scale, np.float32)))
                parts.append(_c_array(f"{base}_{side}_zero_point",
                                      np.asarray(t.zero_point, np.int32)))
        parts.append(_c_attributes(base, op_attributes(p)))
        parts.append("\n")
    for p in params.values():
        if p.note:  # a layer extraction could not give integers for, and why
            note = p.note.replace("*/", "* /")
            parts.append(f"/* {p.name} ({p.kind}): not exported: {note} */\n")
    parts.append(f"#endif  /* {guard} */\n")
    with atomic_write(path, "w") as f:
        f.write("".join(parts))


def _c_graph_comment(params: QuantizedModelParams) -> str:
    """The convention, the requantization rounding and the operator graph, as a comment."""
    lines = [f"Convention: {CONVENTION}.", "Requantization (TFLite's kernels):"]
    lines += [f"  {k}: {v}" for k, v in ROUNDING.items()]
    lines += ["An input whose producer's (scale, zero_point) differs from the layer's input",
              "quantization is first requantized to it (TFLite QUANTIZE).",
              "Operators in execution order (layer: OP(inputs) attributes):"]
    for p in params.values():
        attrs = " ".join(f"{k}={v}" for k, v in op_attributes(p).items())
        lines.append(f"  {p.name}: {tflite_op(p.kind, p.config)}({', '.join(p.inputs)})"
                     + (f" {attrs}" if attrs else ""))
    body = "\n".join(f" * {line}".rstrip().replace("*/", "* /") for line in lines)
    return f"/*\n{body}\n */\n\n"


def _c_attributes(base: str, attrs: dict[str, Any]) -> str:
    """A weighted layer's attributes as C constants (``int32_t``)."""
    out = []
    for k, v in attrs.items():
        if k == "padding" and isinstance(v, str):
            out.append(_c_array(f"{base}_padding_same", np.asarray(int(v == "same"), np.int32),
                                "1: TFLite SAME padding, 0: VALID"))
        elif k == "clamp":
            out.append(_c_array(f"{base}_act_min", np.asarray(v[0], np.int32),
                                f"fused {attrs.get('activation', 'linear')}: clamp bounds"))
            out.append(_c_array(f"{base}_act_max", np.asarray(v[1], np.int32)))
        elif isinstance(v, (int, list)) and not isinstance(v, bool):
            out.append(_c_array(f"{base}_{k}", np.asarray(v, np.int32)))
    return "".join(out)


_WRITERS: dict[str, Callable[..., None]] = {".npz": to_npz, ".json": to_json,
                                             ".h": to_c_header}


#: The operators that requantize an int32 accumulator: they need an input and an
#: output quantization (a GATHER, an Embedding's, returns its table's rows as stored).
_REQUANTIZING = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})


def incomplete_layers(params: QuantizedModelParams) -> list[str]:
    """``layer: what is missing`` for each layer whose deployment the export would not
    describe: a Conv/Depthwise/Dense with an integer kernel but no input quantization (so
    no int32 bias) or no output quantization (so no requantization multiplier), whose
    input or output then comes from a float layer the converter calibrates; and a
    quantized layer extraction reported float with a ``note`` (its deployed integers are
    not in the model)."""
    out = []
    for p in params.values():
        if p.note and p.kernel_int is None and p.weights:
            out.append(f"{p.name}: not extracted ({p.note})")
            continue
        if p.kernel_int is None or tflite_op(p.kind, p.config) not in _REQUANTIZING:
            continue
        missing = [what for what, v in (("input scale", p.input), ("output scale", p.output),
                                         ("requantization", p.multiplier_q31)) if v is None]
        if p.bias is not None and p.bias_int is None:
            missing.append("int32 bias")
        if missing:
            out.append(f"{p.name}: no {', '.join(missing)}")
    return out


def export(params: QuantizedModelParams, path: str | os.PathLike[str], *,
           allow_partial: bool = False, **kwargs: Any) -> None:
    """Write ``params`` in the format given by ``path``'s extension (.npz, .json, .h).

    Args:
        params: the extraction result.
        path: the file to write.
        allow_partial: write even when some layers' deployment is not known
            (:func:`incomplete_layers`); each is named in the file with its reason.
        kwargs: options of the format's writer (``pack_low_bits``, ``integers``, ...).

    Raises:
        ExportError: an unknown extension, or (unless ``allow_partial``) a layer whose
            deployment is incomplete (:func:`incomplete_layers`); nothing is written then.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _WRITERS:
        raise ExportError(f"cannot export to '{path}': use a .npz, .json or .h file name")
    gaps = incomplete_layers(params)
    if gaps and not allow_partial:
        raise ExportError(
            f"cannot export {params.source} to '{path}': {'; '.join(gaps)}"[:3000]
            + ". A layer whose input or output comes from a layer left float: quantize "
            "that layer's output (unsupported='output_only', or a Rule with "
            "config=tfmot_ext.output_only_config()) and train again. To write what is "
            "exact anyway (each gap named in the file), pass allow_partial=True "
            "(tfmot-ext extract --allow-partial)")
    _WRITERS[ext](params, path, **kwargs)
