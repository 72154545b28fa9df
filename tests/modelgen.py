"""Random tf_keras functional models from a grammar of layers x options, and the parity
harness that puts each through quantize -> train -> to_tflite -> three checks.

Shared by ``tests/test_parity_fuzz.py`` (a fixed-seed slice in CI) and
``benchmarks/parity_fuzz.py`` (the long run and the parity matrix). A model is drawn as
a :class:`ModelSpec` (plain data: printable, rebuildable) by :func:`model_specs`, a
hypothesis strategy, and built by :func:`build`. Shapes are tracked while drawing with
each layer's own ``compute_output_shape``, so every spec builds.

The grammar's families (``FAMILIES``) can be restricted: ``model_specs(families=...)``.
Each node carries its *features* (``"Conv2D dilation=2"``, ``"ReLU negative_slope"``):
the rows of the parity matrix.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tfmot_ext.rules import relu_cap

__all__ = ["FAMILIES", "ModelSpec", "Node", "Outcome", "build", "check_model", "model_specs",
           "unsupported"]

MAX_SPATIAL = 20
MAX_CHANNELS = 8
ACTIVATIONS = ("linear", "relu", "swish", "sigmoid", "tanh", "gelu", "elu", "hard_sigmoid")


@dataclass(frozen=True)
class Node:
    """One layer: its class in ``tf_keras.layers``, its constructor arguments, the
    indices of its inputs (0 is the model input, ``i`` the output of node ``i - 1``), and
    the features it stands for in the parity matrix."""

    cls: str
    config: dict[str, Any]
    inputs: tuple[int, ...]
    features: tuple[str, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A model: input shape (no batch) and nodes in topological order; the output is
    the last node. Invariant: every node's inputs are earlier indices."""

    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        for i, n in enumerate(self.nodes, start=1):
            assert all(0 <= j < i for j in n.inputs), (i, n)

    @property
    def features(self) -> set[str]:
        return {f for n in self.nodes for f in n.features}

    def __str__(self) -> str:
        rows = [f"input {self.input_shape}"]
        for i, n in enumerate(self.nodes, start=1):
            rows.append(f"  {i}: {n.cls}({n.config}) <- {list(n.inputs)}")
        return "\n".join(rows)


def build(spec: ModelSpec) -> Any:
    """The tf_keras functional model of ``spec``; layer ``i`` is named ``n{i}_<class>``."""
    from tfmot_ext._compat import keras

    x = keras.Input(spec.input_shape)
    tensors = [x]
    for i, n in enumerate(spec.nodes, start=1):
        layer = getattr(keras.layers, n.cls)(**n.config, name=f"n{i}_{n.cls.lower()}")
        ins = [tensors[j] for j in n.inputs]
        tensors.append(layer(ins if len(ins) > 1 else ins[0]))
    return keras.Model(x, tensors[-1], name="fuzz")


def _shape(cls: str, config: dict[str, Any], shapes: Sequence[tuple[int, ...]]
           ) -> tuple[int, ...] | None:
    """The output shape (no batch) of the layer, or None when it is invalid or too small
    or too big for the grammar."""
    from tfmot_ext._compat import keras

    layer = getattr(keras.layers, cls)(**config)
    batched = [(None, *s) for s in shapes]
    try:
        out = layer.compute_output_shape(batched if len(batched) > 1 else batched[0])
    except Exception:  # an invalid combination of options: not drawn
        return None
    out = tuple(out.as_list() if hasattr(out, "as_list") else out)[1:]
    if any(d is None or d < 1 for d in out) or math.prod(out) > 4096:
        return None
    if len(out) > 1 and max(out[:-1]) > MAX_SPATIAL:
        return None
    return tuple(int(d) for d in out)


