"""What a QAT model quantizes, and how: one row per layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfmot_ext._compat import QuantizeLayer, QuantizeWrapper, check_keras2, keras
from tfmot_ext.rules import WEIGHT_ATTRS

__all__ = ["LayerQuantSummary", "describe_quantizer", "format_summary", "quantizer_bits",
           "range_variables", "summarize", "weight_attr_name", "weight_quantizers"]


@dataclass(frozen=True)
class LayerQuantSummary:
    """How one layer of a QAT model is quantized.

    Invariants: ``quantized`` is False exactly when ``weights``, ``activations`` and
    ``output`` are all empty; each description starts with the bit width (``"8b"``).

    Attributes:
        name: layer name in the QAT model.
        kind: class name of the (inner) layer.
        weights: ``(attribute, description)`` pairs.
        activations: ``(attribute, description)`` pairs.
        output: description of the output quantizer, or ``""``.
        quantized: whether anything of this layer is quantized.
    """

    name: str
    kind: str
    weights: tuple[tuple[str, str], ...]
    activations: tuple[tuple[str, str], ...]
    output: str
    quantized: bool


def describe_quantizer(q: Any) -> str:
    """Short text for a quantizer: bits, granularity, symmetry, range rule.

    >>> from tfmot_ext.quantizers import weight_quantizer
    >>> describe_quantizer(weight_quantizer(4))
    '4b per-channel sym narrow MinMax/last_value'
    """
    cfg = q.get_config() if hasattr(q, "get_config") else {}
    bits = quantizer_bits(q)
    parts = [f"{'?' if bits is None else bits}b"]
    per_channel = cfg.get("per_channel", cfg.get("per_axis", False))
    parts.append("per-channel" if per_channel else "per-tensor")
    if "symmetric" in cfg:
        parts.append("sym" if cfg["symmetric"] else "asym")
    elif "signed" in cfg:
        parts.append("signed" if cfg["signed"] else "unsigned")
    if cfg.get("narrow_range"):
        parts.append("narrow")
    name = type(q).__name__.replace("Quantizer", "")
    if "range_tracking" in cfg:
        name += f"/{cfg['range_tracking']}"
    elif "min" in cfg and "max" in cfg:
        name += f"[{cfg['min']:g},{cfg['max']:g}]"
    parts.append(name)
    return " ".join(parts)


def quantizer_bits(q: Any) -> int | None:
    """A quantizer's bit width (tfmot_ext's ``bits``, tfmot's ``num_bits``), or None."""
    cfg = q.get_config() if hasattr(q, "get_config") else {}
    bits = cfg.get("bits", cfg.get("num_bits"))
    return None if bits is None else int(bits)


def weight_quantizers(wrapper: Any) -> tuple[tuple[str, Any], ...]:
    """``(attribute, quantizer)`` for each weight a QuantizeWrapper quantizes; a folded
    layer's own kernel quantizer first, as ``"folded <kernel>"``."""
    inner, cfg = wrapper.layer, wrapper.quantize_config
    ws = tuple((weight_attr_name(inner, w), q)
               for w, q in cfg.get_weights_and_quantizers(inner))
    folded_q = getattr(inner, "weight_quantizer", None)
    if getattr(inner, "_KERNEL", None) and folded_q is not None:  # a folded layer
        ws = ((f"folded {inner._KERNEL}", folded_q), *ws)
    return ws


def range_variables(layer: Any) -> dict[str, tuple[Any, Any]]:
    """``prefix -> (min variable, max variable)`` of the activation and output quantizers
    of a QuantizeWrapper or QuantizeLayer (not its weight quantizers, whose range a
    ``last_value`` quantizer takes from the weight itself); ``{}`` for another layer."""
    if not isinstance(layer, (QuantizeWrapper, QuantizeLayer)):
        return {}
    found: dict[str, list[Any]] = {}
    for w in layer.weights:
        short = w.name.split("/")[-1].split(":")[0]
        for end, slot in (("_min", 0), ("_max", 1)):
            if short.endswith(end):
                prefix = short[: -len(end)]
                if prefix.split(".")[-1] not in WEIGHT_ATTRS:
                    found.setdefault(prefix, [None, None])[slot] = w
    return {k: (lo, hi) for k, (lo, hi) in found.items() if lo is not None and hi is not None}


def weight_attr_name(layer: Any, tensor: Any) -> str:
    """The attribute of ``layer`` holding ``tensor`` (``kernel``, ``bias``, ...), else the
    variable's short name."""
    for attr in (*WEIGHT_ATTRS, "bias"):
        if getattr(layer, attr, None) is tensor:
            return attr
    name = getattr(tensor, "name", "?")
    return str(name).split("/")[-1].split(":")[0]


def summarize(model: Any) -> list[LayerQuantSummary]:
    """One :class:`LayerQuantSummary` per non-input layer of a QAT model."""
    check_keras2(model, "model")
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, QuantizeLayer):
            q = layer.quantizer
            d = describe_quantizer(q) if q is not None else ""
            rows.append(LayerQuantSummary(layer.name, "QuantizeLayer", (), (), d, bool(d)))
            continue
        if not isinstance(layer, QuantizeWrapper):
            rows.append(LayerQuantSummary(layer.name, type(layer).__name__, (), (), "", False))
            continue
        inner, cfg = layer.layer, layer.quantize_config
        ws = tuple((a, describe_quantizer(q)) for a, q in weight_quantizers(layer))
        acts = tuple(("activation", describe_quantizer(q))
                     for _, q in cfg.get_activations_and_quantizers(inner))
        outs = cfg.get_output_quantizers(inner)
        out = describe_quantizer(outs[0]) if outs else ""
        rows.append(LayerQuantSummary(layer.name, type(inner).__name__, ws, acts, out,
                                      bool(ws or acts or out)))
    return rows


def format_summary(rows: list[LayerQuantSummary]) -> str:
    """A fixed-width text table of :func:`summarize` rows."""
    header = ("layer", "type", "weights", "activation", "output")
    body = []
    for r in rows:
        body.append((
            r.name, r.kind,
            "; ".join(f"{a}: {d}" for a, d in r.weights) or "-",
            "; ".join(d for _, d in r.activations) or "-",
            r.output or ("-" if r.quantized else "float"),
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*b) for b in body]
    return "\n".join(out)
