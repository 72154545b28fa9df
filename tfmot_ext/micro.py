"""TFLite Micro, the runtime micro-controllers run: its interpreter on a ``.tflite``.

The ``tflite-micro`` package (the optional ``micro`` extra) holds TFLite Micro's own
kernels compiled for the host, with the interpreter its firmware runs. This module
reads every operator's int8 output with it (:func:`op_outputs`, the ``"micro"``
kernel set of :func:`tfmot_ext.tflite.op_outputs`) and measures the tensor arena a
model needs (:func:`arena_bytes`). ``run_reference(params, x, rounding="micro")``
reproduces these kernels bit for bit (docs/integer_inference.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from tfmot_ext.errors import ConfigError, ConversionError

__all__ = ["DEFAULT_ARENA", "arena_bytes", "available", "interpreter", "op_outputs"]

logger = logging.getLogger(__name__)

#: The arena of an interpreter that plans normally (TFLite Micro shares buffers by
#: lifetime): MobileNetV2 alpha 0.35 at 96x96 needs 210,000 bytes; :func:`arena_bytes`
#: finds the least that works.
DEFAULT_ARENA = 64 * 2**20
#: Exit status of :func:`_probe` when the model does not fit its arena.
_TOO_SMALL = 3


def _runtime() -> Any:
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        raise ConfigError(
            "kernels='micro' needs TensorFlow Lite Micro's Python interpreter: "
            "pip install 'tfmot-ext[micro]' (the tflite-micro package)") from e
    return runtime


def available() -> bool:
    """Whether the ``tflite-micro`` package is installed."""
    try:
        _runtime()
    except ConfigError:
        return False
    return True


def _dynamic_shapes(model_content: bytes) -> bool:
    from tfmot_ext.tflite import undelegated

    details = undelegated(model_content)[1].values()
    return any(-1 in d.get("shape_signature", ()) for d in details)


def interpreter(model_content: bytes, arena: int = DEFAULT_ARENA,
                preserve_all_tensors: bool = False) -> Any:
    """A TFLite Micro interpreter on ``model_content`` with an ``arena``-byte tensor arena.

    ``preserve_all_tensors`` keeps every intermediate tensor readable (``GetTensor``)
    instead of letting TFLite Micro's planner reuse their memory.

    Raises:
        ConversionError: TFLite Micro cannot run the model (an operator it does not
            register, a dynamic shape, an arena too small), with TFLite Micro's own
            log of the reason.
    """
    rt = _runtime()
    config = (rt.InterpreterConfig.kPreserveAllTensors if preserve_all_tensors
              else rt.InterpreterConfig.kAllocationRecording)
    try:
        with _c_stderr() as log:
            interp = rt.Interpreter.from_bytes(model_content, arena_size=arena,
                                               intrepreter_config=config)
    except (RuntimeError, ValueError) as e:
        why = " | ".join(_lines(log[0]))
        if "Failed to allocate" in why:
            hint = "pass a larger arena"
        elif _dynamic_shapes(model_content):
            hint = ("the model was converted with a dynamic batch, which TFLite Micro "
                    "cannot resize (where it names a shape): convert it with "
                    "to_tflite(..., fixed_batch=True)")
        else:
            hint = ("replace the layer of the operator it names, or deploy with the "
                    "TFLite interpreter")
        raise ConversionError(
            f"TFLite Micro cannot run this model in a {arena}-byte arena: {why or e}; "
            f"{hint}") from e
    for line in _lines(log[0]):
        logger.info("TFLite Micro: %s", line)
    return interp


def _lines(log: str) -> list[str]:
    """The non-empty lines of TFLite Micro's log, stripped."""
    return [line.strip() for line in log.splitlines() if line.strip()]


def _invoke(interp: Any, x: np.ndarray) -> None:
    try:
        with _c_stderr() as log:
            interp.set_input(x, 0)
            interp.invoke()
    except (RuntimeError, ValueError) as e:  # ValueError: input shape or type
        why = " | ".join(_lines(log[0]))
        raise ConversionError(f"TFLite Micro failed to run the model: {why or e}; give it "
                              "inputs of the model's batch-1 shape and type") from e