def unsupported(cls: str, config: dict[str, Any]) -> str | None:
    """Why a layer of the grammar does not deploy exactly yet, or None: the limitations
    the parity matrix lists, left out of the CI slice (``supported_only=True``)."""
    act = config.get("activation")
    if cls == "ELU" or act == "elu":
        return "ELU: the converter keeps it float in a QAT graph (typed ConversionError)"
    if cls == "ReLU" and config.get("threshold"):
        return "ReLU(threshold): x * cast(x > t), a float CAST (typed ConversionError)"
    if cls == "ReLU" and config.get("negative_slope") and config.get("max_value") is not None:
        return "ReLU(negative_slope, max_value): no integer kernel in the reference yet"
    if relu_cap(cls, config) is not None:
        return ("ReLU(max_value=m), m != 6: the converter fuses the ReLU part into the "
                "producer and calibrates that tensor, clamped at m; exact only where the "
                "calibration data reach m")
    if cls == "ReLU" and config.get("max_value") not in (None, 6.0):
        return ("ReLU(max_value != 6): MINIMUM + RELU, and the converter re-ranges the "
                "producer's output to [0, max_value] whatever QAT trained; no reference form")
    return None


class _Draw:
    """The model being drawn: nodes and the shape of each tensor."""

    def __init__(self, draw: Callable[[Any], Any], input_shape: tuple[int, ...],
                 supported_only: bool = False) -> None:
        self.draw = draw
        self.shapes: list[tuple[int, ...]] = [input_shape]
        self.nodes: list[Node] = []
        self.supported_only = supported_only

    def add(self, cls: str, config: dict[str, Any], inputs: Sequence[int],
            features: Sequence[str]) -> int | None:
        """Append a node; its index, or None when the layer does not fit the shapes (or
        is :func:`unsupported` and only supported layers are drawn)."""
        if self.supported_only and unsupported(cls, config):
            return None
        out = _shape(cls, config, [self.shapes[i] for i in inputs])
        if out is None:
            return None
        self.nodes.append(Node(cls, dict(config), tuple(inputs), tuple(features)))
        self.shapes.append(out)
        return len(self.shapes) - 1

    def spatial(self, i: int) -> int:
        return len(self.shapes[i]) - 1


def _conv_options(d: _Draw, i: int, transposed: bool = False) -> dict[str, Any]:
    ks = d.draw(st.integers(1, 3))
    strides = d.draw(st.sampled_from([1, 1, 2]))
    dilation = 1 if strides > 1 else d.draw(st.sampled_from([1, 1, 2]))
    paddings = ["same", "valid"] + (["causal"] if d.spatial(i) == 1 and not transposed else [])
    return {"kernel_size": ks, "strides": strides, "dilation_rate": dilation,
            "padding": d.draw(st.sampled_from(paddings))}


def _features(cls: str, cfg: dict[str, Any]) -> list[str]:
    out = [cls]
    for key, plain in (("strides", 1), ("dilation_rate", 1), ("groups", 1),
                       ("depth_multiplier", 1), ("output_padding", None)):
        if key in cfg and cfg[key] != plain:
            out.append(f"{cls} {key}={cfg[key]}")
    if "padding" in cfg:
        out.append(f"{cls} padding={cfg['padding']}")
    if cfg.get("use_bias") is False:
        out.append(f"{cls} use_bias=False")
    if cfg.get("activation", "linear") != "linear":
        out.append(f"{cls} activation={cfg['activation']}")
    return out


def _weighted(d: _Draw, i: int) -> int | None:
    """A Conv/DepthwiseConv/SeparableConv/ConvTranspose/Dense, maybe followed by a BN."""
    r = d.spatial(i)
    c = d.shapes[i][-1]
    kind = d.draw(st.sampled_from(["Conv", "DepthwiseConv", "SeparableConv", "ConvTranspose",
                                   "Dense"]))
    act = d.draw(st.sampled_from(ACTIVATIONS))
    bias = d.draw(st.booleans())
    filters = d.draw(st.integers(1, MAX_CHANNELS))
    if kind == "Dense" or r == 0:
        cls, cfg = "Dense", {"units": filters}
    elif kind == "Conv":
        groups = d.draw(st.sampled_from([g for g in (1, 1, 2, c) if c % g == 0]))
        cls = f"Conv{r}D"
        cfg = {"filters": max(groups, filters - filters % groups), "groups": groups,
               **_conv_options(d, i)}
    elif kind == "DepthwiseConv":
        cls = f"DepthwiseConv{r}D"
        cfg = {"depth_multiplier": d.draw(st.sampled_from([1, 1, 2])), **_conv_options(d, i)}
        if cfg["padding"] == "causal":
            cfg["padding"] = "valid"
    elif kind == "SeparableConv":
        cls = f"SeparableConv{r}D"
        cfg = {"filters": filters, **_conv_options(d, i)}
    else:
        cls = f"Conv{r}DTranspose"
        cfg = {"filters": filters, **_conv_options(d, i, transposed=True)}
        if cfg["strides"] > 1 and d.draw(st.booleans()):
            cfg["output_padding"] = 1
        if r == 1 and cfg["dilation_rate"] > 1:
            cfg["dilation_rate"] = 1
    cfg.update(activation=act, use_bias=bias)
    j = d.add(cls, cfg, [i], _features(cls, cfg))
    if j is not None and d.draw(st.booleans()):
        j = d.add("BatchNormalization", {"momentum": 0.9}, [j], [f"{cls} + BatchNormalization"]
                  ) or j
    return j


