"""Rule-based annotation of existing Keras models, and one-call QAT.

A *policy* is an ordered list of :class:`Rule`. For every layer the first rule
that matches decides: a ``QuantizeConfig`` to use, ``"skip"`` (stays float) or
``"default"`` (the built-in choice). Layers no rule matches get the default:
tfmot_ext's preset for weighted layers (8-bit per-channel symmetric weights,
8-bit asymmetric activations), tfmot's registry for the layers it knows (Add,
Concatenate, pooling, ...), and ``unsupported`` decides the rest.

Example::

    policy = [
        Rule(name="conv_first", config=conv_config(weight_bits=8)),
        Rule(layer_type=(Conv2D, DepthwiseConv2D), config=conv_config(weight_bits=4)),
        Rule(name="re:^head_.*", config="skip"),
    ]
    qat = tfmot_ext.quantize(model, policy)
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfmot_ext._compat import (
    QuantizeWrapper,
    check_keras2,
    is_graph_network,
    keras,
    live_code_deserialization,
    tf,
    tfmot,
)
from tfmot_ext.configs import (
    LayerQuantizeConfig,
    default_config_for,
    no_op_config,
    output_only_config,
)
from tfmot_ext.errors import PolicyError, UnsupportedLayerError, UnsupportedModelError
from tfmot_ext.graph import FLOAT_FOR_CONVERTER, TensorOp, consumers, layer_classes
from tfmot_ext.quantizers import FixedRangeQuantizer, weight_quantizer
from tfmot_ext.rewrites import batchnorm_as_depthwise, prepare
from tfmot_ext.rules import (
    AT_INPUT_SCALE_LAYERS,
    PASS_THROUGH_LAYERS,
    PASS_THROUGH_OPS,
    SAME_SCALE_LAYERS,
    TF_ADD_OPS,
    TFMOT_OUTPUT_QUANTIZED_ACTIVATIONS,
    fuses_activations,
    relu_cap,
    relu_kind,
)
from tfmot_ext.scheme import FoldingScheme
from tfmot_ext.scope import quantize_scope
from tfmot_ext.summary import format_summary, summarize

__all__ = ["UNSUPPORTED_MODES", "Rule", "annotate", "builtin_choice",
           "layer_classes", "plan", "quantize"]

logger = logging.getLogger(__name__)

QuantizeConfig: Any = tfmot.quantization.keras.QuantizeConfig
UNSUPPORTED_MODES = ("error", "skip", "output_only")
_KEYWORDS = ("skip", "default")


@dataclass(frozen=True)
class Rule:
    """Match layers and say how to quantize them.

    A layer matches when every criterion given matches (a rule with none matches
    every layer).

    Attributes:
        config: a ``QuantizeConfig`` (copied for each layer), a callable
            ``layer -> QuantizeConfig``, ``"skip"`` or ``"default"``.
        layer_type: a class or tuple of classes (``isinstance``), or a class name
            (matches the layer's class or any base class by name).
        name: a glob (``"conv*"``) or, prefixed with ``re:``, a regular expression
            (``re.fullmatch``) on the layer name.
        where: a predicate ``layer -> bool``.
    """

    config: Any
    layer_type: type | tuple[type, ...] | str | None = None
    name: str | None = None
    where: Callable[[Any], bool] | None = None
    _regex: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = self.config
        if not (isinstance(c, QuantizeConfig) or c in _KEYWORDS or callable(c)):
            raise PolicyError(
                f"Rule config must be a QuantizeConfig, a callable returning one, 'skip' "
                f"or 'default'; got {c!r}"
            )
        lt = self.layer_type
        if lt is not None and not isinstance(lt, str):
            types = lt if isinstance(lt, tuple) else (lt,)
            if not all(isinstance(t, type) for t in types):
                raise PolicyError(
                    f"Rule layer_type must be a class, tuple of classes or str: {lt!r}")
        if self.name is not None:
            if not isinstance(self.name, str):
                raise PolicyError(f"Rule name must be a str (glob or 're:' regex): {self.name!r}")
            if self.name.startswith("re:"):
                try:
                    object.__setattr__(self, "_regex", re.compile(self.name[3:]))
                except re.error as e:
                    raise PolicyError(
                        f"Rule name {self.name!r}: bad regular expression: {e}") from e
        if self.where is not None and not callable(self.where):
            raise PolicyError(f"Rule where must be callable: {self.where!r}")

    def matches(self, layer: Any) -> bool:
        """Whether ``layer`` meets every criterion of this rule."""
        lt = self.layer_type
        if isinstance(lt, str):
            if lt not in {c.__name__ for c in type(layer).__mro__}:
                return False
        elif lt is not None and not isinstance(layer, lt):
            return False
        if self.name is not None:
            if self._regex is not None:
                if not self._regex.fullmatch(layer.name):
                    return False
            elif not fnmatch.fnmatchcase(layer.name, self.name):
                return False
        return self.where is None or bool(self.where(layer))

    def config_for(self, layer: Any) -> Any:
        """The config this rule gives ``layer`` (a fresh copy), or a keyword."""
        c = self.config
        if isinstance(c, str):
            return c
        if isinstance(c, QuantizeConfig):
            return _copy_config(c)
        out = c(layer)
        if not (isinstance(out, QuantizeConfig) or out in _KEYWORDS or out is None):
            raise PolicyError(
                f"Rule callable returned {out!r} for layer '{layer.name}'; it must return a "
                "QuantizeConfig, 'skip', 'default' or None (= skip)"
            )
        return "skip" if out is None else out


def _copy_config(c: Any) -> Any:
    if isinstance(c, LayerQuantizeConfig):
        return c.copy()
    return type(c).from_config(c.get_config())


def _registry() -> Any:
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()


def _check_model(model: Any) -> None:
    check_keras2(model, "model")
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"'{getattr(model, 'name', model)}' is a layer, not a model; wrap it in a "
            "tf_keras Sequential or functional Model"
        )
    if not isinstance(model, keras.Sequential) and not is_graph_network(model):
        raise UnsupportedModelError(
            f"model '{model.name}' is a subclassed Model; tfmot can only quantize Sequential "
            "or functional models. Build the same layers with the functional API "
            "(inputs = keras.Input(...); outputs = ...; keras.Model(inputs, outputs)) and "
            "copy the weights with set_weights"
        )
    if any(isinstance(layer, QuantizeWrapper) for layer in model.layers):
        raise UnsupportedModelError(
            f"model '{model.name}' is already quantization-aware (it contains QuantizeWrapper "
            "layers); annotate the float model instead"
        )
    if not model.built:
        raise UnsupportedModelError(
            f"model '{model.name}' is not built; call model.build(input_shape) or give it an "
            "Input layer first"
        )


def _prepared(model: Any, policy: Sequence[Rule] | None = None) -> Any:
    """``model`` checked and prepared (:func:`tfmot_ext.rewrites.prepare`); a layer whose
    first matching rule of ``policy`` gives a config is kept whole, for that config: a
    SeparableConv2D is not split (deployed with the tensor between its two TFLite ops
    calibrated by the converter), an unfusable activation not split off (the rule's
    output quantizer then sees the activation's output)."""
    _check_model(model)
    rules = _validate_policy(policy)

    def configured(layer: Any) -> bool:  # the first matching rule sets a config
        rule = next((r for r in rules if r.matches(layer)), None)
        return rule is not None and not (isinstance(rule.config, str)
                                         and rule.config == "default")

    return prepare(model, keep=configured)


def _validate_policy(policy: Sequence[Rule] | None) -> list[Rule]:
    if policy is None:
        return []
    if isinstance(policy, Rule):
        return [policy]
    rules = list(policy)
    for i, r in enumerate(rules):
        if not isinstance(r, Rule):
            raise PolicyError(
                f"policy[{i}] is {type(r).__name__}, not a tfmot_ext.Rule; write "
                "Rule(layer_type=..., name=..., where=..., config=...)"
            )
    return rules


def plan(model: Any, policy: Sequence[Rule] | None = None, *, unsupported: str = "error",
         strict: bool = False) -> dict[str, Any]:
    """Decide, without changing anything, what each layer of ``model`` gets.

    Returns:
        layer name -> a ``QuantizeConfig``, ``None`` (tfmot's registry decides) or
        ``"skip"``. Input layers are left out.

    Raises:
        PolicyError: malformed policy; with ``strict=True``, a rule matching no layer.
        UnsupportedLayerError: a layer nothing can quantize, with ``unsupported="error"``.
        ConfigError: a config naming an attribute its layer lacks.
    """
    return _plan(_prepared(model, policy), policy, unsupported, strict)


def _plan(model: Any, policy: Sequence[Rule] | None, unsupported: str,
          strict: bool) -> dict[str, Any]:
    """:func:`plan` of a model :func:`_prepared` already."""
    if unsupported not in UNSUPPORTED_MODES:
        raise PolicyError(f"unsupported={unsupported!r} must be one of {UNSUPPORTED_MODES}")
    rules = _validate_policy(policy)
    used = [False] * len(rules)
    registry = _registry()
    decisions: dict[str, Any] = {}
    user_skips: set[str] = set()  # "skip" asked by a rule or by unsupported="skip"
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        choice: Any = "default"
        for i, rule in enumerate(rules):
            if rule.matches(layer):
                used[i] = True
                choice = rule.config_for(layer)
                if isinstance(choice, str) and choice == "skip":
                    user_skips.add(layer.name)
                break
        if choice == "default":
            choice = default_config_for(layer)
            if choice is None and _is_fusable(layer):
                decisions[layer.name] = _PENDING  # decided by the chain pass below
                continue
            if choice is None and (type(layer).__name__ in AT_INPUT_SCALE_LAYERS or (
                    _keeps_input_scale(layer) and _registry_quantizes_output(registry, layer))):
                # TFLite runs it at its input's scale (tfmot_ext.rules): nothing, and no
                # registry output quantizer the converter would serve with a requantize
                choice = LayerQuantizeConfig()
            if choice is None and _registry_cannot_quantize(layer):
                choice = output_only_config()
            if choice is None:
                if not isinstance(layer, keras.Model) and registry.supports(layer):
                    decisions[layer.name] = None
                    continue
                choice = builtin_choice(layer)
                if choice is None:
                    choice = _unsupported(layer, unsupported)
                    if isinstance(choice, str) and choice == "skip":
                        user_skips.add(layer.name)
        if isinstance(choice, LayerQuantizeConfig):
            choice.validate_for(layer)
        decisions[layer.name] = choice
    _fuse_chains(model, decisions, unsupported)
    _quantize_skipped_boundaries(model, decisions, user_skips)
    if strict:
        for rule, u in zip(rules, used):
            if not u:
                raise PolicyError(
                    f"strict policy: {rule!r} matched no layer of model '{model.name}'; "
                    f"layer names are {[la.name for la in model.layers]}"
                )
    return decisions


_PENDING = "__pending__"


def _single_output(layer: Any) -> bool:
    """Whether ``layer`` is called once and returns one tensor (what tfmot can wrap)."""
    try:
        return len(layer.inbound_nodes) == 1 and not isinstance(layer.output, (list, tuple))
    except (AttributeError, ValueError):
        return False


def _quantize_skipped_boundaries(model: Any, decisions: dict[str, Any],
                                 user_skips: set[str]) -> None:
    """A layer the user skipped between quantized layers (a float island: an SSD-style
    custom layer between two convolutions) stays float, but its output, which a quantized
    layer reads, gets a trained range (:func:`~tfmot_ext.configs.output_only_config`):
    without one the converter calibrates that boundary itself, and the consumer's int32
    bias and requantization are not the ones extraction can give (measured: a Conv2D
    after a skipped custom layer with bias and scales DIFF, 3 LSB at the output).
    A chain of skipped layers is treated the same, layer by layer. Pass-through layers,
    multi-output layers and a float front (a skipped layer fed by float layers or the
    model input, as in tfmot's "quantize only the Dense layers" recipe, deployed with
    dynamic-range quantization) are left as they are."""
    before = dict(decisions)
    cons = consumers(model)
    producers: dict[str, list[str]] = {}
    for name, outs in cons.items():
        for c in outs:
            producers.setdefault(c, []).append(name)
    inputs = {la.name for la in model.layers if isinstance(la, keras.layers.InputLayer)}

    def reaches_quantized(name: str, seen: frozenset[str] = frozenset()) -> bool:
        """A consumer is quantized, or is a skipped layer (a chain of them) that reaches
        one."""
        for c in cons.get(name, []):
            if before.get(c, "skip") != "skip":
                return True
            if c in user_skips and c not in seen and reaches_quantized(c, seen | {name}):
                return True
        return False

    for layer in model.layers:  # execution order: a chain's first layer flips first
        name = layer.name
        if name not in user_skips or _keeps_input_scale(layer):
            continue
        if not _single_output(layer):  # tfmot cannot wrap it: it stays as it is
            logger.warning("layer '%s' is skipped and has several outputs: its outputs stay "
                           "float, so a quantized layer reading them deploys what the "
                           "converter calibrates (extraction will say which)", name)
            continue
        fed_quantized = any(decisions.get(p, "skip") != "skip" and p not in inputs
                            for p in producers.get(name, []))
        if fed_quantized and reaches_quantized(name):
            decisions[name] = output_only_config()
            logger.info("layer '%s' is skipped (float) between quantized layers: its output "
                        "is quantized", name)


def _is_relu_like(layer: Any) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return relu_kind("ReLU", layer.get_config()) is not None
    if isinstance(layer, keras.layers.Activation):
        return relu_kind("Activation", layer.get_config()) is not None
    return False


def _is_fusable(layer: Any) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization) or _is_relu_like(layer)


def _fuse_chains(model: Any, decisions: dict[str, Any], unsupported: str) -> None:
    """Place activation quantizers where TFLite fuses: after Conv/Dense -> [BN] -> [ReLU].

    A weighted layer with a linear activation followed by BatchNormalization and/or a
    ReLU has its activation quantizer moved to the last layer of that chain: TFLite
    folds BN and fuses ReLU into the op, so a fake-quant in between would be trained
    but never deployed. BatchNormalization/ReLU layers no chain claims get tfmot's
    registry (ReLU) or the ``unsupported`` treatment (a BN after no weighted layer).
    """
    by_name = {la.name: la for la in model.layers}
    cons = consumers(model)

    def single(name: str) -> Any:
        c = cons.get(name, [])
        return by_name[c[0]] if len(c) == 1 else None

    for name, cfg in list(decisions.items()):
        layer = by_name[name]
        if not (isinstance(cfg, LayerQuantizeConfig) and "activation" in cfg.activations):
            continue
        if getattr(getattr(layer, "activation", None), "__name__", "") != "linear":
            continue
        if not fuses_activations(type(layer).__name__, layer.get_config()):
            continue  # its output deploys at a scale of its own (a bias-less TRANSPOSE_CONV)
        chain = []
        nxt = single(name)
        if isinstance(nxt, keras.layers.BatchNormalization) and decisions.get(nxt.name) == _PENDING:
            chain.append(nxt)
            nxt = single(nxt.name)
        if nxt is not None and _is_relu_like(nxt) and decisions.get(nxt.name) in (_PENDING, None):
            chain.append(nxt)
        if not chain:
            continue
        act_q = cfg.activations["activation"]
        decisions[name] = LayerQuantizeConfig(weights=cfg.weights, output=cfg.output)
        for member in chain[:-1]:
            decisions[member.name] = no_op_config()
        decisions[chain[-1].name] = output_only_config(quantizer=act_q)
    # a TF-op addition (MobileNetV3's hard-swish ``relu6(x + 3.0)``) read only by a ReLU:
    # TFLite fuses the ReLU into the ADD, whose output is the ReLU's tensor; a range of
    # the addition's own would round twice where the deployed model rounds once (what
    # tfmot's AddReLUQuantize transform does for an Add layer)
    for name, cfg in list(decisions.items()):
        layer, nxt = by_name[name], single(name)
        if (isinstance(layer, TensorOp) and layer.function in TF_ADD_OPS
                and isinstance(cfg, LayerQuantizeConfig) and not cfg.weights
                and nxt is not None and _is_relu_like(nxt)
                and decisions.get(nxt.name) in (_PENDING, None)):
            decisions[name] = no_op_config()
    # a ReLU with a cap m other than 6 deploys as the producer with the ReLU part fused,
    # then MINIMUM(m) and RELU; the converter gives the fused tensor the calibrated range
    # clamped at m whatever QAT trained (measured: a conv trained on [-3.07, 2.85]
    # deployed on [0, 1]): the producer trains on [0, m], exact where the data reach m
    # (a named limitation otherwise, docs/parity_matrix.md)
    registry = _registry()
    for name, cfg in list(decisions.items()):
        nxt = single(name)
        cap = relu_cap(type(nxt).__name__, nxt.get_config()) if nxt is not None else None
        if cap is None or isinstance(cfg, str):
            continue
        fixed = FixedRangeQuantizer(0.0, cap, bits=8)
        if isinstance(cfg, LayerQuantizeConfig) and "activation" in cfg.activations:
            decisions[name] = LayerQuantizeConfig(weights=cfg.weights,
                                                  activations={"activation": fixed})
        elif isinstance(cfg, LayerQuantizeConfig) and cfg.output is not None:
            decisions[name] = LayerQuantizeConfig(weights=cfg.weights, output=fixed)
        elif cfg is None and not isinstance(by_name[name], keras.Model) and \
                _registry_quantizes_output(registry, by_name[name]):
            decisions[name] = LayerQuantizeConfig(output=fixed)
    # TFLite's CONCATENATION (MAXIMUM, MINIMUM) has one scale, which the converter gives
    # to the inputs it alone consumes: their own output quantizers would clip and round
    # at a scale that is never deployed, so the operator's quantizer is the only one kept
    def through_reshapes(name: str) -> Any:
        """The sole consumer, past reshapes read by one layer (ranks.conv1d_as_conv2d's
        reshape back to 1-D: the converter propagates the scale through them)."""
        nxt = single(name)
        while isinstance(nxt, keras.layers.Reshape) and single(nxt.name) is not None:
            nxt = single(nxt.name)
        return nxt

    for name, cfg in list(decisions.items()):
        nxt = through_reshapes(name)
        if (type(nxt).__name__ in SAME_SCALE_LAYERS and isinstance(cfg, LayerQuantizeConfig)
                and (cfg.activations or cfg.output is not None)):
            decisions[name] = (LayerQuantizeConfig(weights=cfg.weights) if cfg.weights
                               else no_op_config())
            logger.info("layer '%s' feeds only %s '%s': quantized at its scale",
                        name, type(nxt).__name__, nxt.name)
    registry = _registry()
    for name, cfg in list(decisions.items()):
        if cfg == _PENDING:
            layer = by_name[name]
            decisions[name] = None if registry.supports(layer) else (
                builtin_choice(layer) or _unsupported(layer, unsupported))


L = keras.layers


def _keeps_input_scale(layer: Any) -> bool:
    """A layer TFLite runs at its input's scale (:data:`tfmot_ext.rules.PASS_THROUGH_LAYERS`,
    :data:`~tfmot_ext.rules.AT_INPUT_SCALE_LAYERS`), by its class name."""
    name = type(layer).__name__
    return name in PASS_THROUGH_LAYERS or name in AT_INPUT_SCALE_LAYERS


def _registry_cannot_quantize(layer: Any) -> bool:
    """An ``Activation`` whose function tfmot's registry config raises on or leaves
    unquantized (:data:`tfmot_ext.rules.TFMOT_OUTPUT_QUANTIZED_ACTIVATIONS`; linear and
    the fixed-grid sigmoid/tanh aside): its output gets tfmot_ext's quantizer."""
    if not isinstance(layer, L.Activation):
        return False
    act = layer.get_config().get("activation")
    return act not in TFMOT_OUTPUT_QUANTIZED_ACTIVATIONS and act not in ("linear", "softmax")


def _registry_quantizes_output(registry: Any, layer: Any) -> bool:
    """Whether tfmot's registry would put an output quantizer on ``layer`` (one it
    supports; the others are :func:`builtin_choice`'s)."""
    return bool(registry.supports(layer)
                and registry.get_quantize_config(layer).get_output_quantizers(layer))


#: Layers computing new values whose output TFLite requantizes: output quantized.
_OUTPUT_QUANTIZED: tuple[type, ...] = (
    L.Multiply, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Rescaling, L.Normalization,
    L.LayerNormalization, L.BatchNormalization, L.UnitNormalization, L.Activation, L.ReLU,
    L.LeakyReLU, L.PReLU, L.ELU, L.Softmax, L.CenterCrop)
#: keras.applications' own helper layers (InceptionResNetV2, ConvNeXt): output quantized.
_APPLICATION_LAYERS = frozenset({"CustomScaleLayer", "LayerScale"})


def _producers(layer: Any) -> list[Any]:
    """The layers whose outputs ``layer`` reads, over all its calls."""
    return [la for node in layer.inbound_nodes for la in tf.nest.flatten(node.inbound_layers)]


def builtin_choice(layer: Any) -> Any:
    """tfmot_ext's choice for a layer neither a preset nor tfmot's registry covers.

    ``"skip"`` for layers TFLite runs at their input's scale (pass-through TF ops such
    as reshape/slicing, cropping, permutes, noise and dropout layers) and for
    attention and LSTM/GRU/RNN layers (tfmot's wrapper cannot pass an attention
    layer's several tensors, and the converter cannot fuse a wrapped RNN: they stay
    float in training and the converter quantizes them from the representative data);
    :func:`~tfmot_ext.configs.output_only_config` for layers that compute new values
    (other TF ops such as ``x + 3.0``, Multiply, Rescaling, Normalization,
    LayerNormalization, a BatchNormalization no Conv/Dense precedes, activations,
    keras.applications' ``CustomScaleLayer``/``LayerScale``); 8-bit per-tensor
    weights for an Embedding table (its output is the table's rows, at its scale);
    the output range of an ``Identity`` that :func:`tfmot_ext.rewrites.range_after_float_layers`
    put after such a float layer; None for anything else (a user's custom layer:
    ``unsupported`` decides).
    """
    if isinstance(layer, TensorOp):
        if layer.function not in PASS_THROUGH_OPS:
            return output_only_config()
        # wrapped with no quantizer where it reads the model input (ranks.dense_to_rank2
        # at the input): else tfmot puts no QuantizeLayer there and the converter
        # calibrates the input and re-quantizes the next kernel itself
        return (LayerQuantizeConfig() if any(isinstance(u, keras.layers.InputLayer)
                                             for u in _producers(layer)) else "skip")
    if isinstance(layer, L.Identity):  # rewrites.range_after_float_layers: the float
        # layer's output range; any other Identity passes its input's scale through
        ups = _producers(layer)
        return (output_only_config() if ups and isinstance(ups[0], FLOAT_FOR_CONVERTER)
                else "skip")
    if isinstance(layer, L.Embedding):
        # TFLite's GATHER returns rows of the int8 table at the table's scale
        return LayerQuantizeConfig(weights={"embeddings": weight_quantizer(8, per_channel=False)})
    if isinstance(layer, L.PReLU):
        # TFLite's PRELU reads an int8 alpha (per tensor, symmetric): QAT trains with it
        return LayerQuantizeConfig(weights={"alpha": weight_quantizer(8, per_channel=False)},
                                   output=output_only_config().output)
    if _keeps_input_scale(layer) or isinstance(layer, FLOAT_FOR_CONVERTER):
        return "skip"
    if isinstance(layer, _OUTPUT_QUANTIZED) or type(layer).__name__ in _APPLICATION_LAYERS:
        return output_only_config()
    return None


def _unsupported(layer: Any, mode: str) -> Any:
    if mode == "skip":
        return "skip"
    if mode == "output_only":
        return output_only_config()
    kind = "nested Model" if isinstance(layer, keras.Model) else type(layer).__name__
    raise UnsupportedLayerError(
        f"layer '{layer.name}' ({kind}) has no quantization config: neither tfmot_ext's "
        "presets nor tfmot's registry cover it. Add a rule for it, e.g. "
        f"Rule(name='{layer.name}', config=LayerQuantizeConfig(weights={{...}}, "
        "output=activation_quantizer())), or pass unsupported='skip' (stays float) or "
        "unsupported='output_only' (only its output is quantized)"
    )


def annotate(model: Any, policy: Sequence[Rule] | None = None, *, unsupported: str = "error",
             strict: bool = False) -> Any:
    """Return a clone of ``model`` with layers annotated per ``policy``.

    The clone shares the original layers (and so their weights), exactly as tfmot's
    ``clone_model(..., clone_function=quantize_annotate_layer)`` recipe does; pass it
    to ``tfmot.quantization.keras.quantize_apply`` or use :func:`quantize`.

    Args:
        model: a built tf_keras Sequential or functional model; models nested in it
            are flattened first (:func:`tfmot_ext.graph.flatten`).
        policy: ordered rules; None uses the defaults only.
        unsupported: ``"error"``, ``"skip"`` or ``"output_only"`` for layers nothing covers.
        strict: raise if a rule matches no layer.
    """
    return _annotate(_prepared(model, policy), policy, unsupported, strict)


def _annotate(model: Any, policy: Sequence[Rule] | None, unsupported: str,
              strict: bool) -> Any:
    """:func:`annotate` of a model :func:`_prepared` already."""
    decisions = _plan(model, policy, unsupported, strict)
    annotate_layer = tfmot.quantization.keras.quantize_annotate_layer

    def clone(layer: Any) -> Any:
        d = decisions.get(layer.name, "skip")
        if d == "skip":
            return layer
        return annotate_layer(layer, quantize_config=d)

    with quantize_scope(layer_classes(model)):
        return keras.models.clone_model(model, clone_function=clone)


def quantize(model: Any, policy: Sequence[Rule] | None = None, scheme: Any = None, *,
             unsupported: str = "error", strict: bool = False,
             custom_objects: dict[str, Any] | None = None) -> Any:
    """Make ``model`` quantization-aware in one call: :func:`annotate` + ``quantize_apply``.

    Args:
        model: a built tf_keras Sequential or functional model (weights are kept;
            nested models are flattened first).
        policy: ordered :class:`Rule` list; unmatched layers get the defaults.
        scheme: a tfmot ``QuantizeScheme``; default :class:`tfmot_ext.scheme.FoldingScheme`
            (BatchNorm folded into the preceding Conv2D/DepthwiseConv2D/Dense, a
            BatchNormalization after none of them folded into a 1x1 depthwise put in
            front of it, :func:`tfmot_ext.rewrites.batchnorm_as_depthwise`; otherwise
            tfmot's 8-bit scheme minus its transform that drops custom configs). Pass
            :class:`tfmot_ext.scheme.DefaultScheme` to keep BatchNorm unfolded.
        unsupported: what to do with layers nothing can quantize (see :func:`annotate`).
        strict: raise if a rule matches no layer.
        custom_objects: extra classes the model's config refers to (the classes of
            its layers are found automatically).

    Returns:
        The QAT model. What was quantized how is logged at INFO level
        (:func:`tfmot_ext.summary.summarize` returns it as data).
    """
    model = _prepared(model, policy)
    if scheme is None or isinstance(scheme, FoldingScheme):
        model = batchnorm_as_depthwise(model)  # folded: a trained per-channel affine
    annotated = _annotate(model, policy, unsupported, strict)  # prepared once, above
    if scheme is None:
        # tf_keras does not serialize BatchNormalization(synchronized=True): pass the names
        scheme = FoldingScheme(synchronized=[
            la.name for la in model.layers
            if isinstance(la, keras.layers.BatchNormalization)
            and getattr(la, "synchronized", False)])
    # a Lambda layer is rebuilt from the in-memory model's config: the user's own code
    with quantize_scope(layer_classes(model), custom_objects or {}), \
            live_code_deserialization():
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme=scheme)
    if logger.isEnabledFor(logging.INFO):
        logger.info("quantized model '%s':\n%s", model.name, format_summary(summarize(qat)))
    return qat
