"""Extraction speed: tfmot_ext.extract(h5) vs a raw h5py read vs tfmot's load_model way.

    python benchmarks/extract.py [--size 64] [--repeats 5]

Builds a ResNet50 (weights=None, no download) QAT model with tfmot_ext.quantize,
saves it to H5 in a temporary folder, then times, interleaved, ``--repeats`` times:

* raw:     h5py, read every dataset of the file into memory (the floor);
* extract: tfmot_ext.extract(path) (reads the same datasets, parses the config,
           computes integer kernels, int32 biases, scales and multipliers);
* tfmot:   tf_keras load_model under quantize_scope, then a loop over the layers
           reading their weights (what users do today, before any integer math).

Prints the median of each and the ratios. Machines here are noisy: quote ratios.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

import tfmot_ext as te
from tfmot_ext._compat import keras


def raw_read(path: Path) -> int:
    n = 0
    with h5py.File(path, "r") as f:
        def visit(_name: str, obj: object) -> None:
            nonlocal n
            if isinstance(obj, h5py.Dataset):
                n += np.asarray(obj[()]).size
        f.visititems(visit)
    return n


def tfmot_way(path: Path) -> int:
    with te.quantize_scope():
        model = keras.models.load_model(str(path), compile=False)
    n = sum(w.size for layer in model.layers for w in layer.get_weights())
    keras.backend.clear_session()
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="input height/width")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3),
                                        classes=10)
    qat = te.quantize(model)
    x = np.random.default_rng(0).normal(size=(8, args.size, args.size, 3)).astype(np.float32)
    qat(x, training=True)  # one forward pass in training mode sets every range
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "resnet50_qat.h5"
        qat.save(str(path))
        del qat, model
        keras.backend.clear_session()
        mb = path.stat().st_size / 1e6
        times: dict[str, list[float]] = {"raw": [], "extract": [], "tfmot": []}
        fns = {"raw": raw_read, "extract": te.extract, "tfmot": tfmot_way}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                gc.collect()
                t0 = time.perf_counter()
                fn(path)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        n_layers = len(te.extract(path).quantized_layers())
    print(f"ResNet50 QAT H5, input {args.size}x{args.size}: {mb:.0f} MB, "
          f"{n_layers} quantized layers, median of {args.repeats}")
    for k in ("raw", "extract", "tfmot"):
        print(f"  {k:<8} {med[k]:7.2f} s")
    print(f"  extract / raw   = {med['extract'] / med['raw']:.2f}x  (target <= 1.5x)")
    print(f"  tfmot / extract = {med['tfmot'] / med['extract']:.2f}x  (target >= 6x)")


if __name__ == "__main__":
    main()