def _activation(d: _Draw, i: int) -> int | None:
    kind = d.draw(st.sampled_from(["ReLU", "LeakyReLU", "PReLU", "ELU", "Activation",
                                   "BatchNormalization"]))
    if kind == "ReLU":
        cfg: dict[str, Any] = {"max_value": d.draw(st.sampled_from([None, 6.0, 1.0])),
                               "negative_slope": d.draw(st.sampled_from([0.0, 0.0, 0.1])),
                               "threshold": d.draw(st.sampled_from([0.0, 0.0, 0.5]))}
        feats = ["ReLU"] + [f"ReLU {k}" for k, v in cfg.items() if v]
        return d.add("ReLU", cfg, [i], feats)
    if kind == "LeakyReLU":
        return d.add("LeakyReLU", {"alpha": d.draw(st.sampled_from([0.1, 0.2, 0.3]))}, [i],
                     ["LeakyReLU"])
    if kind == "PReLU":
        cfg = {"alpha_initializer": d.draw(st.sampled_from(["zeros", "random_uniform"]))}
        feats = ["PReLU"]
        if d.spatial(i) and d.draw(st.booleans()):
            cfg["shared_axes"] = list(range(1, d.spatial(i) + 1))
            feats.append("PReLU shared_axes")
        return d.add("PReLU", cfg, [i], feats)
    if kind == "ELU":
        return d.add("ELU", {}, [i], ["ELU"])
    if kind == "BatchNormalization":
        return d.add("BatchNormalization", {"momentum": 0.9}, [i], ["BatchNormalization alone"])
    fn = d.draw(st.sampled_from(["hard_sigmoid", "softmax", "sigmoid", "tanh", "relu",
                                 "swish", "hard_swish"]))
    if fn == "hard_swish":  # tf_keras has no hard_swish activation: x * hard_sigmoid(x)
        j = d.add("Activation", {"activation": "hard_sigmoid"}, [i], [])
        return None if j is None else d.add("Multiply", {}, [i, j], ["hard_swish"])
    return d.add("Activation", {"activation": fn}, [i], [f"Activation {fn}"])


def _pooling(d: _Draw, i: int) -> int | None:
    r = d.spatial(i)
    if r == 0:
        return None
    kind = d.draw(st.sampled_from(["Max", "Average", "GlobalMax", "GlobalAverage"]))
    if kind.startswith("Global"):
        cls = f"{kind}Pooling{r}D"
        keep = d.draw(st.booleans())
        return d.add(cls, {"keepdims": keep}, [i], [cls] + ([f"{cls} keepdims"] if keep else []))
    cls = f"{kind}Pooling{r}D"
    cfg = {"pool_size": d.draw(st.integers(2, 3)), "strides": d.draw(st.sampled_from([None, 1])),
           "padding": d.draw(st.sampled_from(["valid", "same"]))}
    feats = [cls, f"{cls} padding={cfg['padding']}"]
    if cfg["strides"] == 1:
        feats.append(f"{cls} strides=1")
    return d.add(cls, cfg, [i], feats)


