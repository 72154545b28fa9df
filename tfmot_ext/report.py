"""Per-layer quantization error of a QAT model, as numbers and as an HTML page.

For each quantized layer:

* weight SQNR, exact: ``10 log10(sum w^2 / sum (w - FQ(w))^2)`` with ``FQ(w)`` the
  extracted integers dequantized (what the quantizer computes in training);
* activation SQNR of the layer's quantized output tensor on the given data, from the
  uniform-noise model plus clipping: ``10 log10(E[y^2] / (s^2 / 12 + E[clip^2]))``,
  where ``y`` is the layer's output in the QAT model, ``s`` its scale and ``clip`` the
  part of ``y`` outside the trained range (0 for a fake-quantized output, whose
  values are clipped already; the fraction of values at the range ends is reported
  as ``saturated``).

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

from tfmot_ext._compat import check_keras2
from tfmot_ext.errors import ExportError
from tfmot_ext.extract import QuantizedModelParams, extract

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


def layer_reports(model: Any, data: Any, params: QuantizedModelParams | None = None
                  ) -> list[LayerReport]:
    """The per-layer quantization error of a QAT model on ``data`` (see the module doc)."""
    from tfmot_ext._compat import keras
    from tfmot_ext.tflite import _validated

    check_keras2(model, "model")
    x = _validated(data, model)
    params = extract(model) if params is None else params
    names = [n for n, p in params.items()
             if p.kind not in ("InputLayer",) and (p.kernel_int is not None or p.output)]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(x, batch_size=256, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    reports = []
    for n, y in zip(names, outs):
        p = params[n]
        w_sqnr = None
        if p.kernel_int is not None and p.kernel_attr is not None:
            # a folded layer quantizes its folded kernel W * gamma * rsqrt(var + eps)
            w_float = (_folded_float_kernel(p) if p.folded
                       else np.asarray(p.weights[p.kernel_attr], np.float32))
            w_sqnr = sqnr_db(w_float, w_float - p.dequantized_kernel())
        a_bits = a_sqnr = sat = None
        if p.output is not None:
            t = p.output
            yy = np.asarray(y, np.float64)
            clip = np.clip(yy, t.min, t.max) - yy
            noise = t.scale**2 / 12.0 + float(np.mean(clip**2))
            power = float(np.mean(yy**2))
            a_sqnr = 10.0 * math.log10(power / noise) if power > 0 else -math.inf
            tol = t.scale * 1e-3
            sat = float(np.mean((yy <= t.min + tol) | (yy >= t.max - tol)))
            a_bits = t.bits
        reports.append(LayerReport(n, p.kind, p.folded, p.bits,
                                   None if p.bits is None else p.axis is not None,
                                   w_sqnr, a_bits, a_sqnr, sat))
    return reports


def _folded_float_kernel(p: Any) -> np.ndarray:
    """The float folded kernel ``W * gamma * rsqrt(var + eps)`` of a folded layer."""
    from tfmot_ext.folding import fold_numpy

    w = p.weights
    eps = float(p.config.get("batchnorm_epsilon", 1e-3))
    kernel, _ = fold_numpy(w[p.kernel_attr], w.get("bias"), w["gamma"], w["beta"],
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
<p>SQNR = signal-to-quantization-noise ratio in dB (about 6 dB per bit). Weights: exact,
from the float kernel and its fake-quantized values. Activations: uniform-noise model
(scale&sup2;/12) plus clipping, on the given data. Layers with the lowest SQNR gain
most from more bits.</p>
{img}
<table><tr><th>layer</th><th>kind</th><th>folded</th><th>weights</th><th>weight SQNR dB</th>
<th>act. bits</th><th>act. SQNR dB</th><th>saturated %</th></tr>
{rows}
</table></body></html>
"""
    with atomic_write(path, "w") as f:
        f.write(page)
