"""Write extracted parameters as ``.npz``, a JSON "encodings" file, or a C header.

Every file is written atomically (:func:`atomic_write`): to a temporary file in the
target's folder, flushed and fsynced, then renamed over the target. A crash leaves
either the previous file or the new one, never a partial file.

JSON encodings format, version 1 (``docs/extraction.md`` documents every field)::

    {"format": "tfmot_ext.encodings", "version": 1, "source": "...",
     "edges": [[src, dst], ...],
     "layers": [{"name", "kind", "inputs", "quantized", "folded", "activation",
                 "kernel": {"attr", "shape", "bits", "symmetric", "narrow_range",
                            "axis", "scale", "zero_point", "min", "max"} | null,
                 "bias": {"bits": 32, "scale": [...]} | null,
                 "input": {"scale", "zero_point", "bits", "min", "max"} | null,
                 "output": {...} | null,
                 "requant": {"multiplier", "m0", "shift"} | null}]}

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
from tfmot_ext.errors import ExportError
from tfmot_ext.params import LayerQuantParams, QuantizedModelParams, TensorQuant

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
    return {"name": p.name, "kind": p.kind, "inputs": list(p.inputs),
            "quantized": p.quantized, "folded": p.folded, "activation": p.activation,
            "kernel": kernel, "bias": bias, "input": _tensor(p.input),
            "output": _tensor(p.output), "requant": requant, "note": p.note}


def to_encodings(params: QuantizedModelParams) -> dict[str, Any]:
    """The JSON-ready encodings document (see module docstring)."""
    return {"format": ENCODINGS_FORMAT, "version": ENCODINGS_VERSION, "source": params.source,
            "edges": [list(e) for e in params.edges],
            "layers": [_layer_encoding(p) for p in params.values()]}


def to_json(params: QuantizedModelParams, path: str | os.PathLike[str]) -> None:
    """Write the encodings document as indented JSON (atomically)."""
    text = json.dumps(to_encodings(params), indent=1, allow_nan=False)
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
             f"#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n"]
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
        parts.append("\n")
    for p in params.values():
        if p.note:  # a layer extraction could not give integers for, and why
            note = p.note.replace("*/", "* /")
            parts.append(f"/* {p.name} ({p.kind}): not exported: {note} */\n")
    parts.append(f"#endif  /* {guard} */\n")
    with atomic_write(path, "w") as f:
        f.write("".join(parts))


_WRITERS: dict[str, Callable[..., None]] = {".npz": to_npz, ".json": to_json,
                                             ".h": to_c_header}


def incomplete_layers(params: QuantizedModelParams) -> list[str]:
    """``layer: what is missing`` for each layer with an integer kernel whose deployment
    is not known: no input quantization (so no int32 bias) or no output quantization (so
    no requantization multiplier). Its input or output then comes from a float layer,
    whose range the converter calibrates itself, so no export of it is complete."""
    out = []
    for p in params.values():
        if p.kernel_int is None:
            continue
        missing = [what for what, v in (("input scale", p.input), ("output scale", p.output),
                                         ("requantization", p.multiplier_q31)) if v is None]
        if p.bias is not None and p.bias_int is None:
            missing.append("int32 bias")
        if missing:
            out.append(f"{p.name}: no {', '.join(missing)}")
    return out


def export(params: QuantizedModelParams, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``params`` in the format given by ``path``'s extension (.npz, .json, .h).

    Raises:
        ExportError: an unknown extension, or a quantized layer whose deployment is
            incomplete (:func:`incomplete_layers`); nothing is written then.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _WRITERS:
        raise ExportError(f"cannot export to '{path}': use a .npz, .json or .h file name")
    gaps = incomplete_layers(params)
    if gaps:
        raise ExportError(
            f"cannot export {params.source} to '{path}': {'; '.join(gaps)}. The layer's input "
            "or output comes from a layer left float, whose range the converter would "
            "calibrate; quantize that layer's output (unsupported='output_only', or a Rule "
            "with config=tfmot_ext.output_only_config()) and train again")
    _WRITERS[ext](params, path, **kwargs)
