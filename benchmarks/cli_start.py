"""CLI start-up: ``tfmot-ext --help`` / ``inspect`` / ``extract`` side by side with the floor.

    python benchmarks/cli_start.py [--repeats 7]

Saves a small folded QAT model (Conv+BN+ReLU, depthwise, Dense) to H5 in a temporary
folder, then times, interleaved, ``--repeats`` fresh processes of each:

* floor:        ``python -c "import numpy, h5py"`` (what reading an H5 file needs);
* help, inspect, extract: ``python -m tfmot_ext.cli ...`` as shipped (no TensorFlow);
* *_with_tf:    the same command with the training half imported first, which is what
                every CLI call cost before the deployment core stopped importing
                TensorFlow (``import tfmot_ext.tflite`` loads TF, tf_keras and tfmot).

Prints the median wall time of each, its ratio to the floor and the ratio of the old
behaviour to the new. Targets (issue #21): each command <= 1 s and <= 3x the floor.
These machines are noisy: quote the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _model(path: Path) -> None:
    import numpy as np

    import tfmot_ext as te
    from tfmot_ext._compat import keras

    L = keras.layers  # noqa: N806 - the usual alias
    rng = np.random.default_rng(0)
    inp = keras.Input((16, 16, 3))
    x = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(8, 3, use_bias=False)(inp)))
    x = L.DepthwiseConv2D(3, activation="relu")(x)
    qat = te.quantize(keras.Model(inp, L.Dense(4)(L.Flatten()(x))))
    qat.compile("adam", "mse")
    data = rng.normal(size=(32, 16, 16, 3)).astype(np.float32)
    qat.fit(data, rng.normal(size=(32, 4)), epochs=1, verbose=0)
    qat.save(path)


def _time(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "qat.h5"
        _model(h5)
        out = str(Path(tmp) / "p.json")
        cli = [py, "-m", "tfmot_ext.cli"]
        old = [py, "-c", "import sys, tfmot_ext.tflite; from tfmot_ext.cli import main; "
                         "sys.exit(main(sys.argv[1:]))"]
        cases = {
            "floor": [py, "-c", "import numpy, h5py"],
            "help": [*cli, "--help"],
            "inspect": [*cli, "inspect", str(h5)],
            "extract": [*cli, "extract", str(h5), "-o", out],
            "help_with_tf": [*old, "--help"],
            "inspect_with_tf": [*old, "inspect", str(h5)],
            "extract_with_tf": [*old, "extract", str(h5), "-o", out],
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):
            for name, argv in cases.items():
                times[name].append(_time(argv))
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["floor"]
    print(f"median of {args.repeats} interleaved runs (wall seconds; noisy machine: read "
          "the ratios)")
    print(f"{'command':<18}{'median s':>10}{'x floor':>10}")
    for name, t in med.items():
        print(f"{name:<18}{t:>10.3f}{t / floor:>10.2f}")
    for cmd in ("help", "inspect", "extract"):
        print(f"{cmd}: before / now = {med[cmd + '_with_tf'] / med[cmd]:.1f}x; "
              f"now {med[cmd] / floor:.2f}x the floor "
              f"({'meets' if med[cmd] <= 1.0 and med[cmd] <= 3 * floor else 'misses'} "
              "<= 1 s and <= 3x floor)")


if __name__ == "__main__":
    main()
