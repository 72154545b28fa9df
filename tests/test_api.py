"""Package surface: __all__ resolves, one Keras import point, no env side effects."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import tfmot_ext

PKG = Path(tfmot_ext.__file__).parent


def test_all_names_resolve():
    for name in tfmot_ext.__all__:
        assert hasattr(tfmot_ext, name), name
    for mod in pkgutil.iter_modules([str(PKG)]):
        m = importlib.import_module(f"tfmot_ext.{mod.name}")
        assert hasattr(m, "__all__"), mod.name
        for name in m.__all__:
            assert hasattr(m, name), f"{mod.name}.{name}"


def test_keras_is_imported_only_in_compat():
    pattern = re.compile(r"^\s*(import|from)\s+(tf_keras|keras|tensorflow\.keras)\b", re.M)
    offenders = [p.name for p in PKG.glob("*.py")
                 if p.name != "_compat.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_import_sets_no_environment_variable_beyond_tfmot():
    code = (
        "import os, json; import tensorflow_model_optimization; a = dict(os.environ); "
        "import tfmot_ext; b = dict(os.environ); print(json.dumps(a == b))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "true"


def test_version():
    assert re.match(r"\d+\.\d+", tfmot_ext.__version__)


def _own_names() -> set[str]:
    """Every name tfmot_ext itself defines (functions, classes, attributes, assignments)."""
    import ast

    names: set[str] = set()
    for path in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return names


def test_private_names_of_tfmot_keras_and_tflite_are_read_only_in_compat():
    """Any ``obj._name`` or ``getattr(obj, "_name")`` outside ``_compat.py`` must name
    something tfmot_ext defines itself; tfmot's, tf_keras's and TFLite's private
    attributes are read in ``_compat.py`` only, each with its reason."""
    import ast

    own = _own_names()
    offenders = []
    for path in PKG.glob("*.py"):
        if path.name == "_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            attr = None
            if isinstance(node, ast.Attribute):
                attr = node.attr
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str)):
                attr = node.args[1].value
            if (attr and attr.startswith("_") and not attr.startswith("__")
                    and attr not in own):
                offenders.append(f"{path.name}:{node.lineno} {attr}")
    assert offenders == []


def test_names_exported_before_the_architecture_change_still_resolve_with_a_warning():
    import warnings

    for name, (module, attr) in tfmot_ext._MOVED.items():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            value = getattr(tfmot_ext, name)
        assert value is getattr(importlib.import_module(f"tfmot_ext.{module}"), attr), name
        assert any(issubclass(w.category, DeprecationWarning) and module in str(w.message)
                   for w in seen), name
    assert len(tfmot_ext.__all__) <= 45 and set(tfmot_ext.__all__) <= set(dir(tfmot_ext))
