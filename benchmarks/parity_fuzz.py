"""Random-architecture parity fuzzer: ``python benchmarks/parity_fuzz.py --n 500``.

Draws ``--n`` models from the grammar of ``tests/modelgen.py`` (fixed seed: the same
models on every run), puts each through ``te.quantize`` -> training -> ``to_tflite`` ->
the three checks of issue #19, and prints (``--out``: also writes, as Markdown) the
parity matrix: per feature (layer kind x option), how many models that had it were
exact, how many failed which check (a finding is attributed to the features of the layer
it names, else to all of the model's), how many got a typed error, how many crashed.
``--show`` prints each failing model's spec and findings.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a script, not the library

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from modelgen import FAMILIES, ModelSpec, Outcome, check_model, model_specs  # noqa: E402

from tfmot_ext.rules import KERNEL_ROUNDING  # noqa: E402


def run(n: int, start_seed: int, families: list[str] | None, show: bool,
        supported_only: bool = False, only: set[int] | None = None,
        kernels: tuple[str, ...] = ("builtin", "reference")
        ) -> list[tuple[ModelSpec, Outcome]]:
    results: list[tuple[ModelSpec, Outcome]] = []
    drawn: list[ModelSpec] = []
    t0 = time.perf_counter()
    strategy = model_specs(families=families or tuple(FAMILIES), supported_only=supported_only)

    @seed(start_seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(spec: ModelSpec) -> None:
        drawn.append(spec)
        if only and len(drawn) not in only:
            return
        out = check_model(spec, seed=len(drawn) - 1, kernels=kernels)
        results.append((spec, out))
        done = len(drawn)
        print(f"[{done}/{n} {time.perf_counter() - t0:.0f} s] {out.stage}"
              + (f": {out.message[:160]}" if out.message else "")
              + (f": {len(out.findings)} findings" if out.findings else ""), flush=True)
        if show and not out.ok:
            print(spec)
            for f in out.findings[:8]:
                print("   ", f)

    one()
    return results


def _layer_features(spec: ModelSpec, layer: str) -> set[str]:
    """The features of the node a finding names (``n3_conv1d``, ``quant_n3_conv1d``,
    ``quant_n3_conv1d_as_2d``, ``.../n3_conv1d/...``), else none."""
    for i, node in enumerate(spec.nodes, start=1):
        if re.search(rf"(^|_|/)n{i}_", layer):
            return set(node.features)
    return set()


def matrix(results: list[tuple[ModelSpec, Outcome]]) -> str:
    rows: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    examples: dict[tuple[str, str], str] = {}
    for spec, out in results:
        feats = spec.features
        for f in feats:
            rows[f]["models"] += 1
        if out.ok:
            for f in feats:
                rows[f]["exact"] += 1
            continue
        if out.stage in ("error", "crash"):
            for f in feats:
                rows[f][out.stage] += 1
                examples.setdefault((f, out.stage), out.message[:120])
            continue
        blamed: dict[str, set[str]] = collections.defaultdict(set)
        for check, layer, detail in out.findings:
            for f in _layer_features(spec, layer) or feats:
                blamed[f].add(check.split("/")[0])
                examples.setdefault((f, check.split("/")[0]), f"{layer}: {detail}"[:120])
        for f in feats:
            if f in blamed:
                for c in blamed[f]:
                    rows[f][c] += 1
            else:
                rows[f]["exact"] += 1  # the model failed elsewhere; this feature did not
    cols = ["models", "exact", "weights", "reference", "qat", "error", "crash"]
    lines = ["| feature | " + " | ".join(cols) + " | first finding |",
             "|---|" + "---:|" * len(cols) + "---|"]
    for f in sorted(rows):
        c = rows[f]
        first = next((examples[(f, k)] for k in cols[2:] if (f, k) in examples), "")
        first = " ".join(first.split()).replace("|", "/")  # one table cell: one line
        lines.append(f"| {f} | " + " | ".join(str(c[k]) for k in cols) + f" | {first} |")
    stages = collections.Counter(out.stage for _, out in results)
    lines.append("")
    lines.append(f"{len(results)} models: " + ", ".join(f"{k} {v}" for k, v in
                                                        sorted(stages.items())))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", nargs="*", help="grammar families (default: all)")
    ap.add_argument("--show", action="store_true", help="print every failing model")
    ap.add_argument("--supported", action="store_true",
                    help="only the layers modelgen.unsupported does not name (the CI grammar)")
    ap.add_argument("--out", type=Path, help="also write the matrix (Markdown) here")
    ap.add_argument("--only", type=int, nargs="*", help="check only these models (1-based)")
    ap.add_argument("--kernels", nargs="+", default=["builtin", "reference"],
                    choices=[k for k in KERNEL_ROUNDING if k != "default"],
                    help="kernel sets the integer reference is checked against "
                         "(micro: TFLite Micro, the tflite-micro package)")
    args = ap.parse_args()
    logging.getLogger("tfmot_ext").setLevel(logging.ERROR)
    results = run(args.n, args.seed, args.families, args.show, args.supported,
                  set(args.only or ()), tuple(args.kernels))
    table = matrix(results)
    print(table)
    if args.out:
        cmd = "python benchmarks/parity_fuzz.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"Made by `{cmd}`.\n\n{table}\n")


if __name__ == "__main__":
    main()
