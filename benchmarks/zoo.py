"""keras.applications zoo: tfmot's default QAT vs tfmot_ext, family by family.

    python benchmarks/zoo.py                       # all 18 families
    python benchmarks/zoo.py --families ResNet50V2 ConvNeXtTiny --steps 5

Each family runs in a fresh process (``--same-process`` to run them in this one).

Every family is built with ``weights=None`` (no download), 10 classes, logits
(``classifier_activation=None``: the integer reference has no softmax) at a small
input size (the smallest each family accepts, at least 32x32), seeded. For each:

* tfmot: ``quantize_model`` and int8 conversion (ok, or the first line of the error),
  and where both work, the extraction parity of its QAT model (``tfmot_ext.extract``
  reads tfmot's own quantizers) and its train step over the float model's;
* tfmot_ext: ``tfmot_ext.quantize`` (BatchNorm folded), one training step, int8
  conversion with ``tfmot_ext.to_tflite``, extraction parity (every weighted TFLite
  operator's integers and scales equal the extraction), reference parity (the
  integer reference reproduces every interpreter tensor bit for bit, or why it
  cannot run), and the median QAT train step over the float model's (the two
  interleaved step by step, ``--steps`` each, after warm-up).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import tfmot_ext as te
from tfmot_ext._compat import keras, tfmot

A = keras.applications

#: family -> (constructor, input size, pixel range of the expected input)
FAMILIES: dict[str, tuple[Callable[..., Any], int, float]] = {
    "MobileNet": (A.MobileNet, 32, 1.0),
    "MobileNetV2": (A.MobileNetV2, 32, 1.0),
    "MobileNetV3Small": (A.MobileNetV3Small, 32, 255.0),
    "MobileNetV3Large": (A.MobileNetV3Large, 32, 255.0),
    "ResNet50": (A.ResNet50, 32, 1.0),
    "ResNet50V2": (A.ResNet50V2, 32, 1.0),
    "ResNetRS50": (A.ResNetRS50, 32, 255.0),
    "VGG16": (A.VGG16, 32, 1.0),
    "Xception": (A.Xception, 71, 1.0),
    "InceptionV3": (A.InceptionV3, 75, 1.0),
    "InceptionResNetV2": (A.InceptionResNetV2, 75, 1.0),
    "DenseNet121": (A.DenseNet121, 32, 1.0),
    "NASNetMobile": (A.NASNetMobile, 32, 1.0),
    "EfficientNetB0": (A.EfficientNetB0, 32, 255.0),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 32, 255.0),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32, 255.0),
    "RegNetX002": (A.RegNetX002, 32, 255.0),
    "RegNetY002": (A.RegNetY002, 32, 255.0),
}


def build(family: str, size: int | None = None) -> Any:
    """The float model of ``family`` (seeded, ``weights=None``, 10 logits)."""
    fn, default, _ = FAMILIES[family]
    s = size or default
    keras.utils.set_random_seed(0)
    return fn(input_shape=(s, s, 3), weights=None, classes=10, classifier_activation=None)


def inputs(family: str, model: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded images in the family's expected pixel range."""
    top = FAMILIES[family][2]
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0 if top > 1 else -1.0, top,
                       size=(n, *model.input_shape[1:])).astype(np.float32)


@dataclass(frozen=True)
class ZooResult:
    """One family's row. ``*_ok`` are True/False or the error's first line."""

    family: str
    tfmot_quantize: str
    tfmot_convert: str
    tfmot_extraction: str
    tfmot_step_ratio: float | None
    quantize: str
    train: str
    convert: str
    weights_exact: bool | None
    weighted_ops: int
    reference: str
    step_ratio: float | None


def _first_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:90] if text else type(e).__name__


def _reference_gap(error: str) -> str:
    """The layer kind the integer reference lacks, from its error message."""
    m = re.search(r"no kernel for (\w+)", error) or re.search(r"\((\w+)\): ", error)
    return f"no {m.group(1)}" if m else error[:60]


def _extraction(exact: bool, n: int) -> str:
    """The extraction column: ``exact (n)`` or ``DIFF (n)`` over n weighted operators."""
    return f"{'exact' if exact else 'DIFF'} ({n})"


def _is_parity(cell: str) -> bool:
    """Whether a tfmot extraction cell is a parity result (not "-" or an error)."""
    return cell.split()[0] in ("exact", "DIFF")


def _tfmot(family: str, x: np.ndarray, y: np.ndarray, n_verify: int
           ) -> tuple[str, str, str, Any]:
    """tfmot's ``quantize_model``, one training step as tfmot_ext's model gets: (quantize,
    convert, extraction, the QAT model or None)."""
    try:
        qat = tfmot.quantization.keras.quantize_model(build(family, x.shape[1]))
    except Exception as e:  # report, do not stop: this is the comparison
        return _first_line(e), "-", "-", None
    try:
        _compile(qat)
        qat.train_on_batch(x, y)
        content = te.to_tflite(qat, x)
    except Exception as e:
        return "ok", _first_line(e), "-", None
    try:
        report = te.verify(qat, content, x[:n_verify], reference=False)
        extraction = _extraction(report.weights_exact, len(report.weights))
    except Exception as e:
        extraction = _first_line(e)
    return "ok", "ok", extraction, qat


