"""Print the numbers of docs/integer_inference.md's worked example.

    python docs/examples/integer_inference_numbers.py

Trains the demo's MNIST CNN briefly (seeded), quantizes it with tfmot_ext's defaults
(8-bit, BatchNorm folded), fine-tunes one epoch, converts it to int8 TFLite, extracts,
and follows one output element of layer ``quant_conv3`` through the integer arithmetic,
next to what the TFLite interpreter computes.
"""

from __future__ import annotations

import numpy as np

import tfmot_ext as te
from tfmot_ext import demo, reference
from tfmot_ext.tflite import op_outputs


def main() -> None:
    _, qat, (x_tr, _, x_te, _) = demo.train(epochs=2, qat_epochs=1)
    tfl = te.to_tflite(qat, x_tr[:200])
    params = te.extract(qat)
    p = params["quant_conv3"]
    t_in, t_out = p.input, p.output
    assert t_in is not None and t_out is not None and p.kernel_int is not None
    print("Activation tensor feeding quant_conv3 (the output of quant_pw + ReLU):")
    print(f"  trained range [{t_in.range_min!r}, {t_in.range_max!r}]")
    print(f"  scale = (max - min) / 255 = {t_in.scale!r}, "
          f"zero point = round(-128 - min / scale) = {t_in.zero_point}")
    print(f"Output tensor: scale {t_out.scale!r}, zero point {t_out.zero_point}")
    c = 5
    print(f"Output channel {c}: kernel scale {p.kernel_scale[c]!r}, "
          f"bias_int {p.bias_int[c]} (bias scale {p.bias_scale[c]!r})")
    print(f"  M = s_in * s_w / s_out = {p.multiplier[c]!r} "
          f"-> M0 = {p.multiplier_q31[c]}, shift = {p.shift[c]}")
    run = reference.run_reference(params, x_te[:1])
    x = run.tensors[p.inputs[0]].values[0]  # (14, 14, 16) int8, its input
    oh, ow = 3, 4
    # stride 2, SAME padding of a 3x3 kernel on 14x14: (0, 1) padding rows/columns,
    # so output (oh, ow) reads input rows 2*oh .. 2*oh+2, columns 2*ow .. 2*ow+2
    win = x[2 * oh : 2 * oh + 3, 2 * ow : 2 * ow + 3].astype(np.int64)
    acc = int(((win - t_in.zero_point) * p.kernel_int[..., c].astype(np.int64)).sum())
    print(f"  at output pixel ({oh}, {ow}): sum (q_x - z_x) * q_w = {acc}")
    acc += int(p.bias_int[c])
    print(f"  + bias_int = {acc}")
    y = int(reference.multiply_by_quantized_multiplier(acc, p.multiplier_q31[c], p.shift[c]))
    print(f"  MultiplyByQuantizedMultiplier(acc, M0, shift) = {y}  "
          f"(acc * M = {acc * p.multiplier[c]:.4f})")
    q = max(y + t_out.zero_point, reference.activation_range("relu", t_out.scale,
                                                             t_out.zero_point)[0])
    q = min(q, 127)
    print(f"  + z_out, ReLU clamp [z_out, 127] -> q_y = {q}")
    print(f"  reference tensor: {run.tensors[p.name].values[0, oh, ow, c]}")
    q_in = next(t for n, t in run.tensors.items() if params[n].kind == "QuantizeLayer")
    theirs = next(t for t in op_outputs(tfl, q_in.values, "reference")
                  if "quant_conv3" in t.name)
    print(f"  TFLite (reference kernels): {theirs.values[0, oh, ow, c]}")
    print(f"  real value: (q_y - z_out) * s_out = {(q - t_out.zero_point) * t_out.scale!r}")


if __name__ == "__main__":
    main()
