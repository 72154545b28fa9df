"""TFLite Micro vs the integer reference vs TFLite, element by element, in one run.

    python benchmarks/micro_parity.py [--images 1000]

Three models, each converted with ``to_tflite(..., fixed_batch=True)`` (TFLite Micro
needs batch-1 shapes): the demo's MNIST CNN (BN folded, trained on the 4,000-image
MNIST sample, run on the 1,000 held-out images) with 8-bit weights and with ``make
demo``'s 8/4-bit policy, and MobileNetV2 alpha 0.35 at 96x96
(random weights, calibrated on random inputs, 16 inputs). For every int8 tensor the
interpreter exposes, it counts the elements where TFLite Micro (the ``tflite-micro``
package) differs from ``run_reference`` with each rounding, and from TFLite's own
reference and builtin kernels; and prints the tensor arena TFLite Micro needs. Then
it sweeps ``--quantizations`` random input quantizations of LOGISTIC and TANH, every
int8 input each, and counts where TFLite Micro's fixed point
(:mod:`tfmot_ext.microkernels`) and TFLite's table differ.
Results in docs/integer_inference.md.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a script, not the library

import tfmot_ext as te
from tfmot_ext import demo, micro
from tfmot_ext._compat import keras
from tfmot_ext.matching import compare_with_tflite
from tfmot_ext.tflite import op_outputs


def _mnist(images: int, policy: Any = None) -> tuple[Any, bytes, np.ndarray]:
    _, qat, (x_tr, _, x_te, _) = demo.train(6, 3, policy)
    return qat, te.to_tflite(qat, x_tr[:200], fixed_batch=True), x_te[:images]


def _mobilenet(images: int) -> tuple[Any, bytes, np.ndarray]:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    m = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                       classes=10, classifier_activation=None)
    qat = te.quantize(m)
    x = rng.uniform(-1, 1, size=(24 + images, 96, 96, 3)).astype(np.float32)
    for i in range(3):
        qat(x[i * 8 : (i + 1) * 8], training=True)
    return qat, te.to_tflite(qat, x[:8], fixed_batch=True), x[24:]


def _row(name: str, qat: Any, tfl: bytes, x: np.ndarray) -> list[str]:
    params = te.extract(qat)
    mic = {t.name: t.values for t in op_outputs(tfl, x, "micro")}
    matches = compare_with_tflite(params, tfl, x, "micro")  # every tensor, micro rounding
    assert all(m.layer is not None for m in matches), "unmatched tensor"
    exact = sum(m.mismatched for m in matches)
    # TFLite Micro against the reference run with TFLite's roundings, and against TFLite
    ref = {r: te.run_reference(params, x, r) for r in ("reference", "optimized")}
    out = op_outputs(tfl, x, "micro", intermediates=False)[0]
    vs_ref = {r: int((run.output.values.reshape(out.values.shape) != out.values).sum())
              for r, run in ref.items()}
    vs_tfl = {}
    for k in ("reference", "builtin"):
        try:
            theirs = op_outputs(tfl, x, k)
        except ValueError:  # TFLite's reference kernels lack DEPTHWISE_CONV_2D v7
            vs_tfl[k] = "n/a"
            continue
        vs_tfl[k] = f"{sum(int((t.values != mic[t.name]).sum()) for t in theirs):,}"
    arena = micro.arena_bytes(tfl)
    size = sum(v.size for v in mic.values())
    return [name, f"{len(x)}", f"{len(mic)} / {size:,}", f"{exact}",
            f"{vs_ref['reference']} / {vs_ref['optimized']}",
            f"{vs_tfl['reference']} / {vs_tfl['builtin']}", f"{arena:,}"]


def _table_vs_fixed_point(n: int, seed: int = 0) -> str:
    from tfmot_ext import microkernels as mk
    from tfmot_ext.kernels import activation_lut

    rng = np.random.default_rng(seed)
    q = np.arange(-128, 128)
    counts = {"sigmoid": 0, "tanh": 0}
    scales: dict[str, list[float]] = {"sigmoid": [], "tanh": []}
    for _ in range(n):
        s = float(np.float32(10 ** rng.uniform(-3, 0.5)))
        z = int(rng.integers(-128, 128))
        for fn, micro_fn, out in (("sigmoid", mk.logistic_int8, (1 / 256, -128)),
                                  ("tanh", mk.tanh_int8, (1 / 128, 0))):
            d = int((activation_lut(fn, s, z, *out)[q + 128] != micro_fn(q, s, z)).sum())
            counts[fn] += d
            if d:
                scales[fn].append(s)
    return "; ".join(f"{fn}: {counts[fn]} of {n * 256:,} inputs differ"
                     + (f" (input scales {min(scales[fn]):.3f}..{max(scales[fn]):.3f})"
                        if scales[fn] else "") for fn in counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="MNIST test images (max 1000)")
    ap.add_argument("--quantizations", type=int, default=3000,
                    help="random input quantizations of the LOGISTIC/TANH sweep")
    args = ap.parse_args()
    rows = [["model", "inputs", "tensors / elements", "micro vs reference(micro)",
             "output vs reference(reference / optimized)",
             "all tensors vs TFLite (reference / builtin)", "arena bytes"]]
    rows.append(_row("MNIST CNN, 8-bit", *_mnist(args.images)))
    rows.append(_row("MNIST CNN, make demo's 8/4-bit", *_mnist(args.images, demo.mixed_policy())))
    rows.append(_row("MobileNetV2 0.35 96x96", *_mobilenet(16)))
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for r in rows[1:]:
        print("| " + " | ".join(r) + " |")
    print(f"\nLOGISTIC / TANH, TFLite's table vs TFLite Micro's fixed point, "
          f"{args.quantizations} random input quantizations (scale 1e-3..3.2, any zero "
          f"point): {_table_vs_fixed_point(args.quantizations)}")


if __name__ == "__main__":
    main()