def _reshaping(d: _Draw, i: int) -> int | None:
    r = d.spatial(i)
    if r == 0:
        return None
    shape = d.shapes[i]
    kind = d.draw(st.sampled_from(["ZeroPadding", "Cropping", "UpSampling", "Resizing",
                                   "Reshape", "Permute", "Dropout"]))
    if kind == "ZeroPadding":
        cls = f"ZeroPadding{r}D"
        return d.add(cls, {"padding": d.draw(st.sampled_from([1, 2]))}, [i], [cls])
    if kind == "Cropping":
        cls = f"Cropping{r}D"
        return d.add(cls, {"cropping": 1}, [i], [cls])
    if kind == "UpSampling":
        cls = f"UpSampling{r}D"
        cfg: dict[str, Any] = {"size": 2}
        if r == 2:
            cfg["interpolation"] = d.draw(st.sampled_from(["nearest", "bilinear"]))
        return d.add(cls, cfg, [i], [cls] + ([f"{cls} {cfg['interpolation']}"] if r == 2 else []))
    if kind == "Resizing" and r == 2:
        h = d.draw(st.integers(3, 12))
        interp = d.draw(st.sampled_from(["nearest", "bilinear"]))
        return d.add("Resizing", {"height": h, "width": h + 1, "interpolation": interp}, [i],
                     ["Resizing", f"Resizing {interp}"])
    if kind == "Reshape" and r >= 1:
        target = (shape[0] * shape[1], shape[2]) if r == 2 else (shape[0], 1, shape[1])
        return d.add("Reshape", {"target_shape": target}, [i], [f"Reshape {r}D->{3 - r}D"])
    if kind == "Permute" and r >= 1:
        dims = (2, 1, 3) if r == 2 else (2, 1)
        return d.add("Permute", {"dims": dims}, [i], [f"Permute {r}D"])
    return d.add("Dropout", {"rate": 0.2}, [i], ["Dropout"])


MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")


def _branches(d: _Draw, i: int) -> int | None:
    """Two branches from ``i`` (or ``i`` and one branch: a residual) merged."""
    merge = d.draw(st.sampled_from(MERGES))
    r = d.spatial(i)
    c = d.shapes[i][-1]
    residual = d.draw(st.booleans())

    def branch() -> int | None:
        cls = "Dense" if r == 0 else f"Conv{r}D"
        cfg: dict[str, Any] = {"units": c} if r == 0 else {
            "filters": c, "kernel_size": d.draw(st.integers(1, 3)), "padding": "same"}
        cfg["activation"] = d.draw(st.sampled_from(["linear", "relu"]))
        j = d.add(cls, cfg, [i], [])
        if j is not None and d.draw(st.booleans()):
            j = d.add("BatchNormalization", {"momentum": 0.9}, [j], []) or j
        return j

    a = i if residual else branch()
    b = branch()
    if a is None or b is None:
        return None
    cfg: dict[str, Any] = {}
    feats = [merge, f"{merge} {'residual' if residual else 'two branches'}"]
    if merge == "Concatenate" and r >= 1 and d.draw(st.booleans()):
        cfg["axis"] = 1
        feats.append("Concatenate axis=1")
    return d.add(merge, cfg, [a, b], feats)


def _input_scaling(d: _Draw, i: int) -> int | None:
    if d.draw(st.booleans()):
        return d.add("Rescaling", {"scale": 0.5, "offset": 0.25}, [i], ["Rescaling"])
    c = d.shapes[i][-1]
    return d.add("Normalization", {"mean": [0.1] * c, "variance": [2.0] * c}, [i],
                 ["Normalization"])


#: The grammar's families: a drawer per family, from the tensor ``i`` of a model.
FAMILIES: dict[str, Callable[[_Draw, int], int | None]] = {
    "weighted": _weighted, "activation": _activation, "pooling": _pooling,
    "reshaping": _reshaping, "branches": _branches,
}