def _compile(model: Any) -> None:
    model.compile(keras.optimizers.SGD(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def step_ratios(float_model: Any, qats: list[Any], x: np.ndarray, y: np.ndarray,
                steps: int) -> list[float]:
    """Each QAT model's median train step / the float model's, interleaved step by step
    (every model steps once per round, so a machine slowing down moves all alike)."""
    models = [float_model, *qats]
    for m in models:
        for _ in range(2):
            m.train_on_batch(x, y)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(steps):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            m.train_on_batch(x, y)
            times[i].append(time.perf_counter() - t0)
    base = statistics.median(times[0])
    return [statistics.median(t) / base for t in times[1:]]


def run_family(family: str, *, size: int | None = None, steps: int = 0, n_verify: int = 2,
               with_tfmot: bool = True) -> ZooResult:
    """Quantize, train one step, convert and verify one family (see the module doc)."""
    model = build(family, size)
    x = inputs(family, model, 8)
    y = np.random.default_rng(1).integers(0, 10, len(x))
    tq, tc, tx, tfmot_qat = _tfmot(family, x, y, n_verify) if with_tfmot else ("-", "-", "-", None)
    row: dict[str, Any] = {"family": family, "tfmot_quantize": tq, "tfmot_convert": tc,
                           "tfmot_extraction": tx, "tfmot_step_ratio": None,
                           "quantize": "-", "train": "-", "convert": "-",
                           "weights_exact": None, "weighted_ops": 0, "reference": "-",
                           "step_ratio": None}
    stage = "quantize"
    try:
        qat = te.quantize(model)
        row["quantize"] = "ok"
        stage = "train"
        _compile(qat)
        loss = float(np.asarray(qat.train_on_batch(x, y)))
        row["train"] = "ok" if np.isfinite(loss) else f"loss {loss}"
        stage = "convert"
        content = te.to_tflite(qat, x)
        row["convert"] = "ok"
        stage = "verify"
        report = te.verify(qat, content, x[:n_verify])
        row["weights_exact"] = report.weights_exact
        row["weighted_ops"] = len(report.weights)
        frac = report.reference_exact_fraction
        row["reference"] = (f"{frac * 100:.2f}% exact" if frac is not None
                            else f"n/a: {_reference_gap(report.reference_error)}")
        if steps:
            _compile(model)
            others = [] if tfmot_qat is None else [tfmot_qat]
            for m in others:
                _compile(m)
            ratios = step_ratios(model, [qat, *others], x, y, steps)
            row["step_ratio"] = ratios[0]
            row["tfmot_step_ratio"] = ratios[1] if others else None
    except Exception as e:  # report the stage that failed
        row[stage] = _first_line(e)
    return ZooResult(**row)


def table(results: list[ZooResult]) -> str:
    """Two column groups: tfmot's default QAT (quantize, convert, extraction parity,
    step/float) and tfmot_ext's (the same, plus train and the integer reference)."""
    head = (f"{'':<18} {'tfmot default QAT':<40} | tfmot_ext\n"
            f"{'family':<18} {'quant':<6} {'conv':<5} {'extraction':<12} {'step':<7} "
            f"{'| quant':<8} {'train':<6} {'conv':<5} {'extraction':<12} "
            f"{'reference':<24} step/float")
    lines = [head, "-" * len(head.splitlines()[1])]

    def short(v: str) -> str:
        return v if v in ("ok", "-") else "FAIL"

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    for r in results:
        ext = "-" if r.weights_exact is None else _extraction(r.weights_exact, r.weighted_ops)
        tx = (r.tfmot_extraction if _is_parity(r.tfmot_extraction) or r.tfmot_extraction == "-"
              else "FAIL")
        lines.append(f"{r.family:<18} {short(r.tfmot_quantize):<6} {short(r.tfmot_convert):<5} "
                     f"{tx:<12} {ratio(r.tfmot_step_ratio):<7} | {short(r.quantize):<6} "
                     f"{short(r.train):<6} {short(r.convert):<5} {ext:<12} "
                     f"{r.reference[:24]:<24} {ratio(r.step_ratio)}")
    errors = [(r.family, k, v) for r in results for k, v in (
        ("tfmot", next((s for s in (r.tfmot_quantize, r.tfmot_convert, r.tfmot_extraction)
                        if s != "ok" and not _is_parity(s)), "ok")),
        ("tfmot_ext", next((s for s in (r.quantize, r.train, r.convert) if s != "ok"), "ok")))
        if v not in ("ok", "-")]
    if errors:
        lines.append("")
        lines.append("Errors:")
        lines.extend(f"  {fam} ({who}): {msg}" for fam, who, msg in errors)
    refs = [(r.family, r.reference) for r in results if r.reference.startswith("n/a")]
    if refs:
        lines.append("Reference not run:")
        lines.extend(f"  {fam}: {why}" for fam, why in refs)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--steps", type=int, default=10, help="timed train steps (0: no timing)")
    p.add_argument("--same-process", action="store_true",
                   help="run every family in this process (memory grows: TF keeps "
                        "graphs, converters and interpreters; all 18 reached 18 GB)")
    args = p.parse_args()
    logging.getLogger("tfmot_ext").setLevel(logging.ERROR)
    results = []
    for fam in args.families:
        t0 = time.perf_counter()
        if args.same_process:
            results.append(run_family(fam, steps=args.steps))
            keras.backend.clear_session()
        else:  # a fresh process per family: its memory is returned when it ends
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                results.append(pool.apply(_quiet_run, (fam, args.steps)))
        print(f"  {fam}: {time.perf_counter() - t0:.0f} s  {results[-1]}", flush=True)
    print(table(results))


def _quiet_run(family: str, steps: int) -> ZooResult:
    logging.getLogger("tfmot_ext").setLevel(logging.ERROR)
    return run_family(family, steps=steps)


if __name__ == "__main__":
    main()
