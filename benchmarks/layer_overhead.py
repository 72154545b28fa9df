"""Per-layer cost of QAT: a stack of tiny Conv/DepthwiseConv + BN + ReLU blocks.

    python benchmarks/layer_overhead.py [--layers 24] [--rounds 30] [--steps 3]

At 8x8x16 activations (batch 8) the convolutions cost little, so what a QAT variant
adds per layer - quantizer range tracking, the folded layer's scale factors and its
``tf.cond``, their gradients, the executor's per-op cost - is what the step measures.
That is the fixed cost that shows on MobileNetV2 where convolutions are fast (see
``qat_step.py`` and docs/folding.md). Variants, built from the same float model:
float, tfmot's default QAT, tfmot_ext with BN unfolded (``DefaultScheme``) and
tfmot_ext folded (the default). After warm-up (tracing), each round times ``--steps``
train_on_batch calls of every variant in turn; printed are the medians over rounds of
the step-time ratio to float (in the same round) and of ``(step - float step) /
layers``, the added cost per Conv+BN+ReLU block.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

import tfmot_ext as te
from tfmot_ext._compat import keras, tfmot


def build(layers: int, size: int, channels: int) -> Any:
    """``layers`` blocks alternating Conv2D 3x3 and DepthwiseConv2D 3x3, each + BN + ReLU."""
    inp = keras.Input((size, size, channels))
    x = inp
    for i in range(layers):
        op = (keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False) if i % 2
              else keras.layers.Conv2D(channels, 3, padding="same", use_bias=False))
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(op(x)))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args()

    def fresh() -> Any:
        return build(a.layers, a.size, a.channels)

    keras.utils.set_random_seed(0)
    models = {
        "float": fresh(),
        "tfmot default QAT": tfmot.quantization.keras.quantize_model(fresh()),
        "tfmot_ext unfolded": te.quantize(fresh(), scheme=te.DefaultScheme()),
        "tfmot_ext folded": te.quantize(fresh()),
    }
    rng = np.random.default_rng(0)
    x = rng.normal(size=(a.batch, a.size, a.size, a.channels)).astype(np.float32)
    y = rng.integers(0, 10, a.batch)
    for m in models.values():
        m.compile(keras.optimizers.SGD(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        for _ in range(3):  # warm-up: tracing and first allocations
            m.train_on_batch(x, y)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(a.rounds):
        for k, m in models.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                m.train_on_batch(x, y)
            times[k].append((time.perf_counter() - t0) / a.steps)
    print(f"{a.layers} x (Conv|DepthwiseConv 3x3 + BN + ReLU) at {a.size}x{a.size}x"
          f"{a.channels}, batch {a.batch}: {a.rounds} rounds of {a.steps} steps")
    for k in models:
        ratios = sorted(t / f for t, f in zip(times[k], times["float"]))
        per_layer = statistics.median((t - f) / a.layers * 1e3
                                      for t, f in zip(times[k], times["float"]))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        print(f"  {k:<20} {statistics.median(ratios):.2f}x float (IQR {q1:.2f}-{q3:.2f})"
              f"   {per_layer:+.3f} ms per block")


if __name__ == "__main__":
    main()
