"""Time to make a model quantization-aware: ``tfmot_ext.quantize`` vs tfmot's ``quantize_model``.

    python benchmarks/quantize_time.py [--repeats 3] [--families MobileNetV2 ResNet50 ...]

For each family (``weights=None``, seeded; MobileNetV2 alpha 0.35 at 96x96, the others
at benchmarks/zoo.py's sizes), interleaved ``--repeats`` times, each on a fresh build
of the float model (the build is not timed):

* tfmot_ext: ``tfmot_ext.quantize(model)``, and of that the seconds spent inside tfmot's
  ``quantize_apply`` (timed by wrapping it for this script only): the rest is
  tfmot_ext's own graph preparation and annotation;
* tfmot: ``tfmot.quantization.keras.quantize_model(model)`` where it works (it refuses
  NASNetMobile and InceptionResNetV2: the error is printed).

Prints medians and ratios. These machines are noisy: quote the ratios.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import zoo  # benchmarks/zoo.py: the families and their sizes

import tfmot_ext as te
from tfmot_ext._compat import keras, tfmot

DEFAULT = ("MobileNetV2", "ResNet50", "NASNetMobile", "InceptionResNetV2")


def build(family: str) -> Any:
    if family == "MobileNetV2":
        keras.utils.set_random_seed(0)
        return keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                              weights=None, classes=10)
    return zoo.build(family)


class _ApplyTimer:
    """Wraps tfmot's quantize_apply to add up the seconds spent inside it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.real = tfmot.quantization.keras.quantize_apply

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.real(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=list(DEFAULT))
    args = ap.parse_args()
    timer = _ApplyTimer()
    tfmot.quantization.keras.quantize_apply = timer
    ours: dict[str, list[float]] = {f: [] for f in args.families}
    inside: dict[str, list[float]] = {f: [] for f in args.families}
    theirs: dict[str, list[float]] = {f: [] for f in args.families}
    failed: dict[str, str] = {}
    for _ in range(args.repeats):
        for fam in args.families:
            for tool in ("tfmot_ext", "tfmot"):
                if tool == "tfmot" and fam in failed:
                    continue
                keras.backend.clear_session()
                gc.collect()
                model = build(fam)
                timer.seconds = 0.0
                t0 = time.perf_counter()
                try:
                    if tool == "tfmot_ext":
                        te.quantize(model)
                    else:
                        tfmot.quantization.keras.quantize_model(model)
                except Exception as e:  # tfmot's refusals, reported as such
                    if tool == "tfmot_ext":
                        raise
                    failed[fam] = f"{type(e).__name__}: {e}".splitlines()[0][:90]
                    continue
                dt = time.perf_counter() - t0
                if tool == "tfmot_ext":
                    ours[fam].append(dt)
                    inside[fam].append(timer.seconds)
                else:
                    theirs[fam].append(dt)
    print(f"median of {args.repeats} interleaved runs, seconds (noisy machine: read the "
          "ratios)")
    print(f"{'family':<20}{'tfmot_ext':>10}{'in tfmot':>10}{'own':>8}{'tfmot':>8}"
          f"{'ratio':>8}")
    for fam in args.families:
        t = statistics.median(ours[fam])
        a = statistics.median(inside[fam])
        line = f"{fam:<20}{t:>10.1f}{a:>10.1f}{t - a:>8.1f}"
        if theirs[fam]:
            m = statistics.median(theirs[fam])
            line += f"{m:>8.1f}{t / m:>7.2f}x"
        else:
            line += f"{'-':>8}{'-':>8}   tfmot: {failed.get(fam, '')}"
        print(line)
    print("in tfmot: seconds inside tfmot's quantize_apply (its clone, layout transform "
          "and wrapping rebuild the model); own: tfmot_ext's preparation and annotation; "
          "ratio: tfmot_ext / tfmot")


if __name__ == "__main__":
    main()
