"""Train-step time: float vs tfmot's default QAT vs tfmot_ext's folded QAT.

    python benchmarks/qat_step.py [--steps 2] [--rounds 40] [--jit-compile] [--with-delay]

Models: the demo's MNIST CNN (28x28x1, batch 32) and MobileNetV2 alpha=0.35 at 96x96
(weights=None, batch 32). After warm-up (tracing), each round times ``--steps``
train_on_batch calls of every variant, one variant after the other, and divides each
variant's time by the float model's time *in the same round*: a machine that slows
down or speeds up between rounds moves all variants of a round alike, so the ratio
cancels it. Printed: the median of the per-round ratios with its interquartile range
(the spread left), and the median step time for scale. Target: folded <= 1.3x float.
``--with-delay`` adds the folded model built with ``FoldingScheme(freeze_bn_delay=...)``,
whose step decides the freeze with a ``tf.cond`` per layer (the default traces it away).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import tfmot_ext as te
from tfmot_ext import demo
from tfmot_ext._compat import keras, tfmot


def _mobilenet() -> Any:
    return keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                          classes=10, classifier_activation=None)


def _variants(build: Callable[[], Any], jit_compile: bool,
              with_delay: bool) -> dict[str, Any]:
    out = {}
    keras.utils.set_random_seed(0)
    out["float"] = build()
    out["tfmot default QAT"] = tfmot.quantization.keras.quantize_model(build())
    out["tfmot_ext folded QAT"] = te.quantize(build())
    if with_delay:  # a delay never reached: the tf.cond form, unfrozen like the default
        out["tfmot_ext folded+delay"] = te.quantize(
            build(), scheme=te.FoldingScheme(freeze_bn_delay=10**9))
    for m in out.values():
        m.compile(keras.optimizers.SGD(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return out


def bench(name: str, build: Callable[[], Any], shape: tuple[int, ...], steps: int,
          rounds: int, jit_compile: bool = False, with_delay: bool = False) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    models = _variants(build, jit_compile, with_delay)
    for m in models.values():  # warm-up: tracing and first allocations
        for _ in range(3):
            m.train_on_batch(x, y)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                m.train_on_batch(x, y)
            times[k].append((time.perf_counter() - t0) / steps)
    print(f"{name}: train step, {rounds} rounds of {steps} steps each, batch 32")
    for k in models:
        ratios = sorted(t / f for t, f in zip(times[k], times["float"]))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        print(f"  {k:<22} {statistics.median(times[k]) * 1e3:8.1f} ms   "
              f"{statistics.median(ratios):.2f}x float (IQR {q1:.2f}-{q3:.2f})")
    keras.backend.clear_session()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--jit-compile", action="store_true",
                   help="compile every variant with XLA (jit_compile=True)")
    p.add_argument("--with-delay", action="store_true",
                   help="add the folded model with freeze_bn_delay (tf.cond per layer)")
    args = p.parse_args()
    bench("MNIST CNN 28x28", demo.build_cnn, (28, 28, 1), args.steps, args.rounds,
          args.jit_compile, args.with_delay)
    bench("MobileNetV2 0.35 96x96", _mobilenet, (96, 96, 3), args.steps, args.rounds,
          args.jit_compile, args.with_delay)


if __name__ == "__main__":
    main()
