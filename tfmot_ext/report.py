"""Per-layer quantization error of a QAT model, as numbers and as an HTML page.

For each quantized layer:

* weight SQNR, exact: ``10 log10(sum w^2 / sum (w - FQ(w))^2)`` with ``FQ(w)`` the
  extracted integers dequantized (what the quantizer computes in training);
* activation SQNR of the layer's quantized output, fake-quant vs float, measured on
  the given data: the layer's output in the QAT model against a float twin of the
  layer (same op and config, the fake-quantized kernel, no output quantizer) fed the
  QAT model's own inputs to that layer, so that only this quantizer's error counts;
  ``saturated`` is the fraction of float values outside the trained range.

Low SQNR marks the layers that deserve more bits. The page embeds a bar chart (PNG,
drawn with matplotlib, the optional ``report`` extra) and the table.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfmot_ext import qmath
from tfmot_ext._compat import check_keras2
from tfmot_ext.errors import ExportError
from tfmot_ext.extract import extract
from tfmot_ext.params import QuantizedModelParams
from tfmot_ext.rules import FUSED_ACTIVATIONS, deployed_kind

__all__ = ["LayerReport", "layer_reports", "sqnr_db", "write_html_report"]

logger = logging.getLogger(__name__)


def sqnr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """``10 log10(sum signal^2 / sum noise^2)`` in dB; ``inf`` for zero noise.

    >>> round(sqnr_db(np.array([1.0, -1.0]), np.array([0.1, -0.1])), 6)
    20.0
    """
    s = float(np.sum(np.square(np.asarray(signal, np.float64))))
    n = float(np.sum(np.square(np.asarray(noise, np.float64))))
    if n == 0.0:
        return math.inf
    if s == 0.0:
        return -math.inf
    return 10.0 * math.log10(s / n)


@dataclass(frozen=True)
class LayerReport:
    """Quantization error of one layer.

    Invariants: ``weight_sqnr_db`` is None exactly when ``weight_bits`` is None;
    ``activation_sqnr_db`` and ``saturated`` are None exactly when ``activation_bits``
    is None; ``0 <= saturated <= 1``.
    """

    name: str
    kind: str
    folded: bool
    weight_bits: int | None
    per_channel: bool | None
    weight_sqnr_db: float | None
    activation_bits: int | None
    activation_sqnr_db: float | None
    saturated: float | None


def _float_twin(p: Any) -> Any:
    """A float Keras layer computing what layer ``p`` computes before its output
    quantizer: the same op (the folded op for a folded layer) with the fake-quantized
    kernel; None when the kind is not a built-in Keras layer."""
    from tfmot_ext._compat import keras

    kind = deployed_kind(p.kind)
    cfg = {k: v for k, v in dict(p.config).items() if k != "batchnorm_epsilon"}
    cfg["name"] = f"float_twin_{p.name}"
    if p.kernel_int is not None:
        cfg["activation"] = p.activation if p.activation in FUSED_ACTIVATIONS \
            else "linear"
        cfg["use_bias"] = p.bias is not None
    try:
        return keras.layers.deserialize({"class_name": kind, "config": cfg})
    except (ValueError, TypeError, KeyError):
        return None


def _twin_output(p: Any, twin: Any, inputs: list[np.ndarray]) -> np.ndarray:
    def args(arrays: list[np.ndarray]) -> Any:
        return arrays if len(arrays) > 1 else arrays[0]

    if p.kernel_int is not None:
        twin(args([a[:1] for a in inputs]))  # builds the layer's weights
        twin.set_weights([p.dequantized_kernel()] + (
            [np.asarray(p.bias, np.float32)] if p.bias is not None else []))
    return np.asarray(twin(args(inputs)), np.float64)


def layer_reports(model: Any, data: Any, params: QuantizedModelParams | None = None
                  ) -> list[LayerReport]:
    """The per-layer quantization error of a QAT model on ``data`` (see the module doc)."""
    from tfmot_ext.parity import layer_outputs
    from tfmot_ext.tflite import _validated

    check_keras2(model, "model")
    x = _validated(data, model)
    params = extract(model) if params is None else params
    names = [n for n, p in params.items()
             if p.kind not in ("InputLayer",) and (p.kernel_int is not None or p.output)]
    feeds = {n: [i for i in params[n].inputs if i in params] for n in names}
    feed_names = sorted({i for n in names for i in feeds[n]} - set(names))
    values = layer_outputs(model, names + feed_names, x)
    reports = []
    for n in names:
        p = params[n]
        y = values[n]
        w_sqnr = None
        if p.kernel_int is not None and p.kernel_attr is not None:
            # a folded layer quantizes its folded kernel W * gamma / sqrt(var + eps)
            w_float = (_folded_float_kernel(p) if p.folded
                       else np.asarray(p.weights[p.kernel_attr], np.float32))
            w_sqnr = sqnr_db(w_float, w_float - p.dequantized_kernel())
        a_bits = a_sqnr = sat = None
        if p.output is not None:
            pre = _pre_quantization(p, x, [values[i] for i in feeds[n]])
            yq = np.asarray(y, np.float64)
            t = p.output
            # the QAT output differs from the float one only where this layer's own
            # output quantizer acts (a Conv whose ReLU layer holds the quantizer: not here)
            if pre is not None and pre.shape == yq.shape and np.max(
                    np.abs(pre - yq)) > 1e-3 * t.scale:
                a_sqnr = sqnr_db(pre, pre - yq)
                sat = float(np.mean((pre < t.min) | (pre > t.max)))
                a_bits = t.bits
        reports.append(LayerReport(n, p.kind, p.folded, p.bits,
                                   None if p.bits is None else p.axis is not None,
                                   w_sqnr, a_bits, a_sqnr, sat))
    return reports


def _pre_quantization(p: Any, x: np.ndarray, inputs: list[np.ndarray]) -> np.ndarray | None:
    """The float tensor layer ``p``'s output quantizer receives, from the QAT model's
    own inputs to that layer (so only this quantizer's error is measured)."""
    if p.kind == "QuantizeLayer":
        return np.asarray(x, np.float64)
    if not inputs:
        return None
    twin = _float_twin(p)
    if twin is None:
        return None
    try:
        return _twin_output(p, twin, inputs)
    except (ValueError, TypeError) as e:
        logger.info("layer '%s': no float twin (%s)", p.name, e)
        return None


def _folded_float_kernel(p: Any) -> np.ndarray:
    """The float folded kernel ``W * gamma / sqrt(var + eps)`` of a folded layer."""

    w = p.weights
    eps = float(p.config.get("batchnorm_epsilon", 1e-3))
    kernel, _ = qmath.fold_batch_norm(w[p.kernel_attr], w.get("bias"), w["gamma"], w["beta"],
                           w["moving_mean"], w["moving_variance"], eps,
                           depthwise=p.kernel_attr == "depthwise_kernel")
    return kernel


def _chart_png(reports: list[LayerReport]) -> bytes | None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'tfmot-ext[report]'): "
                       "the report has no chart")
        return None
    names = [r.name for r in reports]
    pos = np.arange(len(names))

    def finite(v: float | None) -> float:
        return 0.0 if v is None or not math.isfinite(v) else v

    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) + 2), 4.0), dpi=100)
    ax.bar(pos - 0.2, [finite(r.weight_sqnr_db) for r in reports], 0.4, label="weights")
    ax.bar(pos + 0.2, [finite(r.activation_sqnr_db) for r in reports], 0.4,
           label="output activation")
    ax.set_xticks(pos, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("SQNR (dB), higher is better")
    ax.set_title("Quantization error per layer")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: float | None, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "inf" if v > 0 else "-inf"
    return format(v, spec)


def write_html_report(reports: list[LayerReport], path: str | os.PathLike[str],
                      title: str = "tfmot-ext quantization report") -> None:
    """Write the table and the chart as one self-contained HTML file, atomically."""
    from tfmot_ext.export import atomic_write

    if not str(path).lower().endswith((".html", ".htm")):
        raise ExportError(f"cannot write the report to '{path}': use a .html file name")
    png = _chart_png(reports)
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in (
            r.name, r.kind, "yes" if r.folded else "",
            "-" if r.weight_bits is None else f"{r.weight_bits}"
            + (" per-channel" if r.per_channel else " per-tensor"),
            _fmt(r.weight_sqnr_db),
            "-" if r.activation_bits is None else str(r.activation_bits),
            _fmt(r.activation_sqnr_db), _fmt(None if r.saturated is None
                                             else 100 * r.saturated, ".2f"))) + "</tr>"
        for r in reports)
    img = ("" if png is None else
           f'<img alt="SQNR per layer" src="data:image/png;base64,'
           f'{base64.b64encode(png).decode()}">')
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,td:nth-child(2)
{{text-align:left}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>SQNR = signal-to-quantization-noise ratio in dB (about 6 dB per bit). Weights: the
float kernel against its fake-quantized values. Activations: the layer's quantized output
against the same layer computed in float from the same inputs, on the given data.
Layers with the lowest SQNR gain most from more bits.</p>
{img}
<table><tr><th>layer</th><th>kind</th><th>folded</th><th>weights</th><th>weight SQNR dB</th>
<th>act. bits</th><th>act. SQNR dB</th><th>saturated %</th></tr>
{rows}
</table></body></html>
"""
    with atomic_write(path, "w") as f:
        f.write(page)
