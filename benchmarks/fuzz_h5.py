"""Longer fuzzing run of the H5 reader than the test suite's.

    python benchmarks/fuzz_h5.py [--cases 3000] [--seed 0]

Saves a small QAT model to H5, then applies ``--cases`` random mutations (truncation,
bit flips, dataset deletion/renaming/retyping/reshaping/absurd declared shapes/NaN,
JSON node replacement) and calls ``tfmot_ext.extract`` on each. Every outcome must be
a successful extraction or a ``tfmot_ext.errors`` exception; the script prints the
counts per mutation kind and any other exception (a finding), and exits 1 if any.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import h5py
import numpy as np

import tfmot_ext as te
from tfmot_ext._compat import keras
from tfmot_ext.errors import TfmotExtError

L = keras.layers


def make_file(folder: Path) -> bytes:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, activation="relu", name="conv")(inp)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.Flatten()(x)
    qat = te.quantize(keras.Model(inp, L.Dense(2, name="fc")(x)))
    qat.compile("adam", "mse")
    qat.fit(rng.normal(size=(8, 6, 6, 2)), rng.normal(size=(8, 2)), epochs=1, verbose=0)
    path = folder / "clean.h5"
    qat.save(str(path))
    return path.read_bytes()


def mutate(kind: str, clean: bytes, path: Path, rng: np.random.Generator) -> None:
    if kind == "truncate":
        path.write_bytes(clean[: int(rng.integers(0, len(clean)))])
        return
    if kind == "bitflip":
        data = bytearray(clean)
        for _ in range(int(rng.integers(1, 32))):
            data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        return
    path.write_bytes(clean)
    with h5py.File(path, "r+") as f:
        if kind == "json":
            cfg = json.loads(f.attrs["model_config"])
            nodes: list[tuple[object, object]] = []

            def walk(o: object) -> None:
                items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(
                    o, list) else []
                for k, v in list(items):
                    nodes.append((o, k))
                    walk(v)

            walk(cfg)
            parent, key = nodes[int(rng.integers(0, len(nodes)))]
            choices = [None, 0, -1, 1e308, "x", [], {}, [[]], {"class_name": "Evil"}, True]
            parent[key] = choices[int(rng.integers(0, len(choices)))]  # type: ignore[index]
            f.attrs["model_config"] = json.dumps(cfg)
            return
        names: list[str] = []
        f["model_weights"].visititems(
            lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        g = f["model_weights"]
        name = names[int(rng.integers(0, len(names)))]
        data = g[name][()]
        op = kind.split(":")[1]
        if op == "rename":
            g.move(name, name + "_x")
            return
        del g[name]
        if op == "string":
            g[name] = np.bytes_("junk")
        elif op == "shape":
            g[name] = np.zeros((int(rng.integers(0, 50)),), np.float32)
        elif op == "huge":
            g.create_dataset(name, shape=(1 << 40,), dtype="f4", chunks=(4096,))
        elif op == "nan":
            g[name] = np.full(np.shape(data), [np.nan, np.inf][int(rng.integers(0, 2))],
                              np.float32)
        elif op == "int":
            g[name] = np.asarray(data).astype(np.int64) * 1000


KINDS = ["truncate", "bitflip", "json", "ds:delete", "ds:rename", "ds:string", "ds:shape",
         "ds:huge", "ds:nan", "ds:int"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    findings = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        clean = make_file(folder)
        path = folder / "m.h5"
        for i in range(args.cases):
            kind = KINDS[i % len(KINDS)]
            mutate(kind, clean, path, rng)
            try:
                te.extract(path)
                outcomes[(kind, "ok")] += 1
            except TfmotExtError:
                outcomes[(kind, "tfmot_ext error")] += 1
            except Exception as e:
                outcomes[(kind, "OTHER")] += 1
                findings.append((kind, repr(e), traceback.format_exc(limit=3)))
    dt = time.perf_counter() - t0
    print(f"{args.cases} cases in {dt:.0f} s (seed {args.seed})")
    for kind in KINDS:
        row = {o: outcomes[(kind, o)] for o in ("ok", "tfmot_ext error", "OTHER")}
        print(f"  {kind:<10} " + "  ".join(f"{k}: {v}" for k, v in row.items()))
    print(f"findings (exceptions other than tfmot_ext errors): {len(findings)}")
    for kind, err, tb in findings[:10]:
        print(f"--- {kind}: {err}\n{tb}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
