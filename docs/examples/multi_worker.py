"""Folded QAT under MultiWorkerMirroredStrategy: two worker processes on loopback.

    python docs/examples/multi_worker.py --out /tmp/mw            # launch 2 workers
    python docs/examples/multi_worker.py --out /tmp/mw --lr 0     # statistics only

The launcher picks free loopback ports, starts one process per worker with its own
``TF_CONFIG`` (set in the child's environment, nothing global), waits at most
``--timeout`` seconds (killing the workers if they hang) and prints what each worker
reported. Every worker:

1. builds ``tf.distribute.MultiWorkerMirroredStrategy()`` (it reads ``TF_CONFIG``;
   collectives over gRPC on 127.0.0.1, no GPU needed);
2. builds and quantizes the model inside ``strategy.scope()`` with
   ``tfmot_ext.quantize`` (BatchNorm folded; ``synchronized=True`` BN takes the batch
   statistics over the global batch of all workers);
3. trains on its shard of the data: a ``DatasetCreator`` whose function shards by
   ``input_context`` element-wise, so global batch ``k`` is the same 32 examples as
   on one device, split 16 + 16;
4. writes ``worker<i>.json`` (loss per epoch, the folded layer's moving statistics,
   a SHA-256 of every variable) and the chief (worker 0) saves ``qat.h5``. Non-chief
   workers save to a scratch path, as Keras's multi-worker guide asks (saving is a
   collective operation: every worker must call it).

Run with ``--single`` to train the same model on one device for comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 32  # global batch


def data() -> tuple[np.ndarray, np.ndarray]:
    """128 seeded examples; every half of every batch of 32 (the two workers' shards)
    holds the batch's input extremes, so the input quantizer's all-values range is
    the same per worker as on one device."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8, 8, 3)).astype(np.float32)
    y = rng.normal(size=(128, 2)).astype(np.float32)
    for k in range(0, 128, BATCH):
        x[[k, k + 1], 0, 0, 0] = 6.0       # element-wise shard: k -> worker 0, k+1 -> 1
        x[[k + 2, k + 3], 0, 0, 0] = -6.0
    return x, y


def build(lr: float) -> Any:
    import tfmot_ext as te
    from tfmot_ext._compat import keras

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 3, name="c")(inp)
    h = layers.BatchNormalization(momentum=0.5, synchronized=True, name="bn")(h)
    h = layers.ReLU(name="r")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    qat = te.quantize(keras.Model(inp, layers.Dense(2, name="fc")(h)))
    qat.compile(keras.optimizers.SGD(lr), "mse")
    return qat


def summary(qat: Any, losses: list[float]) -> dict[str, Any]:
    c = qat.get_layer("quant_c").layer
    return {
        "loss": losses,
        "moving_mean": c.moving_mean.numpy().tolist(),
        "moving_variance": c.moving_variance.numpy().tolist(),
        "variables": {v.name: hashlib.sha256(np.asarray(v.numpy()).tobytes()).hexdigest()
                      for v in qat.weights},
    }


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def worker(index: int, out: Path, lr: float, epochs: int) -> None:
    import tensorflow as tf

    from tfmot_ext._compat import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        qat = build(lr)
    x, y = data()

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.batch(ctx.get_per_replica_batch_size(BATCH)).repeat()

    hist = qat.fit(keras.utils.experimental.DatasetCreator(dataset_fn), epochs=epochs,
                   steps_per_epoch=len(x) // BATCH, verbose=0)
    # saving is collective: every worker saves, only the chief's file is kept
    target = out / "qat.h5" if index == 0 else Path(tempfile.mkdtemp()) / "qat.h5"
    qat.save(target)
    write_json(out / f"worker{index}.json", summary(qat, hist.history["loss"]))


def single(out: Path, lr: float, epochs: int) -> None:
    qat = build(lr)
    x, y = data()
    hist = qat.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    write_json(out / "single.json", summary(qat, hist.history["loss"]))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(out: Path, workers: int, lr: float, epochs: int, timeout: float) -> int:
    """Start ``workers`` processes on loopback; return 0 when all finished in time."""
    out.mkdir(parents=True, exist_ok=True)
    hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    procs = []
    for i in range(workers):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}))
        cmd = [sys.executable, __file__, "--worker", str(i), "--out", str(out),
               "--lr", str(lr), "--epochs", str(epochs)]
        log = open(out / f"worker{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=log), log))
    deadline = time.monotonic() + timeout
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            codes.append(None)
        log.close()
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for i, code in enumerate(codes):
        status = "timed out" if code is None else f"exit {code}"
        print(f"worker {i}: {status}, log {out / f'worker{i}.log'}")
        if code == 0:
            r = json.loads((out / f"worker{i}.json").read_text())
            print("  loss per epoch " + ", ".join(f"{v:.6f}" for v in r["loss"]))
    return 0 if codes == [0] * workers else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker", type=int, help="(internal) run as this worker")
    ap.add_argument("--single", action="store_true", help="train on one device instead")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    a = ap.parse_args(argv)
    if a.worker is not None:
        worker(a.worker, a.out, a.lr, a.epochs)
        return 0
    if a.single:
        a.out.mkdir(parents=True, exist_ok=True)
        single(a.out, a.lr, a.epochs)
        return 0
    return launch(a.out, a.workers, a.lr, a.epochs, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