def op_outputs(model_content: bytes, x: np.ndarray, intermediates: bool = True,
               graph: Any = None) -> list[Any]:
    """Every operator's int8 output as TFLite Micro computes it (see
    :func:`tfmot_ext.tflite.op_outputs`, whose ``OpTensor`` rows this returns, in the
    same order as the TFLite interpreter's).

    Args:
        model_content: an int8-I/O ``.tflite`` model.
        x: inputs ``(N, ...)`` in the model's input type, one example per invoke.
        intermediates: every operator's output, not only the model's outputs.
        graph: the model's ``tf.lite`` interpreter without delegates, if at hand
            (:func:`tfmot_ext.tflite.undelegated`): its operators and tensor details.
    """
    from tfmot_ext.tflite import collect_outputs, undelegated

    graph = undelegated(model_content)[0] if graph is None else graph
    # every tensor stays in the arena (the planner is linear then): room for all of them
    tensors = sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
                  for d in graph.get_tensor_details())
    interp = interpreter(model_content, max(DEFAULT_ARENA, 2 * tensors),
                         preserve_all_tensors=True)
    in_type = np.dtype(graph.get_input_details()[0]["dtype"])

    def run(xi: np.ndarray) -> Any:
        _invoke(interp, np.ascontiguousarray(xi, in_type))
        return lambda t: interp.GetTensor(t, 0)["tensor_data"]

    return collect_outputs(graph, np.asarray(x), run, intermediates)


@contextlib.contextmanager
def _c_stderr() -> Iterator[list[str]]:
    """Capture what TFLite Micro's C++ code logs to the process's stderr (fd 2): its
    interpreter reports why a model cannot run only there. The captured text is the
    list's one item once the block exits."""
    sys.stderr.flush()
    saved = os.dup(2)
    got: list[str] = []
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield got
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            got.append(f.read().decode(errors="replace"))


def _probe(model_path: str, arena: int) -> int:
    """Exit status of one run in an ``arena``-byte arena: 0 it runs, :data:`_TOO_SMALL`
    it does not (anything else is a failure of the probe itself)."""
    rt = _runtime()
    with open(model_path, "rb") as f:
        content = f.read()
    try:
        interp = rt.Interpreter.from_bytes(content, arena_size=arena)
        shape = tuple(interp.get_input_details(0)["shape"])
        interp.set_input(np.zeros(shape, interp.get_input_details(0)["dtype"]), 0)
        interp.invoke()
    except RuntimeError:
        return _TOO_SMALL
    return 0


def _runs_in(model_path: str, arena: int) -> bool:
    """Whether the model runs in ``arena`` bytes, tried in a child process: TFLite Micro
    crashes the process (SIGSEGV), instead of failing, in some arenas too small.

    Raises:
        ConversionError: the probe itself failed (not a too-small arena), with its
            error output.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run([sys.executable, "-m", "tfmot_ext.micro", model_path,
                               str(arena)], capture_output=True, timeout=300, check=False,
                              env=env)
    except subprocess.TimeoutExpired as e:
        raise ConversionError(f"TFLite Micro's arena probe ({arena} bytes) did not finish "
                              "in 300 s") from e
    if done.returncode == 0:
        return True
    if done.returncode == _TOO_SMALL or done.returncode < 0:  # < 0: killed by a signal
        return False
    raise ConversionError(f"TFLite Micro's arena probe failed (exit {done.returncode}): "
                          f"{done.stderr.decode(errors='replace')[-600:]}")


def arena_bytes(model_content: bytes, granularity: int = 16) -> int:
    """The least tensor arena (bytes, a multiple of ``granularity``) in which TFLite
    Micro allocates and invokes the model, found by bisection.

    TFLite Micro plans the arena once, at allocation (activation buffers shared by
    lifetime, scratch buffers, its persistent structures, and temporary memory while
    operators prepare, which its allocation report leaves out), so the figure does not
    depend on the input's values. Each probe runs in a child process (about 0.2 s):
    TFLite Micro crashes, instead of failing, in some arenas that are too small. The
    figure holds for this host's TFLite Micro build (64-bit pointers); a 32-bit MCU's
    structures are smaller, so it is an upper bound there.

    The recording allocator the probes run with keeps its records in the arena, so
    firmware with a plain allocator needs somewhat less (not measured).

    Raises:
        ConversionError: TFLite Micro cannot run the model even in
            :data:`DEFAULT_ARENA` bytes (with its log of the reason).
    """
    interpreter(model_content)  # raises, with TFLite Micro's reason, if it cannot run
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(model_content)
        lo, hi = 0, max(len(model_content) // granularity, 64)
        while not _runs_in(path, hi * granularity):  # then: not at lo, at hi (* granularity)
            if hi * granularity >= DEFAULT_ARENA:
                raise ConversionError(f"TFLite Micro does not run this model in a "
                                      f"{DEFAULT_ARENA}-byte arena in a child process")
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _runs_in(path, mid * granularity):
                hi = mid
            else:
                lo = mid
    return hi * granularity


if __name__ == "__main__":  # the child process of _runs_in
    sys.exit(_probe(sys.argv[1], int(sys.argv[2])))
