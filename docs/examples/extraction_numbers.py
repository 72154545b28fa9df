"""Print the numbers of docs/extraction.md's worked example.

    python docs/examples/extraction_numbers.py

Trains the demo's MNIST CNN briefly (seeded), quantizes it with tfmot_ext's
defaults, fine-tunes one epoch, extracts, and prints one layer's arithmetic.
"""

from __future__ import annotations

import numpy as np

import tfmot_ext as te
from tfmot_ext import demo


def main() -> None:
    _, qat, _ = demo.train(epochs=2, qat_epochs=1)
    p = te.extract(qat)["quant_conv3"]
    np.set_printoptions(precision=9, suppress=False)
    print(f"layer {p.name} ({p.kind}), {p.bits}-bit, axis {p.axis}, fused {p.activation}")
    print(f"input:  scale {p.input_scale!r}, zero point {p.input_zero_point}")
    print(f"output: scale {p.output_scale!r}, zero point {p.output_zero_point}")
    c = 0
    w = p.weights["kernel"][..., c]
    print(f"channel {c}: max |w| = {np.abs(w).max()!r}")
    print(f"  kernel_scale = {p.kernel_scale[c]!r} (= max|w| / 127 up to float32 rounding)")
    print(f"  kernel_int[0,0,:4,{c}] = {p.kernel_int[0, 0, :4, c].tolist()}"
          f" from w = {w[0, 0, :4].tolist()}")
    print(f"  bias = {p.bias[c]!r}, bias_scale = {p.bias_scale[c]!r}, bias_int = {p.bias_int[c]}")
    print(f"  M = {p.multiplier[c]!r} -> M0 = {p.multiplier_q31[c]}, shift = {p.shift[c]}"
          f" (M0 * 2^(shift-31) = {p.multiplier_q31[c] * 2.0 ** (p.shift[c] - 31)!r})")


if __name__ == "__main__":
    main()