@st.composite
def model_specs(draw: Callable[[Any], Any], families: Sequence[str] = tuple(FAMILIES),
                max_blocks: int = 5, supported_only: bool = False) -> ModelSpec:
    """A random model: input 1D ``(L, C)`` or 2D ``(H, W, C)`` of odd or even size,
    maybe a Rescaling/Normalization, 1 to ``max_blocks`` blocks of the chosen families,
    and a head (none, Flatten + Dense or global pooling + Dense). Every model has at
    least one weighted layer, so it has something to train. ``supported_only`` leaves
    out the layers :func:`unsupported` names."""
    rank = draw(st.sampled_from([1, 2]))
    size = draw(st.integers(4, 11))
    channels = draw(st.integers(1, 4))
    shape = (size, channels) if rank == 1 else (size, draw(st.integers(4, 11)), channels)
    d = _Draw(draw, shape, supported_only)
    cur = 0
    if draw(st.integers(0, 4)) == 0:
        cur = _input_scaling(d, cur) or cur
    blocks = draw(st.lists(st.sampled_from(list(families)), min_size=1, max_size=max_blocks))
    for family in ["weighted", *blocks]:
        nxt = FAMILIES[family](d, cur)
        cur = nxt if nxt is not None else cur
    head = draw(st.sampled_from(["none", "flatten", "gap"]))
    if d.spatial(cur) >= 1 and head == "flatten":
        cur = d.add("Flatten", {}, [cur], ["Flatten"]) or cur
        cur = d.add("Dense", {"units": 3}, [cur], []) or cur
    elif d.spatial(cur) >= 1 and head == "gap":
        cls = f"GlobalAveragePooling{d.spatial(cur)}D"
        cur = d.add(cls, {}, [cur], [cls]) or cur
        cur = d.add("Dense", {"units": 3}, [cur], []) or cur
    if cur == 0:
        cur = d.add("Dense", {"units": 3}, [cur], ["Dense"]) or cur
    # keep only what the output depends on (a drawn block may have been skipped)
    return _pruned(ModelSpec(shape, tuple(d.nodes[:cur])))


def _pruned(spec: ModelSpec) -> ModelSpec:
    """``spec`` without the nodes the output does not depend on."""
    needed = {len(spec.nodes)}
    for i in range(len(spec.nodes), 0, -1):
        if i in needed:
            needed.update(spec.nodes[i - 1].inputs)
    keep = sorted(needed - {0})
    index = {old: new for new, old in enumerate(keep, start=1)} | {0: 0}
    nodes = tuple(dataclasses.replace(spec.nodes[i - 1],
                                      inputs=tuple(index[j] for j in spec.nodes[i - 1].inputs))
                  for i in keep)
    return ModelSpec(spec.input_shape, nodes)


@dataclass(frozen=True)
class Outcome:
    """What one model did. ``stage`` is where it stopped: ``"ok"`` (all three checks
    passed), ``"error"`` (a typed tfmot_ext error; ``message`` names the layer and the
    fix), ``"crash"`` (any other exception: always a finding), ``"invalid"`` (TF itself
    cannot train the float model, e.g. a oneDNN kernel abort: not a model users have), or
    ``"check"`` (converted,
    and ``findings`` lists each failed check as ``(check, layer, detail)``, check one of
    ``weights``, ``reference/<kernels>``, ``qat``). ``end_to_end_lsb`` is the largest
    difference between the QAT model's outputs and TFLite's, in output LSBs (a figure,
    not a check: it carries every operator's difference times the gains after it).

    Invariant: ``stage == "ok"`` iff ``findings`` is empty and no exception was raised.
    """

    stage: str
    message: str = ""
    findings: tuple[tuple[str, str, str], ...] = field(default=())
    end_to_end_lsb: float | None = None

    @property
    def ok(self) -> bool:
        return self.stage == "ok"


def _train(model: Any, x: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(len(x), *model.output_shape[1:])).astype(np.float32)
    model.compile("adam", "mse")
    model.fit(x, y, batch_size=16, epochs=1, steps_per_epoch=2, verbose=0)


def _micro_findings(params: Any, tfl: bytes, x: np.ndarray) -> list[tuple[str, str, str]]:
    """Check (b) against TFLite Micro, on the model with batch-1 shapes (it cannot
    resize); a model with an operator TFLite Micro lacks is skipped (tests/test_micro.py
    has its refusal)."""
    from tfmot_ext._compat import interpreter_ops
    from tfmot_ext.errors import IntegerReferenceError
    from tfmot_ext.matching import compare_with_tflite
    from tfmot_ext.rules import MICRO_MISSING_OPS
    from tfmot_ext.tflite import fixed_shapes, undelegated

    fixed = fixed_shapes(tfl)
    if MICRO_MISSING_OPS & {op["op_name"] for op in interpreter_ops(undelegated(fixed)[0])}:
        return []
    try:
        matches = compare_with_tflite(params, fixed, x, "micro")
    except IntegerReferenceError as e:
        return [("reference/micro", "", str(e))]
    return [("reference/micro", str(m.layer), f"{m.op}: {m.mismatched}/{m.size} differ, "
             f"max {m.max_abs_diff} LSB") for m in matches if m.mismatched or m.layer is None]


