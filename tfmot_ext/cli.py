"""The ``tfmot-ext`` command: argument parsing only; the work is done by the library.

Exit codes: 0 success; 1 ``verify`` found parity below the threshold; 2 bad input
(usage, missing or damaged files, unsupported models), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfmot_ext.errors import TfmotExtError, UnsupportedModelError
from tfmot_ext.rules import KERNEL_ROUNDING, passes_input_scale

__all__ = ["custom_objects_from", "main"]

logger = logging.getLogger("tfmot_ext.cli")

_MODEL_HELP = ("QAT model: an H5 checkpoint (model.save('x.h5')) or a SavedModel folder; "
               "inspect and extract read H5 files with h5py only, nothing in them is run")


def _load_data(path: str) -> np.ndarray:
    """A ``.npy`` array of float inputs (pickles are refused)."""
    if not os.path.exists(path):
        raise UnsupportedModelError(f"data file '{path}': no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UnsupportedModelError(
            f"data file '{path}' is not a .npy array ({e}); save one with "
            "numpy.save('data.npy', x) where x has shape (N, *input_shape)") from e
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise UnsupportedModelError(f"data file '{path}' holds no numeric array")
    return arr.astype(np.float32)


def custom_objects_from(specs: Sequence[str]) -> dict[str, Any]:
    """The objects named by ``--custom-objects MODULE:ATTR`` options, by name.

    Each imports ``MODULE`` (running its code: the user's own, asked for by name) and
    takes ``ATTR``: a dict of name -> class/function is merged in, anything else is
    added under its name.
    """
    import importlib

    out: dict[str, Any] = {}
    for spec in specs:
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise UnsupportedModelError(
                f"--custom-objects {spec!r}: write MODULE:ATTR, e.g. my_layers:AnchorBoxes "
                "or my_layers:CUSTOM_OBJECTS (a dict)")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise UnsupportedModelError(
                f"--custom-objects {spec!r}: {type(e).__name__}: {e}; the module must be "
                "importable (on PYTHONPATH or installed)") from e
        if isinstance(obj, dict):
            out.update(obj)
        else:
            out[attr.split(".")[-1]] = obj
    return out


def _live(path: str, custom: Sequence[str] = ()) -> Any:
    from tfmot_ext.scope import load_qat_model

    logger.info("loading %s ...", path)
    return load_qat_model(path, custom_objects_from(custom))


def _params(path: str, custom: Sequence[str] = ()) -> Any:
    from tfmot_ext.extract import extract

    if os.path.isdir(path):
        return extract(_live(path, custom))
    # an H5 file: read with h5py; named classes only for user-written QuantizeConfigs
    return extract(path, custom_objects_from(custom) if custom else None)


def _inspect(args: argparse.Namespace) -> int:
    params = _params(args.model, args.custom_objects)
    rows = [("layer", "type", "weights", "granularity", "kernel scales", "folded",
             "output", "quantized")]
    for p in params.values():
        scales = "-"
        if p.kernel_scale is not None:
            s = np.atleast_1d(p.kernel_scale)
            scales = f"{s.min():.3g}" if s.size == 1 else f"{s.min():.3g}..{s.max():.3g}"
        rows.append((
            p.name, p.kind,
            "-" if p.bits is None else f"{p.bits}b",
            "-" if p.bits is None else ("per-channel" if p.axis is not None else "per-tensor"),
            scales, "yes" if p.folded else "",
            "-" if p.output is None else f"{p.output.bits}b s={p.output.scale:.3g} "
                                         f"z={p.output.zero_point}",
            "quantized" if p.quantized else (
                "int8 pass-through" if passes_input_scale(p.kind) and p.kind != "InputLayer"
                else "float" + (f" ({p.note})" if p.note else ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _extract(args: argparse.Namespace) -> int:
    from tfmot_ext.export import export

    params = _params(args.model, args.custom_objects)
    kwargs: dict[str, Any] = {"pack_low_bits": True} if args.pack_low_bits else {}
    if kwargs and not args.output.endswith(".h"):
        raise UnsupportedModelError("--pack-low-bits applies to .h output only")
    export(params, args.output, allow_partial=args.allow_partial, **kwargs)
    print(f"wrote {args.output} ({len(params.quantized_layers())} quantized layers)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tfmot_ext.tflite import save_tflite, to_tflite

    model = _live(args.model, args.custom_objects)
    data = _load_data(args.calib)
    logger.info("converting with %d calibration inputs ...", len(data))
    content = to_tflite(model, data, int8_io=not args.float_io, fixed_batch=args.fixed_batch)
    save_tflite(content, args.output)
    print(f"wrote {args.output} ({len(content)} bytes, full integer, "
          f"{'float' if args.float_io else 'int8'} I/O)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from tfmot_ext.parity import verify

    model = _live(args.model, args.custom_objects)
    with open(args.tflite, "rb") as f:
        content = f.read()
    data = _load_data(args.data)
    logger.info("comparing on %d inputs (%s kernels) ...", len(data), args.kernels)
    report = verify(model, content, data, kernels=args.kernels,
                    min_within_1lsb=args.min_within_1lsb,
                    require_weights=not args.allow_weight_diff,
                    require_reference=args.require_reference)
    print(report)  # ends with the verdict and its thresholds
    return 0 if report.passed else 1


def _report(args: argparse.Namespace) -> int:
    from tfmot_ext.report import layer_reports, write_html_report

    model = _live(args.model, args.custom_objects)
    data = _load_data(args.data)
    logger.info("measuring %d inputs ...", len(data))
    reports = layer_reports(model, data)
    write_html_report(reports, args.output, title=f"Quantization report: {args.model}")
    worst = sorted((r for r in reports if r.weight_sqnr_db is not None),
                   key=lambda r: r.weight_sqnr_db or 0.0)[:3]
    print(f"wrote {args.output} ({len(reports)} layers); lowest weight SQNR: "
          + ", ".join(f"{r.name} {r.weight_sqnr_db:.1f} dB" for r in worst))
    return 0


def _custom_objects_option(s: argparse.ArgumentParser) -> None:
    s.add_argument("--custom-objects", action="append", default=[], metavar="MODULE:ATTR",
                   help="a custom layer class (or a dict of them) the model needs, e.g. "
                        "my_layers:AnchorBoxes; repeatable. This imports MODULE, so it runs "
                        "that module's code: name only your own")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfmot-ext", description="Inspect, extract, convert, verify and report on "
        "quantization-aware-trained tf_keras models.",
        epilog="Exit codes: 0 ok, 1 verify found parity below the threshold, 2 bad input.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("inspect", help="per layer: type, bits, granularity, scales, folded",
                       description="Print how each layer is quantized.")
    s.add_argument("model", help=_MODEL_HELP)
    _custom_objects_option(s)
    s.set_defaults(func=_inspect)

    s = sub.add_parser("extract", help="integer weights, biases, scales -> .npz/.json/.h",
                       description="Write the integer parameters (format from the extension).")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("-o", "--output", required=True, help="OUT.npz, OUT.json or OUT.h")
    s.add_argument("--pack-low-bits", action="store_true",
                   help=".h only: also write kernels of <= 4 bits packed two per byte")
    s.add_argument("--allow-partial", action="store_true",
                   help="write what is exact even where a layer's deployment is unknown "
                        "(each such layer is named in the file, and on stderr)")
    _custom_objects_option(s)
    s.set_defaults(func=_extract)

    s = sub.add_parser("convert", help="full-integer TFLite conversion",
                       description="Convert to a full-integer .tflite (int8 I/O by default).")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("--calib", required=True,
                   help="DATA.npy: ~100-500 real inputs, shape (N, *input_shape)")
    s.add_argument("-o", "--output", required=True, help="OUT.tflite")
    s.add_argument("--float-io", action="store_true",
                   help="float input/output with QUANTIZE/DEQUANTIZE at the edges")
    s.add_argument("--fixed-batch", action="store_true",
                   help="store every tensor's shape at batch 1, as TFLite Micro needs")
    _custom_objects_option(s)
    s.set_defaults(func=_convert)

    s = sub.add_parser("verify", help="parity table: QAT vs TFLite vs extraction vs reference",
                       description="Compare the QAT model with its .tflite; exit 1 on failure.")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("tflite", help="the int8-I/O .tflite converted from it")
    s.add_argument("--data", required=True, help="DATA.npy: inputs to compare on")
    s.add_argument("--kernels", default="builtin", choices=tuple(KERNEL_ROUNDING),
                   help="TFLite kernels to compare against (default builtin; micro: "
                        "TFLite Micro's interpreter, pip install 'tfmot-ext[micro]', "
                        "also prints the tensor arena the model needs)")
    s.add_argument("--min-within-1lsb", type=float, default=0.999,
                   help="fraction of output elements that must be within 1 LSB (0.999)")
    s.add_argument("--require-reference", action="store_true",
                   help="also fail unless the integer reference is bit-exact")
    s.add_argument("--allow-weight-diff", action="store_true",
                   help="do not fail on extraction-vs-.tflite weight differences")
    _custom_objects_option(s)
    s.set_defaults(func=_verify)

    s = sub.add_parser("report", help="per-layer SQNR of weights and activations, HTML",
                       description="Write an HTML page with per-layer quantization error "
                       "and a chart, to choose which layers deserve more bits.")
    s.add_argument("model", help=_MODEL_HELP)
    s.add_argument("--data", required=True, help="DATA.npy: inputs to measure on")
    s.add_argument("-o", "--output", required=True, help="report.html")
    _custom_objects_option(s)
    s.set_defaults(func=_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tfmot-ext``; returns the exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)
    func: Callable[[argparse.Namespace], int] = args.func
    t0 = time.perf_counter()
    try:
        code = func(args)
    except (TfmotExtError, OSError) as e:
        print(f"tfmot-ext {args.command}: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    if elapsed > 2.0:
        logger.info("done in %.1f s", elapsed)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