def check_model(spec: ModelSpec, seed: int = 0, n: int = 32,
                kernels: Sequence[str] = ("builtin", "reference"),
                static_batch: bool | None = None) -> Outcome:
    """Put the model of ``spec`` through ``te.quantize`` (defaults), a float and a QAT
    fit of 3 steps, ``to_tflite`` and the three checks of issue #19:

    (a) every weighted TFLite operator holds the extracted integers and scales exactly;
    (b) the integer reference reproduces every interpreter tensor bit for bit, with
        each kernel set of ``kernels`` (by default TFLite's optimized ``builtin`` and its
        ``reference`` kernels; ``"micro"`` adds TFLite Micro's, on the model with
        batch-1 shapes, :func:`tfmot_ext.tflite.fixed_shapes`, for this check only);
    (c) every tensor a QAT layer accounts for is within 1 LSB of TFLite's on every
        element, the layer computed from the interpreter's own inputs
        (:func:`tfmot_ext.parity.op_drift`).
    """
    import tfmot_ext as te
    from tfmot_ext._compat import keras, tf
    from tfmot_ext.errors import IntegerReferenceError, TfmotExtError
    from tfmot_ext.parity import op_drift

    keras.backend.clear_session()
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    x = np.random.default_rng(seed).normal(size=(n, *spec.input_shape)).astype(np.float32)
    try:  # the float model alone: TF's own failures are not deployment findings
        model = build(spec)
        _train(model, x, seed)
    except Exception as e:
        return Outcome("invalid", f"{type(e).__name__}: {str(e)[:200]}")
    try:
        qat = te.quantize(model)
        _train(qat, x, seed + 1)
        tfl = te.to_tflite(qat, x, static_batch=static_batch)
        params = te.extract(qat)  # once: verify and op_drift take it
        findings: list[tuple[str, str, str]] = []
        end_to_end = 0.0
        for kernel_set in kernels:
            if kernel_set == "micro":  # the reference's tensors only: (a) and (c) are
                findings += _micro_findings(params, tfl, x)  # TFLite's, the same model
                continue
            try:
                drift = op_drift(qat, tfl, x, kernels=kernel_set, params=params)
            except IntegerReferenceError as e:  # no kernel: reported below with the rest
                drift = []
                logging.getLogger(__name__).debug("op_drift: %s", e)
            report = te.verify(qat, tfl, x, kernels=kernel_set, params=params,
                               measure_arena=False)
            if kernel_set == "builtin":
                for w in report.weights:
                    if not w.exact:
                        findings.append(("weights", str(w.layer), f"{w.op}: {w}"))
                end_to_end = max((o.max_lsb for o in report.outputs), default=0.0)
            for d in drift:
                if d.on_grid and d.within_1lsb < 1.0:
                    findings.append(("qat", d.layer, f"{d.op}: max {d.max_lsb:.2f} LSB, "
                                     f"{(1 - d.within_1lsb) * 100:.2f} % over 1 LSB"))
            if report.reference is None:
                findings.append((f"reference/{kernel_set}", "", report.reference_error))
                continue
            for m in report.reference:
                if m.mismatched or m.layer is None:
                    findings.append((f"reference/{kernel_set}", str(m.layer),
                                     f"{m.op}: {m.mismatched}/{m.size} differ, "
                                     f"max {m.max_abs_diff} LSB"))
    except TfmotExtError as e:
        return Outcome("error", f"{type(e).__name__}: {e}")
    except Exception as e:  # a crash is a finding: keep where it came from
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return Outcome("crash", f"{type(e).__name__}: {str(e)[:300]} "
                                f"({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})")
    return Outcome("check" if findings else "ok", findings=tuple(findings),
                   end_to_end_lsb=end_to_end)
